"""The task list app: create_app() builds it, configured from the environment."""
import io
import logging
import os
import secrets

from flask import Flask, render_template
from werkzeug.exceptions import HTTPException

from task_list import caching, csrf, db, settings
from task_list.caching import cache
from task_list.fastpath import FrontPage
from task_list.sessions import SessionInterface
from task_list.store import LocalStore, Memcache, quiet_cache_logs

log = logging.getLogger("task_list")
MIGRATIONS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "migrations")
MIN_SECRET_LENGTH = 32


class ConfigError(RuntimeError):
    """The environment does not allow the app to start; the message says how to fix it."""


def create_app(test_config=None):
    app = Flask(__name__, instance_relative_config=True)
    os.makedirs(app.instance_path, exist_ok=True)
    app.config.from_mapping(settings.from_environment(app.instance_path))
    if test_config:
        app.config.update(test_config)
    check_secret_key(app)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    quiet_cache_logs()
    if app.config["LOG_QUERIES"]:
        # For tests and debugging: every SQL statement and every page built, in the log.
        logging.getLogger("sqlalchemy.engine").setLevel(logging.INFO)
        logging.getLogger("task_list.builds").setLevel(logging.DEBUG)
    db.init_app(app, MIGRATIONS)
    init_store_and_sessions(app)
    # The fast path first: it answers only what Inbound would pass on unchanged.
    app.wsgi_app = FrontPage(app, Inbound(app.wsgi_app, app.config["MAX_CONTENT_LENGTH"]))
    cache.init_app(app)
    csrf.init_app(app)

    from task_list import health, tasks

    app.register_blueprint(tasks.bp)
    app.register_blueprint(health.bp)
    app.register_error_handler(HTTPException, http_error)
    prefix = app.config["CACHE_KEY_PREFIX"]
    log.info("cache keys start with %s; this release's own with %s%s:", prefix, prefix,
             app.config["RELEASE"])
    return app


def check_secret_key(app):
    secret = app.config["SECRET_KEY"]
    if secret not in settings.KNOWN_BAD_SECRETS and len(secret) >= MIN_SECRET_LENGTH:
        return
    if app.debug or app.testing:
        app.config["SECRET_KEY"] = secrets.token_hex(32)
        return
    raise ConfigError(
        f"SECRET_KEY is not set, is a well-known default or is shorter than {MIN_SECRET_LENGTH} "
        "characters. Set one before starting the app, for example: "
        "eb setenv SECRET_KEY=$(python3 -c 'import secrets; print(secrets.token_hex(32))')")


def init_store_and_sessions(app):
    servers = app.config["MEMCACHED_SERVERS"]
    if servers:
        store = Memcache(servers, app.config["MEMCACHED_USERNAME"], app.config["MEMCACHED_PASSWORD"],
                         settings.MEMCACHED_BEHAVIORS, app.config["MEMCACHED_POOL_SIZE"],
                         app.config["SECRET_KEY"])
        sessions = store
    else:
        from cachelib import FileSystemCache

        log.info("MEMCACHIER_SERVERS is not set: using an in-process cache, which is per process")
        store = LocalStore()
        sessions = FileSystemCache(os.path.join(app.instance_path, "sessions"), threshold=10_000)
    app.extensions["task_list.store"] = store
    app.extensions[caching.REBUILDS] = caching.Rebuilds()
    app.session_interface = SessionInterface(app, sessions, app.config["SESSION_KEY_PREFIX"])


class Inbound:
    """Two rules applied to every request before Flask sees it.

    - The app is served at the site's root: gunicorn takes SCRIPT_NAME from a request header sent
      from loopback, and Flask would put it in every URL of a page that is cached for everyone.
    - A chunked body (no Content-Length) is read whole up to the limit: Werkzeug would cut one
      over MAX_CONTENT_LENGTH short and parse the rest; here it answers 413 like any large body.
    """

    def __init__(self, wsgi_app, max_length):
        self.wsgi_app, self.max_length = wsgi_app, max_length

    def __call__(self, environ, start_response):
        environ["PATH_INFO"] = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
        environ["SCRIPT_NAME"] = ""
        # gunicorn marks every request's input terminated; only a chunked one has a body to read.
        if (environ.get("HTTP_TRANSFER_ENCODING") and not environ.get("CONTENT_LENGTH")
                and environ.get("wsgi.input_terminated")):
            body = environ["wsgi.input"].read(self.max_length + 1)
            # A length over the limit makes Flask answer 413 before any view reads the form.
            environ["wsgi.input"], environ["CONTENT_LENGTH"] = io.BytesIO(body), str(len(body))
            # Werkzeug ignores the length while the request says it is chunked.
            environ.pop("HTTP_TRANSFER_ENCODING", None)
        return self.wsgi_app(environ, start_response)


def http_error(error):
    # flashes=(): an error page never reads the session, so it neither shows nor uses up a message.
    return render_template("error.html", error=error, flashes=()), error.code
