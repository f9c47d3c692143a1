"""The course proves its own checker (python -m checks), the way rustlings proves its exercises.

- every steps/NN passes checks 01..NN, and final/ passes them all;
- every steps/NN-1 fails check NN: each check detects the capability it names;
- each broken learner app in tests/fixtures/broken fails the right check, with the hint for its
  reason and the cause (the exception and the learner's file and line) on the terminal;
- a hang at import is HUNG within the boot limit; a slow migration after it is not;
- bad input gets one line and exit status 2, never a traceback.

Every run goes through the real command in a subprocess, on real memcached and SQLite. The runs
are independent, so the module starts them all at once, two at a time, and the tests read their
results.
"""
import json
import shutil
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from checks.manifest import load_manifest

from conftest import ROOT
STEPS = ROOT / "steps"
FINAL = ROOT / "final"
BROKEN = Path(__file__).resolve().parent / "fixtures" / "broken"
STAGES = load_manifest()
NUMBERS = [s.number for s in STAGES]
FOLDERS = {s.number: STEPS / s.folder for s in STAGES}
FIXTURES = sorted(p.name for p in BROKEN.iterdir() if (p / "fixture.toml").is_file())
RUN_LIMIT = 240  # seconds for one checker run: far above what any takes, so a hang still ends


def checks(*args, env=None, timeout=RUN_LIMIT):
    """Run `python -m checks ARGS` as a learner would; the finished process."""
    return subprocess.run([sys.executable, "-m", "checks", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=env)


def checked(args, json_file):
    """One checker run and the results file it wrote (None if it wrote none)."""
    result = checks(*args, "--json", json_file)
    data = json.loads(Path(json_file).read_text()) if Path(json_file).is_file() else None
    return result, data


def materialise(name, target, base=None):
    """Build broken app NAME: its base step (or BASE, a later one), with the fixture's edits applied."""
    spec = tomllib.loads((BROKEN / name / "fixture.toml").read_text())
    shutil.copytree(STEPS / (base or spec["base"]), target,
                    ignore=shutil.ignore_patterns("__pycache__", "instance", "*.pyc"))
    originals = {}
    for edit in spec.get("edit", []):
        path = target / edit["file"]
        text = path.read_text()
        originals.setdefault(path, text)
        if edit["old"] not in text:
            raise AssertionError(f"fixture {name}: {edit['file']} of {base or spec['base']} no longer holds "
                                 f"{edit['old']!r}; update tests/fixtures/broken/{name}")
        path.write_text(text.replace(edit["old"], edit["new"]))
    if spec.get("uncommitted_fix"):  # the mistake committed, the step's own files back uncommitted
        git = ["git", "-C", str(target), "-c", "user.name=learner", "-c", "user.email=learner@example.com"]
        for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "deploy files"]):
            subprocess.run(git + args, check=True, capture_output=True)
        for path, text in originals.items():
            path.write_text(text)
    return spec


@pytest.fixture(scope="module")
def runs(tmp_path_factory, services_env):
    """Every checker run this module judges, started at once, two at a time."""
    tmp = tmp_path_factory.mktemp("checks")
    jobs = {}
    for app in [*NUMBERS, "final"]:
        folder = FINAL if app == "final" else FOLDERS[app]
        jobs[("progress", app)] = (["progress", folder, "-q"], tmp / f"progress-{app}.json")
    for name in FIXTURES:
        spec = materialise(name, tmp / "broken" / name)
        # Not -q: the terminal is what the learner reads, so the tests read it too.
        jobs[("broken", name)] = (["run", spec["stage"], tmp / "broken" / name,
                                   *spec.get("options", [])], tmp / f"broken-{name}.json")
    slow = tmp / "slow-migration"
    shutil.copytree(FOLDERS["02"], slow, ignore=shutil.ignore_patterns("__pycache__", "instance"))
    migration = next((slow / "migrations" / "versions").glob("*.py"))
    migration.write_text(migration.read_text().replace(
        "def upgrade():\n", "def upgrade():\n    import time\n    time.sleep(12)  # longer than the boot limit\n"))
    # The limit leaves a loaded machine time to import the app, not to run the migration too.
    jobs[("slow-migration",)] = (["run", "02", slow, "-q", "--boot-timeout", "8"], tmp / "slow.json")
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {key: pool.submit(checked, args, out) for key, (args, out) in jobs.items()}
        return {key: future.result() for key, future in futures.items()}


