"""The task list: add, list (paginated) and delete, plus /me, which reads the session."""
import hashlib
import logging
import time

from flask import (Blueprint, current_app, flash, redirect, render_template, request, session,
                   url_for)
from markupsafe import Markup
from sqlalchemy import select

from task_list import caching, csrf
from task_list.caching import cache
from task_list.db import db
from task_list.models import MAX_NAME_LENGTH, Task

bp = Blueprint("tasks", __name__)
log = logging.getLogger("task_list")
REMEMBERED = 20  # how many of a visitor's own tasks /me lists
LAYOUT_SLOT = "<!--content-->"  # where a page's content goes in the layout rendered once


@cache.memoize()
def get_task_page(page):
    """One page of tasks, newest first, as plain data (never ORM objects) so it caches safely."""
    size = current_app.config["TASKS_PER_PAGE"]
    rows = db.session.execute(
        select(Task.id, Task.name).order_by(Task.id.desc()).offset((page - 1) * size).limit(size + 1)
    ).all()
    return {"tasks": [(row.id, row.name) for row in rows[:size]], "has_next": len(rows) > size,
            "read_at": time.time()}


def task_page(page):
    if caching.layer_on("query"):
        return get_task_page(page)
    return get_task_page.uncached(page)


def render_list(page):
    """The list's HTML, and when its data was read from the database."""
    data = task_page(page)
    html = render_template("tasks/_list.html", rows=caching.render_rows(data["tasks"]),
                           page=page, has_next=data["has_next"], csrf_placeholder=csrf.PLACEHOLDER)
    return html, data["read_at"]


@bp.get("/")
def index():
    page = max(request.args.get("page", 1, type=int), 1)
    if page == 1:
        content = caching.cached_front_page(lambda: render_list(1))
    else:
        content = render_list(page)[0]
    html = csrf.personalise(layout(content))
    # Same bytes, same ETag: a browser's repeat visit costs a 304, not the whole page again.
    # no-cache: revalidate every time, the list changes; private: it holds this visitor's token.
    etag = hashlib.md5(html.encode(), usedforsecurity=False).hexdigest()
    headers = {"ETag": f'"{etag}"', "Cache-Control": "no-cache, private"}
    if "If-None-Match" in request.headers and etag in request.if_none_match:
        return "", 304, headers
    return html, headers


def layout(content):
    """CONTENT inside the page layout. Without flash messages the layout is the same for every
    visitor, so each process renders it once and reuses it (it holds no token and no data)."""
    if session.get("_flashes"):
        return render_template("tasks/index.html", content=Markup(content))
    shells = current_app.extensions.setdefault("task_list.layout", {})
    if request.script_root not in shells:
        html = render_template("tasks/index.html", content=Markup(LAYOUT_SLOT))
        shells[request.script_root] = html.split(LAYOUT_SLOT)
    before, after = shells[request.script_root]
    return before + content + after


@bp.post("/")
def add():
    name = request.form.get("name", "").strip()
    if not name:
        flash("Task name is required.", "error")
    elif len(name) > MAX_NAME_LENGTH:
        flash(f"That task name has {len(name)} characters; the limit is {MAX_NAME_LENGTH}.", "error")
    else:
        task = Task(name=name)
        db.session.add(task)
        db.session.commit()
        caching.invalidate_task_list(get_task_page)
        session["added"] = ([task.id] + session.get("added", []))[:REMEMBERED]
    return redirect(url_for("tasks.index"))


@bp.post("/<int:task_id>/delete")
def delete(task_id):
    task = db.session.get(Task, task_id)
    if task is None:
        flash("That task was already deleted.", "error")
    else:
        db.session.delete(task)
        db.session.commit()
        caching.invalidate_task_list(get_task_page)
    return redirect(url_for("tasks.index"))


@bp.get("/me")
def me():
    """Tasks added in this session. Not on the cached page: the session is per visitor."""
    ids = session.get("added", [])
    tasks = db.session.execute(select(Task).where(Task.id.in_(ids)).order_by(Task.id.desc())).scalars().all() if ids else []
    return render_template("tasks/me.html", tasks=tasks)
