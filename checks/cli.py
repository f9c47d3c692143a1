"""The stage checker's commands: run, progress, grade and doctor.

    python -m checks run NN [APP_DIR] [--json FILE] [--junit FILE] [-k EXPR] [-x]
    python -m checks progress [APP_DIR] [--json FILE]
    python -m checks grade DIR... [--jobs N] [--out DIR] [--timeout S]
    python -m checks grade --bench
    python -m checks doctor

`run` and `progress` run checks/stages.py under pytest in this process; `grade` runs `progress`
once per learner folder, each in its own process group with a time limit. Bad input gets one line
on stderr and exit status 2.
"""
import argparse
import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from checks.plugin import ROOT, ManifestError, Results, load_manifest, manifest_path

STAGES_FILE = Path(__file__).with_name("stages.py")
DEFAULT_APP = ROOT / "workspace"
DEFAULT_OUT = ROOT / "build" / "grades"
RUNNING = set()  # the learners' checker processes, so an interrupted batch can stop them
WIDTH = 100


class UsageError(Exception):
    """Bad input from the person at the keyboard: reported in one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def main(argv):
    command, args = argv[0], list(argv[1:])
    handlers = {"run": run, "progress": progress, "grade": grade, "doctor": doctor}
    # A stopped checker still tears its apps down: pytest finalises fixtures on KeyboardInterrupt.
    signal.signal(signal.SIGTERM, interrupt)
    try:
        return handlers[command](args)
    except (UsageError, ManifestError) as exc:
        print(f"checks {command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"checks {command}: interrupted", file=sys.stderr)
        return 130


def interrupt(signum, frame):
    raise KeyboardInterrupt


# ---- shared ------------------------------------------------------------------------------------

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


def common_options(parser):
    parser.add_argument("--manifest", help="the steps manifest (default: steps/steps.toml)")
    parser.add_argument("--boot-timeout", type=float, default=20.0, metavar="S",
                        help="seconds the app may take to start (default 20)")
    parser.add_argument("--request-timeout", type=float, default=10.0, metavar="S",
                        help="seconds one request may take (default 10)")


def execute(stages, app_dir, numbers, options, listener=None, junit=None, extra=()):
    """Run the expectations of stages NUMBERS against APP_DIR under pytest; the Results."""
    from runtime import harness

    try:
        harness.services_env()  # every app run needs it (SASL settings); say so once, up front
    except harness.HarnessError as exc:
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
    args += list(extra)
    import pytest

    os.environ.setdefault("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")  # faster, and no stray plugins
    code = pytest.main(args, plugins=[results])
    if code == pytest.ExitCode.INTERRUPTED:
        raise KeyboardInterrupt
    if code == pytest.ExitCode.USAGE_ERROR:
        raise UsageError("pytest refused the extra arguments: " + " ".join(extra))
    if results.internal_errors or code == pytest.ExitCode.INTERNAL_ERROR:
        detail = (results.internal_errors or ["pytest internal error"])[-1].strip().splitlines()[-1]
        raise SystemExit(f"checks: the checker itself failed ({detail}); please report this")
    return results


def stage_of(stages, number):
    return next(s for s in stages if s.number == number)


def summary_json(stages, results, step, extra=None):
    """An Exercism-style results file: status, message, tests; plus step and points."""
    tests = [r.as_dict(stage_of(stages, r.expectation.stage)) for r in results]
    errors = [t for t in tests if t["status"] == "error"]
    failed = [t for t in tests if t["status"] in ("fail", "error")]
    status = "error" if errors else "fail" if failed else "pass"
    data = {
        "version": 2,
        "status": status,
        "message": errors[0]["observed"] if errors else None,
        "step": step,
        "points": {"earned": sum(t["points_earned"] for t in tests),
                   "possible": sum(t["points"] for t in tests if not t["informational"])},
        "tests": tests,
    }
    data.update(extra or {})
    return data


def write_json(path, data):
    if path:
        path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


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
        print(wrap("expected: ", e.text), file=out)
        print(wrap("hint: ", e.hint), file=out)
        print(wrap("reread: ", f"{stage.lesson_path}, section \"{e.section}\""), file=out)
    out.flush()


def shown_path(path):
    try:
        return str(path.relative_to(Path.cwd())) + "/"
    except ValueError:
        return str(path) + "/"


# ---- run ---------------------------------------------------------------------------------------

def run(args):
    args, extra = split_extra(args)
    parser = Parser(prog="python -m checks run",
                    description="Check an app folder against one stage of the workshop.")
    parser.add_argument("stage", help="the stage number, 01 to 09")
    parser.add_argument("app_dir", nargs="?", help="the app folder (default: workspace/)")
    parser.add_argument("--json", metavar="FILE", help="write Exercism-style results here")
    parser.add_argument("--junit", metavar="FILE", help="write JUnit XML here")
    parser.add_argument("-k", metavar="EXPR", help="only the expectations whose name matches")
    parser.add_argument("-x", action="store_true", help="stop at the first failure")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the summary line")
    common_options(parser)
    options = parser.parse_args(args)
    stages = load_manifest(options.manifest)
    number = stage_number(options.stage, stages)
    app_dir = app_folder(options.app_dir or DEFAULT_APP, options.app_dir is None)
    json_file, junit_file = output_file(options.json), output_file(options.junit)
    extra += (["-k", options.k] if options.k else []) + (["-x"] if options.x else [])

    stage = stage_of(stages, number)
    if not options.quiet:
        print(f"Stage {number}: {stage.title}")
        print(f"  checking {shown_path(app_dir)} (lesson: {stage.lesson_path})\n", flush=True)
    listener = None if options.quiet else (lambda r: show(r, stages))
    results = list(execute(stages, app_dir, [number], options, listener, junit_file, extra).results.values())

    write_json(json_file, summary_json(stages, results, number))
    counted = [r for r in results if not r.expectation.informational]
    passed = [r for r in counted if r.passed]
    missing = len(stage.expectations) - len(results)
    earned = sum(r.expectation.points for r in passed)
    possible = sum(r.expectation.points for r in counted)
    all_pass = len(passed) == len(counted)
    if options.k:  # a selection: judge what ran, and say what was left out
        verdict = "passes" if all_pass else "does not pass yet"
        line = (f"Selected expectations of stage {number}: {len(passed)} of {len(counted)} pass "
                f"({earned} of {possible} points); {missing} left out by -k")
    else:
        verdict = "passes" if all_pass and not missing else "does not pass yet"
        line = (f"Stage {number} {verdict}: {len(passed)} of {len(counted)} expectations "
                f"({earned} of {possible} points)" + (f"; {missing} not run" if missing else ""))
    print(("" if options.quiet else "\n") + line)
    return 0 if verdict == "passes" else 1


def split_extra(args):
    """Arguments after `--` go to pytest as they are."""
    if "--" in args:
        at = args.index("--")
        return args[:at], args[at + 1:]
    return args, []


# ---- progress ----------------------------------------------------------------------------------

def progress(args):
    parser = Parser(prog="python -m checks progress",
                    description="Show which stages an app folder has reached.")
    parser.add_argument("app_dir", nargs="?", help="the app folder (default: workspace/)")
    parser.add_argument("--json", metavar="FILE", help="write Exercism-style results here")
    parser.add_argument("--junit", metavar="FILE", help="write JUnit XML here")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing but the summary")
    common_options(parser)
    options = parser.parse_args(args)
    stages = load_manifest(options.manifest)
    app_dir = app_folder(options.app_dir or DEFAULT_APP, options.app_dir is None)
    json_file, junit_file = output_file(options.json), output_file(options.junit)

    if not options.quiet:
        print(f"Checking every stage on {shown_path(app_dir)} ", end="", flush=True)
    ticker = None if options.quiet else (lambda r: print(".", end="", flush=True))
    results = list(execute(stages, app_dir, [s.number for s in stages], options, ticker,
                           junit_file).results.values())
    table = stage_table(stages, results)
    highest = max((row["number"] for row in table if row["status"] == "DONE"), default=None)
    write_json(json_file, summary_json(stages, results, highest, {
        "highest_stage": highest, "stages": table}))
    if not options.quiet:
        print("\n")
        broken = next((r for r in results if r.status == "error"), None)
        if broken:
            print(wrap("The app could not be checked: ", broken.observed, indent=2) + "\n")
        for row in table:
            failing = f"  failing: {', '.join(row['failing'])}" if row["failing"] else ""
            print(f"  {row['number']}  {row['title'][:52]:52}  {row['status']:7}{failing}".rstrip())
        print()
    following = next((row for row in table if row["status"] == "PENDING"), None)
    print(f"Highest stage reached: {highest or 'none yet'}", end="")
    if following:
        lesson = stage_of(stages, following["number"]).lesson_path
        print(f". Next: stage {following['number']} ({lesson}); "
              f"python -m checks run {following['number']} shows what is missing.")
    else:
        print(". Every stage is done.")
    return 0


def stage_table(stages, results):
    """Each stage DONE when its checks and every earlier stage's checks pass; else PENDING."""
    by_stage = {}
    for r in results:
        by_stage.setdefault(r.expectation.stage, []).append(r)
    table, all_done = [], True
    for stage in stages:
        ran = by_stage.get(stage.number, [])
        failing = [r.expectation.id for r in ran if not r.passed]
        own = not failing and len(ran) == len(stage.expectations)
        all_done = all_done and own
        table.append({"number": stage.number, "title": stage.title, "passes_alone": own,
                      "status": "DONE" if all_done else "PENDING", "failing": failing})
    return table


