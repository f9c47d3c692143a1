"""The instructor's batch (`python -m checks grade`) places each learner right and never stops.

One class, graded twice at once (the two gradings must agree): a learner at stage 03, three
complete apps with a late-stage bug (07, 08, and a stage-08 view cache never invalidated, so 05-07
see its stale pages), one whose every page raises, an app that crashes at import, one that hangs
at import, an empty folder and a file. Each is placed at the furthest stage whose own check
passes, with the stage at fault; earlier failures are regressions with causes, a crashed or hung
app is never `ok`, and every output agrees.
"""
import csv
import html
import json
import os
import secrets
import shutil
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET

import pytest

from checks.manifest import load_manifest
from checks.placement import CELL, table
from checks.progress import report
from conftest import ROOT, processes_marked
from runtime import checkruns
from test_checks import BROKEN, FOLDERS, checks, materialise
from test_report import html_rows, json_rows

CLASS = ["ada", "eve", "fay", "gus", "hal", "bob", "cy", "dee", "notes.txt"]
NEVER_INVALIDATED = tomllib.loads((BROKEN / "view-cache-never-invalidated" / "fixture.toml").read_text())
# (highest stage reached, stage at fault): the examples of wrong placements, pinned.
PLACED = {"ada": ("03", "04"), "eve": ("09", "07"), "fay": ("09", "08"),
          "gus": (None, "08"),  # every page raises in stage 08's skip_view_cache
          "hal": (NEVER_INVALIDATED["highest"], NEVER_INVALIDATED["at_fault"])}


def complete_app_without_view_cache(target):
    """Step 09 with the stage-08 decorator left out: the front page is never cached."""
    shutil.copytree(FOLDERS["09"], target, ignore=shutil.ignore_patterns("__pycache__", "instance"))
    tasks = target / "task_list" / "tasks.py"
    text = tasks.read_text()
    assert "@cache.cached(unless=skip_view_cache)\n" in text, "update this test to step 09's tasks.py"
    tasks.write_text(text.replace("@cache.cached(unless=skip_view_cache)\n", ""))


