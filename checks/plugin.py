"""The pytest side of the stage checker: options, stage selection, and one Result per expectation.

checks/stages.py holds one test per manifest expectation, named check_<stage>_<id>, and
checks/subject.py the app they judge (loaded from here). This plugin gives those tests their app
folder (--app), runs only the stages asked for (--stage), and collects each outcome with the
manifest's text, hint and lesson section, so the commands, the JSON file and the instructor's
report all say the same thing. A check that found the app hung or crashed says so in
`Result.app`, taken from the exception's `state`.

    python -m pytest -p checks.plugin checks/stages.py -o python_functions='check_*' \
        --app workspace --stage 04 -x
"""
import re
import traceback
from dataclasses import dataclass

import pytest

from checks.manifest import ROOT, Expectation, expectations_by_test, load_manifest

pytest_plugins = ["checks.subject"]
TEST_NAME = re.compile(r"^check_(\d\d)_(\w+)$")
OUTPUT_LINES = 20
# Exceptions that are a verdict on the app; any other is a fault in a check.
VERDICTS = ("Failed", "AppProblem", "AssertionError", "HarnessError", "ServiceError", "BootError",
            "ManifestError")


# ---- pytest hooks ------------------------------------------------------------------------------

def pytest_addoption(parser):
    group = parser.getgroup("workshop checks")
    group.addoption("--app", default=str(ROOT / "workspace"), help="the app folder under test")
    group.addoption("--stage", action="append", default=[],
                    help="run this stage's expectations (repeatable; default: every stage)")
    group.addoption("--manifest", default=None, help="the steps manifest (default steps/steps.toml)")
    group.addoption("--boot-timeout", type=float, default=20.0,
                    help="seconds an app may take to start")
    group.addoption("--request-timeout", type=float, default=10.0,
                    help="seconds one request may take")


def pytest_configure(config):
    stages = load_manifest(config.getoption("--manifest"))
    config.workshop_stages = stages
    config.workshop_expectations = expectations_by_test(stages)
    # The CLI passes its own Results; plain `pytest -p checks.plugin` gets one here.
    if not any(isinstance(p, Results) for p in config.pluginmanager.get_plugins()):
        config.pluginmanager.register(Results(stages), "workshop-results")


def pytest_collection_modifyitems(config, items):
    wanted = {s.zfill(2) for s in config.getoption("--stage")}
    known = config.workshop_expectations
    keep, drop = [], []
    for item in items:
        match = TEST_NAME.match(item.name)
        stage = match.group(1) if match else None
        # A check the manifest does not know is never run: the manifest is the one list.
        if item.name in known and (not wanted or stage in wanted):
            keep.append(item)
        else:
            drop.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture
def observe(request):
    """Record what an informational check saw; it is reported, never failed."""
    return lambda text: request.node.user_properties.append(("observed", text))


# ---- results -----------------------------------------------------------------------------------

@dataclass
class Result:
    expectation: Expectation
    status: str = "pass"  # pass, fail, error (the app could not be run), info (informational)
    observed: str = ""
    output: str = ""
    duration: float = 0.0
    app: str = None  # "hung" or "crashed" when the check found the app so

    @property
    def passed(self):
        return self.status in ("pass", "info")

    def as_dict(self, stage):
        e = self.expectation
        return {
            "name": e.test_name,
            "status": self.status,
            "message": None if self.status == "pass" else self.message(stage),
            "output": self.output or None,
            "step": e.stage,
            "id": e.id,
            "text": e.text,
            "points": e.points,
            "points_earned": e.points if self.passed and not e.informational else 0,
            "informational": e.informational,
            "observed": self.observed or None,
            "app": self.app,
            "hint": e.hint,
            "lesson": f"{stage.lesson_path}, section \"{e.section}\"" if stage else e.section,
            "duration": round(self.duration, 3),
        }

    def message(self, stage):
        e = self.expectation
        if self.status == "info":
            return f"observed: {self.observed}" if self.observed else None
        where = f"{stage.lesson_path}, section \"{e.section}\"" if stage else e.section
        return (f"observed: {self.observed or 'the check failed'}\nexpected: {e.text}\n"
                f"hint: {e.hint}\nreread: {where}")


class Results:
    """Collects one Result per expectation, in run order; `listener` sees each as it lands."""

    def __init__(self, stages):
        self.expectations = expectations_by_test(stages)
        self.results = {}
        self.internal_errors = []
        self.listener = None

    def pytest_runtest_logreport(self, report):
        name = report.nodeid.rsplit("::", 1)[-1]
        expectation = self.expectations.get(name)
        if expectation is None:
            return
        result = self.results.setdefault(name, Result(expectation))
        result.duration += report.duration
        for key, value in report.user_properties:
            if key == "observed":
                result.observed = value
            elif key == "output":
                result.output = value
            elif key == "app":
                result.app = value
        if report.failed and report.when in ("setup", "call") and result.status == "pass":
            result.status = "error" if report.when == "setup" else "fail"
            result.observed = failure_line(report)
            if not result.output:
                result.output = failure_output(report)
        if report.when == "teardown":
            if expectation.informational:
                # Reported, never failed: what was seen (or why nothing was) is the message.
                if result.status != "pass" and not result.observed.startswith("could not observe"):
                    result.observed = "could not observe: " + result.observed
                result.status = "info"
            if self.listener:
                self.listener(result)

    def pytest_collectreport(self, report):
        if report.failed:
            self.internal_errors.append(str(report.longrepr))

    def pytest_internalerror(self, excrepr):
        self.internal_errors.append(str(excrepr))


def failure_line(report):
    """One line saying what was observed, from the exception that failed the test."""
    excinfo = getattr(report, "workshop_excinfo", None)
    if excinfo is None:
        text = str(report.longrepr).strip().splitlines()
        return text[-1] if text else "failed"
    exc = excinfo.value
    message = getattr(exc, "msg", None) or str(exc)
    if isinstance(exc, AssertionError) or type(exc).__name__ in ("Failed", "AppProblem"):
        line = message.strip().split("\nassert ")[0].strip()
    else:
        line = f"{type(exc).__name__}: {message.strip()}"
    return line or type(exc).__name__


def failure_output(report):
    sections = [content for name, content in report.sections if "stdout" in name or "stderr" in name]
    text = "\n".join(sections).strip()
    return "\n".join(text.splitlines()[-OUTPUT_LINES:])


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if call.excinfo is not None:
        report.workshop_excinfo = call.excinfo
        output = getattr(call.excinfo.value, "output", None)
        subject = next((v for v in item.funcargs.values() if hasattr(v, "log_tail")), None)
        if output:
            report.user_properties.append(("output", "\n".join(output.splitlines()[-OUTPUT_LINES:])))
        elif subject is not None:
            report.user_properties.append(("output", subject.log_tail(OUTPUT_LINES)))
        state = getattr(call.excinfo.value, "state", None)
        if state:
            report.user_properties.append(("app", state))
        if call.excinfo.type.__name__ not in VERDICTS:
            # Not a verdict on the app but a fault in a check: keep the traceback for whoever fixes it.
            report.user_properties.append(
                ("output", "".join(traceback.format_exception(call.excinfo.value))[-3000:]))
    return report
