"""Where a learner stands, read from one `progress` results file, and the class reports.

A learner is placed at the furthest stage whose own check passes; what fails at an earlier stage is
a regression, listed with its cause. A pass between two failing stages does not place anyone: some
checks cannot fail without the stage before them (with no cache, there is nothing to invalidate, so
check 05 passes on a stage-03 app). An app that hung or crashed is never `ok`.
"""
import csv
import time
import xml.etree.ElementTree as ET

from checks.cli import write_json
from checks.report import write_html

STATES = ("hung", "crashed")
CELL = 70  # characters of a detail shown in a table cell; the files keep it whole


def app_state_of(test):
    """"hung", "crashed" or "ok": the results file's app_state, or the older `app` field."""
    state = test.get("app_state") or test.get("app")
    return state if state in STATES else "ok"


def cause(test):
    """What went wrong in TEST, in a few lines: the checker's cause, else what it observed."""
    return (test.get("cause") or test.get("observed") or test["status"]).strip()


def failed(test):
    return test["status"] in ("fail", "error")


def stage_passes(stage, tests):
    """Whether STAGE's own check passes in TESTS: every expectation ran, none failed."""
    ran = [t for t in tests if t["step"] == stage.number]
    counted = [t for t in ran if not t["informational"]]
    return len(ran) == len(stage.expectations) and bool(counted) and not any(failed(t) for t in ran)


def placement(stages, tests):
    """The furthest stage reached (None for none), and the stage numbers whose own check fails."""
    passes = {stage.number: stage_passes(stage, tests) for stage in stages}
    numbers = [s.number for s in stages]
    reached = None
    for i, number in enumerate(numbers):
        before = i == 0 or passes[numbers[i - 1]]
        after = i == len(numbers) - 1 or passes[numbers[i + 1]]
        if passes[number] and (before or after):
            reached = number
    return reached, [n for n in numbers if not passes[n]]


def learner_row(name, path, data, stages, started):
    """One learner's row from their `progress` results file."""
    tests = data["tests"]
    reached, failing_stages = placement(stages, tests)
    failures = [t for t in tests if failed(t)]
    regressions = [named(t) for t in failures if reached and t["step"] < reached]
    following = next((n for n in failing_stages if not reached or n > reached), None)
    errors = [t for t in tests if t["status"] == "error"]
    state = "ok"  # an app that reaches a stage runs: what crashed on the way is in its causes
    if reached is None:
        state = data.get("app_state") or data.get("app")
        if state not in STATES:
            state = next((app_state_of(t) for t in tests if app_state_of(t) != "ok"), "ok")
        if state == "ok" and errors:
            state = "crashed"  # no check could even run the app
    detail = ""
    if state != "ok":
        culprit = next((t for t in tests if app_state_of(t) == state), errors[0] if errors else None)
        detail = cause(culprit) if culprit else state
    row = base_row(name, path, state, detail)
    row.update(highest=reached, regressions=regressions,
               failing=[named(t) for t in failures if t["step"] == following],
               points=data["points"]["earned"], possible=data["points"]["possible"],
               seconds=round(time.monotonic() - started, 1))
    return row


def named(test):
    return {"expectation": f"{test['step']} {test['id']}", "cause": cause(test)}


def base_row(name, path, state, detail):
    return {"learner": name, "folder": str(path), "state": state, "highest": None,
            "points": 0, "possible": 0, "regressions": [], "failing": [], "detail": detail,
            "seconds": 0.0, "results": None}


def missing_row(name, path, started, detail, state="missing"):
    """A learner with no results: no folder, no app, or a checker that never finished."""
    row = base_row(name, path, state, detail)
    row["seconds"] = round(time.monotonic() - started, 1)
    return row, []


# ---- what an instructor reads ------------------------------------------------------------------

def notes(row):
    """The one line that says what to look at for ROW, whole (cut only where it is shown)."""
    if row["state"] != "ok":
        text = one_line(row["detail"])
        return text + (f"; regressions: {listed(row['regressions'])}" if row["regressions"] else "")
    parts = []
    if row["regressions"]:
        parts.append(f"regressions: {listed(row['regressions'])}")
    if row["failing"] and not row["highest"]:
        parts.append(f"no stage passes: {listed(row['failing'][:1])}")
    elif row["failing"]:
        parts.append(f"next: {', '.join(f['expectation'] for f in row['failing'])}")
    return "; ".join(parts) or "every stage passes"