# ---- grade -------------------------------------------------------------------------------------

def grade(args):
    parser = Parser(prog="python -m checks grade",
                    description="Grade a class: every learner folder, in parallel and in isolation.")
    parser.add_argument("dirs", nargs="*", metavar="DIR", help="learner folders")
    parser.add_argument("--jobs", type=int, default=2, help="learners graded at once (default 2)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="report folder (default build/grades)")
    parser.add_argument("--timeout", type=float, default=180.0, metavar="S",
                        help="time limit for one learner's app, in seconds (default 180)")
    parser.add_argument("--bench", action="store_true",
                        help="measure the checker's speed on the steps and on 30 learner folders")
    parser.add_argument("--learners", type=int, default=30, help="learner folders for --bench")
    common_options(parser)
    options = parser.parse_args(args)
    load_manifest(options.manifest)  # a bad manifest is a usage error, before anything starts
    if options.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    if options.bench:
        return bench(options)
    if not options.dirs:
        raise UsageError("name at least one learner folder, e.g. python -m checks grade class/*")
    out = Path(options.out).expanduser()
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {options.out} is a file, not a folder")
    rows = grade_all(learners(options.dirs), options, out)
    print_table(rows)
    print(f"\nReports: {shown_path(out.resolve())}grades.csv, grades.json, grades.xml")
    return 0


def learners(dirs):
    """(name, path) per folder: the folder's name, with its parent's when two share a name."""
    paths = [Path(d).expanduser() for d in dirs]
    names = [p.resolve().name or str(p) for p in paths]
    names = [f"{p.resolve().parent.name}/{n}" if names.count(n) > 1 else n for n, p in zip(names, paths)]
    unique = []
    for name in names:
        unique.append(name if name not in unique else f"{name}#{len(unique) + 1}")
    return list(zip(unique, paths))


def grade_all(folders, options, out, echo=True):
    out.mkdir(parents=True, exist_ok=True)
    (out / "learners").mkdir(exist_ok=True)
    rows, lock, started = [], threading.Lock(), time.monotonic()
    if echo:
        print(f"Grading {len(folders)} learner folders, {options.jobs} at a time "
              f"(at most {options.timeout:.0f} s each)", file=sys.stderr, flush=True)
    with ThreadPoolExecutor(max_workers=options.jobs) as pool:
        futures = [pool.submit(grade_one, name, path, options, out) for name, path in folders]
        try:
            for future in as_completed(futures):
                row = future.result()
                with lock:
                    rows.append(row)
                    if echo:
                        print(f"  [{len(rows)}/{len(folders)}] {row['learner']}: {describe(row)} "
                              f"({row['seconds']:.1f} s)", file=sys.stderr, flush=True)
        except KeyboardInterrupt:
            # Stopped ourselves: stop every learner's checker too, so no app outlives the batch.
            for future in futures:
                future.cancel()
            for proc in list(RUNNING):
                stop_group(proc, grace=5)
            raise
    order = {name: i for i, (name, _) in enumerate(folders)}
    rows.sort(key=lambda r: order[r["learner"]])
    write_reports(rows, out, time.monotonic() - started)
    return rows


def describe(row):
    if row["state"] == "ok":
        return f"stage {row['highest'] or 'none'}"
    return f"{row['state']}: {row['detail']}"


def grade_one(name, path, options, out):
    """Run `progress` on one learner folder in its own process group, within the time limit."""
    started = time.monotonic()
    row = {"learner": name, "folder": str(path), "state": "ok", "highest": None, "failing": [],
           "points": 0, "possible": 0, "detail": "", "seconds": 0.0}
    if not path.is_dir():
        return finish(row, started, "missing", "not a folder" if path.exists() else "no such folder")
    if not (path / "application.py").is_file():
        return finish(row, started, "missing", "no application.py")
    stem = re.sub(r"[^\w.-]", "_", name)
    json_file, junit_file = out / "learners" / f"{stem}.json", out / "learners" / f"{stem}.xml"
    for stale in (json_file, junit_file):
        stale.unlink(missing_ok=True)
    command = [sys.executable, "-m", "checks", "progress", str(path.resolve()), "--quiet",
               "--json", str(json_file), "--junit", str(junit_file),
               "--manifest", str(manifest_path(options.manifest)),
               "--boot-timeout", str(options.boot_timeout),
               "--request-timeout", str(options.request_timeout)]
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        RUNNING.add(proc)
        try:
            proc.wait(options.timeout)
        except subprocess.TimeoutExpired:
            stop_group(proc)
            return finish(row, started, "hung", f"no result within {options.timeout:.0f} s")
        finally:
            RUNNING.discard(proc)
        log.seek(0)
        text = log.read().decode(errors="replace").strip()
    if not json_file.is_file():
        detail = (text.splitlines() or ["no output"])[-1]
        return finish(row, started, "error", f"the checker failed: {detail}")
    data = json.loads(json_file.read_text())
    row["highest"] = data["highest_stage"]
    row["points"], row["possible"] = data["points"]["earned"], data["points"]["possible"]
    following = next((s for s in data["stages"] if s["status"] == "PENDING"), None)
    row["failing"] = [f"{following['number']} {i}" for i in following["failing"]] if following else []
    row["tests"] = data["tests"]
    problems = [t["observed"] or "" for t in data["tests"] if t["status"] in ("fail", "error")]
    hung = next((p for p in problems if "no answer within" in p or "did not answer within" in p), None)
    crashed = next((p for p in problems if "did not start" in p or "exited while starting" in p
                    or "closed the connection" in p), None)
    if hung:
        return finish(row, started, "hung", hung)
    if crashed:
        return finish(row, started, "crashed", crashed)
    return finish(row, started, "ok", "")


def finish(row, started, state, detail):
    row.update(state=state, detail=detail, seconds=round(time.monotonic() - started, 1))
    return row


def stop_group(proc, grace=10.0):
    """SIGTERM the checker so it tears its apps down; then SIGKILL whatever is left of the group."""
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def write_reports(rows, out, seconds):
    with open(out / "grades.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["learner", "state", "highest_stage", "points", "possible",
                         "failing_expectations", "detail", "seconds", "folder"])
        for r in rows:
            writer.writerow([r["learner"], r["state"], r["highest"] or "", r["points"], r["possible"],
                             "; ".join(r["failing"]), r["detail"], r["seconds"], r["folder"]])
    write_json(out / "grades.json", {"seconds": round(seconds, 1), "learners": rows})
    suites = ET.Element("testsuites", name="workshop grades")
    for r in rows:
        suite = ET.SubElement(suites, "testsuite", name=r["learner"])
        tests = r.get("tests") or []
        if not tests:  # missing, hung or crashed before any result: one error says why
            case = ET.SubElement(suite, "testcase", classname=r["learner"], name="app", time="0")
            ET.SubElement(case, "error", message=f"{r['state']}: {r['detail']}")
        for t in tests:
            case = ET.SubElement(suite, "testcase", classname=f"{r['learner']}.stage_{t['step']}",
                                 name=t["name"], time=str(t["duration"]))
            if t["status"] in ("fail", "error"):
                ET.SubElement(case, "failure" if t["status"] == "fail" else "error",
                              message=t["observed"] or "").text = t["message"]
        counts = [c for c in suite if c.tag == "testcase"]
        suite.set("tests", str(len(counts)))
        suite.set("failures", str(sum(1 for c in counts if c.find("failure") is not None)))
        suite.set("errors", str(sum(1 for c in counts if c.find("error") is not None)))
    ET.indent(suites)
    ET.ElementTree(suites).write(out / "grades.xml", encoding="utf-8", xml_declaration=True)


