"""The learner's cockpit on the dashboard: the app's stages and its first failing stage, read from
the checker's results file (build/results/<app>.json), the Check now button, and the panel
following `make watch` as a fix lands."""
import contextlib
import os
import shutil
import subprocess
import sys
import threading

import requests
from playwright.sync_api import expect

from conftest import ROOT, wait_for
from instruments import cockpit
from runtime import checkruns, services
from test_checks import FOLDERS, materialise
from test_watch import IGNORE, start_watch

SCRIPT = "<script>document.title='owned'</script>"
TITLES = {"01": "A Flask skeleton that Elastic Beanstalk can run", "02": "A task list on a database",
          "03": "Deploy to Elastic Beanstalk", "04": "Cache the task query in memcached",
          "05": "Invalidate the cached list on every write", "06": "Memoize the query"}


def verdicts(done, stalled=None, cause="Traceback (most recent call last):\n  ...\nKeyError: 'name'"):
    """A results file as the checker writes it: stages up to DONE pass, the next one fails."""
    focus_stage = f"{int(done) + 1:02d}"
    stages = [{"number": n, "title": t, "status": "DONE" if n <= done else "PENDING",
               "failing": [] if n <= done else ["fresh_after_add"]} for n, t in TITLES.items()]
    if stalled:  # the machine spoiled the first stage that does not pass: it is not judged
        stages[int(focus_stage) - 1]["status"] = "NOT JUDGED"
    return {
        "version": 5, "app": "workspace/", "updated": "2026-12-04T11:02:03+00:00",
        "command": "watch", "status": "fail", "machine_stalled": stalled,
        "points": {"earned": 3 * int(done), "possible": 42},
        "placement": {"highest": done, "at_fault": focus_stage, "consequences": [],
                      "next": f"{focus_stage} fresh_after_add"},
        "stages": stages,
        "focus": {"stage": focus_stage, "title": TITLES[focus_stage],
                  "lesson": f"steps/{FOLDERS[focus_stage].name}/README.md",
                  "failures": [{"text": "A new task shows at once after it is added",
                                "observed": "the list still shows 2 tasks after adding a third",
                                "cause": cause, "hint": "Delete the cached task list after the commit.",
                                "reread": "Invalidate on every write"}]},
        "tests": [],
    }


def test_the_panel_keeps_what_the_page_needs_and_tolerates_what_it_lacks():
    view = cockpit.panel(verdicts("04", stalled="memcached answered no probe for 2.1 s"))
    assert [s["status"] for s in view["stages"]] == ["DONE"] * 4 + ["NOT JUDGED", "PENDING"]
    assert view["focus"]["failures"][0]["reread"] == "Invalidate on every write"
    assert (view["highest"], view["at_fault"], view["points"]) == ("04", "05", [12, 42])
    assert view["machine_stalled"] == "memcached answered no probe for 2.1 s"
    # An older checker's file (no stages table, focus or placement), and nonsense, show as empty.
    old = cockpit.panel({"version": 4, "status": "fail", "tests": [], "stages": "?", "focus": [1]})
    assert (old["stages"], old["focus"], old["highest"], old["age"]) == ([], None, None, None)
    odd = cockpit.panel({"stages": [{"number": 1, "status": "WHATEVER", "failing": None}, 7]})
    assert odd["stages"] == [{"number": "1", "title": "", "status": "UNCHECKED", "failing": []}]
    assert cockpit.panel(None) is None


@contextlib.contextmanager
def dashboard_on(app, services_env):
    """The dashboard in its own process, showing APP beside the plain memcached; yields its URL."""
    port = services.free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "instruments.dashboard", "--port", str(port), "--plain",
         "--servers", services_env["MEMCACHED_PLAIN_SERVERS"], "--app", str(app)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        services.wait_for_port(port, "the dashboard", timeout=15, proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=60)
        checkruns.results_file(app).unlink(missing_ok=True)
        checkruns.request_file(app).unlink(missing_ok=True)
    assert "Traceback" not in err, err


def stage(page, number):
    return page.locator(f'#app-stages li[data-stage="{number}"]')


