"""Reads of the app's keys over memcached's binary protocol, refusing a value by its header.

Why: pylibmc inflates a value flagged zlib (flag 8) in C, in a buffer that doubles without
limit, before the app can look at it. One 1 MB value written by anyone with the cache's password
took 14.9 s and 2 GB of a worker. Here the flags and the length in the response's header are
checked before the body is read: a value not stored under the app's flag, or over memcached's
item limit, is skipped in small chunks, never held, never decoded, and is a miss.
pylibmc keeps every write, and says which server holds a key (cachedata.Client).
"""
import ctypes
import socket
import struct

# libc's send, called with the GIL held: a get's request is a few bytes that the kernel takes at
# once, and every call that lets go of the GIL makes 15 threads fight for it again.
LIBC = ctypes.PyDLL(None, use_errno=True)
LIBC.send.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int)
LIBC.send.restype = ctypes.c_ssize_t
SEND_FLAGS = socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL

HEADER = struct.Struct(">BBHBBHIIQ")
REQUEST, RESPONSE = 0x80, 0x81
GET, NOOP, GETKQ, SASL_AUTH = 0x00, 0x0A, 0x0D, 0x21
OK, NOT_FOUND = 0x00, 0x01
MAX_KEY = 250  # memcached's limit on a key, in bytes
MAX_VALUE = 1 << 20  # memcached's item limit: nothing the app stores comes near it
CHUNK = 1 << 16


class ReadError(Exception):
    """The server could not be read: unreachable, timed out, closed, or refused the login."""


class Closed(ReadError):
    """The server closed the connection (it restarted, or dropped an idle one): a new one may
    well work, where after a timeout it would only wait again."""


def lost(exc):
    """The ReadError to raise for EXC, Closed when the server closed the connection."""
    closed = isinstance(exc, (Closed, ConnectionResetError, BrokenPipeError))
    return (Closed if closed else ReadError)(str(exc) or type(exc).__name__)


def request(opcode, key, extras=b"", value=b""):
    body = extras + key + value
    return HEADER.pack(REQUEST, opcode, len(key), len(extras), 0, 0, len(body), 0, 0) + body


def whole(data):
    """True when DATA, what one read received, is exactly one response: its header and body."""
    return len(data) >= 24 and len(data) == 24 + int.from_bytes(data[8:12], "big")


