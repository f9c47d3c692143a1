"""The app's one Cache; create_app() connects it to memcached, or to process memory without it."""
from flask_caching import Cache

cache = Cache()
