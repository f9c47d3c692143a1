"""The pytest side of the stage checker: options, stage selection, and one Result per expectation.

checks/stages.py holds one test per manifest expectation, named check_<stage>_<id>, and
checks/subject.py the app they judge (loaded from here). This plugin gives those tests their app
folder (--app), runs only the stages asked for (--stage), and collects each outcome as a `Result`
(checks/results.py), so the commands, the JSON file and the instructor's report all say the same
thing. Each failure carries its `cause` (what the app raised, and where in the learner's files:
checks/causes.py), its `reason` (which of the manifest's hints is true for it), its `layer` (the
stage whose layer produced it, when the check says) and `app_state`: "ok", or "hung" / "crashed"
from the exception's `state`.

    python -m pytest -p checks.plugin checks/stages.py -o python_functions='check_*' \
        --app workspace --stage 04 -x
"""
import re
import traceback

import pytest

from checks import stalls
from checks.manifest import ROOT, expectations_by_test, load_manifest
from checks.results import Result

pytest_plugins = ["checks.subject"]
TEST_NAME = re.compile(r"^check_(\d\d)_(\w+)$")
OUTPUT_LINES = 8
OUTPUT_CHARS = 800  # the results file stays a few KB per learner
# Exceptions that are a verdict on the app; any other is a fault in a check.
VERDICTS = ("Failed", "AppProblem", "AssertionError", "Verdict", "HarnessError", "ServiceError",
            "BootError", "ManifestError")


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
    group.addoption("--full-priority", action="store_true",
                    help="boot every app at full priority (the rerun of a check a stall spoiled)")


def pytest_configure(config):
    stages = load_manifest(config.getoption("--manifest"))
    config.workshop_stages = stages
    config.workshop_expectations = expectations_by_test(stages)
    # The CLI passes its own Results; plain `pytest -p checks.plugin` gets one here.
    if not any(isinstance(p, Results) for p in config.pluginmanager.get_plugins()):
        config.pluginmanager.register(Results(stages), "workshop-results")
    if stalls.sampler_of(config) is None:
        config.pluginmanager.register(stalls.Sampler(), "workshop-stalls")


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


# ---- results (the Result itself: checks/results.py) --------------------------------------------

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
            elif key in ("output", "app_state", "cause", "reason", "layer"):
                setattr(result, key, value)
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
    if isinstance(exc, AssertionError) or type(exc).__name__ in ("Failed", "AppProblem", "Verdict"):
        line = message.strip().split("\nassert ")[0].strip()
    else:
        line = f"{type(exc).__name__}: {message.strip()}"
    return line or type(exc).__name__


def failure_output(report):
    sections = [content for name, content in report.sections if "stdout" in name or "stderr" in name]
    return tail("\n".join(sections))


def tail(text, lines=OUTPUT_LINES, chars=OUTPUT_CHARS):
    return "\n".join(text.strip().splitlines()[-lines:])[-chars:]


def subjects(item):
    return [v for v in item.funcargs.values() if hasattr(v, "cause_since")]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    # Where each app's log stood when the check began: what it raised later is this check's.
    item.workshop_log_marks = [(s, s.log_size()) for s in subjects(item)]
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if call.excinfo is not None:
        report.workshop_excinfo = call.excinfo
        exc = call.excinfo.value
        record = report.user_properties.append
        cause = getattr(exc, "cause", None)
        if cause is None:  # a wrong answer; unless the app logged an exception meanwhile
            cause = next(filter(None, (s.cause_since(mark) for s, mark
                                       in getattr(item, "workshop_log_marks", []))), None)
        if cause:
            record(("cause", cause))
        if getattr(exc, "reason", None):
            record(("reason", exc.reason))
        if getattr(exc, "layer", None):
            record(("layer", exc.layer))
        output = getattr(exc, "output", None)
        if cause:
            pass  # the cause is the output that matters; the results file stays small
        elif output:
            record(("output", tail(output)))
        elif subjects(item):
            record(("output", tail(subjects(item)[0].log_tail(OUTPUT_LINES))))
        if getattr(exc, "state", None):
            record(("app_state", exc.state))
        if call.excinfo.type.__name__ not in VERDICTS:
            # Not a verdict on the app but a fault in a check: keep the traceback for whoever fixes it.
            record(("output", "".join(traceback.format_exception(exc))[-3000:]))
    return report