class Connection:
    """One socket to one server, opened (and logged in) on first use, closed on any error."""

    def __init__(self, address, username, password, timeout, flag):
        self.address, self.username, self.password = address, username, password
        self.timeout, self.flag = timeout, flag
        self.flag_bytes = flag.to_bytes(4, "big")
        self.sock, self.fd = None, -1
        self.pending, self.pos = b"", 0  # bytes received and not yet parsed
        self.scratch = bytearray(CHUNK)  # where skipped bodies go

    def open(self):
        host, _, port = self.address.rpartition(":")
        if not port.isdigit():
            host, port = self.address, "11211"
        try:
            self.sock = socket.create_connection((host.strip("[]"), int(port)), self.timeout)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # The kernel keeps the timeout: a Python socket timeout polls before every send and
            # receive, and each call lets go of the GIL, which 15 threads then fight over.
            self.sock.settimeout(None)
            limit = struct.pack("ll", int(self.timeout), int(self.timeout % 1 * 1e6))
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, limit)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, limit)
            self.fd = self.sock.fileno()
        except OSError as exc:
            self.close()
            raise ReadError(f"cannot connect: {exc}") from None
        if self.username:
            login = f"\0{self.username}\0{self.password or ''}".encode()
            answer = self.exchange([request(SASL_AUTH, b"PLAIN", value=login)], SASL_AUTH)
            if answer[-1][0] != OK:
                self.close()
                raise ReadError("the SASL login was refused")
        return self.sock

    def close(self):
        if self.sock is not None:
            self.sock.close()
        self.sock, self.fd, self.pending, self.pos = None, -1, b"", 0

    def get(self, key, message=None):
        """(flags, value, cas) of KEY, None when absent; value is None when it was skipped.
        MESSAGE, when given, is request(GET, KEY), made once by a caller that reads one key."""
        message = message or request(GET, key)
        if not self.idle():
            return self.answer(self.exchange([message], GET)[0])
        return self.parse(self.fetch(message))

    def idle(self):
        """Open, with nothing received and not parsed: a get is one send and one read."""
        return self.sock is not None and self.pos >= len(self.pending)

    def fetch(self, message):
        """Send MESSAGE, one get, on the idle() connection; return what one
        read receives, the whole answer as a rule (parse() takes care of the rest)."""
        try:
            sent = LIBC.send(self.fd, message, len(message), SEND_FLAGS)
            if sent != len(message):
                self.sock.sendall(message[max(sent, 0):])
            return self.sock.recv(CHUNK)
        except OSError as exc:
            self.close()
            raise lost(exc) from None

    def parse(self, data):
        """What get() returns for DATA, the bytes fetch() received."""
        # The usual answer, whole in one read: a value of ours, or not found.
        if len(data) >= 24:
            magic, _, keylen, extlen, _, status, size, _, cas = HEADER.unpack_from(data)
            if magic == RESPONSE and not keylen and len(data) == 24 + size:
                if status == OK and extlen == 4 and data[24:28] == self.flag_bytes:
                    return self.flag, data[28:], cas
                if status == NOT_FOUND:
                    return None
        self.pending, self.pos = data, 0  # anything else: parsed by the general path
        return self.answer(self.exchange([], GET)[0])

    @staticmethod
    def answer(found):
        status, _, *rest = found
        return tuple(rest) if status == OK else None

    def get_multi(self, keys):
        """{key: (flags, value, cas)} of the KEYS found, in one round trip (quiet gets + noop)."""
        sent = [request(GETKQ, key) for key in keys] + [request(NOOP, b"")]
        return {found[1]: found[2:] for found in self.exchange(sent, NOOP)[:-1]
                if found[0] == OK}

    def exchange(self, requests, last):
        """Send REQUESTS; read responses up to one to the opcode LAST. A socket error or a reply
        that is not memcached's closes the connection: its state is unknown."""
        try:
            sock = self.sock or self.open()
            if requests:
                sock.sendall(b"".join(requests))
            answers = []
            while True:
                opcode, *answer = self.response()
                answers.append(answer)
                if opcode == last:
                    return answers
        except (OSError, ReadError) as exc:
            self.close()
            raise lost(exc) from None

    def response(self):
        magic, opcode, keylen, extlen, _, status, bodylen, _, cas = HEADER.unpack(self.take(24))
        if magic != RESPONSE or keylen + extlen > bodylen:
            raise ReadError("not a memcached binary response")
        extras = self.take(extlen) if extlen else b""
        key = self.take(keylen) if keylen else b""
        size = bodylen - extlen - keylen
        flags = int.from_bytes(extras[:4], "big") if status == OK and extlen >= 4 else 0
        if status == OK and flags == self.flag and size <= MAX_VALUE:
            value = self.take(size)
        else:
            self.skip(size)  # an error's message, or a value the app never reads
            value = None
        return opcode, status, key, flags, value, cas

    def take(self, size):
        """SIZE bytes from the connection."""
        if len(self.pending) - self.pos < size:
            parts, have = [self.pending[self.pos:]], len(self.pending) - self.pos
            while have < size:
                chunk = self.sock.recv(max(CHUNK, size - have))
                if not chunk:
                    raise Closed("the connection was closed")
                parts.append(chunk)
                have += len(chunk)
            self.pending, self.pos = b"".join(parts), 0
        start = self.pos
        self.pos += size
        return self.pending[start:self.pos]

    def skip(self, size):
        """Read past SIZE bytes, holding at most CHUNK of them."""
        buffered = min(size, len(self.pending) - self.pos)
        self.pos += buffered
        size -= buffered
        view = memoryview(self.scratch)
        while size:
            got = self.sock.recv_into(view, min(size, CHUNK))
            if not got:
                raise Closed("the connection was closed")
            size -= got
