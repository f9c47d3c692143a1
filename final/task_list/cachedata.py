"""The one memcached client the app uses: data only, signed with SECRET_KEY, bound to its key.

Anyone who can write to the cache (a leaked password, a neighbour app) but does not know
SECRET_KEY must not make the app run code, serve content of their choosing, fail, or run out of
memory or time. So every value is msgpack (never pickle) under a flag of our own, with a MAC over
the key, the expiry and the data. Reads never go through pylibmc, which inflates zlib-flagged
values without limit before anything can refuse them: reads.py checks each value's flags and
length before reading it. A value without our flag, too large, with a bad MAC, written for
another key, past its expiry or undecodable is refused: a miss, which the caller rebuilds and
overwrites. pylibmc keeps the writes.
"""
import hashlib
import hmac
import logging
import threading
import time

import msgspec
import pylibmc

from task_list import reads

log = logging.getLogger("task_list.cache")
ADD = object()  # token from gets(): the key was absent, so store with add()
REFUSED = object()  # token from gets(): the value was refused, so it must be overwritten first
# pylibmc's own flags use bits 0-5 (pickle 1, int 2, long 4, zlib 8, bool 16, text 32).
FLAG = 1 << 12
MAC_SIZE = 16
THIRTY_DAYS = 30 * 24 * 3600  # memcached reads a larger expiry as a Unix time
TIMEOUT = 0.5  # seconds, as the writes' (settings.MEMCACHED_BEHAVIORS)
encode = msgspec.msgpack.Encoder().encode
decode = msgspec.msgpack.Decoder().decode


def mac_key(secret):
    """A sub-key of SECRET_KEY used for nothing else."""
    return hashlib.blake2b(b"task-list cache", key=secret.encode()[:64], digest_size=32).digest()


def expires_at(timeout):
    if not timeout:
        return 0
    return timeout if timeout > THIRTY_DAYS else int(time.time()) + timeout


def opened(mac_key, key, raw, last):
    """(item, None, last) for RAW, a value read under KEY (None: skipped by reads.py), or (None,
    the reason it is refused, last). LAST is (raw, item), the last value accepted: equal bytes
    need no second MAC check, and an accepted value comes back as the new LAST."""
    # A constant message per reason: the once-per-interval filter keys on the message.
    if raw is not None and raw == last[0]:
        item = last[1]
    elif raw is None:
        return None, ("memcached value refused: not written by this app (wrong flag, or over "
                      "the item limit)"), last
    elif not raw:
        return None, "memcached value refused: empty", last
    else:
        mac, body = raw[:MAC_SIZE], raw[MAC_SIZE:]
        expected = hashlib.blake2b(body, key=mac_key, digest_size=MAC_SIZE).digest()
        if not hmac.compare_digest(expected, mac):
            return None, "memcached value refused: bad MAC", last
        try:
            item = decode(body)
            _, _, _ = item
        except (msgspec.DecodeError, TypeError, ValueError):
            return None, "memcached value refused: undecodable", last
        last = (raw, item)
    if item[0] != key or (item[1] and item[1] < time.time()):
        return None, "memcached value refused: from another key, or past its expiry", last
    return item, None, last


