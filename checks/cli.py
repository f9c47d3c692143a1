"""What the checker's commands share: bad input as one line, the options every command takes, the
checks run under pytest in this process, and the results printed and written the same way.

    python -m checks run NN [APP_DIR] [--json FILE] [--junit FILE] [-k EXPR] [-x]   checks/run.py
    python -m checks progress [APP_DIR] [--json FILE]                               checks/progress.py
    python -m checks grade DIR... [--jobs N] [--out DIR] [--format markdown]        checks/grade.py
    python -m checks grade --bench                                                  checks/grade.py
    python -m checks doctor                                                         checks/doctor.py
    python -m checks watch [APP_DIR]                                                checks/watch.py
"""
import argparse
import json
import signal
import sys
import textwrap
from pathlib import Path

from checks.manifest import ROOT, ManifestError, manifest_path, stage_of
from checks.plugin import Results
from runtime import UsageError

STAGES_FILE = Path(__file__).with_name("stages.py")
DEFAULT_APP = ROOT / "workspace"
WIDTH = 100
# The results file's layout; 4: each test's and the run's "app_state" (ok, hung or crashed) and
# "cause", each failure's "reason" and the hint for it; a test's text and lesson section are the
# manifest's (by "name"), and a passing test carries no text at all.
RESULTS_VERSION = 4


