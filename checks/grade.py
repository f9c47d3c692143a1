"""python -m checks grade DIR...: the instructor's batch. `progress` runs once per learner folder,
each in its own process group with a time limit; the reports are CSV, JSON and JUnit XML.
`grade --bench` measures the checker itself.
"""
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from checks.cli import Parser, UsageError, common_options, shown_path, write_json
from checks.manifest import ROOT, load_manifest, manifest_path
from runtime import processes

DEFAULT_OUT = ROOT / "build" / "grades"


def main(args):
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
        running = set()  # the learners' checker processes, so an interrupted batch can stop them
        futures = [pool.submit(grade_one, name, path, options, out, running) for name, path in folders]
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
            for proc in list(running):
                processes.stop(proc, timeout=5, group=True)
            raise
    order = {name: i for i, (name, _) in enumerate(folders)}
    rows.sort(key=lambda r: order[r["learner"]])
    write_reports(rows, out, time.monotonic() - started)
    return rows


def describe(row):
    if row["state"] == "ok":
        return f"stage {row['highest'] or 'none'}"
    return f"{row['state']}: {row['detail']}"


def grade_one(name, path, options, out, running):
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
        running.add(proc)
        try:
            proc.wait(options.timeout)
        except subprocess.TimeoutExpired:
            # SIGTERM first, so the checker tears its apps down; then whatever is left of the group.
            processes.stop(proc, group=True)
            return finish(row, started, "hung", f"no result within {options.timeout:.0f} s")
        finally:
            running.discard(proc)
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
    state = data["app_state"]  # hung or crashed, as the checker found the app; else ok
    detail = next((t["observed"] for t in data["tests"] if t["app_state"] == state), "") if state != "ok" else ""
    return finish(row, started, state, detail)


def finish(row, started, state, detail):
    row.update(state=state, detail=detail, seconds=round(time.monotonic() - started, 1))
    return row


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


