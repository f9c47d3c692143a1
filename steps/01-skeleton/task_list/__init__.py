"""The task list app: create_app() builds it, configured from the environment."""
import os
import secrets

from flask import Flask

from task_list import settings


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

    @app.get("/")
    def index():
        return "<h1>Task List</h1><p>The skeleton works. Tasks arrive in step 02.</p>"

    return app
