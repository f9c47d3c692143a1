"""python -m checks grade DIR...: the instructor's batch. `progress` runs once per learner folder,
each in its own process group with a time limit; checks/placement.py reads each results file into
one row (the stage reached, the stage at fault, causes); the reports are a table or Markdown on the
terminal, and CSV, JSON, Markdown, JUnit XML and HTML (checks/report.py) files. `grade --bench` measures the checker itself.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from checks.cli import Parser, UsageError, common_options, shown_path
from checks.manifest import ROOT, load_manifest, manifest_path
from checks.placement import CELL, FORMATS, cut, learner_row, missing_row, notes, write_reports
from runtime import harness, processes

DEFAULT_OUT = ROOT / "build" / "grades"


def main(args):
    parser = Parser(prog="python -m checks grade",
                    description="Grade a class: every learner folder, in parallel and in isolation.")
    parser.add_argument("dirs", nargs="*", metavar="DIR", help="learner folders")
    parser.add_argument("--jobs", type=int, default=default_jobs(),
                        help="learners graded at once (default: half the cores, at least 1)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="report folder (default build/grades)")
    parser.add_argument("--timeout", type=float, default=180.0, metavar="S",
                        help="time limit for one learner's app, in seconds (default 180)")
    parser.add_argument("--format", choices=sorted(FORMATS), default="table",
                        help="what the terminal shows: a table (default) or Markdown to paste into a chat")
    parser.add_argument("--bench", action="store_true",
                        help="measure the checker's speed on the steps and on 30 learner folders")
    parser.add_argument("--learners", type=int, default=30, help="learner folders for --bench")
    common_options(parser)
    options = parser.parse_args(args)
    stages = load_manifest(options.manifest)  # a bad manifest is a usage error, before anything starts
    if options.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    if options.bench:
        return bench(options)
    if not options.dirs:
        raise UsageError('name at least one learner folder, e.g. make grade DIRS="class/*"')
    out = Path(options.out).expanduser()
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {options.out} is a file, not a folder")
    rows = grade_all(learners(options.dirs), options, out, stages)
    print(FORMATS[options.format](rows))
    print(f"\nReports (whole details): {shown_path(out.resolve())}grades.html (open it in a browser), "
          "grades.csv, grades.json, grades.md, grades.xml, learners/", file=sys.stderr)
    return 0


def default_jobs():
    """Half the machine's cores, at least 1: each learner's app and checker need a core between them."""
    return max(1, (os.cpu_count() or 1) // 2)


def learners(dirs):
    """(name, path) per folder: the folder's name, with its parent's when two share a name."""
    paths = [Path(d).expanduser() for d in dirs]
    names = [p.resolve().name or str(p) for p in paths]
    names = [f"{p.resolve().parent.name}/{n}" if names.count(n) > 1 else n for n, p in zip(names, paths)]
    unique = []
    for name in names:
        unique.append(name if name not in unique else f"{name}#{len(unique) + 1}")
    return list(zip(unique, paths))


def grade_all(folders, options, out, stages, echo=True):
    out.mkdir(parents=True, exist_ok=True)
    (out / "learners").mkdir(exist_ok=True)
    graded, lock, started = [], threading.Lock(), time.monotonic()
    if echo:
        print(f"Grading {len(folders)} learner folders, {options.jobs} at a time "
              f"(at most {options.timeout:.0f} s each)", file=sys.stderr, flush=True)
    with ThreadPoolExecutor(max_workers=options.jobs) as pool:
        running = set()  # the learners' checker processes, so an interrupted batch can stop them
        futures = [pool.submit(grade_one, name, path, options, out, running, stages)
                   for name, path in folders]
        try:
            for future in as_completed(futures):
                row, tests = future.result()
                with lock:
                    graded.append((row, tests))
                    if echo:
                        print(f"  [{len(graded)}/{len(folders)}] {row['learner']}: {describe(row)} "
                              f"({row['seconds']:.1f} s)", file=sys.stderr, flush=True)
        except KeyboardInterrupt:
            # Stopped ourselves: stop every learner's checker too, so no app outlives the batch.
            for future in futures:
                future.cancel()
            for proc in list(running):
                processes.stop(proc, timeout=5, group=True)
            raise
    order = {name: i for i, (name, _) in enumerate(folders)}
    graded.sort(key=lambda pair: order[pair[0]["learner"]])
    write_reports(graded, out, time.monotonic() - started, stages)
    return [row for row, _ in graded]


def describe(row):
    """One line per learner as the batch goes: where they stand, and what to look at."""
    state = "" if row["state"] == "ok" else row["state"].upper() + ", "
    fault = f", at fault {row['at_fault']}" if row["at_fault"] else ""
    return f"{state}stage {row['highest'] or '-'}{fault}: {cut(notes(row), CELL)}"


def grade_one(name, path, options, out, running, stages):
    """Run `progress` on one learner folder in its own process group, within the time limit.
    Returns the learner's row and its tests (for the JUnit file)."""
    started = time.monotonic()
    if not path.is_dir():
        return missing_row(name, path, started, "a file, not a folder" if path.exists() else "no such folder")
    if not (path / "application.py").is_file():
        empty = not any(path.iterdir())
        return missing_row(name, path, started, "empty folder" if empty else "no application.py")
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
        running.add(proc)
        try:
            proc.wait(options.timeout)
        except subprocess.TimeoutExpired:
            # SIGTERM first, so the checker tears its apps down; then whatever is left of the group.
            processes.stop(proc, group=True)
            return missing_row(name, path, started, f"no result within {options.timeout:.0f} s",
                               state="hung")
        finally:
            running.discard(proc)
        log.seek(0)
        text = log.read().decode(errors="replace").strip()
    if not json_file.is_file():
        detail = (text.splitlines() or ["no output"])[-1]
        return missing_row(name, path, started, f"the checker failed: {detail}", state="error")
    data = json.loads(json_file.read_text())
    row = learner_row(name, path, data, stages, started)
    row["results"] = str(json_file.relative_to(out))
    return row, data["tests"]


def bench(options):
    """The checker's two speed figures, measured here; a command, never a timed test."""
    steps = sorted(p for p in (ROOT / "steps").iterdir() if (p / "application.py").is_file())
    if not steps:
        raise UsageError("no step folders with application.py under steps/")
    stages = load_manifest(options.manifest)
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
        grade_all([(s.name, s) for s in steps], options, tmp / "steps", stages, echo=False)
        every = time.monotonic() - started
        class_dir = tmp / "class"
        folders = []
        sources = steps + [ROOT / "final"]
        for i in range(options.learners):
            source = sources[i % len(sources)]
            target = class_dir / f"learner{i + 1:02d}"
            shutil.copytree(source, target, ignore=harness.COPY_IGNORE)
            folders.append((target.name, target))
        started = time.monotonic()
        rows = grade_all(folders, options, tmp / "class-report", stages, echo=False)
        graded = time.monotonic() - started
    ok = sum(1 for r in rows if r["state"] == "ok")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\n  {'measured':62} {'seconds':>8}  target")
    print(f"  {'each step: its own check (run NN steps/NN), one after another':62} {own:8.1f}")
    print(f"  {f'all {len(steps)} steps: every check (progress), --jobs {options.jobs}':62} {every:8.1f}  <= 60")
    print(f"  {f'{len(folders)} learner folders graded, --jobs {options.jobs} ({ok} graded ok)':62} {graded:8.1f}  <= 300")
    print(f"\n  load average at the end: {load} (other work on this machine slows every figure)")
    return 0
