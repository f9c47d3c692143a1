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
import contextlib
import json
import signal
import sys
from pathlib import Path

from checks import stalls
from checks.manifest import ROOT, ManifestError, manifest_path, stage_of
from checks.plugin import Results
from checks.results import app_record, render
from runtime import UsageError

STAGES_FILE = Path(__file__).with_name("stages.py")
DEFAULT_APP = ROOT / "workspace"


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
    args = ["-p", "checks.plugin", "-p", "no:cacheprovider", "-p", "no:terminal",
            "--rootdir", str(ROOT), "-o", "addopts=", "-o", "python_files=stages.py",
            "-o", "python_functions=check_*", "-o", "python_classes=", "-o", "testpaths=",
            "--app", str(app_dir), "--manifest", str(manifest_path(options.manifest)),
            "--boot-timeout", str(options.boot_timeout),
            "--request-timeout", str(options.request_timeout)]
    args += [f"--stage={n}" for n in numbers]
    args += ["--disable-plugin-autoload", *extra]  # faster, and no stray plugins
    junit_args = ["--junitxml", str(junit), "-o", "junit_suite_name=workshop-checks",
                  "-o", "junit_family=xunit2"] if junit else []
    # ---- a failure the machine may have caused runs once more on a fresh boot (checks/stalls.py)
    sampler = stalls.Sampler()
    suspects = []

    def first(result):
        if sampler.note(result):
            suspects.append(result.expectation.test_name)  # judged after its rerun
        elif listener:
            listener(result)

    results = run_pytest(stages, [str(STAGES_FILE), *args, *junit_args], sampler, first, extra)
    if suspects:
        unrun = [name for name in sampler.collected if name not in results.results]  # after -x
        fresh = stalls.Sampler()
        again = run_pytest(stages, [f"{STAGES_FILE}::{name}" for name in suspects + unrun] + args
                           + ["--full-priority"], fresh)  # a verdict that yields to nothing
        for name in [n for n in suspects + unrun if n in again.results or n in results.results]:
            if name in unrun:
                results.results[name] = again.results[name]
            elif name in again.results:
                results.results[name] = stalls.settle(results.results[name], again.results[name],
                                                      sampler, fresh)
            if listener:
                listener(results.results[name])
    # ----
    return results


def run_pytest(stages, args, sampler, listener=None, extra=()):
    """One pytest session of checks: its Results."""
    import pytest

    results = Results(stages)
    results.listener = listener
    code = pytest.main(args, plugins=[results, sampler])
    if code == pytest.ExitCode.INTERRUPTED:
        raise KeyboardInterrupt
    if code == pytest.ExitCode.USAGE_ERROR:
        raise UsageError("pytest refused the extra arguments: " + " ".join(extra))
    if results.internal_errors or code == pytest.ExitCode.INTERNAL_ERROR:
        detail = (results.internal_errors or ["pytest internal error"])[-1].strip().splitlines()[-1]
        raise SystemExit(f"checks: the checker itself failed ({detail}); please report this")
    return results


def write_json(path, data):
    if path:  # compact: a class's results stay small (`python -m json.tool FILE` shows them laid out)
        path.write_text(json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n",
                        encoding="utf-8")


def show(result, stages, out=sys.stdout):
    print(render(result.as_dict(), stage_of(stages, result.expectation.stage), symbols()), file=out)
    out.flush()


@contextlib.contextmanager
def app_lock(app_dir, json_file=None):
    """Hold APP_DIR's checker lock for the block: one checker per app. A run whose results go to a
    file of its own (--json: grade, CI, watch's own runs) neither takes it nor writes the app's file."""
    if json_file:
        yield
        return
    from runtime import checkruns

    try:
        with checkruns.exclusive(app_dir):
            yield
    except checkruns.Busy as exc:
        raise UsageError(str(exc)) from None


def record(stages, app_dir, command, tests, numbers=None):
    """Merge TESTS (stages NUMBERS; every stage when None) into APP_DIR's file under build/results/."""
    from runtime import checkruns

    checkruns.write(app_dir, app_record(stages, shown_path(app_dir), command, tests,
                                        checkruns.read(app_dir), numbers))


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


