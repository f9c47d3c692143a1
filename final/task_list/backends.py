"""Every place the app reaches into Flask-Caching's or cachelib's private API, each with its reason.

Upgrading either library means re-reading this file, and only this file.
"""
from flask_caching import Cache as FlaskCache
from flask_caching.backends.memcache import MemcachedCache as FlaskMemcachedCache
from flask_caching.utils import function_namespace

from task_list.store import Pool


class Cache(FlaskCache):
    """Flask-Caching's Cache without one step that can undo an invalidation."""

    def _memoize_version(self, f, *args, refresh=False, **kwargs):
        # After computing a value, memoize writes back the version it read before: a reader that
        # read it just before a write changed it would put the old version back.
        if refresh:
            return None, None
        return super()._memoize_version(f, *args, **kwargs)

    def new_version(self):
        # A version in the format memoize itself writes, so both read it alike.
        return self._memoize_make_version_hash()

    def version_key(self, function):
        """The name (without the key prefix) under which memoize keeps FUNCTION's version."""
        # memoize names it after function_namespace() and _memvname(), both internal.
        return self._memvname(function_namespace(function)[0])


class MemcachedCache(FlaskMemcachedCache):
    """Flask-Caching's memcached backend on the app's safe client, from a pool of its own."""

    def __init__(self, new_client, pool_size, default_timeout=300, key_prefix=None):
        pool = Pool(new_client, pool_size)
        super().__init__(pool, default_timeout, key_prefix)
        # cachelib borrows its client through _client_context; ours lends one per thread.
        self._client_context = pool.reserve

    @classmethod
    def factory(cls, app, config, args, kwargs):
        store = app.extensions["task_list.store"]
        return cls(store.new_client, config["MEMCACHED_POOL_SIZE"],
                   config["CACHE_DEFAULT_TIMEOUT"], config["CACHE_KEY_PREFIX"])