@pytest.fixture(scope="module")
def graded(tmp_path_factory, services_env):
    """The class, graded with --format markdown: (the finished command, the rows, the report
    folder), and the rows of the same class graded again."""
    tmp = tmp_path_factory.mktemp("grade")
    class_dir = tmp / "class"
    shutil.copytree(FOLDERS["03"], class_dir / "ada", ignore=shutil.ignore_patterns("__pycache__"))
    materialise("fragment-not-deleted", class_dir / "eve", base="09-sessions")  # a stage-07 bug
    complete_app_without_view_cache(class_dir / "fay")  # a stage-08 bug
    # Step 09 typed without `session` in the flask import: every page raises NameError.
    materialise("view-cache-without-session-import", class_dir / "gus", base="09-sessions")
    materialise("view-cache-never-invalidated", class_dir / "hal")
    materialise("raises-on-import", class_dir / "bob")
    materialise("hangs-on-import", class_dir / "cy")
    (class_dir / "dee").mkdir()
    (class_dir / "notes.txt").write_text("not an app\n")
    out, again = tmp / "report", tmp / "again"
    folders = [class_dir / name for name in CLASS]
    # The same class graded a second time, at the same time and in the opposite order: what the
    # machine does meanwhile must not change a grade.
    second = subprocess.Popen([sys.executable, "-m", "checks", "grade", *folders[::-1], "--jobs", "2",
                               "--out", again, "--boot-timeout", "20"], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        result = checks("grade", *folders, "--jobs", "2", "--out", out,
                        "--boot-timeout", "20", "--format", "markdown", timeout=900)
        second_error = second.communicate(timeout=900)[1]
    finally:
        second.kill()
    assert result.returncode == 0, result.stderr
    assert second.returncode == 0, second_error
    rows = {r["learner"]: r for r in json.loads((out / "grades.json").read_text())["learners"]}
    rows_again = {r["learner"]: r for r in json.loads((again / "grades.json").read_text())["learners"]}
    return result, rows, out, rows_again


def test_the_same_class_graded_twice_gets_the_same_grades(graded):
    _, rows, _, rows_again = graded
    grade = lambda row: {k: row[k] for k in ("state", "highest", "at_fault", "next", "consequences",
                                             "points", "possible")}
    assert {name: grade(row) for name, row in rows.items()} == \
        {name: grade(row) for name, row in rows_again.items()}


def test_a_learner_is_placed_at_the_stage_reached(graded):
    _, rows, _, _ = graded
    ada = rows["ada"]
    # Check 05 also passes on a stage-03 app (no cache, nothing to invalidate): no one is placed by it.
    assert (ada["state"], ada["highest"], ada["regressions"]) == ("ok", "03", [])
    assert ada["failing"] and all(f["expectation"].startswith("04 ") for f in ada["failing"])


@pytest.mark.parametrize("learner, regression", [("eve", "07 reused_id"), ("fay", "08 single_hit")])
def test_a_late_bug_is_a_regression_with_its_cause(graded, learner, regression):
    _, rows, _, _ = graded
    row = rows[learner]
    assert (row["state"], row["highest"]) == ("ok", "09"), row
    found = {r["expectation"]: r["cause"] for r in row["regressions"]}
    assert regression in found and found[regression], row["regressions"]
    assert all(name.split()[0] == regression.split()[0] for name in found), found


def test_an_app_that_fails_every_check_is_placed_nowhere_with_its_cause(graded):
    _, rows, _, _ = graded
    gus = rows["gus"]
    assert (gus["state"], gus["highest"]) == ("crashed", None)
    assert gus["failing"][0]["expectation"] == "01 index"
    assert "NameError: name 'session' is not defined" in gus["detail"]
    line = next(line for line in table([gus]).splitlines() if line.startswith("gus"))
    assert line.split()[1:4] == ["-", "08", "CRASHED"] and "NameError" in line


def test_a_crashed_or_hung_app_is_never_ok(graded):
    _, rows, _, _ = graded
    bob, cy = rows["bob"], rows["cy"]
    assert (bob["state"], bob["highest"]) == ("crashed", None)
    assert "ImportError" in bob["detail"] and "create_application" in bob["detail"]
    assert (cy["state"], cy["highest"]) == ("hung", None) and cy["detail"]


def test_a_folder_without_an_app_is_missing(graded):
    _, rows, _, _ = graded
    assert (rows["dee"]["state"], rows["dee"]["detail"]) == ("missing", "empty folder")
    assert (rows["notes.txt"]["state"], rows["notes.txt"]["detail"]) == ("missing", "a file, not a folder")


def test_reports_cut_details_in_tables_and_keep_them_whole_in_files(graded):
    result, rows, out, _ = graded
    lines = table(list(rows.values())).splitlines()
    assert len(lines) == len(CLASS) + 1
    assert max(map(len, lines)) <= len(max(CLASS, key=len)) + 33 + CELL
    labels = {line.split()[0]: line.split()[3] for line in lines[1:]}
    assert labels == {"ada": "OK", "eve": "OK", "fay": "OK", "gus": "CRASHED", "hal": "OK", "bob": "CRASHED",
                      "cy": "HUNG", "dee": "MISSING", "notes.txt": "MISSING"}
    csv_text = (out / "grades.csv").read_text()
    one_line = lambda text: " ".join(text.split())
    assert one_line(rows["bob"]["detail"]) in csv_text
    assert one_line(rows["eve"]["regressions"][0]["cause"]) in csv_text
    # Small: no test output in grades.json, a few KB a learner at most.
    assert (out / "grades.json").stat().st_size < 3000 * len(CLASS)
    suites = ET.parse(out / "grades.xml").getroot().findall("testsuite")
    assert [s.get("name") for s in suites] == CLASS


def test_markdown_summary_can_be_pasted_into_a_chat(graded):
    result, rows, out, _ = graded
    markdown = result.stdout.strip()
    assert markdown == (out / "grades.md").read_text().strip()
    lines = markdown.splitlines()
    assert lines[0].startswith(f"**Class report: {len(CLASS)} learners**")
    assert "3 at stage 09" in lines[0] and "1 at stage 03" in lines[0] and "2 missing" in lines[0]
    assert lines[2] == "| learner | stage | fault | state | points | to look at |"
    body = [line for line in lines[4:] if line.startswith("| ")]
    assert len(body) == len(CLASS) and all(line.count(" | ") == 5 for line in body)
    assert f"[{len(CLASS)}/{len(CLASS)}]" in result.stderr  # progress, as each learner finishes


def test_the_html_report_shows_the_rows_of_grades_json(graded):
    result, rows, out, _ = graded
    assert html_rows(out) == json_rows(out)
    assert [row["learner"] for row in html_rows(out)] == CLASS
    page = (out / "grades.html").read_text()
    assert all(html.escape(rows[name]["detail"]) in page for name in ("gus", "bob", "cy", "dee"))
    assert "grades.html" in result.stderr


# ---- every output agrees -----------------------------------------------------------------------

def facts(highest, at_fault, state, points, possible):
    """What every output must agree on for one learner, as strings ("" for none)."""
    return tuple("" if v is None else str(v).strip() for v in (highest, at_fault, state.lower(), points, possible))


def outputs(rows, out):
    """{learner: {output: facts}} read back from each report the class produced."""
    seen = {name: {} for name in rows}
    for r in rows.values():
        seen[r["learner"]]["json"] = facts(r["highest"], r["at_fault"], r["state"], r["points"], r["possible"])
    for line in table(list(rows.values())).splitlines()[1:]:
        name, stage, fault, state, shown = line.split()[:5]
        seen[name]["table"] = facts(*(c.strip("-") or None for c in (stage, fault, state)),
                                    *(shown.split("/") if "/" in shown else (0, 0)))
    for line in (out / "grades.md").read_text().splitlines()[4:]:
        name, stage, fault, state, shown = [c.strip() for c in line.strip("| ").split(" | ")][:5]
        seen[name]["markdown"] = facts(*(c.strip("-") or None for c in (stage, fault, state)),
                                       *(shown.split("/") if "/" in shown else (0, 0)))
    with open(out / "grades.csv", newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            assert all("\n" not in cell for cell in r.values()), r  # a CSV cell holds one line
            seen[r["learner"]]["csv"] = facts(r["highest_stage"], r["at_fault"], r["state"], r["points"],
                                              r["possible"])
    for r in html_rows(out):
        seen[r["learner"]]["html"] = facts(*(c.strip("-") or None for c in (r["highest"], r["at_fault"], r["state"])),
                                           *(r["points"].split("/") if "/" in r["points"] else (0, 0)))
    for suite in ET.parse(out / "grades.xml").getroot().findall("testsuite"):
        p = {e.get("name"): e.get("value") for e in suite.find("properties")}
        seen[suite.get("name")]["junit"] = facts(p["highest"], p["at_fault"], p["state"], p["points"],
                                                 p["possible"])
    return seen


def test_every_output_of_the_class_agrees(graded):
    _, rows, out, _ = graded
    seen = outputs(rows, out)
    stages = load_manifest()
    for name, row in rows.items():
        expected = facts(row["highest"], row["at_fault"], row["state"], row["points"], row["possible"])
        assert set(seen[name]) == {"json", "table", "markdown", "csv", "junit", "html"}, name
        assert set(seen[name].values()) == {expected}, (name, seen[name])
        if not row["results"]:
            continue
        data = json.loads((out / row["results"]).read_text())  # learners/NAME.json
        place = data["placement"]
        assert (place["highest"], place["at_fault"], place["next"], place["consequences"]) == \
            (row["highest"], row["at_fault"], row["next"], row["consequences"]), name
        assert (data["points"]["earned"], data["points"]["possible"]) == (row["points"], row["possible"])
        # What `make progress` prints is rendered from this file (checked against a real run below).
        said = report(stages, data, row["folder"], quiet=True)
        assert f"Highest stage reached: {row['highest'] or 'none yet'} ({row['points']} of " \
               f"{row['possible']} points)" in said, (name, said)
        assert (f"at fault: stage {row['at_fault']}" in said) == bool(row["at_fault"]), (name, said)


@pytest.mark.parametrize("learner", sorted(PLACED))
def test_the_examples_are_placed_where_their_fault_is(graded, learner):
    _, rows, _, _ = graded
    assert (rows[learner]["highest"], rows[learner]["at_fault"]) == PLACED[learner], rows[learner]


def test_make_progress_says_what_grade_says(graded):
    """A stage-09 app with a stage-08 bug: `progress`, run again, prints what grade's file says."""
    _, rows, out, _ = graded
    fay = rows["fay"]
    try:
        result = checks("progress", fay["folder"], "--quiet")
    finally:  # without --json, progress keeps the app's file under build/results/
        for path in (checkruns.results_file(fay["folder"]), checkruns.results_file(fay["folder"]).with_suffix(".lock")):
            path.unlink(missing_ok=True)
    assert result.returncode == 0, result.stderr
    data = json.loads((out / fay["results"]).read_text())
    assert result.stdout.strip() == report(load_manifest(), data, fay["folder"], quiet=True)
    possible = sum(e.points for s in load_manifest() for e in s.expectations if not e.informational)
    lost = sum(t["points"] for t in data["tests"] if t["status"] == "fail")
    assert f"Highest stage reached: 09 ({possible - lost} of {possible} points); at fault: stage 08" \
        in result.stdout and 0 < lost < possible


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
