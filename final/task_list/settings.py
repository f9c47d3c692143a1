"""Configuration from the environment, with the tutorial's variable names.

RDS_* select MySQL (Elastic Beanstalk sets them when the environment has a database).
MEMCACHIER_* select memcached: SASL with a username, plain without one.
With neither, the app runs on SQLite and an in-process cache.
"""
import hashlib
import os
from datetime import timedelta
from pathlib import Path

import sqlalchemy

PACKAGE_DIR = Path(__file__).resolve().parent
# Secrets that must never run in production: the tutorial's fallback among them.
KNOWN_BAD_SECRETS = {"", "dev", "dev_key", "secret", "changeme", "change-me"}

# The tutorial's pylibmc behaviours, with shorter timeouts: a cache that does not answer within
# half a second is treated as down, and the page is built from the database instead.
# A failed server is never dropped from the ring (no remove_failed): its keys are misses until it
# answers again, so no copy ever lands on another server where a later write would not reach it.
# A client skips a failed server for retry_timeout (1 s, libmemcached's minimum); invalidations
# retry on a new connection, so they reach a server that has just come back (see store.py).
MEMCACHED_BEHAVIORS = {
    "tcp_nodelay": True,
    "tcp_keepalive": True,
    "connect_timeout": 500,  # ms
    "send_timeout": 500_000,  # us
    "receive_timeout": 500_000,  # us
    "_poll_timeout": 500,  # ms
    "ketama": True,
    "retry_timeout": 1,
    "cas": True,
}


def env(name, default=None):
    value = os.environ.get(name, "").strip()
    return value if value else default


def database_url(instance_path):
    if not env("RDS_HOSTNAME"):
        return "sqlite:///" + os.path.join(instance_path, "task_list.sqlite")
    # URL.create quotes every part, so a password full of symbols is fine.
    return sqlalchemy.URL.create(
        "mysql+mysqldb",
        username=env("RDS_USERNAME"),
        password=os.environ.get("RDS_PASSWORD", ""),
        host=env("RDS_HOSTNAME"),
        port=int(env("RDS_PORT", "3306")),
        database=env("RDS_DB_NAME"),
        query={"charset": "utf8mb4"},
    )


def engine_options(url):
    if isinstance(url, str) and url.startswith("sqlite"):
        return {}
    return {
        "pool_pre_ping": True,
        # Below MySQL's wait_timeout (28,800 s by default on RDS), so no pooled connection dies idle.
        "pool_recycle": 280,
        # A database that is down fails the request in seconds, with a 503, not a hang.
        "connect_args": {"connect_timeout": 5},
    }


def memcached_servers():
    return [s.strip() for s in env("MEMCACHIER_SERVERS", "").split(",") if s.strip()]


def release():
    """What identifies this release: APP_RELEASE, or a digest of the app's own files."""
    if env("APP_RELEASE"):
        return env("APP_RELEASE")
    digest = hashlib.sha1()
    for path in sorted(PACKAGE_DIR.rglob("*")):
        if path.is_file() and path.suffix in (".py", ".html", ".css"):
            digest.update(path.relative_to(PACKAGE_DIR).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


def database_identity(url):
    """A short tag that differs between environments with different databases."""
    text = url if isinstance(url, str) else url.render_as_string(hide_password=True)
    return hashlib.sha1(text.encode()).hexdigest()[:6]


def from_environment(instance_path):
    url = database_url(instance_path)
    servers = memcached_servers()
    db_tag = database_identity(url)
    this_release = release()
    # Always ends with the database's identity: apps on different databases share no entry.
    # No release in it: what says the data changed must reach every release (caching.py).
    prefix = f"{env('CACHE_KEY_PREFIX', 'task-list:')}{db_tag}:"
    config = {
        "RELEASE": this_release,
        "SECRET_KEY": os.environ.get("SECRET_KEY", ""),
        "SQLALCHEMY_DATABASE_URI": url,
        "SQLALCHEMY_ENGINE_OPTIONS": engine_options(url),
        "MEMCACHED_SERVERS": servers,
        "MEMCACHED_USERNAME": env("MEMCACHIER_USERNAME"),
        "MEMCACHED_PASSWORD": env("MEMCACHIER_PASSWORD"),
        "MEMCACHED_POOL_SIZE": int(env("MEMCACHED_POOL_SIZE", "16")),
        # Which layers are on: query, fragments, view. The benchmark turns them off one by one.
        # An empty CACHE_LAYERS is meaningful (caching off), so it is read without env()'s default.
        "CACHE_LAYERS": set(os.environ.get("CACHE_LAYERS", "query,fragments,view")
                            .replace(" ", "").split(",")) - {""},
        "CACHE_KEY_PREFIX": prefix,
        # Every entry expires: what a lost invalidation leaves stale lives no longer than this.
        "CACHE_DEFAULT_TIMEOUT": int(env("CACHE_DEFAULT_TIMEOUT", "300")),
        "FRAGMENT_TIMEOUT": int(env("FRAGMENT_TIMEOUT", "86400")),
        "TASKS_PER_PAGE": int(env("TASKS_PER_PAGE", "50")),
        # Logs every SQL statement and every page built: tests count them; never in production.
        "LOG_QUERIES": env("LOG_QUERIES", "0") == "1",
        "SESSION_KEY_PREFIX": prefix + "session:",
        "PERMANENT_SESSION_LIFETIME": timedelta(hours=int(env("SESSION_HOURS", "12"))),
        # Saving only when the session changes spares a memcached write on every page view.
        "SESSION_REFRESH_EACH_REQUEST": False,
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": env("SESSION_COOKIE_SECURE", "0") == "1",
        "MAX_CONTENT_LENGTH": 64 * 1024,
    }
    # Flask-Caching's memcached backend on the app's safe client (backends.py).
    config["CACHE_TYPE"] = "task_list.backends.MemcachedCache" if servers else "SimpleCache"
    return config
