"""Sessions in memcached with Flask-Session; in the instance folder when there is no memcached."""
import os

from cachelib import FileSystemCache
from flask_session import Session

from task_list import settings


class MemcachedPool:
    """The get, set and delete that Flask-Session calls, each on a client borrowed from a pool.

    A pylibmc client must never serve two threads at once, and Elastic Beanstalk runs 15 threads.
    """

    def __init__(self, servers, username, password, size=16):
        import pylibmc

        client = pylibmc.Client(servers, binary=True, username=username, password=password,
                                behaviors=settings.MEMCACHED_BEHAVIORS)
        self.pool = pylibmc.ClientPool(client, size)

    def get(self, key):
        with self.pool.reserve() as client:
            return client.get(key)

    def set(self, key, value, timeout=0):
        with self.pool.reserve() as client:
            return client.set(key, value, timeout)

    def delete(self, key):
        with self.pool.reserve() as client:
            return client.delete(key)


def init_app(app):
    servers = app.config.get("CACHE_MEMCACHED_SERVERS")
    if servers:
        app.config["SESSION_TYPE"] = "memcached"
        app.config["SESSION_MEMCACHED"] = MemcachedPool(
            servers, app.config["CACHE_MEMCACHED_USERNAME"], app.config["CACHE_MEMCACHED_PASSWORD"])
    else:
        # Without memcached, files in the instance folder: every local process sees the same sessions.
        app.config["SESSION_TYPE"] = "cachelib"
        app.config["SESSION_CACHELIB"] = FileSystemCache(os.path.join(app.instance_path, "sessions"))
    Session(app)
