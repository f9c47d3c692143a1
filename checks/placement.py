"""The class reports: one row per learner, from their `progress` results file, and the table,
Markdown, CSV, JSON and JUnit files an instructor reads. Where a learner stands, their points and
state are the results model's (checks/results.py); this module only lays them out, the same in
every format. A cell holds one line; the files keep each detail whole.
"""
import csv
import time
import xml.etree.ElementTree as ET

from checks.cli import write_json
from checks.results import (cause, failed, learner_state, named, one_line, placement, points,
                            stalled)
from checks.report import write_html

CELL = 70  # characters of a detail shown in a table cell; the files keep it whole


def learner_row(name, path, data, stages, started):
    """One learner's row from their `progress` results file."""
    tests = data["tests"]
    place = placement(stages, tests)
    reached = place["highest"]
    failures = [t for t in tests if failed(t)]
    following = next((t["step"] for t in failures if not reached or t["step"] > reached), None)
    state = learner_state(data, reached)
    detail = ""
    if state == "regrade":
        detail = next(t.get("stall") or "the machine stalled" for t in tests if stalled(t))
    elif state != "ok":
        culprit = next((t for t in tests if failed(t) and t.get("app_state") == state),
                       next((t for t in failures if t["status"] == "error"), None))
        detail = cause(culprit) if culprit else state
    total = points(tests)
    row = base_row(name, path, state, detail)
    row.update(highest=reached, at_fault=place["at_fault"], consequences=place["consequences"],
               next=place["next"],
               regressions=[cited(t) for t in failures if reached and t["step"] < reached],
               failing=[cited(t) for t in failures if t["step"] == following],
               points=total["earned"], possible=total["possible"],
               seconds=round(time.monotonic() - started, 1))
    return row


def cited(test):
    return {"expectation": named(test), "cause": cause(test)}


def base_row(name, path, state, detail):
    return {"learner": name, "folder": str(path), "state": state, "highest": None,
            "at_fault": None, "consequences": [], "next": None, "points": 0, "possible": 0,
            "regressions": [], "failing": [], "detail": detail, "seconds": 0.0, "results": None}


def missing_row(name, path, started, detail, state="missing"):
    """A learner with no results: no folder, no app, or a checker that never finished."""
    row = base_row(name, path, state, detail)
    row["seconds"] = round(time.monotonic() - started, 1)
    return row, []


# ---- what an instructor reads ------------------------------------------------------------------

def notes(row):
    """The one line that says what to look at for ROW, whole (cut only where it is shown)."""
    if row["state"] == "regrade":
        return f"the machine stalled ({one_line(row['detail'])}): grade again"
    cited = {f["expectation"]: f["cause"] for f in row["regressions"] + row["failing"]}
    parts = [one_line(row["detail"])] if row["state"] != "ok" else []
    if row["next"]:
        reason = cited.get(row["next"])
        parts.append(f"next: {row['next']}" + (f" ({one_line(reason)})" if reason else ""))
    if row["consequences"]:
        parts.append(f"consequences: {', '.join(row['consequences'])}")
    return "; ".join(parts) or "every stage passes"


def cut(text, width):
    return text if len(text) <= width else text[:width - 1] + "…"


def shown_points(row):
    return f"{row['points']}/{row['possible']}" if row["possible"] else "-"


def cells(row):
    """ROW's cells, the same in the table and in Markdown."""
    return [row["learner"], row["highest"] or "-", row["at_fault"] or "-", row["state"].upper(),
            shown_points(row), cut(notes(row), CELL)]


HEADER = ["learner", "stage", "fault", "state", "points", "to look at"]


def table(rows):
    width = max([len("learner")] + [len(r["learner"]) for r in rows])
    layout = f"{{:{width}}}  {{:5}}  {{:5}}  {{:7}}  {{:>6}}  {{}}"
    return "\n".join(layout.format(*c).rstrip() for c in [HEADER] + [cells(r) for r in rows])


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
             "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for r in rows:
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells(r)) + " |")
    return "\n".join(lines)


FORMATS = {"table": table, "markdown": markdown}
CSV_COLUMNS = ["learner", "state", "highest_stage", "at_fault", "points", "possible", "next",
               "consequences", "regressions", "next_failing", "detail", "seconds", "folder"]


def csv_cells(r):
    """ROW as CSV cells, each whole and on one line."""
    joined = lambda failures: "; ".join(f"{g['expectation']}: {one_line(g['cause'])}" for g in failures)
    return [r["learner"], r["state"], r["highest"] or "", r["at_fault"] or "", r["points"],
            r["possible"], r["next"] or "", ", ".join(r["consequences"]), joined(r["regressions"]),
            joined(r["failing"]), one_line(r["detail"]), r["seconds"], r["folder"]]


def write_reports(graded, out, seconds, stages):
    """grades.csv, grades.json and grades.md with whole details; grades.xml per test (JUnit);
    grades.html, the page to open (checks/report.py)."""
    rows = [row for row, _ in graded]
    with open(out / "grades.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        writer.writerows(csv_cells(r) for r in rows)
    write_json(out / "grades.json", {"seconds": round(seconds, 1), "learners": rows})
    (out / "grades.md").write_text(markdown(rows) + "\n", encoding="utf-8")
    suites = ET.Element("testsuites", name="workshop grades")
    for row, tests in graded:
        suite = ET.SubElement(suites, "testsuite", name=row["learner"])
        properties = ET.SubElement(suite, "properties")
        for key in ("state", "highest", "at_fault", "points", "possible"):
            ET.SubElement(properties, "property", name=key, value="" if row[key] is None else str(row[key]))
        if not tests:  # missing, hung or failed before any result: one error says why
            case = ET.SubElement(suite, "testcase", classname=row["learner"], name="app", time="0")
            ET.SubElement(case, "error", message=f"{row['state']}: {one_line(row['detail'])}")
        for t in tests:
            case = ET.SubElement(suite, "testcase", classname=f"{row['learner']}.stage_{t['step']}",
                                 name=t["name"], time=str(t["duration"]))
            if stalled(t):  # not judged: neither the learner's failure nor a pass
                ET.SubElement(case, "skipped", message=f"not judged: {one_line(t.get('stall'))}")
            elif failed(t):
                ET.SubElement(case, "failure" if t["status"] == "fail" else "error",
                              message=one_line(cause(t))).text = t["message"]
        cases = suite.findall("testcase")
        suite.set("tests", str(len(cases)))
        for kind in ("failure", "error", "skipped"):
            suite.set(kind + ("s" if kind != "skipped" else ""),
                      str(sum(1 for c in cases if c.find(kind) is not None)))
    ET.indent(suites)
    ET.ElementTree(suites).write(out / "grades.xml", encoding="utf-8", xml_declaration=True)
    write_html(out / "grades.html", graded, stages, seconds)