def test_the_panel_shows_the_checkers_verdicts_and_follows_the_file(browser, tmp_path, services_env):
    app = tmp_path / "workspace"
    shutil.copytree(FOLDERS["01"], app, ignore=IGNORE)
    with dashboard_on(app, services_env) as url:
        page = browser.new_page()
        errors = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(url)
        expect(page.locator("#app-summary")).to_have_text(
            "Not checked yet: run `make watch` in a terminal, or press Check now.")

        checkruns.write(app, verdicts("04", cause=f"ValueError: {SCRIPT}\n  at task_list/tasks.py:9"))
        expect(stage(page, "04")).to_have_attribute("data-status", "DONE")
        expect(stage(page, "05")).to_have_attribute("data-status", "PENDING")
        expect(page.locator("#focus-title")).to_have_text(f"Stage 05: {TITLES['05']}")
        failure = page.locator("#focus-failures li")
        expect(failure).to_have_count(1)
        expect(failure).to_contain_text("hint: Delete the cached task list after the commit.")
        expect(failure).to_contain_text(
            f"reread: steps/{FOLDERS['05'].name}/README.md, section \u201cInvalidate on every write\u201d")
        expect(failure.locator("pre")).to_have_text(f"ValueError: {SCRIPT}\n  at task_list/tasks.py:9")
        assert page.title() == "workshop dashboard"  # the learner's string stayed text
        expect(page.locator("#app-stalled")).to_be_hidden()

        # `make watch` writes again: the panel follows without a reload.
        checkruns.write(app, verdicts("05", stalled="memcached answered no probe for 2.1 s"))
        expect(stage(page, "05")).to_have_attribute("data-status", "DONE")
        expect(stage(page, "06")).to_have_attribute("data-status", "NOT JUDGED")
        expect(page.locator("#app-stalled")).to_contain_text("memcached answered no probe for 2.1 s")
        assert errors == []
        page.close()


def test_check_now_asks_the_running_checker_or_starts_one(browser, tmp_path, services_env):
    app = tmp_path / "workspace"
    shutil.copytree(FOLDERS["01"], app, ignore=IGNORE)
    with dashboard_on(app, services_env) as url:
        page = browser.new_page()
        page.goto(url)
        notice = page.locator("#app-notice")
        held, release = threading.Event(), threading.Event()

        def watch_holding_the_lock():
            with checkruns.exclusive(app):
                held.set()
                release.wait(60)

        holder = threading.Thread(target=watch_holding_the_lock)
        holder.start()
        try:
            held.wait(10)
            expect(page.locator("#app-live")).to_have_text("a check is running…")
            page.click("#check-now")
            expect(notice).to_contain_text("A checker is already running on this app: asked it")
            assert checkruns.asked(app), "the request the holder reads"
        finally:
            release.set()
            holder.join()
        expect(page.locator("#app-live")).to_have_text("")

        # Only the page can ask: a form on another site cannot start a checker.
        refused = requests.post(url + "/api/check", timeout=10)
        assert refused.status_code == 403 and not checkruns.asked(app)

        # Nobody holds the lock: the dashboard runs `progress` itself, and says when it ends.
        page.click("#check-now")
        expect(notice).to_have_text("Checking every stage now (python -m checks progress).")
        expect(notice).to_have_text("The check finished.", timeout=120_000)

        (app / "application.py").unlink()
        page.click("#check-now")
        expect(notice).to_have_text(f"No app to check: {cockpit.shown(app)} has no application.py.")
        page.close()


def test_an_app_that_is_not_a_folder_is_one_clear_line(tmp_path, services_env):
    result = subprocess.run([sys.executable, "-m", "instruments.dashboard", "--plain", "--servers",
                             services_env["MEMCACHED_PLAIN_SERVERS"], "--app", str(tmp_path / "nope")],
                            cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert (result.returncode, result.stderr) == (2, f"dashboard: --app {tmp_path / 'nope'}: no such folder\n")


def test_the_panel_follows_make_watch_as_a_fix_lands(browser, tmp_path, services_env):
    """Needs the checker to write build/results/<app>.json (check, watch and progress do)."""
    app = tmp_path / "workspace"
    materialise("raises-on-import", app)  # stage 01 fails: application.py raises ImportError
    mark = f"WORKSHOP_TEST_MARK={os.getpid()}{id(app)}"
    with dashboard_on(app, services_env) as url:
        page = browser.new_page()
        page.goto(url)
        proc, text = start_watch(app, mark)
        try:
            expect(stage(page, "01")).to_have_attribute("data-status", "PENDING", timeout=240_000)
            expect(page.locator("#focus-failures")).to_contain_text("ImportError", timeout=30_000)
            wait_for(lambda: "Save a file in" in text(), "watch waiting for a save", timeout=240)
            shutil.copy(FOLDERS["01"] / "application.py", app / "application.py")
            expect(stage(page, "01")).to_have_attribute("data-status", "DONE", timeout=240_000)
            expect(page.locator("#focus-title")).to_have_text(f"Stage 02: {TITLES['02']}",
                                                             timeout=240_000)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        page.close()
