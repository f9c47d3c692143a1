"""Each lesson builds its checkpoint: start from checkpoint N-1 (from nothing for 01, which is what
`make workspace` copies), do only what lesson N shows, in its order, and the result is checkpoint N
and passes check N, on SQLite and on MariaDB with SASL memcached.

A lesson marks each code block a learner acts on with an HTML comment on the line before it
(scripts/step_diffs.py reads the markers):

    <!-- lesson: create task_list/db.py -->     the block is the whole new file
    <!-- lesson: replace requirements.txt -->   the block is the whole file, replacing the old one
    <!-- lesson: edit task_list/tasks.py -->    the block is a diff: find its " " and "-" lines, once,
                                                 and put its " " and "+" lines in their place
    <!-- lesson: run -->                        a console block to run in the app folder

Files that `run` blocks write (the migration from `flask db migrate`) are judged by their effect:
an empty database upgraded by them has the checkpoint's schema.
"""
import difflib
import os
import re
import shutil
import sqlite3
import subprocess
import sys

import pytest

from runtime.harness import run_app
from test_steps import STEPS, delete_ids, folder, lesson, step_diffs, workspace

from conftest import ROOT
VENV_BIN = ROOT / ".venv" / "bin"
# Ports the workshop may move (make run PORT=..., services.env): a lesson never spells them out.
PORT = re.compile(r"127\.0\.0\.1:\d|localhost:\d|\b(5000|5050|3307|11311|11312)\b")
LessonError = step_diffs.LessonError


def actions(text):
    """(action, path, body) for each marked block, in the lesson's order."""
    return [block[:3] for block in step_diffs.lesson_blocks(text)]


def unmarked_blocks(text):
    """The line number of each code block, other than console ones, that carries no marker."""
    lines, out, inside = text.splitlines(), [], False
    for n, line in enumerate(lines):
        if line.startswith("```"):
            if not inside and line.strip() != "```console" and \
                    not step_diffs.LESSON_MARKER.match(lines[n - 1] if n else ""):
                out.append(n + 1)
            inside = not inside
    return out


def edit(old_text, diff, path):
    """Apply one diff block: each hunk (hunks are split by @@ lines) must match exactly once."""
    text = old_text
    for hunk in re.split(r"^@@.*\n", diff, flags=re.M):
        lines = hunk.splitlines()
        if not lines:
            continue
        bad = [line for line in lines if line and line[0] not in " +-"]
        if bad:
            raise LessonError(f"{path}: a diff line must start with ' ', '+' or '-': {bad[0]!r}")
        old = "".join(line[1:] + "\n" for line in lines if not line or line[0] in " -")
        new = "".join(line[1:] + "\n" for line in lines if not line or line[0] in " +")
        if not old.strip():
            raise LessonError(f"{path}: a hunk without context lines cannot be placed:\n{hunk}")
        # Whole lines only: a "\n" before each side keeps "    x" from matching inside "        x".
        lines_of_text = "\n" + text
        at = [i for i in range(len(lines_of_text)) if lines_of_text.startswith("\n" + old, i)]
        if len(at) != 1:
            raise LessonError(f"{path}: these lines occur {len(at)} times in the file, not once:\n{old}")
        text = text[:at[0]] + new + text[at[0] + len(old):]
    return text