def by_stage(data, number):
    return [t for t in data["tests"] if t["step"] == number]


def problems(tests):
    return [f"{t['step']} {t['id']}: {t['status']}: {t['observed']}" for t in tests
            if t["status"] not in ("pass", "info")]


# ---- the manifest and the checks agree ---------------------------------------------------------

def test_every_expectation_has_exactly_one_check():
    from checks import stages

    checks_defined = {name for name in vars(stages) if name.startswith("check_")}
    expected = {e.test_name for s in STAGES for e in s.expectations}
    assert checks_defined == expected


# ---- the steps and final/ ----------------------------------------------------------------------

@pytest.mark.parametrize("number", NUMBERS)
def test_step_passes_checks_up_to_its_own(runs, number):
    result, data = runs[("progress", number)]
    assert data is not None, result.stderr
    reached = [t for t in data["tests"] if t["step"] <= number]
    assert not problems(reached), f"{FOLDERS[number].name} fails: {problems(reached)}"
    assert (data["highest_stage"] or "00") >= number


def test_final_passes_every_check(runs):
    result, data = runs[("progress", "final")]
    assert data is not None, result.stderr
    assert not problems(data["tests"]), problems(data["tests"])
    assert data["highest_stage"] == NUMBERS[-1] and data["status"] == "pass"


@pytest.mark.parametrize("number", NUMBERS[1:])
def test_previous_step_fails_this_check(runs, number):
    # The previous step's progress run judged this stage too; `run` on one stage is tested below.
    before = NUMBERS[NUMBERS.index(number) - 1]
    _, data = runs[("progress", before)]
    tests = by_stage(data, number)
    failed = [t for t in tests if t["status"] == "fail" and not t["informational"]]
    assert failed, f"check {number} passes on the step before it: {tests}"
    assert not [t for t in tests if t["status"] == "error"], "the app did not even run"
    row = next(s for s in data["stages"] if s["number"] == number)
    assert row["status"] == "PENDING" and row["failing"]


def test_stale_list_is_reported_never_failed(runs):
    _, at_04 = runs[("progress", "04")]
    _, at_05 = runs[("progress", "05")]
    stale = lambda data: next(t for t in data["tests"] if t["id"] == "stale_list")
    assert stale(at_04)["status"] == stale(at_05)["status"] == "info"
    assert stale(at_04)["observed"] == "the list was stale after an add"
    assert stale(at_05)["observed"] == "the list showed the new task at once"


# ---- broken learner apps -----------------------------------------------------------------------

def flat(text):
    """TEXT with its whitespace collapsed: the terminal wraps long lines."""
    return " ".join(text.split())


@pytest.mark.parametrize("name", FIXTURES)
def test_broken_app_fails_the_right_check_with_its_hint_and_cause(runs, name):
    spec = tomllib.loads((BROKEN / name / "fixture.toml").read_text())
    result, data = runs[("broken", name)]
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    terminal = flat(result.stdout)
    tests = {t["id"]: t for t in by_stage(data, spec["stage"])}
    expectations = {e.id: e for e in next(s for s in STAGES if s.number == spec["stage"]).expectations}
    for expectation_id in spec["fails"]:
        test = tests[expectation_id]
        assert test["status"] in ("fail", "error"), f"{expectation_id} passed on {name}"
        reason = spec.get("reasons", {}).get(expectation_id, spec.get("reason"))
        hint = expectations[expectation_id].hint_for(reason)
        assert test["reason"] == reason and test["hint"] == hint
        assert flat(hint) in terminal, f"{expectation_id}: the hint for {reason} is not shown"
        assert test["observed"] and test["message"].startswith("observed: " + test["observed"])
        assert flat(test["observed"]) in terminal
        for part in spec.get("cause", []):
            assert part in (test["cause"] or ""), f"{expectation_id}: cause {test['cause']!r}"
            assert flat(part) in terminal
        if "observed" in spec:
            assert spec["observed"] in test["observed"]
        if "layer" in test:  # the stage whose layer produced the failure, once results files carry it
            assert test["layer"] == spec.get("layer"), f"{expectation_id}: layer {test['layer']}"
    if not spec.get("cause"):  # a wrong answer, not an exception: no cause to show
        assert all(tests[i]["cause"] is None for i in spec["fails"])


