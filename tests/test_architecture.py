"""The import rules of ARCHITECTURE.md, read from the source: each package imports only what sits
below it, and what `make services` runs with the system python3 imports only the standard library."""
import ast
import sys

import pytest

from conftest import ROOT

# Each package, and the workshop packages it may import (besides itself).
MAY_IMPORT = {
    "runtime": set(),
    "instruments": {"runtime"},
    "rehearsal": {"runtime"},
    "checks": {"runtime", "rehearsal"},
}
OURS = {*MAY_IMPORT, "final", "steps", "tests", "notebooks", "scripts", "task_list"}
# Run by `make services` before the virtualenv exists.
STANDARD_LIBRARY_ONLY = ["runtime/__init__.py", "runtime/services.py", "runtime/processes.py",
                         "runtime/memcached.py"]
LIMIT = 500  # lines, for any module outside steps/


def imported(path):
    """The top-level names of every module PATH imports, at any depth of its code."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def defined_names(path):
    """The names a module binds at its top level."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {n.id for target in node.targets for n in ast.walk(target) if isinstance(n, ast.Name)}
    return names


def modules(package):
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", MAY_IMPORT)
def test_each_package_imports_only_what_sits_below_it(package):
    wrong = {f"{path.relative_to(ROOT)} imports {name}"
             for path in modules(package)
             for name in imported(path) & OURS - MAY_IMPORT[package] - {package}}
    assert not wrong, sorted(wrong)


@pytest.mark.parametrize("path", STANDARD_LIBRARY_ONLY)
def test_what_make_services_runs_needs_only_the_standard_library(path):
    outside = imported(ROOT / path) - set(sys.stdlib_module_names) - {"runtime"}
    assert not outside, f"{path} imports {sorted(outside)}"
    runtime_modules = {p.split("/")[1].removesuffix(".py") for p in STANDARD_LIBRARY_ONLY}
    runtime_modules |= defined_names(ROOT / "runtime" / "__init__.py")  # ROOT, UsageError and the like
    tree = ast.parse((ROOT / path).read_text())
    used = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
            and node.module == "runtime" for alias in node.names}
    assert used <= runtime_modules, f"{path} imports runtime.{sorted(used - runtime_modules)}"


def test_the_apps_never_import_the_workshop_tooling():
    wrong = {f"{path.relative_to(ROOT)} imports {name}"
             for folder in ("final", "steps") for path in modules(folder)
             for name in imported(path) & set(MAY_IMPORT)}
    assert not wrong, sorted(wrong)


def test_no_module_outside_the_steps_is_over_the_limit():
    folders = [*MAY_IMPORT, "final", "tests", "notebooks", "scripts"]
    long = {f"{path.relative_to(ROOT)}: {n} lines" for folder in folders for path in modules(folder)
            if (n := len(path.read_text().splitlines())) > LIMIT}
    assert not long, sorted(long)
