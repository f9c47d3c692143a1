"""Sessions in memcached with Flask-Session; in the instance folder when there is no memcached."""
import logging
import os

from cachelib import FileSystemCache
from flask_session import Session

from task_list import settings

log = logging.getLogger(__name__)


class MemcachedPool:
    """The get, set and delete that Flask-Session calls, each on a client borrowed from a pool.

    A pylibmc client must never serve two threads at once, and Elastic Beanstalk runs 15 threads.
    """

    def __init__(self, servers, username, password, size=16):
        import pylibmc

        client = pylibmc.Client(servers, binary=True, username=username, password=password,
                                behaviors=settings.MEMCACHED_BEHAVIORS)
        self.pool = pylibmc.ClientPool(client, size)
        self.connect(size, pylibmc.Error)

    def connect(self, size, errors):
        """Log every pooled client in now, at start-up, not later inside a visitor's request.

        A wrong password shows in the log at once, and this sidesteps a bug in the libmemcached
        inside pylibmc 1.6.3: a SASL login begun deep in a request can fail at random with
        FAILED TO SEND AUTHENTICATION TO SERVER (see WORKSHOP.md, Troubleshooting).
        """
        for _ in range(size):
            with self.pool.reserve() as client:  # the pool hands out each client in turn
                try:
                    client.get_stats()
                except errors as exc:
                    log.warning("memcached login failed at start-up: %s", exc)
                    return

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
