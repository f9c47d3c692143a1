"""The results model: one Result per expectation, and every judgement read from results.

Everything that says whether a stage passes, where a learner stands, how many points they have
or how a failure reads is here; `run`, `progress`, `watch` and `grade` only call it, so their
outputs cannot disagree. It works on the results file's test dicts (a Result gives its dict).

- A stage passes when every expectation of it ran, one at least counts, and none failed.
- A failure the machine spoiled (reason "machine_stalled": the checker's own parts stalled, also
  on the rerun) is nobody's: its stage is NOT JUDGED, and it earns and loses no points.
- The highest stage reached is the furthest stage that passes, unless it sits between two checked
  stages that do not pass: some checks cannot fail without the stage before them (with no cache,
  check 05 has nothing to find stale). `progress`'s DONE means exactly that: passes and counts.
- The stage at fault is the earliest stage whose code produced a failure: the stage a check names
  as the failure's `layer` (a stale page served by stage 08's view cache), else, for a crash, the
  stage whose lesson added the line that raised (its CHANGES.diff) when that stage's own check
  fails too, else the failing stage.
  The failures it explains at other stages are its consequences; `next` is what to fix first.
"""
import datetime
import functools
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

from checks.manifest import Expectation, stage_of

VERSION = 5  # 5: each test's layer, stall and rerun; placement, machine_stalled; per-app focus
STATES = ("hung", "crashed")
STALLED = "machine_stalled"
RAISED_AT = re.compile(r"^\s*at (?P<path>\S+):\d+(?: in \S+)?\n\s+(?P<code>\S.*)$", re.M)


@dataclass
class Result:
    expectation: Expectation
    status: str = "pass"  # pass, fail, error (the app could not be run), info (informational)
    observed: str = ""
    output: str = ""
    duration: float = 0.0
    app_state: str = "ok"  # "hung" or "crashed" when the check found the app so
    cause: str = None  # what the app raised and where, when it went wrong (not a wrong answer)
    reason: str = None  # which of the manifest's hints fits this failure
    layer: str = None  # the stage whose layer produced this failure, when a check knows it
    stall: str = None  # what was slow, and how long, while this check ran
    rerun: bool = False  # this verdict comes from the rerun on a fresh boot

    @property
    def passed(self):
        return self.status in ("pass", "info")

    @property
    def hint(self):
        return self.expectation.hint_for(self.reason)

    def as_dict(self):
        e = self.expectation
        data = {
            "name": e.test_name,
            "status": self.status,
            "message": None if self.status == "pass" else self.message(),
            "step": e.stage,
            "id": e.id,
            "points": e.points,
            "points_earned": e.points if self.passed and not e.informational else 0,
            "informational": e.informational,
            "app_state": self.app_state,
            "cause": self.cause,
            "layer": self.layer,
            "stall": self.stall,
            "rerun": self.rerun,
            "duration": round(self.duration, 3),
        }
        if not self.passed or self.observed:
            data["observed"] = self.observed or None
        if not self.passed:  # what a learner needs to act on; a pass needs none of it
            data.update(output=self.output or None, reason=self.reason, hint=self.hint)
        return data

    def message(self):
        if self.status == "info":
            return f"observed: {self.observed}" if self.observed else None
        return f"observed: {self.observed or 'the check failed'}"


# ---- one test --------------------------------------------------------------------------------

def stalled(test):
    """A verdict the machine spoiled: never the learner's, never points."""
    return test.get("reason") == STALLED


def failed(test):
    """A failure of the learner's code (not one the machine spoiled)."""
    return test["status"] in ("fail", "error") and not stalled(test)


def counted(test):
    return not test["informational"] and not stalled(test)


def app_state_of(test):
    """"hung", "crashed" or "ok": the results file's app_state, or the older `app` field."""
    state = test.get("app_state") or test.get("app")
    return state if state in STATES else "ok"


def cause(test):
    """What went wrong in TEST, in a few lines: the checker's cause, else what it observed."""
    return (test.get("cause") or test.get("observed") or test["status"]).strip()


def one_line(text):
    return " ".join((text or "").split())


def named(test):
    return f"{test['step']} {test['id']}"


def ordered(stages, tests):
    """TESTS in the manifest's order, whatever order they ran or were merged in."""
    order = {e.test_name: i for i, e in enumerate(e for s in stages for e in s.expectations)}
    return sorted(tests, key=lambda t: order.get(t["name"], len(order)))