class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def invoke(command, handler, args):
    """Run HANDLER(ARGS) for COMMAND: bad input is one line and exit 2, Ctrl-C exit 130."""
    # A stopped checker still tears its apps down: pytest finalises fixtures on KeyboardInterrupt.
    signal.signal(signal.SIGTERM, interrupt)
    try:
        return handler(args)
    except (UsageError, ManifestError) as exc:
        print(f"checks {command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"checks {command}: interrupted", file=sys.stderr)
        return 130


def interrupt(signum, frame):
    raise KeyboardInterrupt


def symbols():
    encoding = (getattr(sys.stdout, "encoding", None) or "").lower()
    if "utf" in encoding:
        return {"pass": "✓", "fail": "✗", "error": "✗", "info": "ℹ"}
    return {"pass": "+", "fail": "x", "error": "x", "info": "i"}


def app_folder(value, default_used=False):
    path = Path(value).expanduser()
    if not path.exists():
        hint = ": run `make workspace` to create it" if default_used or path.name == "workspace" else ""
        raise UsageError(f"no folder {value}{hint}")
    if not path.is_dir():
        raise UsageError(f"{value} is not a folder")
    if not (path / "application.py").is_file():
        raise UsageError(f"{value} has no application.py: point the checker at your app's folder")
    return path.resolve()


def stage_number(value, stages):
    numbers = [s.number for s in stages]
    number = value.zfill(2) if value.isdigit() else value
    if number not in numbers:
        raise UsageError(f"unknown stage {value!r}: the stages are {numbers[0]} to {numbers[-1]}")
    return number


def output_file(value):
    if value is None:
        return None
    path = Path(value).expanduser()
    if path.is_dir():
        raise UsageError(f"{value} is a folder, not a file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot write {value}: {exc.strerror}") from None
    return path.resolve()


def app_options(parser):
    """The app folder and the result files, for the commands that check one app."""
    parser.add_argument("app_dir", nargs="?", help="the app folder (default: workspace/)")
    parser.add_argument("--json", metavar="FILE", help="write Exercism-style results here")
    parser.add_argument("--junit", metavar="FILE", help="write JUnit XML here")


def common_options(parser):
    parser.add_argument("--manifest", help="the steps manifest (default: steps/steps.toml)")
    parser.add_argument("--boot-timeout", type=float, default=20.0, metavar="S",
                        help="seconds the app may take to start (default 20)")
    parser.add_argument("--request-timeout", type=float, default=10.0, metavar="S",
                        help="seconds one request may take (default 10)")


def execute(stages, app_dir, numbers, options, listener=None, junit=None, extra=()):
    """Run the expectations of stages NUMBERS against APP_DIR under pytest; the Results."""
    from runtime import services

    try:
        services.load_env()  # every app run needs it (SASL settings); say so once, up front
    except services.ServiceError as exc:
        raise UsageError(str(exc)) from None
    results = Results(stages)
    results.listener = listener
    args = [str(STAGES_FILE), "-p", "checks.plugin", "-p", "no:cacheprovider", "-p", "no:terminal",
            "--rootdir", str(ROOT), "-o", "addopts=", "-o", "python_files=stages.py",
            "-o", "python_functions=check_*", "-o", "python_classes=", "-o", "testpaths=",
            "--app", str(app_dir), "--manifest", str(manifest_path(options.manifest)),
            "--boot-timeout", str(options.boot_timeout),
            "--request-timeout", str(options.request_timeout)]
    args += [f"--stage={n}" for n in numbers]
    if junit:
        args += ["--junitxml", str(junit), "-o", "junit_suite_name=workshop-checks",
                 "-o", "junit_family=xunit2"]
    args += ["--disable-plugin-autoload", *extra]  # faster, and no stray plugins
    import pytest

    code = pytest.main(args, plugins=[results])
    if code == pytest.ExitCode.INTERRUPTED:
        raise KeyboardInterrupt
    if code == pytest.ExitCode.USAGE_ERROR:
        raise UsageError("pytest refused the extra arguments: " + " ".join(extra))
    if results.internal_errors or code == pytest.ExitCode.INTERNAL_ERROR:
        detail = (results.internal_errors or ["pytest internal error"])[-1].strip().splitlines()[-1]
        raise SystemExit(f"checks: the checker itself failed ({detail}); please report this")
    return results


def summary_json(stages, results, step, extra=None):
    """An Exercism-style results file: status, message, tests; plus step and points."""
    tests = [r.as_dict() for r in results]
    errors = [t for t in tests if t["status"] == "error"]
    failed = [t for t in tests if t["status"] in ("fail", "error")]
    status = "error" if errors else "fail" if failed else "pass"
    state = next((s for s in ("hung", "crashed") if s in {t["app_state"] for t in tests}), "ok")
    data = {
        "version": RESULTS_VERSION,
        "status": status,
        "app_state": state,
        "cause": next((t["cause"] for t in tests if t["app_state"] == state and t["cause"]), None),
        "message": errors[0]["observed"] if errors else None,
        "step": step,
        "points": {"earned": sum(t["points_earned"] for t in tests),
                   "possible": sum(t["points"] for t in tests if not t["informational"])},
        "tests": tests,
    }
    data.update(extra or {})
    return data


def write_json(path, data):
    if path:  # compact: a class's results stay small (`python -m json.tool FILE` shows them laid out)
        path.write_text(json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n",
                        encoding="utf-8")


def wrap(label, text, indent=6):
    prefix = " " * indent + label
    return textwrap.fill(text, WIDTH, initial_indent=prefix,
                         subsequent_indent=" " * (indent + len(label)))


def show(result, stages, out=sys.stdout):
    mark = symbols()[result.status]
    e = result.expectation
    print(f"  {mark} {e.text}", file=out)
    if result.status == "info" and result.observed:
        print(wrap("observed: ", result.observed), file=out)
    elif not result.passed:
        stage = stage_of(stages, e.stage)
        print(wrap("observed: ", result.observed or "the check failed"), file=out)
        if result.cause:
            lines = result.cause.splitlines()
            print(wrap("cause: ", lines[0]), file=out)
            for line in lines[1:]:
                print(" " * 13 + line.removeprefix("  "), file=out)
        print(wrap("expected: ", e.text), file=out)
        print(wrap("hint: ", result.hint), file=out)
        print(wrap("reread: ", f"{stage.lesson_path}, section \"{e.section}\""), file=out)
    out.flush()


def make_command(target, app_dir, step=None):
    """The make command that does TARGET for APP_DIR: it works in any shell, venv or not."""
    try:
        app = str(Path(app_dir).resolve().relative_to(ROOT))
    except ValueError:
        app = str(app_dir)
    app = f"'{app}'" if any(c.isspace() or c in "'\"$" for c in app) else app
    return f"make {target}" + (f" STEP={step}" if step else "") + f" APP={app}"


def shown_path(path):
    try:
        return str(path.relative_to(Path.cwd())) + "/"
    except ValueError:
        return str(path) + "/"


