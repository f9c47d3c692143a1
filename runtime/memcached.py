"""All of memcached's protocol the workshop speaks itself, without pylibmc. Standard library only.

Binary protocol, with SASL PLAIN when a username is given (a SASL memcached speaks nothing else):
`stats`, `counters`, `reset`, `flush` and `get`. pylibmc's get_stats returns only a fixed subset
(no delete_hits, no delete_misses), so the harness, the checker and the dashboard read counters here.

`Probe`: a round trip that moves none of the counters the checks read (binary VERSION, which a
SASL memcached answers before any login), polled without ever blocking its caller.

Text protocol, plain instances only: `metadump` (every item with its expiry and size), `keys`,
`raw_get` and `raw_delete`.
"""
import select
import socket
import struct
import urllib.parse

HEADER = struct.Struct(">BBHBBHIIQ")
OP_GET, OP_FLUSH, OP_STAT, OP_VERSION, OP_SASL_AUTH = 0x00, 0x08, 0x10, 0x0b, 0x21
STATUS_KEY_NOT_FOUND = 0x01


class MemcachedError(Exception):
    """memcached refused a request or could not be reached."""


def request(sock, opcode, key=b"", value=b"", extras=b""):
    body = extras + key + value
    sock.sendall(HEADER.pack(0x80, opcode, len(key), len(extras), 0, 0, len(body), 0, 0) + body)


def read_exact(sock, size):
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise MemcachedError("memcached closed the connection")
        data += chunk
    return data


def response(sock):
    magic, opcode, keylen, extlen, _, status, bodylen, _, _ = HEADER.unpack(read_exact(sock, 24))
    body = read_exact(sock, bodylen)
    key = body[extlen:extlen + keylen]
    return status, key, body[extlen + keylen:]


def connect(address, username=None, password=None, timeout=2.0):
    host, _, port = address.rpartition(":")
    try:
        sock = socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout)
    except OSError as exc:
        raise MemcachedError(f"cannot reach memcached at {address}: {exc.strerror or exc}") from None
    if username:
        request(sock, OP_SASL_AUTH, b"PLAIN", f"\0{username}\0{password or ''}".encode())
        status, _, _ = response(sock)
        if status:
            sock.close()
            raise MemcachedError(f"memcached at {address} refused the SASL login (status {status:#x})")
    return sock


def stats(address, username=None, password=None, group=""):
    """Every `stats` line of one server as {name: text}; group="reset" zeroes the counters."""
    try:
        with connect(address, username, password) as sock:
            request(sock, OP_STAT, group.encode())
            values = {}
            while True:
                status, key, value = response(sock)
                if status:
                    raise MemcachedError(f"memcached at {address} refused stats {group!r} (status {status:#x})")
                if not key:
                    return values
                values[key.decode()] = value.decode()
    except OSError as exc:
        raise MemcachedError(f"lost memcached at {address}: {exc}") from None


def counters(address, username=None, password=None):
    """The numeric counters of one server, as integers."""
    return {k: int(v) for k, v in stats(address, username, password).items() if v.isdigit()}


def reset(address, username=None, password=None):
    """`stats reset`: zero the counters, keep the data."""
    stats(address, username, password, group="reset")


def flush(address, username=None, password=None):
    """`flush_all`: drop every item."""
    with connect(address, username, password) as sock:
        request(sock, OP_FLUSH)
        status, _, _ = response(sock)
        if status:
            raise MemcachedError(f"memcached at {address} refused flush_all (status {status:#x})")


def get(address, key, username=None, password=None):
    """The stored bytes of KEY (str or bytes), or None when absent; never unpickled."""
    key = key.encode() if isinstance(key, str) else key
    try:
        with connect(address, username, password) as sock:
            request(sock, OP_GET, key)
            status, _, value = response(sock)
    except OSError as exc:
        raise MemcachedError(f"lost memcached at {address}: {exc}") from None
    if status == STATUS_KEY_NOT_FOUND:
        return None
    if status:
        raise MemcachedError(f"memcached at {address} refused get (status {status:#x})")
    return value


class Probe:
    """memcached's round trip, by a VERSION request on one connection kept open (no new
    connection, no login and no get or set per probe, so no counter the checks read moves)."""

    def __init__(self, address, wait=0.005):
        host, _, port = address.rpartition(":")
        self.target = (host or "127.0.0.1", int(port))
        self.wait = wait  # how long poll() waits for a fast answer before it returns
        self.sock = self.sent = None
        self.data = b""

    def poll(self, now):
        """Advance the probe at monotonic time NOW: (when the request in question was sent, and
        whether it has been answered), or None while memcached cannot be reached at all."""
        try:
            if self.sock is None:
                self.sock = socket.create_connection(self.target, timeout=0.5)
                self.sock.setblocking(False)
            if self.sent is None:
                self.sock.send(HEADER.pack(0x80, OP_VERSION, 0, 0, 0, 0, 0, 0, 0))
                self.sent, self.data = now, b""
                select.select([self.sock], [], [], self.wait)
            try:
                chunk = self.sock.recv(4096)
                if not chunk:
                    raise OSError("memcached closed the connection")
                self.data += chunk
            except BlockingIOError:
                pass
        except OSError:
            self.close()
            return None
        sent, size = self.sent, HEADER.size
        if len(self.data) >= size and len(self.data) >= size + HEADER.unpack(self.data[:size])[6]:
            self.sent = None
            return sent, True
        return sent, False

    def close(self):
        if self.sock is not None:
            self.sock.close()
        self.sock = self.sent = None


# ---- the text protocol: plain instances only --------------------------------------------------

def text_command(port, command, end=b"END\r\n", host="127.0.0.1"):
    """Send COMMAND to a plain memcached over the text protocol; read until END or an error."""
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(command)
        data = b""
        while not data.endswith(end) and not data.startswith((b"ERROR", b"CLIENT_ERROR")):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return data


def metadump(port, host="127.0.0.1"):
    """Every item of a plain memcached with its metadata: key, exp (Unix time, -1 = never), size.

    `lru_crawler metadump hash` walks the hash table: walking the LRUs (`all`) skips items that
    move between them meanwhile.
    """
    items = []
    for line in text_command(port, b"lru_crawler metadump hash\r\n", host=host).decode().splitlines():
        if line.startswith("key="):
            fields = dict(part.split("=", 1) for part in line.split())
            fields["key"] = urllib.parse.unquote(fields["key"])
            items.append({k: (int(v) if v.lstrip("-").isdigit() else v) for k, v in fields.items()})
    return items


def keys(port, host="127.0.0.1"):
    return [item["key"] for item in metadump(port, host)]


def raw_delete(port, key, host="127.0.0.1"):
    """Delete KEY from a plain memcached; whether it was there."""
    return text_command(port, f"delete {key}\r\n".encode(), end=b"\r\n", host=host) == b"DELETED\r\n"


def raw_get(port, key, host="127.0.0.1"):
    """The stored bytes of KEY on a plain memcached, or None; no unpickling, so any app's values."""
    data = text_command(port, f"get {key}\r\n".encode(), host=host)
    if not data.startswith(b"VALUE "):
        return None
    header, _, rest = data.partition(b"\r\n")
    return rest[:int(header.split()[3])]