class Client(pylibmc.Client):
    """pylibmc's client for writes, storing (key, expiry, data) signed; reads through reads.py,
    refusing anything else."""

    def __init__(self, servers, *, secret, username=None, password=None, **kwargs):
        super().__init__(servers, username=username, password=password, **kwargs)
        self.key = mac_key(secret)
        self.connections = [reads.Connection(address, username, password, TIMEOUT, FLAG)
                            for address in servers]
        self.several = len(self.connections) > 1
        self.refused = False
        # The last value this client accepted, raw and opened: a warm page is the same bytes on
        # every read, and equal bytes need no second MAC check. One per client, so per thread.
        self.last = (None, None)

    def serialize(self, item):
        body = encode(item)
        return hashlib.blake2b(body, key=self.key, digest_size=MAC_SIZE).digest() + body, FLAG

    def refuse(self, reason):
        self.refused = True
        log.warning(reason)

    def open_value(self, key, raw):
        """The data stored under KEY as RAW (None: skipped by reads.py), or None when refused."""
        item, reason, self.last = opened(self.key, key, raw, self.last)
        return self.refuse(reason) if reason else item[2]

    def connection(self, key):
        # pylibmc's hash() is the index of the server libmemcached writes KEY to (ketama).
        return self.connections[self.hash(key)] if self.several else self.connections[0]

    def read(self, conn, call, *args):
        try:
            return getattr(conn, call)(*args)
        except reads.ReadError as exc:
            raise pylibmc.ConnectionError(f"memcached at {conn.address}: {exc}") from None

    def get(self, key, default=None):
        value = self.gets(key)[0]
        return default if value is None else value

    def gets(self, key):
        """(data, CAS token); the token is None for a missing key and REFUSED for a refused one."""
        self.refused = False
        raw = key.encode()
        found = self.read(self.connection(key), "get", raw) if len(raw) <= reads.MAX_KEY else None
        if found is None:
            return None, None
        value = self.open_value(key, found[1])
        return value, (REFUSED if self.refused else found[2])

    def get_multi(self, keys, key_prefix=None):
        prefix = key_prefix or ""
        full = {k: (prefix + k).encode() for k in keys}
        groups = {}
        for k, raw in full.items():
            if len(raw) <= reads.MAX_KEY:
                groups.setdefault(self.connection(prefix + k), []).append(k)
        opened = {}
        for conn, group in groups.items():
            found = self.read(conn, "get_multi", [full[k] for k in group])
            for k in group:
                if full[k] in found:
                    opened[k] = self.open_value(prefix + k, found[full[k]][1])
        return {k: v for k, v in opened.items() if v is not None}

    def disconnect_all(self):
        for conn in self.connections:
            conn.close()
        return super().disconnect_all()

    def set(self, key, value, time=0, min_compress_len=0, compress_level=-1):
        return super().set(key, (key, expires_at(time), value), time)

    def add(self, key, value, time=0, min_compress_len=0, compress_level=-1):
        return super().add(key, (key, expires_at(time), value), time)

    def cas(self, key, value, cas, time=0):
        return super().cas(key, (key, expires_at(time), value), cas, time)

    def set_multi(self, mapping, time=0, key_prefix=None, min_compress_len=0, compress_level=-1):
        prefix = key_prefix or ""
        expires = expires_at(time)
        return super().set_multi({k: (prefix + k, expires, v) for k, v in mapping.items()}, time,
                                 prefix)


class KeyReader:
    """Reads of one key, the warm front page's (fastpath.py), with the least work per read.

    A connection per thread instead of a pooled client, and the value opened once per change:
    the MAC of a value equal to the last one opened is not computed again. Only reads: a miss or
    a refusal is rebuilt and written by the app's Client, which KEY's server is taken from.
    """

    def __init__(self, client, key):
        conn = client.connection(key)
        self.connect = lambda: reads.Connection(conn.address, conn.username, conn.password,
                                                conn.timeout, conn.flag)
        self.key, self.raw_key, self.mac_key = key, key.encode(), client.key
        self.too_long = len(self.raw_key) > reads.MAX_KEY  # never stored, as Client.gets knows
        self.request = reads.request(reads.GET, self.raw_key)
        self.local = threading.local()
        self.last = (None, None)  # (raw, item): shared by the threads, replaced whole

    def answer(self):
        """This thread's get of the key as received, unparsed: bytes that item() can take, or
        None when there is no such shortcut (item() then reads). reads.ReadError when memcached
        could not be read."""
        conn = getattr(self.local, "conn", None)
        if self.too_long or conn is None or not conn.idle():
            return None
        try:
            return conn.fetch(self.request)
        except reads.Closed:  # memcached restarted, or dropped an idle connection: item()
            return None  # reads once more, on a new one

    def item(self, answer=None):
        """(key, expiry, data) under the key, None when absent or refused; reads.ReadError when
        memcached could not be read. ANSWER: what answer() received, to be parsed, not read."""
        if self.too_long:
            return None
        conn = getattr(self.local, "conn", None) or self.new_connection()
        try:
            found = conn.get(self.raw_key, self.request) if answer is None else conn.parse(answer)
        except reads.Closed:  # memcached restarted, or dropped an idle connection: once more
            found = self.new_connection().get(self.raw_key, self.request)
        if found is None:
            return None
        item, reason, self.last = opened(self.mac_key, self.key, found[1], self.last)
        if reason:
            log.warning(reason)
            return None
        return item

    def new_connection(self):
        self.local.conn = self.connect()
        return self.local.conn
