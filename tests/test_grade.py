"""The instructor's batch (`python -m checks grade`) places each learner right and never stops.

One class, graded once: a learner at stage 03, two complete apps with a late-stage bug (07, 08),
one whose every page raises, an app that crashes at import, one that hangs at import, an empty
folder and a file. Each is placed at the furthest stage whose own check passes, earlier failures
are regressions with causes, and a crashed or hung app is never `ok`.
"""
import html
import json
import os
import secrets
import shutil
import xml.etree.ElementTree as ET

import pytest

from checks.placement import CELL, table
from conftest import processes_marked
from test_checks import FOLDERS, checks, materialise
from test_report import html_rows, json_rows

CLASS = ["ada", "eve", "fay", "gus", "bob", "cy", "dee", "notes.txt"]


def complete_app_without_view_cache(target):
    """Step 09 with the stage-08 decorator left out: the front page is never cached."""
    shutil.copytree(FOLDERS["09"], target, ignore=shutil.ignore_patterns("__pycache__", "instance"))
    tasks = target / "task_list" / "tasks.py"
    text = tasks.read_text()
    assert "@cache.cached(unless=skip_view_cache)\n" in text, "update this test to step 09's tasks.py"
    tasks.write_text(text.replace("@cache.cached(unless=skip_view_cache)\n", ""))


@pytest.fixture(scope="module")
def graded(tmp_path_factory, services_env):
    """The class, graded with --format markdown: (the finished command, the rows, the report folder)."""
    tmp = tmp_path_factory.mktemp("grade")
    class_dir = tmp / "class"
    shutil.copytree(FOLDERS["03"], class_dir / "ada", ignore=shutil.ignore_patterns("__pycache__"))
    materialise("fragment-not-deleted", class_dir / "eve", base="09-sessions")  # a stage-07 bug
    complete_app_without_view_cache(class_dir / "fay")  # a stage-08 bug
    # Step 09 typed without `session` in the flask import: every page raises NameError.
    materialise("view-cache-without-session-import", class_dir / "gus", base="09-sessions")
    materialise("raises-on-import", class_dir / "bob")
    materialise("hangs-on-import", class_dir / "cy")
    (class_dir / "dee").mkdir()
    (class_dir / "notes.txt").write_text("not an app\n")
    out = tmp / "report"
    result = checks("grade", *[class_dir / name for name in CLASS], "--jobs", "2", "--out", out,
                    "--boot-timeout", "5", "--format", "markdown", timeout=600)
    assert result.returncode == 0, result.stderr
    rows = {r["learner"]: r for r in json.loads((out / "grades.json").read_text())["learners"]}
    return result, rows, out


def test_a_learner_is_placed_at_the_stage_reached(graded):
    _, rows, _ = graded
    ada = rows["ada"]
    # Check 05 also passes on a stage-03 app (no cache, nothing to invalidate): no one is placed by it.
    assert (ada["state"], ada["highest"], ada["regressions"]) == ("ok", "03", [])
    assert ada["failing"] and all(f["expectation"].startswith("04 ") for f in ada["failing"])


@pytest.mark.parametrize("learner, regression", [("eve", "07 reused_id"), ("fay", "08 single_hit")])
def test_a_late_bug_is_a_regression_with_its_cause(graded, learner, regression):
    _, rows, _ = graded
    row = rows[learner]
    assert (row["state"], row["highest"]) == ("ok", "09"), row
    found = {r["expectation"]: r["cause"] for r in row["regressions"]}
    assert regression in found and found[regression], row["regressions"]
    assert all(name.split()[0] == regression.split()[0] for name in found), found


def test_an_app_that_fails_every_check_is_placed_nowhere_with_its_cause(graded):
    _, rows, _ = graded
    gus = rows["gus"]
    assert (gus["state"], gus["highest"]) == ("crashed", None)
    assert gus["failing"][0]["expectation"] == "01 index"
    assert "NameError: name 'session' is not defined" in gus["detail"]
    line = next(line for line in table([gus]).splitlines() if line.startswith("gus"))
    assert line.split()[1:3] == ["-", "CRASHED"] and "NameError" in line


