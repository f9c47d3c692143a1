"""grades.html: the class as one page an instructor opens from disk.

A table of learners (sortable by any column; points sort as numbers) and, for each learner, the
failing expectations with their causes and hints, all from the same rows as grades.json and the
same tests as learners/NAME.json. The file is self-contained: no network asset, and a Content
Security Policy that lets only its own script run. Every string that comes from a learner (a
folder name, an exception, a source line) is escaped here; the script only reorders rows.
"""
import base64
import hashlib
import html
from datetime import datetime, timezone

from checks import results
from checks.manifest import stage_of

# The table's columns: (key, heading, sorts as a number).
COLUMNS = (("learner", "Learner", False), ("highest", "Highest stage", False),
           ("at_fault", "Stage at fault", False), ("state", "State", False),
           ("points", "Points", True), ("regressions", "Regressions", True),
           ("next", "Next step", False))
STATE_WORDS = {"regrade": "the machine stalled while grading this learner: grade again",
               "hung": "the app hung", "crashed": "the app crashed",
               "missing": "no app to grade", "error": "the checker could not run"}

SCRIPT = """"use strict";
// Sort the class by a column: numbers as numbers, the rest as text; a second click reverses.
const table = document.getElementById("class");
for (const th of table.tHead.rows[0].cells) {
  th.querySelector("button").addEventListener("click", () => {
    const index = th.cellIndex, numeric = th.dataset.type === "number";
    const up = th.getAttribute("aria-sort") !== "ascending";
    const key = (row) => row.cells[index].dataset.sort;
    const rows = Array.from(table.tBodies[0].rows);
    rows.sort((a, b) => {
      const x = key(a), y = key(b);
      const order = numeric ? Number(x) - Number(y) : x.localeCompare(y);
      return (up ? order : -order) || a.dataset.order - b.dataset.order;
    });
    for (const other of table.tHead.rows[0].cells) other.removeAttribute("aria-sort");
    th.setAttribute("aria-sort", up ? "ascending" : "descending");
    table.tBodies[0].append(...rows);
  });
}
"""

STYLE = """
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2933; background: #f5f7fa; }
main { max-width: 1200px; margin: 0 auto; padding: 20px 24px 40px; }
h1 { font-size: 22px; margin: 0 0 4px; }
.muted { color: #616e7c; font-size: 13px; }
table { border-collapse: collapse; width: 100%; background: #fff; border: 1px solid #d9dee4; margin: 16px 0 24px; }
th, td { padding: 6px 8px; border-bottom: 1px solid #eef1f4; text-align: left; vertical-align: top; }
th button { font: inherit; font-weight: 600; border: 0; background: none; padding: 0; cursor: pointer; color: inherit; }
th[aria-sort="ascending"] button::after { content: " \\25B2"; }
th[aria-sort="descending"] button::after { content: " \\25BC"; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.state { font: 600 12px ui-monospace, monospace; }
tr[data-state="ok"] td.state { color: #1b7f3b; }
tr:not([data-state="ok"]) td.state { color: #c0392b; }
tr[data-state="regrade"] td.state { color: #b45309; }
section.learner { background: #fff; border: 1px solid #d9dee4; border-radius: 8px; padding: 12px 16px; margin: 12px 0; }
section.learner h2 { font-size: 17px; margin: 0 0 4px; }
section.learner h3 { font-size: 14px; margin: 12px 0 4px; }
summary { cursor: pointer; font-weight: 600; margin: 6px 0; }
.failure { margin: 8px 0 8px 4px; padding-left: 10px; border-left: 3px solid #f5c2bd; }
.failure p { margin: 2px 0; }
.label { color: #616e7c; }
pre { margin: 2px 0; padding: 6px 8px; background: #f5f7fa; border-radius: 4px; white-space: pre-wrap; word-break: break-word; font-size: 12px; }
"""


def esc(value):
    return html.escape("" if value is None else str(value), quote=True)


def expectation_name(item):
    """A consequence or regression as a name: "05 fresh_after_add", given as text or a dict."""
    return item.get("expectation", "") if isinstance(item, dict) else str(item)


def next_step(row):
    """The row's next step: the model's `next`, else the first failing expectation."""
    if row.get("next"):
        return row["next"]
    return row["failing"][0]["expectation"] if row.get("failing") else "-"


def cells(row):
    """Each column's (text shown, sort key) for ROW, in COLUMNS' order."""
    regressions = [r["expectation"] for r in row["regressions"]]
    shown_points = f"{row['points']}/{row['possible']}" if row["possible"] else "-"
    return [(row["learner"], row["learner"].lower()), (row["highest"] or "-", row["highest"] or ""),
            (row.get("at_fault") or "-", row.get("at_fault") or ""),
            (row["state"].upper(), row["state"]), (shown_points, row["points"]),
            (", ".join(regressions) or "-", len(regressions)), (next_step(row), next_step(row))]


