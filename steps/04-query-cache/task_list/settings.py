"""Configuration from the environment, with the names Elastic Beanstalk and MemCachier use.

RDS_* select MySQL (Elastic Beanstalk sets them when the environment has a database);
without them the app keeps a SQLite file in its instance folder.
MEMCACHIER_* select memcached: SASL with a username, plain without one; without servers the
app caches in its own process memory.
"""
import os

import sqlalchemy

# pylibmc behaviours: small requests go out at once, and a dead server is skipped quickly.
MEMCACHED_BEHAVIORS = {
    "tcp_nodelay": True,
    "tcp_keepalive": True,
    "connect_timeout": 2000,  # ms
    "send_timeout": 750 * 1000,  # us
    "receive_timeout": 750 * 1000,  # us
    "_poll_timeout": 2000,  # ms
    "ketama": True,  # consistent hashing: adding a server remaps few keys
    "remove_failed": 1,
    "retry_timeout": 2,
    "dead_timeout": 30,
}


def database_url(instance_path):
    if not os.environ.get("RDS_HOSTNAME"):
        return "sqlite:///" + os.path.join(instance_path, "task_list.sqlite")
    # URL.create quotes every part, so a password full of symbols is fine.
    return sqlalchemy.URL.create(
        "mysql+mysqldb",
        username=os.environ["RDS_USERNAME"],
        password=os.environ["RDS_PASSWORD"],
        host=os.environ["RDS_HOSTNAME"],
        port=int(os.environ.get("RDS_PORT", "3306")),
        database=os.environ["RDS_DB_NAME"],
        query={"charset": "utf8mb4"},
    )


def cache_config():
    servers = [s.strip() for s in os.environ.get("MEMCACHIER_SERVERS", "").split(",") if s.strip()]
    if not servers:
        return {"CACHE_TYPE": "SimpleCache"}
    return {
        "CACHE_TYPE": "SASLMemcachedCache",
        "CACHE_MEMCACHED_SERVERS": servers,
        # Both keys must be present; None (no username) means plain memcached without SASL.
        "CACHE_MEMCACHED_USERNAME": os.environ.get("MEMCACHIER_USERNAME") or None,
        "CACHE_MEMCACHED_PASSWORD": os.environ.get("MEMCACHIER_PASSWORD") or None,
        # A pylibmc client serves one thread at a time; Elastic Beanstalk runs 15 threads.
        "CACHE_OPTIONS": {"behaviors": MEMCACHED_BEHAVIORS, "pool_size": 16},
    }


def from_environment(instance_path):
    return {
        "SECRET_KEY": os.environ.get("SECRET_KEY"),
        "SQLALCHEMY_DATABASE_URI": database_url(instance_path),
        # Test each pooled connection before use, and renew it before MySQL drops it as idle.
        "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": True, "pool_recycle": 280},
        **cache_config(),
    }
