"""Where the checker leaves an app's latest verdicts, and the lock that lets one checker run per app.

`make check`, `make watch` and `make progress` write build/results/<app>.json in the results
model's format (checks/results.py); the dashboard reads that file as data. One checker runs at a
time per app: an flock on build/results/<app>.lock. Whoever wants a check while another holds the
lock asks for one (a request file), and the holder (`make watch`) runs it next. Standard library only.
"""
import contextlib
import fcntl
import hashlib
import json
import os
import re
import time
from pathlib import Path

from runtime import ROOT

RESULTS_DIR = ROOT / "build" / "results"
ATTEMPTS = 5


class Busy(Exception):
    """Another checker holds this app's lock."""


def slug(app_dir):
    """A file name for APP_DIR: its path under the repository, or its name and a short hash."""
    path = Path(app_dir).resolve()
    try:
        name = path.relative_to(ROOT).as_posix()
    except ValueError:
        name = f"{path.name}-{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    return re.sub(r"[^\w.-]", "_", name.replace("/", "__")) or "app"


def results_file(app_dir):
    return RESULTS_DIR / f"{slug(app_dir)}.json"


def request_file(app_dir):
    return RESULTS_DIR / f"{slug(app_dir)}.request"


@contextlib.contextmanager
def exclusive(app_dir):
    """Hold APP_DIR's checker lock for the block; Busy when another process holds it."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    with open(RESULTS_DIR / f"{slug(app_dir)}.lock", "a") as lock:
        for attempt in range(ATTEMPTS):
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt == ATTEMPTS - 1:
                    raise Busy(f"a checker is already running on {Path(app_dir).name}/") from None
                time.sleep(0.05)  # held() probes the lock for an instant: only a real holder stays
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def held(app_dir):
    """Whether a checker holds APP_DIR's lock now."""
    try:
        with exclusive(app_dir):
            return False
    except Busy:
        return True


def ask(app_dir):
    """Ask the checker that holds the lock for one more run."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    request_file(app_dir).touch()


def asked(app_dir):
    """Whether a run was asked for since the last call; the request is consumed."""
    try:
        request_file(app_dir).unlink()
        return True
    except FileNotFoundError:
        return False


def write(app_dir, data):
    """Replace APP_DIR's results file at once: a reader never sees half of it."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    target = results_file(app_dir)
    temporary = target.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n",
                         encoding="utf-8")
    os.replace(temporary, target)


def read(app_dir):
    """APP_DIR's latest results, or None when no checker has written any (or the file is damaged)."""
    try:
        data = json.loads(results_file(app_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