# ---- stages and placement --------------------------------------------------------------------

def stage_status(stage, tests):
    """DONE-or-not of STAGE's own check: "passes", "PENDING", "NOT JUDGED" or "UNCHECKED"."""
    ran = [t for t in tests if t["step"] == stage.number]
    if not ran:
        return "UNCHECKED"
    if any(failed(t) for t in ran):
        return "PENDING"
    if any(stalled(t) for t in ran):
        return "NOT JUDGED"
    whole = len(ran) == len(stage.expectations) and any(counted(t) for t in ran)
    return "passes" if whole else "PENDING"


def stage_passes(stage, tests):
    return stage_status(stage, tests) == "passes"


def reached(stages, tests):
    """The numbers of the stages that pass and count: not a pass between two stages that fail."""
    status = [stage_status(s, tests) for s in stages]
    found = []
    for i, stage in enumerate(stages):
        before = status[i - 1] if i else None
        after = status[i + 1] if i + 1 < len(stages) else None
        if status[i] == "passes" and not (before == "PENDING" and after == "PENDING"):
            found.append(stage.number)
    return found


@functools.lru_cache(maxsize=None)
def added_lines(diff_path):
    """{(file, stripped line)} that a lesson's CHANGES.diff adds."""
    added, current = set(), None
    try:
        text = Path(diff_path).read_text(encoding="utf-8")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("+++ "):
            current = line[4:].removeprefix("b/")
        elif line.startswith("+") and current and line[1:].strip():
            added.add((current, line[1:].strip()))
    return frozenset(added)


def raising_stage(stages, text):
    """The stage whose lesson added the line a crash's cause names, or None."""
    match = RAISED_AT.search(text or "")
    if not match:
        return None
    line = (match.group("path"), match.group("code").strip())
    return next((s.number for s in stages if line in added_lines(s.path / "CHANGES.diff")), None)


def fault_of(stages, test, statuses):
    """The stage whose code produced this failure. A crash in a line of a stage that passes its
    own check says nothing of that stage (an old query that meets a missing table): not it."""
    if test.get("layer"):
        return test["layer"]
    raised = raising_stage(stages, test.get("cause"))
    return raised if raised and statuses.get(raised) == "PENDING" else test["step"]


def placement(stages, tests):
    """{highest, at_fault, consequences, next}: where TESTS place a learner."""
    numbers = reached(stages, tests)
    statuses = {s.number: stage_status(s, tests) for s in stages}
    failures = [t for t in ordered(stages, tests) if failed(t)]
    faults = [fault_of(stages, t, statuses) for t in failures]
    at_fault = min(faults, default=None)
    own = [named(t) for t, f in zip(failures, faults) if f == at_fault and t["step"] == at_fault]
    others = [named(t) for t, f in zip(failures, faults) if f == at_fault and t["step"] != at_fault]
    return {"highest": numbers[-1] if numbers else None, "at_fault": at_fault,
            "consequences": others, "next": (own + others)[0] if at_fault else None}


def stage_table(stages, tests):
    """Each stage: DONE (passes and counts), PENDING, NOT JUDGED or UNCHECKED, and what fails."""
    done = set(reached(stages, tests))
    table = []
    for stage in stages:
        status = stage_status(stage, tests)
        status = "DONE" if stage.number in done else "PENDING" if status == "passes" else status
        table.append({"number": stage.number, "title": stage.title, "status": status,
                      "failing": [t["id"] for t in tests if t["step"] == stage.number
                                  and (failed(t) or stalled(t))]})
    return table


def points(tests):
    """What passes, out of what was judged (never the informational or the machine's)."""
    return {"earned": sum(t["points"] for t in tests if counted(t) and t["status"] == "pass"),
            "possible": sum(t["points"] for t in tests if counted(t))}


def machine_stalled(tests):
    """The stall line of the first test the machine spoiled, or None."""
    return next((t.get("stall") or "the machine stalled" for t in tests if stalled(t)), None)


def learner_state(data, highest):
    """ok, hung, crashed or regrade, from one results file (a `progress` run) placed at HIGHEST."""
    tests = data["tests"]
    if data.get("machine_stalled") or any(stalled(t) for t in tests):
        return "regrade"
    if highest:
        return "ok"  # an app that reaches a stage runs: what crashed on the way is in its causes
    state = data.get("app_state") or data.get("app")
    if state not in STATES:
        state = next((app_state_of(t) for t in tests if app_state_of(t) != "ok"), "ok")
    if state == "ok" and any(t["status"] == "error" and failed(t) for t in tests):
        state = "crashed"  # no check could even run the app
    return state


