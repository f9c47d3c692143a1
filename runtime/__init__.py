"""What the checker, the tests, the notebooks and the tools stand on: the local services, the app
harness, the visitor and memcached's protocol. Standard library only here: `make services` imports
this package with the system python3, before the virtualenv exists."""
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the repository

# What running or developing an app leaves in its folder: never part of a copy of the app.
LEFTOVERS = (".git", "__pycache__", "*.pyc", "instance", ".venv", "venv", "*.sqlite", ".pytest_cache",
             ".elasticbeanstalk", ".DS_Store")
# What sits beside a checkpoint's code in steps/NN-*/: its lesson, and its diff from the one before.
LESSON, DIFF_NAME = "README.md", "CHANGES.diff"


class UsageError(Exception):
    """A command was called wrongly; its message is the one line the person reads."""