def test_a_crashed_or_hung_app_is_never_ok(graded):
    _, rows, _ = graded
    bob, cy = rows["bob"], rows["cy"]
    assert (bob["state"], bob["highest"]) == ("crashed", None)
    assert "ImportError" in bob["detail"] and "create_application" in bob["detail"]
    assert (cy["state"], cy["highest"]) == ("hung", None) and cy["detail"]


def test_a_folder_without_an_app_is_missing(graded):
    _, rows, _ = graded
    assert (rows["dee"]["state"], rows["dee"]["detail"]) == ("missing", "empty folder")
    assert (rows["notes.txt"]["state"], rows["notes.txt"]["detail"]) == ("missing", "a file, not a folder")


def test_reports_cut_details_in_tables_and_keep_them_whole_in_files(graded):
    result, rows, out = graded
    lines = table(list(rows.values())).splitlines()
    assert len(lines) == len(CLASS) + 1
    assert max(map(len, lines)) <= len(max(CLASS, key=len)) + 30 + CELL
    labels = {line.split()[0]: line.split()[2] for line in lines[1:]}
    assert labels == {"ada": "OK", "eve": "OK", "fay": "OK", "gus": "CRASHED", "bob": "CRASHED", "cy": "HUNG",
                      "dee": "MISSING", "notes.txt": "MISSING"}
    csv_text = (out / "grades.csv").read_text()
    assert rows["bob"]["detail"] in csv_text and rows["eve"]["regressions"][0]["cause"] in csv_text
    # Small: no test output in grades.json, a few KB a learner at most.
    assert (out / "grades.json").stat().st_size < 3000 * len(CLASS)
    suites = ET.parse(out / "grades.xml").getroot().findall("testsuite")
    assert [s.get("name") for s in suites] == CLASS


def test_markdown_summary_can_be_pasted_into_a_chat(graded):
    result, rows, out = graded
    markdown = result.stdout.strip()
    assert markdown == (out / "grades.md").read_text().strip()
    lines = markdown.splitlines()
    assert lines[0].startswith(f"**Class report: {len(CLASS)} learners**")
    assert "2 at stage 09" in lines[0] and "1 at stage 03" in lines[0] and "2 missing" in lines[0]
    assert lines[2] == "| learner | stage | state | points | to look at |"
    body = [line for line in lines[4:] if line.startswith("| ")]
    assert len(body) == len(CLASS) and all(line.count(" | ") == 4 for line in body)
    assert f"[{len(CLASS)}/{len(CLASS)}]" in result.stderr  # progress, as each learner finishes


def test_the_html_report_shows_the_rows_of_grades_json(graded):
    result, rows, out = graded
    assert html_rows(out) == json_rows(out)
    assert [row["learner"] for row in html_rows(out)] == CLASS
    page = (out / "grades.html").read_text()
    assert all(html.escape(rows[name]["detail"]) in page for name in ("gus", "bob", "cy", "dee"))
    assert "grades.html" in result.stderr


def test_grade_stops_an_app_at_its_time_limit(tmp_path, services_env):
    materialise("never-answers", tmp_path / "slow")
    out, mark = tmp_path / "report", f"WORKSHOP_TEST_MARK={secrets.token_hex(8)}"
    env = {**os.environ, mark.split("=")[0]: mark.split("=")[1]}
    # The request limit is longer than the learner's limit, so only the learner's limit can end it.
    result = checks("grade", tmp_path / "slow", "--out", out, "--timeout", "8",
                    "--request-timeout", "60", env=env)
    assert result.returncode == 0, result.stderr
    row = json.loads((out / "grades.json").read_text())["learners"][0]
    assert row["state"] == "hung" and "8 s" in row["detail"]
    assert processes_marked(mark) == [], "the hung app's processes outlived its time limit"
