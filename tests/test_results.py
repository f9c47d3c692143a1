"""The results model (checks/results.py) decides alone: whether a stage passes, where a learner
stands (the highest stage reached, the stage at fault and its consequences), points, and how a
failure reads. These tests build results by hand, as a checker run writes them, and read them the
way run, progress, watch and grade do; tests/test_grade.py shows the outputs of one graded class
agree."""
import csv
import io
import json
import os
import random
import shutil
import subprocess
import sys

import pytest

from checks import results
from checks.grade import default_jobs
from checks.manifest import load_manifest
from checks.placement import csv_cells, learner_row
from checks.progress import report, results_file
from conftest import ROOT
from runtime import checkruns
from test_checks import FOLDERS

STAGES = load_manifest()
# A line stage 08's lesson adds (steps/08-view-cache/CHANGES.diff), as checks/causes.py cites it.
RAISED_IN_08 = ("NameError: name 'session' is not defined\n  at task_list/tasks.py:30 in skip_view_cache"
                "\n      return request.method != \"GET\" or \"_flashes\" in session")
STALL = "memcached answered no probe for 2.1 s; its process was stopped (T) for 2.0 s"


def passing(upto="09"):
    """A results file's tests for an app whose stages up to UPTO pass and later ones fail."""
    tests = []
    for stage in STAGES:
        for e in stage.expectations:
            result = results.Result(e)
            if stage.number > upto and not e.informational:
                result.status, result.observed = "fail", f"{e.id} is not there yet"
            tests.append(result.as_dict())
    return tests


def fail(tests, name, **fields):
    """Mark the test named "NN id" as failed, with FIELDS (cause, layer, reason, stall...)."""
    for t in tests:
        if results.named(t) == name:
            t.update(status=fields.pop("status", "fail"), observed=fields.pop("observed", "wrong"),
                     points_earned=0, **fields)
            return tests
    raise KeyError(name)


def test_a_stage_09_app_with_a_stage_08_bug_is_at_09_with_08_at_fault_everywhere():
    tests = fail(passing(), "08 single_hit", reason="misses")
    data = results_file(STAGES, tests)
    assert data["placement"] == {"highest": "09", "at_fault": "08", "consequences": [],
                                 "next": "08 single_hit"}
    table = {row["number"]: row["status"] for row in data["stages"]}
    assert table["07"] == table["09"] == "DONE" and table["08"] == "PENDING"
    row = learner_row("fay", "fay", data, STAGES, 0)
    assert (row["highest"], row["at_fault"], row["state"]) == ("09", "08", "ok")
    assert (row["points"], row["possible"]) == (data["points"]["earned"], data["points"]["possible"])
    shown = report(STAGES, data, ROOT / "fay")
    assert "Highest stage reached: 09 (" in shown and "at fault: stage 08" in shown
    assert "Next: stage 08 " in shown


def test_stale_pages_from_a_later_layer_are_its_consequences():
    """Stage 08's view cache never invalidated: 05-07 see its stale pages; the fault is 08."""
    tests = passing()
    for name in ("05 fresh_after_add", "06 memoize_invalidated", "07 reused_id"):
        fail(tests, name, layer="08")
    fail(tests, "08 fresh_after_writes", reason="add")
    place = results.placement(STAGES, tests)
    assert place == {"highest": "09", "at_fault": "08", "next": "08 fresh_after_writes",
                     "consequences": ["05 fresh_after_add", "06 memoize_invalidated", "07 reused_id"]}
    # Without the layer the same failures are stage 05's own: the instructor would go there.
    plain = passing()
    fail(plain, "05 fresh_after_add")
    assert results.placement(STAGES, plain)["at_fault"] == "05"


def test_a_crash_is_the_fault_of_the_stage_whose_code_raised():
    tests = passing()
    fail(tests, "05 fresh_after_add", cause=RAISED_IN_08, app_state="crashed")
    fail(tests, "08 post_not_cached", cause=RAISED_IN_08, app_state="crashed")
    place = results.placement(STAGES, tests)
    assert (place["at_fault"], place["consequences"]) == ("08", ["05 fresh_after_add"])
    # A line of a stage that passes its own check is not that stage's fault: the failing stage is.
    alone = fail(passing(), "05 fresh_after_add", cause=RAISED_IN_08, app_state="crashed")
    assert results.placement(STAGES, alone)["at_fault"] == "05"


def test_a_pass_between_two_failing_stages_places_no_one():
    tests = passing("03")
    for t in tests:  # check 05 passes on a stage-03 app: with no cache, nothing is stale
        if t["step"] == "05":
            t.update(status="pass", observed=None, points_earned=t["points"])
    data = results_file(STAGES, tests)
    assert (data["placement"]["highest"], data["placement"]["at_fault"]) == ("03", "04")
    assert next(r for r in data["stages"] if r["number"] == "05")["status"] == "PENDING"
    record = results.app_record(STAGES, "ada/", "progress", tests)
    assert record["focus"]["stage"] == "04"


