from task_list.db import db

MAX_NAME_LENGTH = 500


class Task(db.Model):
    id = db.Column(db.Integer, primary_key=True)
    name = db.Column(db.String(MAX_NAME_LENGTH), nullable=False)

    def __repr__(self):
        return f"<Task {self.id}: {self.name!r}>"
