"""The one memcached client the app uses: data only, signed with SECRET_KEY, bound to its key.

Anyone who can write to the cache (a leaked password, a neighbour app) but does not know
SECRET_KEY must not make the app run code, serve content of their choosing or fail. So every
value is msgpack (never pickle) under a flag of our own, with a MAC over the key, the expiry and
the data. A value without our flag, with a bad MAC, written for another key, past its expiry or
undecodable is refused: deserialize() raises pylibmc.CacheMiss, which pylibmc's get, gets and
get_multi turn into a miss, and the caller rebuilds the value and overwrites it.
"""
import hashlib
import hmac
import logging
import time

import msgspec
import pylibmc

from task_list.store import REFUSED

log = logging.getLogger("task_list.cache")
# pylibmc's own flags use bits 0-5 (pickle 1, int 2, long 4, zlib 8, bool 16, text 32).
FLAG = 1 << 12
MAC_SIZE = 16
THIRTY_DAYS = 30 * 24 * 3600  # memcached reads a larger expiry as a Unix time
encode = msgspec.msgpack.Encoder().encode
decode = msgspec.msgpack.Decoder().decode


def mac_key(secret):
    """A sub-key of SECRET_KEY used for nothing else."""
    return hashlib.blake2b(b"task-list cache", key=secret.encode()[:64], digest_size=32).digest()


def expires_at(timeout):
    if not timeout:
        return 0
    return timeout if timeout > THIRTY_DAYS else int(time.time()) + timeout


def refuse(reason):
    # A constant message per reason: the once-per-interval filter keys on the message.
    log.warning(reason)
    raise pylibmc.CacheMiss


def is_value_error(exc):
    """True for the error pylibmc raises on one bad value (a zlib flag on bytes that do not
    inflate), as opposed to a server or connection failure (pylibmc.Error's subclasses)."""
    return type(exc) is pylibmc.Error and "decompress" in str(exc)


class Client(pylibmc.Client):
    """pylibmc's client, storing (key, expiry, data) signed, and refusing anything else."""

    def __init__(self, servers, *, secret, **kwargs):
        super().__init__(servers, **kwargs)
        self.key = mac_key(secret)
        self.refused = False
        # The last value this client accepted, raw and opened: a warm page is the same bytes on
        # every read, and equal bytes need no second MAC check. One per client, so per thread.
        self.last = (None, None)

    def serialize(self, item):
        body = encode(item)
        return hashlib.blake2b(body, key=self.key, digest_size=MAC_SIZE).digest() + body, FLAG

    def deserialize(self, raw, flags):
        if raw is not None and raw == self.last[0] and flags == FLAG:
            return self.last[1]
        if flags != FLAG:
            self.refused = True
            refuse("memcached value refused: not written by this app (wrong flag)")
        if not raw:  # pylibmc hands over None for an empty value
            self.refused = True
            refuse("memcached value refused: empty")
        mac, body = raw[:MAC_SIZE], raw[MAC_SIZE:]
        expected = hashlib.blake2b(body, key=self.key, digest_size=MAC_SIZE).digest()
        if not hmac.compare_digest(expected, mac):
            self.refused = True
            refuse("memcached value refused: bad MAC")
        try:
            key, expires, data = decode(body)
        except (msgspec.DecodeError, TypeError, ValueError):
            self.refused = True
            refuse("memcached value refused: undecodable")
        self.last = (raw, (key, expires, data))
        return key, expires, data

    def _open(self, key, item):
        """The data of ITEM read under KEY, or None when it belongs elsewhere or has expired."""
        if item is None:
            return None
        if item[0] != key or (item[1] and item[1] < time.time()):
            self.refused = True
            log.warning("memcached value refused: from another key, or past its expiry")
            return None
        return item[2]

    def _read(self, call, key, *args):
        try:
            return call(key, *args)
        except pylibmc.Error as exc:
            if not is_value_error(exc):
                raise
            self.refused = True
            log.warning("memcached value refused: does not inflate")
            return None

    def get(self, key, default=None):
        value = self._open(key, self._read(super().get, key))
        return default if value is None else value

    def gets(self, key):
        """(data, CAS token); the token is None for a missing key and REFUSED for a refused one."""
        self.refused = False
        item = self._read(super().gets, key)
        value, token = item if isinstance(item, tuple) and len(item) == 2 else (None, None)
        value = self._open(key, value)
        return value, (REFUSED if self.refused else token if value is not None else None)

    def get_multi(self, keys, key_prefix=None):
        prefix = key_prefix or ""
        try:
            found = super().get_multi(keys, prefix)
        except pylibmc.Error as exc:
            if not is_value_error(exc):
                raise
            # One value stops the whole call: read the keys one by one, so only it is a miss.
            one = super().get
            found = {k: item for k in keys if (item := self._read(one, prefix + k))}
        opened = {k: self._open(prefix + k, item) for k, item in found.items()}
        return {k: v for k, v in opened.items() if v is not None}

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
