"""The learner's app on the dashboard: each stage DONE or PENDING, the first stage that does not
pass with its failing expectations, and a "check now" button.

The checker (`make check`, `make watch`, `make progress`) writes the app's latest verdicts to
build/results/<app>.json (runtime.checkruns); this module reads that file as data and never
judges. "Check now" asks the checker that holds the app's lock (`make watch`) for a run, or, when
none does, starts `python -m checks progress APP --quiet`, which takes the lock itself: never a
second checker beside watch. Standard library only.
"""
import subprocess
import sys
import tempfile
import threading
from datetime import datetime, timezone
from pathlib import Path

from runtime import checkruns, processes

STATUSES = ("DONE", "PENDING", "NOT JUDGED", "UNCHECKED")


def shown(app_dir):
    """APP_DIR as the learner names it: under the repository, else whole."""
    path = Path(app_dir).resolve()
    try:
        return path.relative_to(checkruns.ROOT).as_posix() + "/"
    except ValueError:
        return str(path) + "/"


def text(value):
    return value if isinstance(value, str) else "" if value is None else str(value)


def items(value):
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def age(updated, now=None):
    """Whole seconds since the ISO 8601 time UPDATED, or None when it cannot be read."""
    try:
        then = datetime.fromisoformat(text(updated))
    except ValueError:
        return None
    if then.tzinfo is None:
        then = then.replace(tzinfo=timezone.utc)
    return max(0, round(((now or datetime.now(timezone.utc)) - then).total_seconds()))


def panel(data):
    """What the page shows from one results file (None when the app was never checked).

    The file is the checker's; a field it lacks (an older checker wrote it) shows as empty."""
    if not data:
        return None
    stages = [{"number": text(s.get("number")), "title": text(s.get("title")),
               "status": s.get("status") if s.get("status") in STATUSES else "UNCHECKED",
               "failing": [text(f) for f in s["failing"]] if isinstance(s.get("failing"), list) else []}
              for s in items(data.get("stages"))]
    focus = data.get("focus") if isinstance(data.get("focus"), dict) else None
    if focus:
        focus = {"stage": text(focus.get("stage")), "title": text(focus.get("title")),
                 "lesson": text(focus.get("lesson")),
                 "failures": [{key: text(f.get(key)) for key in
                               ("text", "observed", "cause", "hint", "reread", "stall")}
                              for f in items(focus.get("failures"))]}
    placement = data.get("placement") if isinstance(data.get("placement"), dict) else {}
    points = data.get("points") if isinstance(data.get("points"), dict) else {}
    return {"updated": text(data.get("updated")), "age": age(data.get("updated")),
            "command": text(data.get("command")), "stages": stages, "focus": focus,
            "machine_stalled": text(data.get("machine_stalled")) or None,
            "highest": text(placement.get("highest")) or None,
            "at_fault": text(placement.get("at_fault")) or None,
            "next": text(placement.get("next")) or None,
            "points": [points.get("earned"), points.get("possible")] if points else None}


class Cockpit:
    """One app's panel: its results file read again whenever it changes, and the check button."""

    def __init__(self, app_dir):
        self.app_dir = Path(app_dir).resolve()
        self.name = shown(app_dir)
        self.lock = threading.Lock()
        self.seen = (None, None)  # (the file's identity, its panel): a new write is a new inode
        self.proc = self.errors = None
        self.notice = ""

    def view(self):
        with self.lock:
            self._reap()
            return {"app": self.name, "found": (self.app_dir / "application.py").is_file(),
                    "running": self.proc is not None or checkruns.held(self.app_dir),
                    "results": self._results(), "notice": self.notice}

    def _results(self):
        try:
            stat = checkruns.results_file(self.app_dir).stat()
        except OSError:
            return None
        identity = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if identity != self.seen[0]:
            self.seen = (identity, panel(checkruns.read(self.app_dir)))
        results = self.seen[1]
        if results:  # the age moves on while the file stays
            results = dict(results, age=age(results["updated"]))
        return results

    def check_now(self):
        """Ask the running checker for a run, or start one; the panel with a notice saying which."""
        with self.lock:
            self._reap()
            if not (self.app_dir / "application.py").is_file():
                self.notice = f"No app to check: {self.name} has no application.py."
            elif self.proc is not None:
                self.notice = "A check started here is still running."
            elif checkruns.held(self.app_dir):
                checkruns.ask(self.app_dir)
                self.notice = ("A checker is already running on this app: asked it for one more check "
                               "(make watch runs it next).")
            else:
                self._start()
                self.notice = "Checking every stage now (python -m checks progress)."
        return self.view()

    def _start(self):
        self.errors = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "checks", "progress", str(self.app_dir), "--quiet"],
            cwd=checkruns.ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=self.errors, start_new_session=True)

    def _reap(self):
        """Collect a finished check; a checker that could not run says why in the notice."""
        if self.proc is None or self.proc.poll() is None:
            return
        code = self.proc.returncode
        self.errors.seek(0)
        lines = self.errors.read().decode(errors="replace").strip().splitlines()
        self.errors.close()
        self.proc = self.errors = None
        if code in (0, 1, 3):  # a verdict (3: the machine stalled): the results file says it
            self.notice = "The check finished."
        else:
            self.notice = f"The check could not run: {lines[-1] if lines else f'exit status {code}'}"

    def close(self):
        """Stop a check this dashboard started, with the app it boots."""
        with self.lock:
            if self.proc is not None:
                processes.stop(self.proc, group=True, timeout=30)
                self.errors.close()
                self.proc = None
