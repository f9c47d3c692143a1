"""A thread-safe memcached client that never raises, and its in-process stand-in.

pylibmc clients are not thread-safe, so every call borrows one from a pool; the warm page's
read (reader()) holds a connection per thread instead. A cache that fails must never fail a
request: each error is logged and the call answers as a miss.
The page and fragment caches and the sessions share one `Memcache`; Flask-Caching keeps its own
pool of the same safe client (cachedata.Client).
"""
import contextlib
import functools
import logging
import queue
import threading
import time
import typing

from task_list import cachedata, reads
from task_list.cachedata import ADD, REFUSED

log = logging.getLogger("task_list.cache")


class OncePerInterval(logging.Filter):
    """Let the first record of each message through, then one every INTERVAL seconds.

    With memcached down, every request fails the same calls: logging each one would cost more
    than the failure itself, and the first says all there is to say. Records are told apart by
    their message (the format string), never by its arguments, which differ on every call.
    """

    def __init__(self, interval=10.0):
        super().__init__()
        self.interval = interval
        self.last = {}

    def filter(self, record):
        key = (record.name, record.msg)
        now = time.monotonic()
        if now - self.last.get(key, -self.interval) < self.interval:
            return False
        self.last[key] = now
        return True


def quiet_cache_logs():
    """memcached failures: ours, and Flask-Caching's, which come with a traceback each."""
    for name in ("task_list.cache", "flask_caching"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, OncePerInterval) for f in logger.filters):
            logger.addFilter(OncePerInterval())


class Pool:
    """One pylibmc client per thread at a time; a client that saw a failure is replaced by a new
    one a second later.

    libmemcached keeps a failed server disabled for as long as calls keep coming (with the
    libmemcached in pylibmc's wheel, a restarted server was never used again under steady
    traffic). A new client has no such memory, so every thread uses a returning server within a
    second, and all of them agree on where each key lives.
    """

    RETRY_AFTER = 1.0  # seconds

    def __init__(self, new_client, size):
        import pylibmc

        self.new_client = new_client
        self.errors = (pylibmc.Error,)
        # SimpleQueue is in C: a borrow costs a fraction of a LifoQueue's Python locks.
        self.idle = queue.SimpleQueue()
        for _ in range(size):
            self.idle.put((new_client(), 0.0))

    def take(self):
        """(client, failed_at): give both back with give(), failed_at set if the client failed."""
        client, failed_at = self.idle.get()
        if failed_at and time.monotonic() - failed_at >= self.RETRY_AFTER:
            return self.new_client(), 0.0
        return client, failed_at

    def give(self, client, failed_at):
        self.idle.put((client, failed_at))

    @contextlib.contextmanager
    def reserve(self):
        client, failed_at = self.take()
        try:
            yield client
        except self.errors:
            failed_at = failed_at or time.monotonic()
            raise
        finally:
            self.give(client, failed_at)


class Waiting(typing.NamedTuple):
    """An invalidation not landed yet: GENERATION counts the writes that changed it since."""
    value: object
    timeout: int
    guard_until: float
    generation: int


class Reader:
    """Reads of one key with the least work per call (cachedata.KeyReader). Like every call of
    the store, a failure is counted and reads as None instead of raising."""

    FAILED = object()  # from answer(): memcached could not be read, and that is counted

    def __init__(self, store, keys):
        self.store, self.keys = store, keys

    def answer(self):
        """This thread's get as received (cachedata.KeyReader.answer), None, or FAILED."""
        try:
            return self.keys.answer()
        except reads.ReadError as exc:
            self.store._failed(exc)
            return self.FAILED

    def item(self, answer=None):
        """(key, expiry, data), or None; ANSWER: what answer() received."""
        try:
            item = self.keys.item(answer)
        except reads.ReadError as exc:
            self.store._failed(exc)
            return None
        # A read that worked ends a run of failures. Without this, after memcached restarted,
        # each thread's first read (its connection was closed) made down() true for a second.
        if self.store.failures:
            self.store.failures = 0
        return item


