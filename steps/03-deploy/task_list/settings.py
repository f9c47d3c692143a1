"""Configuration from the environment, with the names Elastic Beanstalk uses.

RDS_* select MySQL (Elastic Beanstalk sets them when the environment has a database);
without them the app keeps a SQLite file in its instance folder.
"""
import os

import sqlalchemy


def database_url(instance_path):
    if not os.environ.get("RDS_HOSTNAME"):
        return "sqlite:///" + os.path.join(instance_path, "task_list.sqlite")
    # URL.create quotes every part, so a password full of symbols is fine.
    return sqlalchemy.URL.create(
        "mysql+mysqldb",
        username=os.environ["RDS_USERNAME"],
        password=os.environ["RDS_PASSWORD"],
        host=os.environ["RDS_HOSTNAME"],
        port=int(os.environ.get("RDS_PORT", "3306")),
        database=os.environ["RDS_DB_NAME"],
        query={"charset": "utf8mb4"},
    )


def from_environment(instance_path):
    return {
        "SECRET_KEY": os.environ.get("SECRET_KEY"),
        "SQLALCHEMY_DATABASE_URI": database_url(instance_path),
        # Test each pooled connection before use, and renew it before MySQL drops it as idle.
        "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": True, "pool_recycle": 280},
    }