def print_table(rows):
    width = max([len("learner")] + [len(r["learner"]) for r in rows])
    print(f"\n{'learner':{width}}  stage  points  failing expectations")
    for r in rows:
        points = f"{r['points']}/{r['possible']}" if r["possible"] else "-"
        failing = ", ".join(r["failing"]) if r["state"] == "ok" else f"{r['state'].upper()}: {r['detail']}"
        print(f"{r['learner']:{width}}  {r['highest'] or '-':5}  {points:>6}  {failing or 'none'}")


def bench(options):
    """The checker's two speed figures, measured here; a command, never a timed test."""
    steps = sorted(p for p in (ROOT / "steps").iterdir() if (p / "application.py").is_file())
    if not steps:
        raise UsageError("no step folders with application.py under steps/")
    print(f"Benchmark on {os.cpu_count()} CPUs", flush=True)
    with tempfile.TemporaryDirectory(prefix="checks-bench-") as tmp:
        tmp = Path(tmp)
        started = time.monotonic()
        for step in steps:
            number = step.name[:2]
            code = subprocess.run([sys.executable, "-m", "checks", "run", number, str(step), "-q"],
                                  cwd=ROOT, capture_output=True).returncode
            print(f"  run {number} {step.name}: exit {code}", flush=True)
        own = time.monotonic() - started
        started = time.monotonic()
        grade_all([(s.name, s) for s in steps], options, tmp / "steps", echo=False)
        every = time.monotonic() - started
        class_dir = tmp / "class"
        folders = []
        sources = steps + [ROOT / "final"]
        for i in range(options.learners):
            source = sources[i % len(sources)]
            target = class_dir / f"learner{i + 1:02d}"
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "instance"))
            folders.append((target.name, target))
        started = time.monotonic()
        rows = grade_all(folders, options, tmp / "class-report", echo=False)
        graded = time.monotonic() - started
    ok = sum(1 for r in rows if r["state"] == "ok")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\n  {'measured':62} {'seconds':>8}  target")
    print(f"  {'each step: its own check (run NN steps/NN), one after another':62} {own:8.1f}")
    print(f"  {f'all {len(steps)} steps: every check (progress), --jobs {options.jobs}':62} {every:8.1f}  <= 60")
    print(f"  {f'{len(folders)} learner folders graded, --jobs {options.jobs} ({ok} graded ok)':62} {graded:8.1f}  <= 300")
    print(f"\n  load average at the end: {load} (other work on this machine slows every figure)")
    return 0