# ---- results files ---------------------------------------------------------------------------

def summary(stages, tests, step, extra=None):
    """An Exercism-style results file: status, message, tests; plus step, points and placement."""
    tests = ordered(stages, tests)
    errors = [t for t in tests if t["status"] == "error"]
    status = "error" if errors else "fail" if any(failed(t) for t in tests) else "pass"
    state = next((s for s in STATES if s in {t["app_state"] for t in tests}), "ok")
    data = {
        "version": VERSION,
        "status": status,
        "app_state": state,
        "cause": next((t["cause"] for t in tests if t["app_state"] == state and t["cause"]), None),
        "message": (errors[0].get("stall") if stalled(errors[0]) else errors[0]["observed"])
        if errors else None,
        "step": step,
        "points": points(tests),
        "machine_stalled": machine_stalled(tests),
        "placement": placement(stages, tests),
        "tests": tests,
    }
    data.update(extra or {})
    return data


def app_record(stages, shown, command, tests, previous=None, numbers=None):
    """The per-app file (build/results/): PREVIOUS's tests with those of stages NUMBERS replaced
    by TESTS (every stage when NUMBERS is None), and every derived field recomputed."""
    kept = []
    if previous and previous.get("version") == VERSION and numbers is not None:
        kept = [t for t in previous.get("tests", []) if t["step"] not in numbers]
    tests = ordered(stages, kept + list(tests))
    data = summary(stages, tests, None)
    data.update(app=shown, command=command, stages=stage_table(stages, tests),
                updated=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                focus=focus(stages, tests))
    return data


def focus(stages, tests):
    """The first stage that does not pass, as a reader that cannot import checks/ needs it."""
    row = next((r for r in stage_table(stages, tests) if r["status"] in ("PENDING", "NOT JUDGED")),
               None)
    if row is None:
        return None
    stage = stage_of(stages, row["number"])
    return {"stage": stage.number, "title": stage.title, "lesson": stage.lesson_path,
            "failures": [failure(t, stage) for t in tests
                         if t["step"] == stage.number and t["status"] in ("fail", "error")]}


# ---- a failure, as a learner reads it --------------------------------------------------------

def expectation_of(stage, test):
    return next(e for e in stage.expectations if e.id == test["id"])


def failure(test, stage):
    """One failure as data: what was expected and observed, its cause, hint and lesson section."""
    e = expectation_of(stage, test)
    return {"text": e.text, "observed": test.get("stall") if stalled(test) else
            test.get("observed") or "the check failed", "cause": test.get("cause"),
            "hint": test.get("hint") or e.hint_for(test.get("reason")), "reread": e.section}


def render(test, stage, marks):
    """TEST as the terminal shows it: its mark and text, then for a failure what to do."""
    e = expectation_of(stage, test)
    lines = [f"  {marks[test['status']]} {e.text}"]
    if test["status"] == "info" and test.get("observed"):
        lines.append(wrap("observed: ", test["observed"]))
    elif test["status"] in ("fail", "error"):
        f = failure(test, stage)
        if stalled(test):
            lines.append(wrap("not judged: ", f"the machine stalled ({f['observed']}); "
                                              "this is not your code: check again"))
            return "\n".join(lines)
        lines.append(wrap("observed: ", f["observed"]))
        if f["cause"] and f["cause"].strip() != f["observed"].strip():
            first, *rest = f["cause"].splitlines()
            lines.append(wrap("cause: ", first))
            lines += [" " * 13 + line.removeprefix("  ") for line in rest]
        if test.get("layer") and test["layer"] != test["step"]:
            lines.append(wrap("layer: ", f"stage {test['layer']}'s code produced this: fix it there"))
        lines.append(wrap("expected: ", e.text))
        lines.append(wrap("hint: ", f["hint"]))
        lines.append(wrap("reread: ", f"{stage.lesson_path}, section \"{f['reread']}\""))
    if test.get("stall") and not stalled(test):
        lines.append(wrap("note: ", f"{test['stall']}" + (" (passed on a rerun)" if test.get("rerun")
                                                           and test["status"] == "pass" else "")))
    return "\n".join(lines)


def wrap(label, text, indent=6, width=100):
    prefix = " " * indent + label
    return textwrap.fill(text, width, initial_indent=prefix,
                         subsequent_indent=" " * (indent + len(label)))
