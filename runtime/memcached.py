"""memcached's own counters over the binary protocol, with SASL PLAIN when a username is given.

pylibmc's get_stats returns only a fixed subset (no delete_hits, no delete_misses), and a SASL
memcached speaks only the binary protocol, so the harness, the checker and the dashboard read
counters here. Standard library only.
"""
import socket
import struct

HEADER = struct.Struct(">BBHBBHIIQ")
OP_FLUSH, OP_STAT, OP_SASL_AUTH = 0x08, 0x10, 0x21
STATUS_AUTH_ERROR = 0x20


class MemcachedError(Exception):
    """memcached refused a request or could not be reached."""


def _request(sock, opcode, key=b"", value=b"", extras=b""):
    body = extras + key + value
    sock.sendall(HEADER.pack(0x80, opcode, len(key), len(extras), 0, 0, len(body), 0, 0) + body)


def _read_exact(sock, size):
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise MemcachedError("memcached closed the connection")
        data += chunk
    return data


def _response(sock):
    magic, opcode, keylen, extlen, _, status, bodylen, _, _ = HEADER.unpack(_read_exact(sock, 24))
    body = _read_exact(sock, bodylen)
    key = body[extlen:extlen + keylen]
    return status, key, body[extlen + keylen:]


def connect(address, username=None, password=None, timeout=2.0):
    host, _, port = address.rpartition(":")
    try:
        sock = socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout)
    except OSError as exc:
        raise MemcachedError(f"cannot reach memcached at {address}: {exc.strerror or exc}") from None
    if username:
        _request(sock, OP_SASL_AUTH, b"PLAIN", f"\0{username}\0{password or ''}".encode())
        status, _, _ = _response(sock)
        if status:
            sock.close()
            raise MemcachedError(f"memcached at {address} refused the SASL login (status {status:#x})")
    return sock


def stats(address, username=None, password=None, group=""):
    """Every `stats` line of one server as {name: text}; group="reset" zeroes the counters."""
    try:
        with connect(address, username, password) as sock:
            _request(sock, OP_STAT, group.encode())
            values = {}
            while True:
                status, key, value = _response(sock)
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
        _request(sock, OP_FLUSH)
        status, _, _ = _response(sock)
        if status:
            raise MemcachedError(f"memcached at {address} refused flush_all (status {status:#x})")