def test_every_reason_a_check_gives_has_its_hint():
    """Each reason literal in a check_NN_* (or a helper, for the [problems] ones) has a hint."""
    import ast

    from checks import bundled, probes, stages, subject

    problems = tomllib.loads((STEPS / "steps.toml").read_text())["problems"]
    hints = {e.test_name: e.hints for s in STAGES for e in s.expectations}
    for module in (stages, subject, probes, bundled):
        tree = ast.parse(Path(module.__file__).read_text())
        for function in (n for n in tree.body if isinstance(n, ast.FunctionDef) or isinstance(n, ast.ClassDef)):
            known = hints.get(function.name, problems)
            for call in (n for n in ast.walk(function) if isinstance(n, ast.Call)):
                name = getattr(call.func, "id", None)
                position = {"expect": 2, "no_findings": 1}.get(name)
                if position is None or len(call.args) <= position:
                    continue
                for reason in literals(call.args[position]):
                    assert reason in known, f"{function.name}: reason {reason!r} has no hint"


def literals(node):
    """The strings an expression can evaluate to: a constant, or either branch of an if-else."""
    import ast

    if isinstance(node, ast.Constant):
        return [node.value] if isinstance(node.value, str) else []
    if isinstance(node, ast.IfExp):
        return literals(node.body) + literals(node.orelse)
    return []


def test_a_pickle_is_read_never_run(tmp_path):
    """check_04_plain_values names the classes a stored pickle refers to without unpickling it."""
    import pickle

    from checks.stored import pickled_globals

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    names = pickled_globals(pickle.dumps([{"id": 1, "name": "plain"}, Payload()], protocol=5))
    assert "pathlib.Path.touch" in names and not marker.exists()
    assert pickled_globals(pickle.dumps([{"id": 1, "name": "plain"}], protocol=2)) == []
    assert pickled_globals(b"<li>a rendered fragment</li>") is None
    assert pickled_globals(b"\x80\x05not a pickle") is None


def test_only_flasks_own_cookie_counts_as_a_signed_session():
    """A Flask-Session id is random: one whose bytes start with "{" once made check 09 say the
    session was Flask's signed cookie (about one id in 256). A signed cookie names no key."""
    import base64
    import secrets

    from flask import Flask
    from checks.probes import session_key
    from checks.stored import signed_data

    app = Flask(__name__)
    app.secret_key = "x" * 32
    serializer = app.session_interface.get_signing_serializer(app)
    assert signed_data(serializer.dumps({"_flashes": [("message", "name required")]}))
    compressed = serializer.dumps({"names": ["a long name"] * 40})
    assert compressed.startswith(".") and signed_data(compressed)
    brace = base64.urlsafe_b64encode(b"{" + secrets.token_bytes(31)).decode().rstrip("=")
    for sid in [brace, brace + ".signature"] + [secrets.token_urlsafe(32) for _ in range(2000)]:
        assert not signed_data(sid), sid
    # and no memcached key is named after a compressed one (it starts with the signature's dot)
    assert session_key({"session": compressed}, ["session:abc"]) is None
    assert session_key({"session": "abc.signature"}, ["prefix:session:abc"]) == "prefix:session:abc"


def test_a_slow_migration_is_not_hung(runs):
    # Its import is quick; the migration alone takes longer than the boot limit, and that is fine.
    result, data = runs[("slow-migration",)]
    assert result.returncode == 0, result.stdout + json.dumps(data)[:2000]


def test_a_hung_request_is_reported_as_such(runs):
    _, data = runs[("broken", "never-answers")]
    index = next(t for t in data["tests"] if t["id"] == "index")
    assert "GET / got no answer within 3 s" in index["observed"]
    assert index["app_state"] == "hung" and data["app_state"] == "hung"


def test_a_crash_on_import_shows_the_exception(runs):
    _, data = runs[("broken", "raises-on-import")]
    importable = next(t for t in data["tests"] if t["id"] == "importable")
    assert importable["status"] == "error" and data["status"] == "error"
    assert "ImportError" in importable["observed"] and "create_application" in importable["observed"]
    assert importable["app_state"] == "crashed" and data["app_state"] == "crashed"
    assert "at application.py:2 in <module>" in importable["cause"] and data["cause"] == importable["cause"]