def listed(failures):
    return ", ".join(f"{f['expectation']} ({one_line(f['cause'])})" for f in failures)


def one_line(text):
    return " ".join(text.split())


def cut(text, width):
    return text if len(text) <= width else text[:width - 1] + "…"


def points(row):
    return f"{row['points']}/{row['possible']}" if row["possible"] else "-"


def table(rows):
    width = max([len("learner")] + [len(r["learner"]) for r in rows])
    lines = [f"{'learner':{width}}  stage  state    points  to look at"]
    for r in rows:
        lines.append(f"{r['learner']:{width}}  {r['highest'] or '-':5}  {r['state'].upper():7}  "
                     f"{points(r):>6}  {cut(notes(r), CELL)}")
    return "\n".join(lines)


def markdown(rows):
    """A summary an instructor can paste into a chat: one line of counts, then a table."""
    counts = {}
    for r in rows:
        group = (r["state"] if r["state"] != "ok" else
                 f"at stage {r['highest']}" if r["highest"] else "with no stage passing")
        counts[group] = counts.get(group, 0) + 1
    order = sorted((g for g in counts if g.startswith("at stage")), reverse=True)
    order += [g for g in counts if not g.startswith("at stage")]
    summary = ", ".join(f"{counts[g]} {g}" for g in order)
    lines = [f"**Class report: {len(rows)} learners** ({summary})", "",
             "| learner | stage | state | points | to look at |", "|---|---|---|---|---|"]
    for r in rows:
        cells = [r["learner"], r["highest"] or "-", r["state"].upper(), points(r), cut(notes(r), CELL)]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


FORMATS = {"table": table, "markdown": markdown}


def write_reports(graded, out, seconds, stages):
    """grades.csv, grades.json and grades.md with whole details; grades.xml per test (JUnit);
    grades.html, the page to open (checks/report.py)."""
    rows = [row for row, _ in graded]
    with open(out / "grades.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["learner", "state", "highest_stage", "points", "possible", "regressions",
                         "next_failing", "detail", "seconds", "folder"])
        for r in rows:
            writer.writerow([r["learner"], r["state"], r["highest"] or "", r["points"], r["possible"],
                             "; ".join(f"{g['expectation']}: {g['cause']}" for g in r["regressions"]),
                             "; ".join(f"{g['expectation']}: {g['cause']}" for g in r["failing"]),
                             r["detail"], r["seconds"], r["folder"]])
    write_json(out / "grades.json", {"seconds": round(seconds, 1), "learners": rows})
    (out / "grades.md").write_text(markdown(rows) + "\n", encoding="utf-8")
    suites = ET.Element("testsuites", name="workshop grades")
    for row, tests in graded:
        suite = ET.SubElement(suites, "testsuite", name=row["learner"])
        if not tests:  # missing, hung or failed before any result: one error says why
            case = ET.SubElement(suite, "testcase", classname=row["learner"], name="app", time="0")
            ET.SubElement(case, "error", message=f"{row['state']}: {one_line(row['detail'])}")
        for t in tests:
            case = ET.SubElement(suite, "testcase", classname=f"{row['learner']}.stage_{t['step']}",
                                 name=t["name"], time=str(t["duration"]))
            if failed(t):
                ET.SubElement(case, "failure" if t["status"] == "fail" else "error",
                              message=one_line(cause(t))).text = t["message"]
        cases = suite.findall("testcase")
        suite.set("tests", str(len(cases)))
        suite.set("failures", str(sum(1 for c in cases if c.find("failure") is not None)))
        suite.set("errors", str(sum(1 for c in cases if c.find("error") is not None)))
    ET.indent(suites)
    ET.ElementTree(suites).write(out / "grades.xml", encoding="utf-8", xml_declaration=True)
    write_html(out / "grades.html", graded, stages, seconds)
