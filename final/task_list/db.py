"""The database: the SQLAlchemy and Migrate extensions, and what ends a request's session."""
import logging

from flask import render_template
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.exc import InterfaceError, OperationalError
from werkzeug.exceptions import InternalServerError

db = SQLAlchemy()
migrate = Migrate()
log = logging.getLogger("task_list")
# MySQL error codes that mean the database cannot be reached (or dropped the connection).
UNREACHABLE = {1040, 1045, 1049, 1053, 2002, 2003, 2005, 2006, 2013, 2055}


def init_app(app, migrations):
    db.init_app(app)
    # Registered after Flask-SQLAlchemy's own teardown, so it runs first.
    app.teardown_appcontext(close_session)
    migrate.init_app(app, db, directory=migrations)
    app.register_error_handler(OperationalError, database_down)
    app.register_error_handler(InterfaceError, database_down)


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


def database_down(error):
    orig = getattr(error, "orig", None)
    code = orig.args[0] if orig is not None and orig.args else None
    if not (error.connection_invalidated or code in UNREACHABLE):
        # Any other database error is a bug, not an outage: a 500 page, logged with its traceback.
        log.exception("database error")
        return render_template("error.html", error=InternalServerError(), flashes=()), 500
    log.error("database unreachable: %s", error)
    try:
        db.session.rollback()
    except Exception:  # the connection may be gone too; the next request gets a fresh one
        pass
    return render_template("error.html", error=None, flashes=()), 503