class Memcache:
    FAILING = 3  # failed calls in a row after which memcached counts as down, for a second
    RETRY_EVERY = 0.2  # seconds between rounds of retried invalidations

    def __init__(self, servers, username, password, behaviors, pool_size, secret):
        import pylibmc

        self.errors = (pylibmc.Error,)
        self.new_client = lambda: cachedata.Client(servers, secret=secret, binary=True,
                                                   username=username, password=password,
                                                   behaviors=behaviors)
        self.pool = Pool(self.new_client, pool_size)
        self.servers = servers
        self.failures, self.failed_at = 0, 0.0
        self.lock = threading.Lock()
        self.waiting = {}  # key -> Waiting: invalidations not landed yet
        self.retrier = None

    def down(self):
        """True for a second after FAILING calls in a row failed: the pages are then built as if
        caching were off, without a call that would fail. Invalidations are always attempted
        (or wait for their retry, see invalidate())."""
        # The count first: no clock read while memcached answers, on every cached read.
        return (self.failures >= self.FAILING
                and time.monotonic() - self.failed_at < Pool.RETRY_AFTER)

    def _call(self, name, default, *args):
        # pool.reserve() inlined: this is every cached read's path, the warm page's among them.
        if self.down():
            return default
        client, failed_at = self.pool.take()
        try:
            result = getattr(client, name)(*args)
        except self.errors as exc:
            failed_at = failed_at or time.monotonic()
            self._failed(exc)
            return default
        finally:
            self.pool.give(client, failed_at)
        self.failures = 0
        return result

    def _failed(self, exc):
        """Count a failed call (see down())."""
        self.failures, self.failed_at = self.failures + 1, time.monotonic()
        log.warning("memcached call failed: %s", exc)

    def reader(self, key):
        """KEY's Reader: cachedata.KeyReader's reads, counted as every call here is."""
        return Reader(self, cachedata.KeyReader(self.new_client(), key))

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
        """(value, token): pass the token to store() to write only if nobody wrote since.

        The token is REFUSED for a value the client refused (not ours, or garbage): it cannot be
        compare-and-set, and add() cannot replace it, so replace_refused() overwrites it first.
        """
        value, cas = self._call("gets", (None, None), key)
        return value, (ADD if cas is None else cas)

    def replace_refused(self, key, placeholder, timeout):
        """Overwrite a refused value at KEY with PLACEHOLDER; the token to store() over it."""
        self.set(key, placeholder, timeout)
        value, token = self.gets(key)
        return token if value == placeholder else None

    def store(self, key, value, token, timeout=0):
        if token is None:
            return False
        if token is ADD:
            return self._call("add", False, key, value, timeout)
        return self._call("cas", False, key, value, token, timeout)

    def pending(self):
        """True while an invalidation made here has not landed (see invalidate())."""
        return bool(self.waiting)

    def invalidate(self, writes, timeout):
        """Set each key of WRITES to its value; True when every write landed now.

        A value may be a function, called again for every try: the memoized query's version gets
        a value never written before each time, because a try that timed out may still land late.
        Each write goes on its own (the keys may live on different servers), and what fails is
        tried once more on a new connection: a pooled client skips a server for a second after it
        failed, while other clients may already use it again. What still fails waits in
        self.waiting and a thread retries it until it lands, or until TIMEOUT (the TTL of what it
        guards) has passed since the last write. A key already waiting is not tried here: its
        retry lands after this call, and one write of it covers every change before it.
        """
        guard_until = time.monotonic() + timeout + 1  # memcached rounds expiry to whole seconds
        with self.lock:
            for key in writes.keys() & self.waiting.keys():
                self.waiting[key] = Waiting(writes[key], timeout, guard_until,
                                            self.waiting[key].generation + 1)
            now = [(k, v) for k, v in writes.items() if k not in self.waiting]
        failed = self._write(self.pool.reserve, now, timeout) if now else []
        if failed:
            failed = self._on_new_client(lambda borrow: self._write(borrow, failed, timeout), failed)
        if failed:
            self._keep(failed, timeout, guard_until)
        return not failed and len(now) == len(writes)

    def _keep(self, failed, timeout, guard_until):
        with self.lock:
            for key, value in failed:
                earlier = self.waiting.get(key)
                generation = earlier.generation + 1 if earlier else 0
                self.waiting[key] = Waiting(value, timeout, guard_until, generation)
            if self.retrier is None:
                self.retrier = threading.Thread(target=self._retry, daemon=True)
                self.retrier.start()

    def _retry(self):
        """Write what waits until it lands; a key changed meanwhile is written once more."""
        while True:
            with self.lock:
                now = time.monotonic()
                for key in [k for k, w in self.waiting.items() if w.guard_until < now]:
                    del self.waiting[key]
                    log.warning("memcached invalidation given up: what it guarded has expired")
                batch = dict(self.waiting)
                if not batch:
                    self.retrier = None
                    return
            failed = set(batch)
            try:
                for timeout in {w.timeout for w in batch.values()}:
                    writes = [(k, w.value) for k, w in batch.items() if w.timeout == timeout]
                    still = self._on_new_client(
                        lambda borrow: self._write(borrow, writes, timeout), writes)
                    failed -= {k for k, _ in writes} - {k for k, _ in still}
            except Exception:  # a bug must not stop the retries: the instance would bypass for good
                log.exception("memcached invalidation retry failed")
            with self.lock:
                for key, sent in batch.items():
                    waiting = self.waiting.get(key)
                    if key not in failed and waiting and waiting.generation == sent.generation:
                        del self.waiting[key]
            if failed:
                time.sleep(self.RETRY_EVERY)

    def _on_new_client(self, call, default):
        """CALL(borrow) on a new client, on a thread of its own (a SASL login begun deep in a
        request can fail at random with the libmemcached in pylibmc 1.6.3: WORKSHOP.md,
        Troubleshooting); DEFAULT when it raised."""
        outcome = {"result": default}

        def run():
            client = self.new_client()
            try:
                outcome["result"] = call(lambda: contextlib.nullcontext(client))
            finally:
                client.disconnect_all()

        thread = threading.Thread(target=run)
        thread.start()
        thread.join()
        return outcome["result"]

    def _write(self, borrow, writes, timeout):
        """Set each key; return the writes that failed."""
        failed = []
        for key, value in writes:
            try:
                with borrow() as client:
                    client.set(key, value() if callable(value) else value, timeout)
            except self.errors as exc:
                log.warning("memcached invalidation failed: %s", exc)
                failed.append((key, value))
        return failed

    def stats(self):
        """One entry per server: its address and whether it answered."""
        answered = self._answered(self.pool.reserve)
        if len(answered) < len(self.servers):  # once more, as an invalidation is tried again
            answered |= self._on_new_client(self._answered, set())
        return [{"server": s, "ok": s in answered} for s in self.servers]

    def _answered(self, reserve):
        try:
            with reserve() as client:
                return {name.decode().split(" ")[0] for name, _ in client.get_stats()}
        except self.errors:
            return set()


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

    def reader(self, key):
        return functools.partial(self.get, key)

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

    def replace_refused(self, key, placeholder, timeout):
        return None  # nothing is ever refused in process

    def store(self, key, value, token, timeout=0):
        with self.lock:
            item = self._live(key)
            current = item[1] if item else ADD
            if current != token:
                return False
            self.items[key] = (value, (item[1] if item else 0) + 1,
                               time.monotonic() + timeout if timeout else 0)
            return True

    def down(self):
        return False

    def pending(self):
        return False

    def invalidate(self, writes, timeout):
        self.set_multi({k: v() if callable(v) else v for k, v in writes.items()}, timeout)
        return True

    def stats(self):
        return []
