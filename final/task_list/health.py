"""GET /health: the database and the cache, reported separately.

200 while the database answers, even with the cache degraded; 503 only when the database is down.
Anyone can ask, so it names no host and no release: only whether each part works.
"""
from flask import Blueprint, jsonify
from sqlalchemy import text

from task_list import caching
from task_list.db import db

bp = Blueprint("health", __name__)


@bp.get("/health")
def health():
    try:
        db.session.execute(text("SELECT 1"))
        database = {"ok": True}
    except Exception as exc:  # any driver error means the database is not usable
        db.session.rollback()
        database = {"ok": False, "error": type(exc).__name__}
    servers = caching.store().stats()
    cache = {
        "backend": "memcached" if servers else "in-process",
        "ok": all(s["ok"] for s in servers),
        "servers": len(servers),
        "answering": sum(s["ok"] for s in servers),
    }
    status = "down" if not database["ok"] else ("ok" if cache["ok"] else "degraded")
    body = {"status": status, "database": database, "cache": cache}
    return jsonify(body), 503 if status == "down" else 200
