"""A thread-safe memcached client that never raises, and its in-process stand-in.

pylibmc clients are not thread-safe, so every call borrows one from a pool. A cache that fails
must never fail a request: each error is logged and the call answers as a miss.
Flask-Session and the page and fragment caches share one `Memcache`; Flask-Caching keeps its own.
"""
import logging
import threading
import time

log = logging.getLogger("task_list.cache")
ADD = object()  # token from gets(): the key was absent, so store with add()


class Memcache:
    def __init__(self, servers, username, password, behaviors, pool_size):
        import pylibmc

        self.errors = (pylibmc.Error,)
        client = pylibmc.Client(servers, binary=True, username=username, password=password,
                                behaviors=behaviors)
        self.pool = pylibmc.ClientPool(client, pool_size)
        self.servers = servers

    def _call(self, name, default, *args):
        try:
            with self.pool.reserve() as client:
                return getattr(client, name)(*args)
        except self.errors as exc:
            log.warning("memcached %s failed: %s", name, exc)
            return default

    def get(self, key):
        return self._call("get", None, key)

    def set(self, key, value, timeout=0):
        return self._call("set", False, key, value, timeout)

    def delete(self, key):
        return self._call("delete", False, key)

    def get_multi(self, keys):
        return self._call("get_multi", {}, list(keys)) if keys else {}

    def set_multi(self, mapping, timeout=0):
        return self._call("set_multi", None, mapping, timeout) if mapping else None

    def gets(self, key):
        """(value, token): pass the token to store() to write only if nobody wrote since."""
        value, cas = self._call("gets", (None, None), key)
        return value, (ADD if cas is None else cas)

    def store(self, key, value, token, timeout=0):
        if token is ADD:
            return self._call("add", False, key, value, timeout)
        return self._call("cas", False, key, value, token, timeout)

    def stats(self):
        """One entry per server: its address and whether it answered."""
        try:
            with self.pool.reserve() as client:
                answered = {name.decode().split(" ")[0] for name, _ in client.get_stats()}
        except self.errors:
            answered = set()
        return [{"server": s, "ok": s in answered} for s in self.servers]


class LocalStore:
    """The same calls on an in-process dict, for running without memcached."""

    def __init__(self):
        self.lock = threading.Lock()
        self.items = {}
        self.servers = []

    def _live(self, key):
        item = self.items.get(key)
        if item and item[2] and item[2] < time.monotonic():
            del self.items[key]
            return None
        return item

    def get(self, key):
        with self.lock:
            item = self._live(key)
            return item[0] if item else None

    def set(self, key, value, timeout=0):
        with self.lock:
            stamp = (self.items.get(key, (None, 0))[1]) + 1
            self.items[key] = (value, stamp, time.monotonic() + timeout if timeout else 0)
        return True

    def delete(self, key):
        with self.lock:
            return self.items.pop(key, None) is not None

    def get_multi(self, keys):
        return {k: v for k in keys if (v := self.get(k)) is not None}

    def set_multi(self, mapping, timeout=0):
        for key, value in mapping.items():
            self.set(key, value, timeout)

    def gets(self, key):
        with self.lock:
            item = self._live(key)
            return (item[0], item[1]) if item else (None, ADD)

    def store(self, key, value, token, timeout=0):
        with self.lock:
            item = self._live(key)
            current = item[1] if item else ADD
            if current != token:
                return False
            self.items[key] = (value, (item[1] if item else 0) + 1,
                               time.monotonic() + timeout if timeout else 0)
            return True

    def stats(self):
        return []
