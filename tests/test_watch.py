"""Watch mode (`python -m checks watch`): it finds the first stage that does not pass, checks it
again when the app changes, moves on when it passes, and Ctrl-C leaves no process behind."""
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

from conftest import ROOT, processes_marked, wait_for
from test_checks import FOLDERS

IGNORE = shutil.ignore_patterns("__pycache__", "instance", "*.pyc")


def gunicorns(mark):
    """The app servers among the processes carrying MARK."""
    found = []
    for pid in processes_marked(mark):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "gunicorn":
                found.append(pid)
        except OSError:
            pass
    return found


def start_watch(app, mark):
    """`python -m checks watch APP` with MARK in its environment; the process and its output so far."""
    name, value = mark.split("=")
    # Ctrl-C as a terminal sends it: a suite started in the background (`make test &`, some CI
    # runners) has SIGINT ignored, and a child would inherit that.
    proc = subprocess.Popen([sys.executable, "-m", "checks", "watch", str(app)], cwd=ROOT,
                            env={**os.environ, name: value}, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    return proc, lambda: "".join(lines)


def watch_copy(tmp_path, number, mark=None):
    """Watch a copy of step NUMBER: the copy, the process and its output so far."""
    app = tmp_path / "workspace"
    shutil.copytree(FOLDERS[number], app, ignore=IGNORE)
    return (app, *start_watch(app, mark or f"WORKSHOP_TEST_MARK={secrets.token_hex(8)}"))


def test_watch_moves_on_stage_by_stage_to_the_summary(tmp_path, services_env):
    app, proc, text = watch_copy(tmp_path, "04")
    try:
        wait_for(lambda: "Save a file in" in text(), "stage 05 shown", timeout=240)
        assert "stages 01 to 04 pass" in text() and "Stage 05: " in text()
        assert "hint: Delete the cached task list" in text(), text()

        shutil.copytree(FOLDERS["05"], app, ignore=IGNORE, dirs_exist_ok=True)
        wait_for(lambda: text().count("Save a file in") == 2, "stage 06 shown", timeout=240)
        after = text().split("checking stage 05 again", 1)[1]
        assert "Stage 05 passes." in after and "Stage 06: " in after, text()

        shutil.copytree(FOLDERS["09"], app, ignore=IGNORE, dirs_exist_ok=True)
        assert proc.wait(timeout=300) == 0, text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    wait_for(lambda: "All 9 stages pass on " in text(), "the summary read", timeout=30)
    after = text().split("checking stage 06 again", 1)[1]
    assert [f"Stage {n} passes." in after for n in ("06", "07", "08", "09")] == [True] * 4, text()


def test_ctrl_c_leaves_no_process_behind(tmp_path, services_env):
    mark = f"WORKSHOP_TEST_MARK={secrets.token_hex(8)}"
    _, proc, text = watch_copy(tmp_path, "01", mark)
    try:
        # Ctrl-C while a check runs: its gunicorn and memcached must go with it.
        wait_for(lambda: gunicorns(mark), "the app under check running", timeout=240)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    wait_for(lambda: "checks watch: interrupted" in text(), "the interruption reported", timeout=30)
    wait_for(lambda: not processes_marked(mark), "every process of the run gone", timeout=30)


def test_watch_holds_the_app_and_checks_again_when_asked(tmp_path, services_env):
    """The dashboard's "check now": watch holds the app's lock, and runs a check when asked."""
    from runtime import checkruns

    app, proc, text = watch_copy(tmp_path, "01")
    try:
        wait_for(lambda: "Save a file in" in text(), "stage 02 shown", timeout=240)
        assert checkruns.held(app)
        first = checkruns.read(app)
        assert (first["command"], first["focus"]["stage"], first["placement"]["highest"]) == \
            ("watch", "02", "01"), first
        checkruns.ask(app)
        wait_for(lambda: text().count("Save a file in") == 2, "the asked check shown", timeout=240)
        assert "a check was asked for: checking stage 02 again" in text(), text()
        assert checkruns.read(app)["updated"] >= first["updated"]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 130
        assert not checkruns.held(app)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for path in (checkruns.results_file(app), checkruns.results_file(app).with_suffix(".lock"),
                     checkruns.request_file(app)):
            path.unlink(missing_ok=True)
