"""Elastic Beanstalk imports `application` from this file."""
import sys

from task_list import ConfigError, create_app

try:
    application = create_app()
except ConfigError as exc:
    sys.exit(f"task_list: {exc}")

if __name__ == "__main__":
    application.run()
