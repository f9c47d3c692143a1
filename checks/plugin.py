"""The pytest side of the stage checker: the manifest, the options, stage selection and results.

checks/stages.py holds one test per manifest expectation, named check_<stage>_<id>. This plugin
gives those tests their app folder (--app), runs only the stages asked for (--stage), and
collects each outcome with the manifest's text, hint and lesson section, so the CLI, the JSON
file and the instructor's report all say the same thing.

    python -m pytest -p checks.plugin checks/stages.py -o python_functions='check_*' \
        --app workspace --stage 04 -x
"""
import os
import re
import tomllib
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STEPS = ROOT / "steps"
MANIFEST = STEPS / "steps.toml"
# Another manifest, for tests of the checker itself (python -m checks run --manifest FILE works too).
MANIFEST_ENV = "WORKSHOP_MANIFEST"
TEST_NAME = re.compile(r"^check_(\d\d)_(\w+)$")
OUTPUT_LINES = 20


class ManifestError(Exception):
    """The manifest is missing, unreadable or malformed; the message says which and where."""


@dataclass
class Expectation:
    stage: str
    id: str
    text: str
    hint: str
    section: str
    points: int = 1
    informational: bool = False

    @property
    def test_name(self):
        return f"check_{self.stage}_{self.id}"


@dataclass
class Stage:
    number: str
    folder: str
    title: str
    lesson: str
    hints: list = field(default_factory=list)
    expectations: list = field(default_factory=list)

    @property
    def lesson_path(self):
        return f"steps/{self.folder}/{self.lesson}"


def manifest_path(path=None):
    return Path(path or os.environ.get(MANIFEST_ENV) or MANIFEST)


def load_manifest(path=None):
    """The stages, in order, each with its expectations. Raises ManifestError with one line."""
    path = manifest_path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(f"manifest {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"cannot read manifest {path}: {getattr(exc, 'strerror', None) or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"manifest {path} is not valid TOML: {exc}") from None
    stages = []
    try:
        for step in data["step"]:
            stage = Stage(str(step["number"]), step["folder"], step["title"], step["lesson"],
                          list(step.get("hints", [])))
            for item in step.get("expect", []):
                stage.expectations.append(Expectation(
                    stage.number, item["id"], item["text"], item["hint"], item["section"],
                    int(item.get("points", 1)), bool(item.get("informational", False))))
            stages.append(stage)
    except (KeyError, TypeError, ValueError) as exc:
        raise ManifestError(f"manifest {path} is malformed: missing or bad field {exc}") from None
    if not stages:
        raise ManifestError(f"manifest {path} lists no [[step]]")
    return stages


def expectations_by_test(stages):
    return {e.test_name: e for s in stages for e in s.expectations}


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


# ---- results -----------------------------------------------------------------------------------

@dataclass
class Result:
    expectation: Expectation
    status: str = "pass"  # pass, fail, error (the app could not be run), info (informational)
    observed: str = ""
    output: str = ""
    duration: float = 0.0

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
        if call.excinfo.type.__name__ not in ("Failed", "AppProblem", "AssertionError",
                                                "HarnessError", "ServiceError", "ManifestError"):
            # Not a verdict on the app but a fault in a check: keep the traceback for whoever fixes it.
            report.user_properties.append(
                ("output", "".join(traceback.format_exception(call.excinfo.value))[-3000:]))
    return report