# ---- doctor ------------------------------------------------------------------------------------

LEARNER_PORTS = {5000: "`make run` serves the app there", 5050: "`make dashboard` serves the dashboard there"}


def doctor(args):
    parser = Parser(prog="python -m checks doctor",
                    description="Check this machine for the workshop: Python, packages, services, ports.")
    parser.parse_args(args)
    problems = 0
    for ok, what, fix in doctor_findings():
        print(f"  {symbols()['pass' if ok else 'fail']} {what}", flush=True)
        if not ok:
            problems += 1
            print(wrap("fix: ", fix), flush=True)
    print(f"\n{problems} problem{'s' if problems != 1 else ''} found." if problems
          else "\nEverything the workshop needs is in place.")
    return 1 if problems else 0


def doctor_findings():
    """(ok, what was found, how to fix it) for each thing the workshop needs."""
    from runtime import memcached, services

    version = ".".join(map(str, sys.version_info[:3]))
    yield (sys.version_info[:2] == (3, 11), f"Python {version} at {sys.executable}",
           "The workshop needs exactly Python 3.11 (pylibmc 1.6.3 has no wheels for 3.12 or later): "
           "install python3.11, run `make setup`, and use .venv/bin/python.")
    wrong = package_problems(ROOT / "requirements-dev.txt")
    yield (not wrong, "every pinned package is installed at its pinned version" if not wrong else
           f"{len(wrong)} pinned packages missing or at another version: {', '.join(wrong[:5])}"
           + (" ..." if len(wrong) > 5 else ""),
           "Run `make setup` (it installs requirements-dev.txt into .venv), then use .venv/bin/python.")
    for program in ("memcached", "mariadbd", "saslpasswd2"):
        try:
            yield True, f"{program} is installed at {services.require(program)}", ""
        except services.ServiceError:
            yield False, f"{program} is not installed", "Run `make setup` (it installs the Debian packages)."
    try:
        plugin_dir = services.sasl_plugin_dir()
        yield True, f"the SASL PLAIN plugin is in {plugin_dir}", ""
    except services.ServiceError:
        plugin_dir = None
        yield False, "the SASL PLAIN plugin (libplain.so) is missing", \
            "Install it: sudo apt-get install libsasl2-modules (or run `make setup`)."
    try:
        env = services.load_env()
    except services.ServiceError as exc:
        yield False, f"services: {exc}", "Run `make services`: it starts MariaDB and both memcached and writes services.env."
        yield from port_findings(services, None)
        return
    plain = env.get("MEMCACHED_PLAIN_SERVERS", "")
    try:
        version = memcached.stats(plain).get("version", "?")
        yield True, f"memcached answers at {plain} (version {version})", ""
    except memcached.MemcachedError as exc:
        yield False, f"memcached: {exc}", "Run `make services`; its log is .services/memcached.log."
    sasl = env.get("MEMCACHIER_SERVERS", "")
    try:
        memcached.stats(sasl, env.get("MEMCACHIER_USERNAME"), env.get("MEMCACHIER_PASSWORD"))
        yield True, f"SASL memcached answers at {sasl} and accepts the workshop's login", ""
    except memcached.MemcachedError as exc:
        yield False, f"SASL memcached: {exc}", "Run `make services`; its log is .services/memcached-sasl.log."
    else:
        yield sasl_login_finding(env, plugin_dir)
    yield mariadb_finding(env)
    yield from port_findings(services, env)


