"""Every command the tooling suggests works where it is suggested: a `make` target, which runs in
the workshop's venv from any shell, never a bare `python -m checks`, which fails outside it."""
import ast
import re

from checks.manifest import load_manifest
from conftest import ROOT
from test_checks import FOLDERS, checks

def test_progress_suggests_make_check_for_the_next_stage(services_env):
    result = checks("progress", FOLDERS["01"], "-q")
    assert result.returncode == 0, result.stderr
    assert f"`make check STEP=02 APP={FOLDERS['01'].relative_to(ROOT)}` shows what is missing" \
        in result.stdout


def strings_said(path):
    """The string literals of module PATH that reach a person: not docstrings, usage or prog= lines."""
    tree = ast.parse(path.read_text())
    quiet = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            quiet.add(id(body[0].value))  # a docstring
        if isinstance(node, ast.keyword) and node.arg == "prog":
            quiet.add(id(node.value))
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "USAGE" for t in node.targets):
            quiet |= {id(n) for n in ast.walk(node.value)}
    return [n.value for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in quiet]


def test_no_message_or_hint_suggests_a_bare_python_command():
    said = {f"checks/{p.name}": strings_said(p) for p in sorted((ROOT / "checks").glob("*.py"))}
    said["steps/steps.toml"] = [e.hint for s in load_manifest() for e in s.expectations] + \
        [h for s in load_manifest() for h in s.hints]
    wrong = [f"{where}: {text!r}" for where, texts in said.items() for text in texts
             if re.search(r"python3? -m checks", text)]
    assert not wrong, wrong
