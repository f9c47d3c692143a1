"""The task list app: create_app() builds it, configured from the environment."""
import os
import secrets

from flask import Flask

from task_list import settings
from task_list.db import db, migrate

# migrations/ sits next to the package, so `flask db` finds it from any working directory.
MIGRATIONS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "migrations")


def create_app(test_config=None):
    app = Flask(__name__, instance_relative_config=True)
    os.makedirs(app.instance_path, exist_ok=True)
    app.config.from_mapping(settings.from_environment(app.instance_path))
    if test_config:
        app.config.update(test_config)
    if not app.config["SECRET_KEY"]:
        if not (app.debug or app.testing):
            raise RuntimeError("SECRET_KEY is not set: export SECRET_KEY=<a long random string> "
                               "(on Elastic Beanstalk: eb setenv SECRET_KEY=...)")
        # A throwaway key, only ever in debug or tests: sessions end when the app restarts.
        app.config["SECRET_KEY"] = secrets.token_hex()

    db.init_app(app)
    migrate.init_app(app, db, directory=MIGRATIONS)

    from task_list import models, tasks  # noqa: F401  (models: so migrations see the Task table)

    app.register_blueprint(tasks.bp)
    return app