def package_problems(requirements):
    """Pins of REQUIREMENTS (following -r) that are not installed at that exact version."""
    from importlib import metadata

    problems, files, seen = [], [Path(requirements)], set()
    while files:
        path = files.pop()
        if path in seen or not path.is_file():
            continue
        seen.add(path)
        for line in path.read_text().splitlines():
            line = line.split("#")[0].strip()
            if line.startswith("-r"):
                files.append(path.parent / line[2:].strip())
            elif "==" in line:
                name, want = (part.strip() for part in line.split("==", 1))
                try:
                    have = metadata.version(name)
                except metadata.PackageNotFoundError:
                    problems.append(f"{name} (missing)")
                    continue
                if have != want:
                    problems.append(f"{name} {have} (want {want})")
    return problems


def sasl_login_finding(env, plugin_dir):
    """A real pylibmc SASL login, in a child process, the way the apps log in."""
    code = ("import os, pylibmc; c = pylibmc.Client([os.environ['S']], binary=True, "
            "username=os.environ['U'], password=os.environ['P']); c.set('doctor', '1'); "
            "assert c.get('doctor') == '1'; c.delete('doctor')")
    child_env = {**os.environ, "S": env["MEMCACHIER_SERVERS"], "U": env["MEMCACHIER_USERNAME"],
                 "P": env["MEMCACHIER_PASSWORD"], "SASL_PATH": env.get("SASL_PATH", "")}
    result = subprocess.run([sys.executable, "-c", code], env=child_env, capture_output=True,
                            text=True, timeout=30)
    if result.returncode == 0:
        return True, f"pylibmc logs in over SASL with SASL_PATH={env.get('SASL_PATH')}", ""
    last = (result.stderr.strip().splitlines() or ["failed"])[-1]
    return (False, f"pylibmc cannot log in over SASL: {last}",
            f"Export SASL_PATH={plugin_dir or '/usr/lib/x86_64-linux-gnu/sasl2'} (the folder holding "
            "libplain.so; `make services` writes it into services.env), and install libsasl2-modules.")


