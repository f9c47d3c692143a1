"""The nine checkpoints in steps/: each one runs, migrates and serves; the memcached counters each
lesson quotes are the ones the app produces; and the manifest, the folders, the lessons, the diffs
and WORKSHOP.md agree with each other.

Apps run only through runtime.harness, each in its own gunicorn. One run per step and database
serves several assertions, because booting an app costs about a second.
"""
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from runtime.harness import run_app
from checks.manifest import load_manifest
from runtime.taskpage import parse_forms

from conftest import ROOT
FINAL = ROOT / "final"


def load_script(name):
    """A module from scripts/, loaded by its path (a learner's workspace/ folder shares a name)."""
    spec = importlib.util.spec_from_file_location(f"scripts_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


step_diffs = load_script("step_diffs")
workspace = load_script("workspace")
STEPS_DIR = ROOT / "steps"
MANIFEST = load_manifest()
STEPS = {stage.number: stage for stage in MANIFEST}
HEADINGS = ["Goal", "Changes", "Run it", "What to observe", "Common mistakes"]
# The lessons' measuring scenario, in order; a lesson's table quotes some or all of these rows.
SCENARIO = ("first load", "reload", "after add", "reload after add", "after delete")
COLUMNS = {"get hits": "get_hits", "get misses": "get_misses", "sets": "cmd_set", "deletes": "delete_hits"}
DATABASE_STEPS = [n for n in STEPS if n >= "02"]


def folder(number):
    return STEPS[number].path


def lesson(number):
    return (folder(number) / STEPS[number].lesson).read_text()


def sections(text):
    """{level-2 heading: its text}, in order."""
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def quoted_counters(number):
    """The counter table in the lesson's "What to observe": {row: {column: int}}, or {}."""
    lines = [line.strip() for line in sections(lesson(number))["What to observe"].splitlines()
             if line.strip().startswith("|")]
    if not lines:
        return {}
    header = [cell.strip().lower() for cell in lines[0].strip("|").split("|")]
    assert header[0] == "action" and set(header[1:]) <= set(COLUMNS), f"step {number}: table header {header}"
    table = {}
    for line in lines[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert cells[0] in SCENARIO, f"step {number}: unknown row {cells[0]!r}"
        table[cells[0]] = {col: int(value) for col, value in zip(header[1:], cells[1:])}
    return table


def delete_ids(html):
    return [int(m.group(1)) for f in parse_forms(html) if (m := re.search(r"/(\d+)/delete$", f.action))]


def measure(app):
    """The scenario the lessons quote: three tasks exist, memcached is flushed, then one new
    visitor loads the page, reloads it, adds a task, reloads, and deletes the oldest task.
    Returns the counter deltas of each action and the page each action ended on."""
    setup = app.visitor()
    for name in ("one", "two", "three"):
        setup.post("/", data={"name": name})
    app.memcached.flush()
    visitor = app.visitor()
    counters, pages = {}, {}
    for label in SCENARIO:
        if label == "after add":
            action = lambda: visitor.post("/", data={"name": "four"})  # noqa: E731
        elif label == "after delete":
            oldest = min(delete_ids(pages["reload after add"]))
            action = lambda: visitor.post(f"/{oldest}/delete")  # noqa: E731
        else:
            action = visitor.get
        with app.counters() as delta:
            page = action()
        assert page.status_code == 200, f"{label}: {page.status_code} {page.url}"
        counters[label] = {col: delta[key] for col, key in COLUMNS.items()}
        pages[label] = page.text
    return counters, pages, visitor


# ---- the manifest, the folders, the lessons, the diffs ------------------------------------------

def test_manifest_names_every_step_folder_in_order():
    on_disk = sorted(p.name for p in STEPS_DIR.iterdir() if p.is_dir() and re.match(r"\d\d-", p.name))
    assert [s.folder for s in MANIFEST] == on_disk
    assert [s.number for s in MANIFEST] == [f"{n:02d}" for n in range(1, len(MANIFEST) + 1)]
    for step in MANIFEST:
        assert step.folder.startswith(step.number + "-")
        assert step.title and step.hints, f"step {step.number} needs a title and hints"


@pytest.mark.parametrize("number", list(STEPS))
def test_each_step_is_a_complete_app(number):
    path = folder(number)
    assert "application = create_app()" in (path / "application.py").read_text()
    assert "def create_app(test_config=None):" in (path / "task_list" / "__init__.py").read_text()
    flaskenv = (path / ".flaskenv").read_text()
    assert "FLASK_APP=application" in flaskenv and "FLASK_ENV" not in flaskenv
    assert (path / "migrations").is_dir() == (number >= "02")
    assert (path / ".ebextensions").is_dir() == (number >= "03")
    assert (path / "requirements.txt").is_file() == (number >= "03")


@pytest.mark.parametrize("number", list(STEPS))
def test_lesson_has_the_five_headings_the_manifest_points_at(number):
    headings = list(sections(lesson(number)))
    assert headings == HEADINGS
    for expect in STEPS[number].expectations:
        assert expect.section in headings, f"{expect.id} points at a missing section"


def test_diffs_and_workshop_stage_list_are_current():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "step_diffs.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_each_diff_replays_onto_the_previous_step(tmp_path):
    previous = None
    for number in STEPS:
        work = tmp_path / number
        if previous:
            for rel, path in step_diffs.step_files(previous).items():
                (work / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, work / rel)
        work.mkdir(exist_ok=True)
        diff = folder(number) / "CHANGES.diff"
        subprocess.run(["git", "apply", "--whitespace=nowarn", str(diff)], cwd=work, check=True)
        replayed = {rel: p.read_bytes() for rel, p in step_diffs.step_files(work).items()}
        expected = {rel: p.read_bytes() for rel, p in step_diffs.step_files(folder(number)).items()}
        assert replayed == expected, f"step {number}: CHANGES.diff does not turn the previous step into this one"
        previous = folder(number)


def test_migrations_are_the_same_in_every_step_and_in_final():
    final = step_diffs.step_files(FINAL / "migrations")
    for number in DATABASE_STEPS:
        ours = step_diffs.step_files(folder(number) / "migrations")
        assert set(ours) == set(final), f"step {number}"
        for rel in final:
            assert ours[rel].read_bytes() == final[rel].read_bytes(), f"step {number}: migrations/{rel}"


def pins(path):
    lines = [line.strip() for line in path.read_text().splitlines()]
    return dict(line.split("==") for line in lines if line and not line.startswith("#"))


def test_requirements_pin_what_the_root_pins_and_09_needs_exactly_the_same():
    root = pins(ROOT / "requirements.txt")
    for number in STEPS:
        if number >= "03":
            ours = pins(folder(number) / "requirements.txt")
            assert {k: root.get(k) for k in ours} == ours, f"step {number} pins differ from requirements.txt"
    assert pins(folder("09") / "requirements.txt") == root


# Boot the app as EB runs it (MySQL from RDS_*, memcached from MEMCACHIER_*), with every
# distribution that requirements.txt does not pin hidden, as on a server where pip installed it.
ONLY_PINNED = """
import importlib.metadata, json, re, sys
pinned = set(json.loads(sys.argv[1]))
hidden = {module for module, dists in importlib.metadata.packages_distributions().items()
          if not pinned & {re.sub(r"[-_.]+", "-", d).lower() for d in dists}}

class Hide:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in hidden:
            raise ModuleNotFoundError(f"No module named {name!r} (requirements.txt does not pin it)")

sys.meta_path.insert(0, Hide())
from task_list import create_app
app = create_app()
with app.app_context():
    from task_list.db import db
    db.engine.dispose()  # the engine loads its driver (MySQLdb for RDS_*) when it is created
import flask_migrate.cli, gunicorn.app.wsgiapp  # `flask db upgrade`, and the server EB starts
"""


@pytest.mark.parametrize("number", [n for n in STEPS if n >= "03"])
def test_requirements_hold_everything_the_app_imports_on_eb(number, services_env):
    """The app starts with only the pinned distributions, and every distribution a pinned one
    requires is pinned too: pip on EB installs nothing that was not tested here."""
    from importlib.metadata import distribution

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pinned = {canonicalize_name(name) for name in pins(folder(number) / "requirements.txt")}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RDS_", "MEMCACHIER_", "FLASK_"))}
    env.update({k: v for k, v in services_env.items() if k.startswith(("RDS_", "MEMCACHIER_", "SASL_"))})
    env.update(SECRET_KEY="requirements-test", PYTHONDONTWRITEBYTECODE="1")
    result = subprocess.run([sys.executable, "-c", ONLY_PINNED, json.dumps(sorted(pinned))],
                            cwd=folder(number), env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"step {number} needs more than it pins:\n{result.stderr}"
    for name in pinned:
        for spec in distribution(name).requires or []:
            requirement = Requirement(spec)
            if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
                continue
            assert canonicalize_name(requirement.name) in pinned, \
                f"step {number}: {name} requires {requirement.name}, which requirements.txt does not pin"


def test_step_ebextensions_agree_with_the_root_ones():
    """The same settings as the root's .ebextensions/ (which deploy final/), once the root's bundle
    layout is taken out: there the app sits in final/, in a step it sits at the top. Only final/
    has the /health route that 02-health.config points at."""
    root = {p.name: yaml.safe_load(p.read_text()) for p in (ROOT / ".ebextensions").glob("*.config")}
    root.pop("02-health.config")
    for config in root.values():
        for command in config.get("container_commands", {}).values():
            command["command"] = command["command"].replace(" && cd final", "").removeprefix(
                "cd final && ")
        for name, option in config.get("option_settings", {}).items():
            if name.endswith(":staticfiles"):
                config["option_settings"][name] = {k: v.removeprefix("final/") for k, v in option.items()}
    for number in STEPS:
        if number >= "03":
            ours = {p.name: yaml.safe_load(p.read_text())
                    for p in (folder(number) / ".ebextensions").glob("*.config")}
            assert ours == root, f"step {number}"
    # Where the text can be the same, it is.
    assert (folder("03") / ".ebextensions" / "01-packages.config").read_text() == \
           (ROOT / ".ebextensions" / "01-packages.config").read_text()


def test_workshop_md_links_every_lesson_and_the_deploy_guide():
    text = (ROOT / "WORKSHOP.md").read_text()
    for number in STEPS:
        assert STEPS[number].lesson_path in text
        assert f"make check STEP={number} APP=workspace" in text
    assert "(DEPLOY.md)" in text and "make workspace" in text


def test_workspace_is_created_once_and_catch_up_keeps_the_learners_history(tmp_path):
    ws = tmp_path / "workspace"
    env_git = ["git", "-C", str(ws), "-c", "user.name=Learner", "-c", "user.email=l@example.invalid"]
    workspace.create(ws)
    assert (ws / ".git").is_dir() and (ws / "application.py").is_file()
    assert not (ws / "README.md").exists() and not (ws / "CHANGES.diff").exists()
    with pytest.raises(workspace.WorkspaceError, match="already exists"):
        workspace.create(ws)
    (ws / "instance").mkdir(exist_ok=True)
    (ws / "instance" / "task_list.sqlite").write_text("the learner's data")
    (ws / "task_list" / "notes.py").write_text("# my own attempt\n")
    with pytest.raises(workspace.WorkspaceError, match="uncommitted"):
        workspace.catch_up("05", ws)
    subprocess.run([*env_git, "add", "-A"], check=True)
    subprocess.run([*env_git, "commit", "-qm", "my attempt"], check=True)
    workspace.catch_up("05", ws)
    assert {rel: p.read_bytes() for rel, p in step_diffs.step_files(ws).items()} == \
           {rel: p.read_bytes() for rel, p in step_diffs.step_files(folder("05")).items()}
    assert (ws / "instance" / "task_list.sqlite").read_text() == "the learner's data"
    log = subprocess.run([*env_git, "log", "--format=%s"], capture_output=True, text=True).stdout
    assert "my attempt" in log
    with pytest.raises(workspace.WorkspaceError, match="two digits"):
        workspace.catch_up("5", ws)
    with pytest.raises(workspace.WorkspaceError, match="STEP=05"):
        workspace.catch_up("", ws)
    assert workspace.main(["catch-up"]) == 2


# ---- running the steps --------------------------------------------------------------------------

def test_step_01_boots_and_answers_the_front_page():
    with run_app(folder("01"), cache=None) as app:
        page = app.visitor().get("/")
        assert page.status_code == 200 and "Task List" in page.text


@pytest.mark.parametrize("number", DATABASE_STEPS)
def test_step_on_sqlite_with_sasl_memcached_does_what_its_lesson_says(number):
    with run_app(folder(number), database="sqlite", cache="sasl") as app:
        counters, pages, visitor = measure(app)
        assert {"one", "two", "three"} <= set(re.findall(r'class="name">([^<]*)<', pages["first load"]))
        if number == "04":  # the stage's deliberate defect: the cached list is stale
            assert "four" not in pages["after add"] and ">one<" in pages["after delete"]
        else:
            assert "four" in pages["after add"] and ">one<" not in pages["after delete"]
        empty = visitor.post("/", data={"name": "   "})
        assert "Task name is required." in empty.text
        assert "Task name is required." not in app.visitor().get("/").text

        quoted = quoted_counters(number)
        if number >= "04":
            assert quoted, f"the lesson of step {number} quotes no counters"
        else:
            assert all(v == 0 for row in counters.values() for v in row.values()), counters
        for row, values in quoted.items():
            assert {col: counters[row][col] for col in values} == values, \
                f"step {number}, {row}: the lesson says {values}, memcached counted {counters[row]}"

        if number == "09":  # the lesson's note: with a session cookie, every request reads it
            for path, status in (("/static/style.css", 200), ("/favicon.ico", 404)):
                with app.counters() as delta:
                    assert visitor.get(path).status_code == status
                assert (delta["get_hits"], delta["get_misses"]) == (1, 0), path
            me = visitor.get("/me")
            assert "four" in me.text and "Tasks you added" in me.text


def test_step_09_keeps_sessions_without_memcached():
    with run_app(folder("09"), database="sqlite", cache=None) as app:
        visitor = app.visitor()
        visitor.post("/", data={"name": "offline"})
        assert "offline" in visitor.get("/me").text
        assert "offline" not in app.visitor().get("/me").text
