"""The task list: add, list (paginated) and delete, plus /me, which reads the session."""
import logging
import time
import unicodedata

from flask import (Blueprint, Response, abort, current_app, flash, get_flashed_messages, redirect,
                   render_template, request, session, url_for)
from sqlalchemy import select

from task_list import caching, sessions
from task_list.caching import cache
from task_list.db import db
from task_list.models import MAX_NAME_LENGTH, Task

bp = Blueprint("tasks", __name__)
log = logging.getLogger("task_list")
builds = logging.getLogger("task_list.builds")  # on in the log only with LOG_QUERIES=1
REMEMBERED = 20  # how many of a visitor's own tasks /me lists
MAX_PAGE = 10_000_000  # far beyond any list; keeps the OFFSET a number MariaDB accepts
# Bidi controls reorder the text around them on the page (U+202E shows "txt.exe" as "exe.txt").
# Joiners (U+200C, U+200D) are not among them: scripts and emoji need them.
BIDI_CONTROLS = {chr(c) for c in [0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F),
                                  *range(0x2066, 0x206A)]}


def this_release(name):
    # Memoized data is tagged with the release, so a release never reads a shape it did not write.
    return f"{name}:{current_app.config['RELEASE']}"


# An empty page is not stored: a visitor asking for page 999999 fills no memory.
@cache.memoize(make_name=this_release, response_filter=lambda data: bool(data["tasks"]))
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


def build_page(page, flashes=()):
    """The whole page as bytes, and when its data was read from the database."""
    data = task_page(page)
    if page > 1 and not data["tasks"]:
        abort(404)
    html = render_template("tasks/index.html", rows=caching.render_rows(data["tasks"]), page=page,
                           has_next=data["has_next"], flashes=flashes)
    builds.debug("page %d built", page)
    return html.encode(), data["read_at"]


@bp.get("/")
def index():
    page = request.args.get("page", 1, type=int)
    if not 1 <= page <= MAX_PAGE:
        abort(404)
    if sessions.flash_waiting():
        # No ETag: a 304 would leave the message waiting.
        html, _ = build_page(page, get_flashed_messages(with_categories=True))
        return Response(html, mimetype="text/html", headers={"Cache-Control": "no-cache, private"})
    if page == 1:
        html, etag = caching.cached_front_page(lambda: build_page(1))
    else:
        html = build_page(page)[0]
        etag = caching.etag_of(html)
    # The warm front page is usually answered before Flask, by fastpath.py, with these headers.
    headers = caching.page_headers(etag)
    if "If-None-Match" in request.headers and etag in request.if_none_match:
        return Response(status=304, headers=headers)
    return Response(html, mimetype="text/html", headers=headers)


def name_problem(name):
    """Why NAME (already trimmed) cannot be stored, or None."""
    if not name:
        return "Task name is required."
    if len(name) > MAX_NAME_LENGTH:
        return f"That task name has {len(name)} characters; the limit is {MAX_NAME_LENGTH}."
    for position, char in enumerate(name, 1):
        if char in BIDI_CONTROLS or unicodedata.category(char) == "Cc":
            return (f"Task names cannot hold control characters or text-direction controls "
                    f"(U+{ord(char):04X} at position {position}).")
    return None


@bp.post("/")
def add():
    name = request.form.get("name", "").strip()
    problem = name_problem(name)
    if problem:
        flash(problem, "error")
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