def test_a_hang_at_import_is_hung_before_the_migration(runs):
    _, data = runs[("broken", "hangs-before-migrations")]
    assert data["app_state"] == "hung" and data["status"] == "error"
    assert all(t["reason"] == "hung_at_import" for t in data["tests"] if not t["informational"])


# ---- the results files -------------------------------------------------------------------------

def test_run_writes_exercism_json_and_junit(tmp_path, services_env):
    json_file, junit_file = tmp_path / "results.json", tmp_path / "junit.xml"
    result = checks("run", "03", FOLDERS["02"], "--json", json_file, "--junit", junit_file)
    assert result.returncode == 1
    data = json.loads(json_file.read_text())
    assert data["status"] == "fail" and data["step"] == "03"
    assert data["points"] == {"earned": 0, "possible": 4}
    names = {t["name"] for t in data["tests"]}
    assert names == {"check_03_ebextensions", "check_03_migration_command", "check_03_entry_point",
                     "check_03_requirements"}
    for test in data["tests"]:
        assert set(test) >= {"name", "status", "message", "output", "points", "step", "cause",
                             "app_state", "hint"}
        assert test["app_state"] == "ok" and test["cause"] is None
        assert test["message"].startswith("observed: ")
    suite = ET.parse(junit_file).getroot().find("testsuite")
    assert suite.get("tests") == "4" and suite.get("failures") == "4"


def test_run_prints_each_expectation_with_its_hint():
    result = checks("run", "03", FOLDERS["02"])
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert sum(line.startswith("  ✗ ") for line in lines) == 4
    assert any("reread: steps/03-deploy/README.md" in line for line in lines)
    assert "hint: " in result.stdout and "expected: " in result.stdout


# ---- bad input ---------------------------------------------------------------------------------

def bad_manifest(tmp_path):
    path = tmp_path / "steps.toml"
    path.write_text("[[step]\nnumber = ")
    return path


def manifest_in_another_format(tmp_path):
    path = tmp_path / "steps.toml"
    path.write_text((STEPS / "steps.toml").read_text().replace("format = 1", "format = 2"))
    return path


BAD_INPUT = {
    "unknown stage": lambda tmp: ["run", "42", FINAL],
    "missing folder": lambda tmp: ["run", "01", tmp / "nowhere"],
    "folder without application.py": lambda tmp: ["run", "01", STEPS],
    "unreadable manifest": lambda tmp: ["run", "01", FINAL, "--manifest", tmp],
    "manifest that is not TOML": lambda tmp: ["run", "01", FINAL, "--manifest", bad_manifest(tmp)],
    "missing manifest": lambda tmp: ["progress", FINAL, "--manifest", tmp / "none.toml"],
    "manifest in another format": lambda tmp: ["run", "01", FINAL, "--manifest",
                                               manifest_in_another_format(tmp)],
    "unknown option": lambda tmp: ["run", "01", FINAL, "--colour"],
    "grade without folders": lambda tmp: ["grade"],
}


@pytest.mark.parametrize("case", BAD_INPUT)
def test_bad_input_gets_one_line_and_exit_2(tmp_path, case):
    result = checks(*BAD_INPUT[case](tmp_path), timeout=60)
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_the_manifest_can_come_from_the_environment(tmp_path):
    import os

    env = {**os.environ, "WORKSHOP_MANIFEST": str(bad_manifest(tmp_path))}
    result = checks("run", "01", FINAL, env=env, timeout=60)
    assert result.returncode == 2 and "not valid TOML" in result.stderr


# ---- doctor ------------------------------------------------------------------------------------

def test_doctor_reports_each_finding_and_a_fix_for_each_problem(services_env):
    result = checks("doctor", timeout=120)
    lines = result.stdout.splitlines()
    found = [line for line in lines if line.startswith(("  ✓ ", "  ✗ "))]
    assert any("Python 3.11" in line for line in found)
    assert any("SASL memcached answers" in line and "✓" in line for line in found)
    assert any("MariaDB answers" in line and "✓" in line for line in found)
    for i, line in enumerate(lines):
        if line.startswith("  ✗ "):
            assert lines[i + 1].strip().startswith("fix: "), line
    assert result.returncode == (1 if any("✗" in line for line in found) else 0)
