"""python -m checks watch [APP_DIR]: the learner's loop, as rustlings' watch mode runs it.

Every stage is checked once to find the first one whose own check does not pass; its failing
expectations are shown with their causes and hints, and its check runs again each time a file in
the app folder changes. When it passes, the next stage's check runs at once; after the last, a
short summary. Each check runs as `python -m checks run` in a process group of its own, so Ctrl-C
(or SIGTERM) stops it the way it stops `run`: the app's gunicorn and memcached go with it.
Watch holds the app's checker lock for its whole life (its runs write to files of their own, so
they do not take it), keeps the app's file under build/results/ up to date, and between runs
checks again when the dashboard asks.
"""
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import watchfiles

from checks.cli import (DEFAULT_APP, Parser, app_folder, app_lock, common_options, make_command,
                        record, shown_path, symbols)
from checks.manifest import ROOT, load_manifest, manifest_path
from checks.results import app_state_of, counted, failed, render, stage_passes, stage_status
from runtime import checkruns, processes

ASK_POLL_MS = 1000  # how often, between saves, watch looks for a check the dashboard asked for


class AppFilter(watchfiles.DefaultFilter):
    """Source changes only: not the SQLite files and instance data that `make run` writes."""
    ignore_dirs = (*watchfiles.DefaultFilter.ignore_dirs, "instance", ".elasticbeanstalk")
    ignore_entity_patterns = (*watchfiles.DefaultFilter.ignore_entity_patterns,
                              r"\.sqlite3?$", r"\.db$", r"\.db-journal$")


def main(args):
    parser = Parser(prog="python -m checks watch",
                    description="Check the first stage that does not pass yet, again at every save.")
    parser.add_argument("app_dir", nargs="?", help="the app folder (default: workspace/)")
    common_options(parser)
    options = parser.parse_args(args)
    stages = load_manifest(options.manifest)
    app_dir = app_folder(options.app_dir or DEFAULT_APP, options.app_dir is None)
    with app_lock(app_dir), tempfile.TemporaryDirectory(prefix="checks-watch-") as tmp:
        return Watch(stages, app_dir, options, Path(tmp)).run()


class Watch:
    def __init__(self, stages, app_dir, options, tmp):
        self.stages, self.app_dir, self.options, self.tmp = stages, app_dir, options, tmp
        self.runs, self.started = 0, time.monotonic()

    def run(self):
        shown = shown_path(self.app_dir)
        print(f"Watching {shown} (Ctrl-C stops). First, every stage is checked once.", flush=True)
        tests = self.check("progress")
        stage = next((s for s in self.stages if tests is None or not stage_passes(s, tests)), None)
        if stage is None:
            return self.summary()
        if stage is not self.stages[0] and tests is not None:
            print(f"  {symbols()['pass']} stages {self.stages[0].number} to "
                  f"{self.stages[self.stages.index(stage) - 1].number} pass", flush=True)
        self.show(stage, tests)
        for changes in watchfiles.watch(self.app_dir, watch_filter=AppFilter(),
                                        rust_timeout=ASK_POLL_MS, yield_on_timeout=True):
            wanted = checkruns.asked(self.app_dir)
            if not changes and not wanted:
                continue
            why = changed(changes, self.app_dir) if changes else "a check was asked for"
            print(f"\n-- {why}: checking stage {stage.number} again --", flush=True)
            while True:
                tests = self.check("run", stage.number)
                if tests is None or not stage_passes(stage, tests):
                    self.show(stage, tests)
                    break
                print(f"  {symbols()['pass']} Stage {stage.number} passes.", flush=True)
                following = self.stages.index(stage) + 1
                if following == len(self.stages):
                    return self.summary()
                stage = self.stages[following]
                print(f"\nOn to stage {stage.number}: checking it now.", flush=True)
        return 0

    def check(self, command, number=None):
        """Run `python -m checks COMMAND [NUMBER] APP` in a process group of its own; its tests,
        or None when the checker could not run (the reason is printed)."""
        self.runs += 1
        results = self.tmp / f"run-{self.runs}.json"
        args = [sys.executable, "-m", "checks", command, *([number] if number else []),
                str(self.app_dir), "--quiet", "--json", str(results),
                "--manifest", str(manifest_path(self.options.manifest)),
                "--boot-timeout", str(self.options.boot_timeout),
                "--request-timeout", str(self.options.request_timeout)]
        proc = subprocess.Popen(args, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            _, errors = proc.communicate()
        finally:
            # On Ctrl-C: SIGTERM lets the checker stop its apps; whatever is left of its group is killed.
            processes.stop(proc, group=True, timeout=30)
        if not results.is_file():
            print(f"  {symbols()['fail']} {(errors.strip().splitlines() or ['the checker failed'])[-1]}",
                  flush=True)
            return None
        tests = json.loads(results.read_text())["tests"]
        record(self.stages, self.app_dir, "watch", tests, [number] if number else None)
        return tests

    def show(self, stage, tests):
        print(f"\nStage {stage.number}: {stage.title} (lesson: {stage.lesson_path})")
        if tests is not None:
            ran = [t for t in tests if t["step"] == stage.number]
            state = next((app_state_of(t) for t in ran if app_state_of(t) != "ok"), None)
            if state:
                print(f"  The app {state}.")
            for test in ran:
                if test["status"] in ("fail", "error"):
                    print(render(test, stage, symbols()))
            judged = [t for t in ran if counted(t)]
            print(f"  {sum(1 for t in judged if not failed(t))} of {len(judged)} expectations pass"
                  + (" (the machine stalled: the rest were not judged)."
                     if stage_status(stage, ran) == "NOT JUDGED" else "."))
        print(f"  Save a file in {shown_path(self.app_dir)} to check again "
              f"(or `{make_command('check', self.app_dir, stage.number)}`); Ctrl-C stops.", flush=True)

    def summary(self):
        minutes = (time.monotonic() - self.started) / 60
        print(f"\nAll {len(self.stages)} stages pass on {shown_path(self.app_dir)}: "
              f"{self.runs} checker runs in {minutes:.0f} min. final/README.md shows what production "
              f"adds; DEPLOY.md takes it live.", flush=True)
        return 0


def changed(changes, app_dir):
    names = sorted({str(Path(path).relative_to(app_dir)) for _, path in changes
                    if Path(path).is_relative_to(app_dir)})
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return f"{shown or 'a file'} changed"
