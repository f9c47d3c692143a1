from task_list.db import db


class Task(db.Model):
    id = db.Column(db.Integer, primary_key=True)
    name = db.Column(db.String(500), nullable=False)

    def __repr__(self):
        return f"<Task {self.id}: {self.name!r}>"