def test_a_stage_the_machine_stalled_is_not_judged_and_costs_nothing():
    tests = fail(passing(), "06 memoize_keys", status="error", reason=results.STALLED,
                 stall=STALL, observed="pylibmc.ServerDead")
    data = results_file(STAGES, tests)
    assert next(r for r in data["stages"] if r["number"] == "06")["status"] == "NOT JUDGED"
    assert data["machine_stalled"] == STALL
    assert data["points"] == results.points([t for t in tests if t["name"] != "check_06_memoize_keys"])
    assert data["placement"]["at_fault"] is None  # never the learner's
    assert results.learner_state(data, data["placement"]["highest"]) == "regrade"
    row = learner_row("al", "al", data, STAGES, 0)
    assert row["state"] == "regrade" and row["detail"] == STALL
    shown = results.render(next(t for t in tests if t["id"] == "memoize_keys"),
                           STAGES[5], {"error": "x"})
    assert STALL in results.one_line(shown) and "hint:" not in shown
    # A learner's failure in the same stage still counts: the stage does not pass.
    fail(tests, "06 memoize_invalidated")
    assert results.stage_status(STAGES[5], tests) == "PENDING"


def test_the_same_results_in_any_order_give_the_same_file():
    tests = fail(fail(passing(), "07 reused_id"), "04 first_load")
    shuffled = [dict(t) for t in tests]
    random.Random(18).shuffle(shuffled)
    assert results.summary(STAGES, shuffled, None) == results.summary(STAGES, tests, None)


def test_the_app_file_keeps_the_latest_verdict_of_each_stage():
    first = results.app_record(STAGES, "ws/", "progress", passing("04"))
    assert first["focus"]["stage"] == "05"
    assert first["focus"]["failures"][0] == {
        "text": STAGES[4].expectations[0].text, "observed": "fresh_after_add is not there yet",
        "cause": None, "hint": STAGES[4].expectations[0].hint, "reread": STAGES[4].expectations[0].section}
    fixed = [t for t in passing("05") if t["step"] == "05"]
    second = results.app_record(STAGES, "ws/", "run 05", fixed, first, ["05"])
    assert len(second["tests"]) == len(first["tests"])
    assert (second["focus"]["stage"], second["placement"]["highest"]) == ("06", "05")
    fresh = results.app_record(STAGES, "ws/", "run 05", fixed, None, ["05"])
    statuses = {r["number"]: r["status"] for r in fresh["stages"]}
    assert statuses["05"] == "DONE" and statuses["04"] == statuses["06"] == "UNCHECKED"


def test_a_csv_cell_holds_one_line():
    tests = fail(passing(), "08 post_not_cached", cause=RAISED_IN_08, app_state="crashed")
    row = learner_row("gus", "gus", results_file(STAGES, tests), STAGES, 0)
    out = io.StringIO()
    csv.writer(out).writerow(csv_cells(row))
    assert "\n" not in out.getvalue().strip() and "skip_view_cache" in out.getvalue()


def test_grade_runs_half_the_cores_at_once_by_default():
    assert default_jobs() == max(1, (os.cpu_count() or 1) // 2)


def test_a_second_checker_on_the_same_app_is_one_line_and_exit_2(tmp_path, services_env):
    app = tmp_path / "ws"
    shutil.copytree(FOLDERS["01"], app, ignore=shutil.ignore_patterns("__pycache__", "instance"))
    run = lambda *extra: subprocess.run([sys.executable, "-m", "checks", "run", "01", str(app), "-q",
                                         *extra], cwd=ROOT, capture_output=True, text=True, timeout=120)
    try:
        with checkruns.exclusive(app):
            busy = run()
            # A run whose results go to a file of its own (grade's, watch's) takes no lock.
            aside = run("--json", tmp_path / "aside.json")
        assert busy.returncode == 2 and busy.stderr == "checks run: a checker is already running on ws/\n"
        assert aside.returncode == 0, aside.stderr
        assert checkruns.read(app) is None
        alone = run()
        assert alone.returncode == 0, alone.stderr
        data = checkruns.read(app)
        assert (data["version"], data["command"], data["focus"]) == (results.VERSION, "run 01", None)
        assert json.loads((tmp_path / "aside.json").read_text())["placement"]["highest"] == "01"
    finally:
        checkruns.results_file(app).unlink(missing_ok=True)
        checkruns.results_file(app).with_suffix(".lock").unlink(missing_ok=True)


@pytest.mark.parametrize("upto", ["01", "05", "09"])
def test_points_count_what_passes_of_what_was_judged(upto):
    tests = passing(upto)
    total = results.points(tests)
    judged = [t for t in tests if not t["informational"]]
    assert total["possible"] == sum(t["points"] for t in judged)
    assert total["earned"] == sum(t["points"] for t in judged if t["step"] <= upto)