def mariadb_finding(env):
    try:
        import MySQLdb

        conn = MySQLdb.connect(host=env["RDS_HOSTNAME"], port=int(env["RDS_PORT"]),
                               user=env["RDS_USERNAME"], password=env["RDS_PASSWORD"],
                               database=env["RDS_DB_NAME"], connect_timeout=5)
        version = conn.get_server_info()
        conn.close()
        return True, f"MariaDB answers at {env['RDS_HOSTNAME']}:{env['RDS_PORT']} (server {version})", ""
    except ImportError:
        return False, "mysqlclient is not installed", "Run `make setup`."
    except Exception as exc:  # any driver error: the message is what the learner needs
        detail = exc.args[-1] if exc.args else exc
        return (False, f"MariaDB at {env['RDS_HOSTNAME']}:{env['RDS_PORT']} refused: {detail}",
                "Run `make services`; its log is .services/mariadb.log.")


def port_findings(services, env):
    ours = {services.MARIADB_PORT: "mariadb", services.PLAIN_PORT: "memcached",
            services.SASL_PORT: "memcached-sasl"}
    for port, name in ours.items():
        pid = services.read_pid(services.RUN_DIR / f"{name}.pid")
        mine = pid and services.pid_alive(pid)
        if services.port_open(port) and not mine:
            yield (False, f"port {port} is taken by {port_owner(port)}, not by the workshop's {name}",
                   f"Stop that program, or start the services on other ports "
                   f"(e.g. WORKSHOP_{'MARIADB' if name == 'mariadb' else 'SASL_MEMCACHED' if 'sasl' in name else 'MEMCACHED'}_PORT=...) "
                   "and run `make services` again.")
        elif mine:
            yield True, f"port {port} is the workshop's {name}", ""
        else:
            yield True, f"port {port} is free for the workshop's {name}", ""
    for port, use in LEARNER_PORTS.items():
        if services.port_open(port):
            yield (False, f"port {port} is taken by {port_owner(port)} ({use})",
                   f"Stop that program (e.g. an earlier `make run` still running), then try again.")
        else:
            yield True, f"port {port} is free ({use})", ""


def port_owner(port):
    try:
        import psutil

        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
                return f"{psutil.Process(conn.pid).name()} (pid {conn.pid})"
    except Exception:  # psutil missing or not allowed to look: say so plainly
        pass
    return "another program"
