"""The task list: list, add and delete (every POST ends in a redirect), and /me."""
from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from flask_caching import make_template_fragment_key
from sqlalchemy import select

from task_list.caching import cache
from task_list.db import db
from task_list.models import Task

bp = Blueprint("tasks", __name__)


@cache.memoize()
def get_all_tasks():
    """Every task, as plain dicts: they pickle small and unpickle without a session."""
    rows = db.session.execute(select(Task.id, Task.name).order_by(Task.id)).mappings()
    return [dict(row) for row in rows]


def invalidate_task_list():
    """Forget the cached list after a write, so the next load reads the database again."""
    cache.delete_memoized(get_all_tasks)
    cache.delete("view//")  # the cached front page: "view/" + request.path


def skip_view_cache():
    """Build the page afresh when it is not a GET, or when a flash message waits to be shown:
    a page holding one visitor's message must never be stored for everyone."""
    return request.method != "GET" or "_flashes" in session


@bp.get("/")
@cache.cached(unless=skip_view_cache)
def index():
    return render_template("tasks/index.html", tasks=get_all_tasks())


@bp.post("/")
def add():
    name = request.form.get("name", "").strip()
    if not name:
        flash("Task name is required.")
    else:
        task = Task(name=name)
        db.session.add(task)
        db.session.commit()
        invalidate_task_list()
        # Remember this visitor's newest tasks in their session (kept in memcached).
        session["added"] = ([task.id] + session.get("added", []))[:20]
    return redirect(url_for("tasks.index"))


@bp.post("/<int:task_id>/delete")
def delete(task_id):
    task = db.session.get(Task, task_id)
    if task is not None:
        db.session.delete(task)
        db.session.commit()
        invalidate_task_list()
        # SQLite hands a deleted id to the next new task: its row must not show this one's name.
        cache.delete(make_template_fragment_key("task-fragment", vary_on=[str(task_id)]))
    return redirect(url_for("tasks.index"))


@bp.get("/me")
def me():
    """The tasks this visitor added in this session. Never cached: it differs per visitor."""
    ids = session.get("added", [])
    tasks = []
    if ids:
        query = select(Task).where(Task.id.in_(ids)).order_by(Task.id)
        tasks = db.session.execute(query).scalars().all()
    return render_template("tasks/me.html", tasks=tasks)