def table_row(index, row):
    tds = []
    for (key, _, numeric), (text, key_value) in zip(COLUMNS, cells(row)):
        text = esc(text)
        if key == "learner":
            text = f'<a href="#learner-{index}">{text}</a>'
        kind = ' class="num"' if key == "points" else ' class="state"' if key == "state" else ""
        tds.append(f'<td data-key="{key}" data-sort="{esc(key_value)}"{kind}>{text}</td>')
    return f'<tr data-order="{index}" data-state="{esc(row["state"])}">{"".join(tds)}</tr>'


def labelled(label, value, block=False):
    if not value:
        return ""
    if block:
        return f'<div><span class="label">{esc(label)}</span><pre>{esc(value)}</pre></div>'
    return f'<p><span class="label">{esc(label)}</span>{esc(value)}</p>'


def failure(test, stages):
    """One failing expectation as the results model renders it, with its stage's lesson."""
    stage = stage_of(stages, test["step"])
    f = results.failure(test, stage)
    stalled = results.stalled(test)
    parts = [f'<p><strong>{esc(results.named(test))}</strong>: {esc(f["text"])}'
             + (" <em>(not judged: the machine stalled)</em>" if stalled else "") + "</p>",
             labelled("observed: ", f["observed"]),
             labelled("cause:", f["cause"], block=True)
             if (f["cause"] or "").strip() != (f["observed"] or "").strip() else "",
             labelled("the machine: ", None if stalled else test.get("stall")),
             labelled("stage whose layer produced it: ", test.get("layer")),
             labelled("hint: ", f["hint"]),
             labelled("reread: ", f'{stage.lesson_path}, section "{f["reread"]}"')]
    if not f["cause"] and test.get("output"):
        parts.append(labelled("output:", test["output"], block=True))
    return f'<div class="failure" data-test="{esc(test.get("name"))}">{"".join(parts)}</div>'


def stage_groups(row, failures, stages):
    """FAILURES by stage: open up to the first stage that fails after the highest reached (and
    the stage at fault); the later stages, which fail because they are not done yet, folded."""
    numbers = sorted({t["step"] for t in failures})
    first = next((n for n in numbers if n > (row["highest"] or "")), numbers[-1])
    groups = []
    for number in numbers:
        own = [t for t in failures if t["step"] == number]
        title = next((s.title for s in stages if s.number == number), "")
        opened = " open" if number <= first or number == row.get("at_fault") else ""
        groups.append(f"<details{opened}><summary>Stage {esc(number)}: {esc(title)} "
                      f"({len(own)} failing)</summary>"
                      + "".join(failure(t, stages) for t in own) + "</details>")
    return groups


def learner_section(index, row, tests, stages):
    head = [f'<h2>{esc(row["learner"])}</h2>',
            f'<p class="muted">{esc(row["state"].upper())}'
            + (f" · {esc(STATE_WORDS[row['state']])}" if row["state"] in STATE_WORDS else "")
            + f' · folder {esc(row["folder"])}'
            + (f' · results: {esc(row["results"])}' if row.get("results") else "") + "</p>"]
    if row["state"] != "ok" and row.get("detail"):
        head.append(labelled("cause:", row["detail"], block=True))
    consequences = [expectation_name(c) for c in row.get("consequences") or []]
    if consequences:
        head.append(labelled(f"follow from stage {row.get('at_fault') or '?'}: ", ", ".join(consequences)))
    failures = [t for t in tests if results.failed(t) or results.stalled(t)]
    if failures:
        head.append(f"<h3>Failing expectations ({len(failures)})</h3>")
        head += stage_groups(row, failures, stages)
    elif tests:
        head.append("<p>Every expectation passes.</p>")
    return f'<section class="learner" id="learner-{index}">{"".join(head)}</section>'


def page(graded, stages, seconds):
    """The whole HTML file, from GRADED ([(row, tests)]) in the class's order."""
    rows = [row for row, _ in graded]
    states = {}
    for row in rows:
        states[row["state"]] = states.get(row["state"], 0) + 1
    counts = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
    heads = "".join(f'<th data-key="{key}"' + (' data-type="number"' if numeric else "")
                    + f'><button type="button">{esc(title)}</button></th>'
                    for key, title, numeric in COLUMNS)
    body = "".join(table_row(i, row) for i, row in enumerate(rows))
    sections = "".join(learner_section(i, row, tests, stages)
                       for i, (row, tests) in enumerate(graded))
    digest = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-{digest}'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Class report</title>
<style>{STYLE}</style>
</head>
<body>
<main>
<h1>Class report: {len(rows)} learners</h1>
<p class="muted">{esc(counts)} · graded {esc(when)} in {seconds:.0f} s · click a heading to sort, a name to read that learner's failures</p>
<table id="class">
<thead><tr>{heads}</tr></thead>
<tbody>{body}</tbody>
</table>
{sections}
</main>
<script>{SCRIPT}</script>
</body>
</html>
"""


def write_html(path, graded, stages, seconds):
    path.write_text(page(graded, stages, seconds), encoding="utf-8")
