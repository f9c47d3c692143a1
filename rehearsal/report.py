"""python -m rehearsal (make deploy-check): rehearse `eb deploy` of the repository root on this machine.

We cannot reach AWS from here, so this replays what Elastic Beanstalk does with the source
bundle, as closely as one machine allows, and reports every way the bundle would fail:

1. Build the bundle the way the EB CLI does. With a `.ebignore`, the EB CLI zips the working
   tree and leaves out every path the file matches (gitignore rules, via `pathspec`, the matcher
   the EB CLI pins); without one, in a git repository, it uploads `git archive HEAD`.
   By default this rehearses the committed HEAD: its `git archive`, filtered by its `.ebignore`,
   which is what `eb deploy` uploads from a clean checkout. `--dir DIR` bundles a folder exactly
   as the EB CLI would from it.
2. Check it statically: every `.ebextensions/*.config` (YAML, known keys and namespaces,
   well-formed `container_commands`, a valid package manager), `requirements.txt` (pinned, no
   development tools) and the entry point (the Procfile's `web:` command, or the WSGIPath option).
3. Replay the platform: unpack into a temporary /var/app/staging, build a Python 3.11 venv and
   pip install -r requirements.txt (wheels cached in build/wheels), run the container commands
   against a fresh MariaDB database, move staging to current, start the web process on loopback,
   probe the health URL and add, list and delete a task with SASL memcached configured.
4. Report; exit 1 on any finding (each names the file and key at fault), 2 on bad input.
"""
import argparse
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rehearsal import rules
from rehearsal.bundle import bundle_from_dir, bundle_from_git, check_contents, size_text, zip_bundle
from rehearsal.platform import PLATFORM
from rehearsal.readers import read_requirements, static_mappings
from rehearsal.replay import Replay
from rehearsal.venv import ReplayError
from runtime import ROOT, UsageError
from runtime.services import ServiceError

USAGE = "usage: python -m rehearsal [--ref REF | --dir DIR] [--static]"


class Output:
    """Progress and report lines, printed as they come."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout

    def line(self, text=""):
        print(text, file=self.stream, flush=True)

    def step(self, label, text):
        self.line(f"   {label:<11} {text}")


def static_checks(bundle, out):
    """Every finding that needs no replay, with one progress line per file."""
    findings = check_contents(bundle)
    out.step("ok" if not findings else "FINDING", "bundle: only what the running app needs"
             if not findings else "bundle: carries files the app does not need")
    judged = rules.judge(bundle.root, bundle.files)
    bundle.notes += judged.notes
    for finding in judged.unreadable:
        out.step("FINDING", finding.where)
    for config in judged.configs:
        found = judged.by_config[config.path]
        out.step("ok" if not found else "FINDING", f"{config.path}  {describe_config(config)}")
    requirements = bundle.root / "requirements.txt"
    count = len(read_requirements(requirements.read_text())) if requirements.is_file() else 0
    found = judged.requirements + judged.runtime_needs
    out.step("ok" if not found else "FINDING", f"requirements.txt  {count} requirement(s), each "
             "pinned, no development tools, all the app imports" if not found else "requirements.txt")
    if judged.entry is None:
        out.step("FINDING", "entry point: the platform could not start the app")
    else:
        out.step("ok" if not judged.entry_point else "FINDING",
                 f"{judged.entry.source}  {judged.entry.command}")
    shown = ", ".join(f"{url} -> {folder}/" for url, folder in static_mappings(judged.configs).items())
    out.step("ok" if not judged.static_files else "FINDING", f"static files  nginx serves {shown}")
    return judged.configs, judged.entry, findings + judged.findings


def describe_config(config):
    if config is None:
        return ""
    parts = []
    for key, value in config.data.items():
        if isinstance(value, dict):
            parts.append(f"{key}: {', '.join(map(str, value))}")
        else:
            parts.append(str(key))
    return "; ".join(parts)


def rehearse(source, *, static_only=False, out=None):
    """Build, check and (unless STATIC_ONLY) replay SOURCE; returns the findings."""
    out = out or Output()
    kind, value = source
    with tempfile.TemporaryDirectory(prefix="deploy-check-") as tmp:
        tmp = Path(tmp)
        out.line(f"Rehearsing `eb deploy` for {PLATFORM}")
        out.line()
        bundle = (bundle_from_git(ROOT, value, tmp) if kind == "ref" else bundle_from_dir(value, tmp))
        zip_bundle(bundle, tmp / "bundle.zip")
        out.line(f"1. Source bundle: {bundle.how}")
        out.line(f"   {len(bundle.files)} files, {size_text(bundle.zip_size)} zipped, "
                 f"{size_text(bundle.unpacked_size)} unpacked")
        for rel in bundle.files:
            out.line(f"     {rel:<60} {size_text((bundle.root / rel).stat().st_size):>9}")
        out.line()
        out.line("2. Static checks")
        configs, entry, findings = static_checks(bundle, out)
        for note in bundle.notes:
            out.line(f"   note: {note}")
        out.line()
        if static_only:
            out.line("3. Replay: skipped (--static)")
        elif findings:
            out.line("3. Replay: skipped until the static findings are fixed; Elastic Beanstalk "
                     "would reject or skip what they name")
        else:
            out.line("3. Replay on this machine (paths under /var/app map to a temporary folder)")
            started = time.monotonic()
            findings += Replay(bundle, configs, entry, out, tmp / "replay").run()
            out.line(f"   replay took {time.monotonic() - started:.1f} s")
        out.line()
        if findings:
            out.line(f"4. Result: {len(findings)} finding(s); `eb deploy` would fail or misbehave")
            for finding in findings:
                out.line(f"   - {finding}")
        else:
            out.line("4. Result: the static checks pass (no replay was run)." if static_only
                     else "4. Result: no findings. The bundle is ready for `eb deploy`.")
        return findings


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m rehearsal", add_help=False)
    parser.add_argument("--ref")
    parser.add_argument("--dir")
    parser.add_argument("--static", action="store_true")
    parser.add_argument("-h", "--help", action="store_true")
    try:
        args, extra = parser.parse_known_args(argv)
    except SystemExit:
        raise UsageError(USAGE) from None
    if extra:
        raise UsageError(f"unexpected argument {extra[0]!r}. {USAGE}")
    if args.ref and args.dir:
        raise UsageError(f"give --ref or --dir, not both. {USAGE}")
    return args


def main(argv):
    try:
        args = parse_args(argv[1:])
        if args.help:
            print(__doc__.strip() + "\n\n" + USAGE)
            return 0
        if args.dir:
            if not Path(args.dir).is_dir():
                raise UsageError(f"{args.dir} is not a folder")
            source = ("dir", Path(args.dir).resolve())
        else:
            ref = args.ref or "HEAD"
            check = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet",
                                    f"{ref}^{{commit}}"], capture_output=True)
            if check.returncode != 0:
                raise UsageError(f"no commit named {ref!r} in {ROOT}")
            source = ("ref", ref)
        findings = rehearse(source, static_only=args.static)
    except UsageError as exc:
        print(f"deploy: {exc}", file=sys.stderr)
        return 2
    except (ReplayError, ServiceError) as exc:  # services.env missing, MariaDB down, no 3.11
        print(f"deploy: {exc}", file=sys.stderr)
        return 1
    except subprocess.TimeoutExpired as exc:
        print(f"deploy: {shlex.join(map(str, exc.cmd))} did not finish within {exc.timeout:.0f} s",
              file=sys.stderr)
        return 1
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main(["deploy", *sys.argv[1:]]))
