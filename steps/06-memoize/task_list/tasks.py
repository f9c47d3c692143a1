"""The task list: list, add and delete. Every POST ends in a redirect (post/redirect/get)."""
from flask import Blueprint, flash, redirect, render_template, request, url_for
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


@bp.get("/")
def index():
    return render_template("tasks/index.html", tasks=get_all_tasks())


@bp.post("/")
def add():
    name = request.form.get("name", "").strip()
    if not name:
        flash("Task name is required.")
    else:
        db.session.add(Task(name=name))
        db.session.commit()
        invalidate_task_list()
    return redirect(url_for("tasks.index"))


@bp.post("/<int:task_id>/delete")
def delete(task_id):
    task = db.session.get(Task, task_id)
    if task is not None:
        db.session.delete(task)
        db.session.commit()
        invalidate_task_list()
    return redirect(url_for("tasks.index"))