def run_env():
    """The learner's shell: the workshop's virtualenv active, no services in the environment."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RDS_", "MEMCACHIER_", "FLASK_", "VIRTUAL_ENV"))}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def replay(number, work):
    """Checkpoint N-1 copied into WORK, then lesson N done there. Returns the paths run blocks wrote."""
    previous = f"{int(number) - 1:02d}"
    if previous in STEPS:
        for rel, path in step_diffs.step_files(folder(previous)).items():
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, work / rel)
    work.mkdir(parents=True, exist_ok=True)
    generated = set()
    for action, rel, body in actions(lesson(number)):
        if action == "run":
            before = {r: p.read_bytes() for r, p in step_diffs.step_files(work).items()}
            result = subprocess.run(["bash", "-euo", "pipefail", "-c", body], cwd=work, env=run_env(),
                                    capture_output=True, text=True, timeout=300)
            assert result.returncode == 0, f"lesson {number}: `{body.strip()}` failed:\n{result.stderr}"
            after = {r: p.read_bytes() for r, p in step_diffs.step_files(work).items()}
            generated |= {r for r in after if before.get(r) != after[r]}
            continue
        target = work / rel
        exists = target.is_file()
        if action == "create" and exists:
            raise LessonError(f"lesson {number} creates {rel}, which checkpoint {previous} already has")
        if action in ("replace", "edit") and not exists:
            raise LessonError(f"lesson {number} changes {rel}, which checkpoint {previous} does not have")
        target.parent.mkdir(parents=True, exist_ok=True)
        text = edit(target.read_text(), body, rel) if action == "edit" else body
        target.write_text(text)
    return generated


def schema(app_dir, tmp):
    """The SQLite schema that `flask db upgrade` gives a copy of APP_DIR with an empty database."""
    copy = tmp / "schema" / app_dir.name
    shutil.copytree(app_dir, copy, ignore=shutil.ignore_patterns("instance", "__pycache__"))
    subprocess.run([str(VENV_BIN / "flask"), "--app", "application", "--debug", "db", "upgrade"],
                   cwd=copy, env=run_env(), check=True, capture_output=True, timeout=120)
    with sqlite3.connect(copy / "instance" / "task_list.sqlite") as conn:
        return conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()


# ---- the lessons' form --------------------------------------------------------------------------

@pytest.mark.parametrize("number", list(STEPS))
def test_every_code_block_to_type_is_marked(number):
    text = lesson(number)
    assert not unmarked_blocks(text), \
        f"lesson {number}: code blocks without a <!-- lesson: ... --> marker at lines {unmarked_blocks(text)}"
    assert actions(text), f"lesson {number} shows no change"


@pytest.mark.parametrize("number", list(STEPS))
def test_lessons_never_spell_out_a_port(number):
    found = [line for line in lesson(number).splitlines() if PORT.search(line)]
    assert not found, f"lesson {number} names a port; say where to read it (make run prints it):\n" + \
        "\n".join(found)


def test_edit_places_each_hunk_once():
    assert edit("a\nb\nc\n", " a\n-b\n+B\n c\n", "f") == "a\nB\nc\n"
    assert edit("a\n\nb\n", " a\n\n+x\n b\n", "f") == "a\n\nx\nb\n"  # an empty line is blank context
    with pytest.raises(LessonError, match="2 times"):
        edit("a\nb\na\nb\n", " a\n+x\n b\n", "f")
    with pytest.raises(LessonError, match="0 times"):
        edit("a\n", " z\n+x\n", "f")
    with pytest.raises(LessonError, match="0 times"):  # an indented line is not its own tail
        edit("        x\n", "     x\n+y\n", "f")


# ---- the replay ---------------------------------------------------------------------------------

@pytest.fixture(scope="module", params=list(STEPS))
def replayed(request, tmp_path_factory):
    """(number, folder, generated paths): lesson NUMBER done on a copy of the checkpoint before it."""
    number = request.param
    work = tmp_path_factory.mktemp(f"lesson-{number}") / STEPS[number].folder
    return number, work, replay(number, work)


def test_lesson_builds_its_checkpoint(replayed, tmp_path):
    number, work, generated = replayed
    ours = {rel: p.read_bytes() for rel, p in step_diffs.step_files(work).items()}
    theirs = {rel: p.read_bytes() for rel, p in step_diffs.step_files(folder(number)).items()}
    assert set(ours) == set(theirs), \
        f"lesson {number}: files missing {sorted(set(theirs) - set(ours))}, extra {sorted(set(ours) - set(theirs))}"
    differ = sorted(rel for rel in ours if ours[rel] != theirs[rel] and rel not in generated)
    assert not differ, f"lesson {number} does not give checkpoint {number}'s files:\n" + "".join(
        line for rel in differ for line in difflib.unified_diff(
            theirs[rel].decode().splitlines(True), ours[rel].decode().splitlines(True),
            f"checkpoint/{rel}", f"lesson/{rel}"))
    if generated:
        assert schema(work, tmp_path / "ours") == schema(folder(number), tmp_path / "theirs")


def test_lesson_passes_its_check_on_sqlite(replayed):
    """The checker's own configurations: SQLite, with a SASL (and a plain) memcached."""
    number, work, _ = replayed
    result = subprocess.run([sys.executable, "-m", "checks", "run", number, str(work)], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"check {number} fails the replayed lesson:\n{result.stdout}{result.stderr}"


def test_lesson_serves_on_mariadb_with_sasl_memcached(replayed):
    """The configuration the checker does not boot: adds, the list and a delete on MariaDB.
    (The checkpoints' own migration is final/'s, which tests/test_final.py runs on MariaDB.)"""
    number, work, _ = replayed
    with run_app(work, database="mariadb", cache="sasl") as app:
        visitor = app.visitor()
        page = visitor.get("/")
        assert page.status_code == 200, f"on MariaDB: GET / answered {page.status_code}"
        if number < "02":
            return
        names = [f"replayed {number} first", f"replayed {number} second"]
        for name in names:
            visitor.post("/", data={"name": name})
        if number == "04":  # 04 never invalidates: only an empty cache shows what was added
            app.memcached.flush()
        page = visitor.get("/")
        assert all(name in page.text for name in names)
        visitor.post(f"/{min(delete_ids(page.text))}/delete")
        if number == "04":
            app.memcached.flush()
        assert names[0] not in visitor.get("/").text
        with app.database.connect() as conn:
            cursor = conn.cursor()
            cursor.execute("SELECT name FROM task ORDER BY id")
            assert [row[0] for row in cursor.fetchall()] == names[1:]


def test_make_workspace_gives_what_lesson_01_builds(tmp_path):
    """Lesson 01 is replayed from nothing; `make workspace` hands the learner the same files."""
    created = tmp_path / "workspace"
    workspace.create(created)
    ours = {rel: p.read_bytes() for rel, p in step_diffs.step_files(created).items()}
    assert ours == {rel: p.read_bytes() for rel, p in step_diffs.step_files(folder("01")).items()}
