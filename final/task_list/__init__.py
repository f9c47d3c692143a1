"""The task list app: create_app() builds it, configured from the environment."""
import logging
import os
import secrets

from flask import Flask, render_template
from flask_session import Session
from sqlalchemy.exc import OperationalError, InterfaceError
from werkzeug.exceptions import HTTPException, InternalServerError

from task_list import csrf, settings
from task_list.caching import cache
from task_list.db import db, migrate
from task_list.store import LocalStore, Memcache

log = logging.getLogger("task_list")


class ConfigError(RuntimeError):
    """The environment does not allow the app to start; the message says how to fix it."""
MIGRATIONS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "migrations")


def create_app(test_config=None):
    app = Flask(__name__, instance_relative_config=True)
    os.makedirs(app.instance_path, exist_ok=True)
    app.config.from_mapping(settings.from_environment(app.instance_path))
    if test_config:
        app.config.update(test_config)
    check_secret_key(app)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    db.init_app(app)
    # Registered after Flask-SQLAlchemy's own teardown, so it runs first.
    app.teardown_appcontext(close_session)
    migrate.init_app(app, db, directory=MIGRATIONS)
    cache.init_app(app)
    init_store_and_sessions(app)
    csrf.init_app(app)

    from task_list import health, tasks

    app.register_blueprint(tasks.bp)
    app.register_blueprint(health.bp)
    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(OperationalError, database_down)
    app.register_error_handler(InterfaceError, database_down)
    return app


def check_secret_key(app):
    if app.config["SECRET_KEY"] not in settings.KNOWN_BAD_SECRETS:
        return
    if app.debug or app.testing:
        app.config["SECRET_KEY"] = secrets.token_hex(32)
        return
    raise ConfigError(
        "SECRET_KEY is not set (or is a well-known default). Set it before starting the app, "
        "for example: eb setenv SECRET_KEY=$(python3 -c 'import secrets; print(secrets.token_hex(32))')")


def init_store_and_sessions(app):
    servers = app.config["MEMCACHED_SERVERS"]
    if servers:
        store = Memcache(servers, app.config["MEMCACHED_USERNAME"], app.config["MEMCACHED_PASSWORD"],
                         settings.MEMCACHED_BEHAVIORS, app.config["MEMCACHED_POOL_SIZE"])
        app.config.update(SESSION_TYPE="memcached", SESSION_MEMCACHED=store)
    else:
        from cachelib import FileSystemCache

        log.info("MEMCACHIER_SERVERS is not set: using an in-process cache, which is per process")
        store = LocalStore()
        app.config.update(SESSION_TYPE="cachelib", SESSION_CACHELIB=FileSystemCache(
            os.path.join(app.instance_path, "sessions"), threshold=10_000))
    app.extensions["task_list.store"] = store
    Session(app)


def close_session(error):
    """End the request's database session even when the database went away mid-request.

    The rollback on a lost connection fails; left alone, that turns a page already rendered (or a
    503 page) into a bare 500. The pool discards the dead connection either way.
    """
    try:
        db.session.remove()
    except (OperationalError, InterfaceError) as exc:
        log.warning("database connection lost at the end of a request: %s", exc)
        db.session.registry.clear()


def http_error(error):
    return render_template("error.html", error=error), error.code


# MySQL error codes that mean the database cannot be reached (or dropped the connection).
UNREACHABLE = {1040, 1045, 1049, 1053, 2002, 2003, 2005, 2006, 2013, 2055}


def database_down(error):
    orig = getattr(error, "orig", None)
    code = orig.args[0] if orig is not None and orig.args else None
    if not (error.connection_invalidated or code in UNREACHABLE):
        # Any other database error is a bug, not an outage: a 500 page, logged with its traceback.
        log.exception("database error")
        return render_template("error.html", error=InternalServerError()), 500
    log.error("database unreachable: %s", error)
    try:
        db.session.rollback()
    except Exception:  # the connection may be gone too; the next request gets a fresh one
        pass
    return render_template("error.html", error=None), 503
