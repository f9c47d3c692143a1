"""The instructor's HTML report (grades.html): its rows are grades.json's, it opens from disk in
chromium with no console error, sorts by points as numbers, shows a crashed learner's cause, and
shows every learner string as text (a folder named with <script>, a cause holding markup)."""
import json
import re
import time
from html.parser import HTMLParser

import pytest
from playwright.sync_api import expect

from checks.manifest import load_manifest
from checks.placement import learner_row, missing_row, write_reports

STAGES = load_manifest()
SCRIPT_NAME = "<script>document.title='owned'</script>"
MARKUP_CAUSE = "ValueError: <img src=x onerror=\"document.title='owned'\">\n  at task_list/tasks.py:9"
CRASH = "NameError: name 'session' is not defined\n  at task_list/__init__.py:31 in index"


def verdict(expectation, passed, **failure):
    """One test as `progress --json` writes it (results file version 4, plus what 5 adds)."""
    e = expectation
    data = {"name": e.test_name, "status": "pass" if passed else "fail", "step": e.stage, "id": e.id,
            "points": e.points, "points_earned": e.points if passed and not e.informational else 0,
            "informational": e.informational, "app_state": "ok", "cause": None, "duration": 0.05,
            "message": None}
    if not passed:
        data.update(observed=f"{e.id} did not hold", output=None, reason=None, hint=e.hint,
                    message=f"observed: {e.id} did not hold")
        data.update(failure)
    return data


def results_file(passing, **failure):
    """A learner's learners/NAME.json: the expectations named in PASSING pass, the rest fail."""
    tests = [verdict(e, f"{e.stage} {e.id}" in passing or e.stage in passing, **failure)
             for s in STAGES for e in s.expectations]
    return {"version": 4, "status": "fail", "app_state": "ok", "cause": None, "message": None,
            "step": None, "tests": tests,
            "points": {"earned": sum(t["points_earned"] for t in tests),
                       "possible": sum(t["points"] for t in tests if not t["informational"])}}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A class written by write_reports as `make grade` writes it: (grades.json rows, the folder)."""
    out = tmp_path_factory.mktemp("report")
    started = time.monotonic()
    classes = {
        "ada": results_file({"01", "02", "03 ebextensions"}),  # 9 points
        "bea": results_file({"01", "02", "03 ebextensions", "03 entry_point"}),  # 10 points
        SCRIPT_NAME: results_file({"01"}, cause=MARKUP_CAUSE),
        "gus": results_file(set(), status="error", app_state="crashed", cause=CRASH,
                            reason="server_error"),
    }
    graded = []
    for name, data in classes.items():
        row = learner_row(name, out / "class" / name, data, STAGES, started)
        graded.append((row, data["tests"]))
    # A row as the results model writes it: stage at fault, its consequences, the next step.
    graded[1][0].update(at_fault="03", consequences=["01 index"], next="03 migration_command")
    graded.append(missing_row("dee", out / "class" / "dee", started, "empty folder"))
    write_reports(graded, out, 12.0, STAGES)
    rows = json.loads((out / "grades.json").read_text())["learners"]
    return rows, out


class Table(HTMLParser):
    """The class table's cells, by column key, row by row."""

    def __init__(self):
        super().__init__()
        self.rows, self.key = [], None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr" and "data-order" in attrs:
            self.rows.append({})
        elif tag == "td" and self.rows:
            self.key = attrs["data-key"]
            self.rows[-1][self.key] = ""

    def handle_endtag(self, tag):
        if tag == "td":
            self.key = None

    def handle_data(self, data):
        if self.key:
            self.rows[-1][self.key] += data


def html_rows(out):
    """grades.html's table as the cells it shows."""
    parser = Table()
    parser.feed((out / "grades.html").read_text(encoding="utf-8"))
    return parser.rows


def json_rows(out):
    """grades.json's learners as the cells the HTML table must show for them."""
    rows = json.loads((out / "grades.json").read_text())["learners"]
    return [{"learner": r["learner"], "highest": r["highest"] or "-",
             "at_fault": r.get("at_fault") or "-", "state": r["state"].upper(),
             "points": f"{r['points']}/{r['possible']}" if r["possible"] else "-",
             "regressions": ", ".join(g["expectation"] for g in r["regressions"]) or "-",
             "next": r.get("next") or (r["failing"][0]["expectation"] if r["failing"] else "-")}
            for r in rows]


def test_the_reports_rows_are_grades_json(report):
    rows, out = report
    expected = json_rows(out)
    assert html_rows(out) == expected
    assert [r["points"] for r in rows[:2]] == [9, 10]
    assert expected[1]["next"] == "03 migration_command" and expected[0]["next"] == "03 migration_command"
    assert [r["state"] for r in rows] == ["ok", "ok", "ok", "crashed", "missing"]


def test_every_learner_string_is_escaped_in_the_file(report):
    _, out = report
    text = (out / "grades.html").read_text(encoding="utf-8")
    assert SCRIPT_NAME not in text and "<img" not in text
    assert "&lt;script&gt;document.title=&#x27;owned&#x27;&lt;/script&gt;" in text
    # Self-contained: nothing to fetch (the page's policy would refuse it anyway).
    assert "<link" not in text and not re.search(r"<(script|img)[^>]*src", text)


def test_the_report_opens_from_disk_sorts_and_shows_causes(browser, report):
    rows, out = report
    page = browser.new_page()
    problems = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on("request", lambda request: problems.append(request.url)
            if not request.url.startswith("file://") else None)
    page.goto((out / "grades.html").as_uri())
    assert page.title() == "Class report"  # nothing a learner wrote ran

    learners = page.locator("#class tbody td[data-key=learner]")
    expect(learners).to_have_text([r["learner"] for r in rows])
    page.click("th[data-key=points] button")
    expect(page.locator("th[data-key=points]")).to_have_attribute("aria-sort", "ascending")
    by_points = sorted(rows, key=lambda r: r["points"])  # stable, as the page's sort
    expect(learners).to_have_text([r["learner"] for r in by_points])
    order = [r["learner"] for r in by_points]
    assert order.index("ada") < order.index("bea")  # 9 before 10: numbers, not text
    page.click("th[data-key=points] button")
    expect(page.locator("#class tbody tr").first).to_have_attribute("data-order", "1")  # bea, 10

    # A crashed learner: the state in the table, the cause in their section.
    page.locator("#class a", has_text="gus").click()
    gus = page.locator("section.learner", has=page.locator("h2", has_text="gus"))
    expect(gus).to_contain_text("CRASHED · the app crashed")
    expect(gus.locator("pre").first).to_have_text(CRASH)
    # The learner named with <script>: shown as text, its markup cause too.
    odd = page.locator("section.learner").nth(2)
    expect(odd.locator("h2")).to_have_text(SCRIPT_NAME)
    expect(odd.locator(".failure pre").first).to_have_text(MARKUP_CAUSE)
    expect(odd.locator(".failure").first).to_contain_text("hint: ")
    migrates = STAGES[1].expectations[0]
    expect(odd.locator(".failure").first).to_contain_text(
        f'reread: {STAGES[1].lesson_path}, section "{migrates.section}"')
    expect(page.locator("section.learner").nth(1)).to_contain_text("follow from stage 03: 01 index")
    assert page.title() == "Class report"
    assert problems == []
    page.close()
