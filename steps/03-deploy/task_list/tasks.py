"""The task list: list, add and delete. Every POST ends in a redirect (post/redirect/get)."""
from flask import Blueprint, flash, redirect, render_template, request, url_for
from sqlalchemy import select

from task_list.db import db
from task_list.models import Task

bp = Blueprint("tasks", __name__)


@bp.get("/")
def index():
    tasks = db.session.execute(select(Task).order_by(Task.id)).scalars().all()
    return render_template("tasks/index.html", tasks=tasks)


@bp.post("/")
def add():
    name = request.form.get("name", "").strip()
    if not name:
        flash("Task name is required.")
    else:
        db.session.add(Task(name=name))
        db.session.commit()
    return redirect(url_for("tasks.index"))


@bp.post("/<int:task_id>/delete")
def delete(task_id):
    task = db.session.get(Task, task_id)
    if task is not None:
        db.session.delete(task)
        db.session.commit()
    return redirect(url_for("tasks.index"))
