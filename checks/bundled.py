"""Stage 03's view of the app: the bundle `eb deploy` would upload, judged by the deploy rules.

The bundle is built as `make deploy-check APP=...` builds it (rehearsal/bundle.py): with a
`.ebignore`, the working tree minus what it matches; in a git repository, the last commit; else
every file. Each check of stage 03 judges it with a function that fails through `expect`; when
the bundle fails and the working tree passes, the fix is there but not committed, and the failure
says so. Every other stage judges the working tree, so `make watch` sees fixes before a commit.
"""
import atexit
import functools
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from checks.subject import Verdict, expect
from rehearsal.bundle import UsageError, bundle_from_dir, walk_tree
from rehearsal.rules import judge


@dataclass
class View:
    """One set of deploy files: where they sit, the name to show, and the rules' findings."""
    root: Path
    name: str
    judged: object
    findings: dict


def deploy_root(app_dir):
    """APP_DIR if it holds .ebextensions/, else the nearest parent that does and deploys APP_DIR."""
    if (app_dir / ".ebextensions").is_dir():
        return app_dir
    for parent in app_dir.parents:
        if (parent / ".ebextensions").is_dir():
            # A parent's config counts only if it names this folder (a Procfile's --chdir, a cd).
            relative = re.escape(app_dir.relative_to(parent).as_posix())
            files = [parent / "Procfile", *sorted((parent / ".ebextensions").glob("*.config"))]
            text = "\n".join(p.read_text(errors="replace") for p in files if p.is_file())
            return parent if re.search(rf"(?<![\w./-]){relative}(?![\w.-])", text) else None
    return None


@functools.cache
def view_of(root, name):
    """The deploy rules' findings on ROOT, one list per check of stage 03 (judged once per run:
    the four checks share it, and one rule imports the app)."""
    judged = judge(root, [f".ebextensions/{f}" for f in walk_tree(root / ".ebextensions")])
    config = [f for found in judged.by_config.values() for f in found]
    commands = [f for f in config if ": container_commands" in f.where]
    return View(root, name, judged, {
        "ebextensions": [*judged.unreadable, *(f for f in config if f not in commands),
                         *judged.static_files],
        "migration_command": commands,
        "requirements": judged.requirements + judged.runtime_needs,  # the second only without the first
        "entry_point": judged.entry_point,
    })


@functools.cache
def bundle_of(tree):
    """The unpacked bundle of the deploy root TREE, and whether it is a commit (else None, the
    error, when nothing of TREE is committed)."""
    dest = Path(tempfile.mkdtemp(prefix="workshop-bundle-"))
    atexit.register(shutil.rmtree, dest, True)
    try:
        bundle = bundle_from_dir(tree, dest)
    except UsageError as exc:  # git archive refused: the folder is not committed at all
        (dest / "bundle").mkdir(exist_ok=True)
        return dest / "bundle", True, str(exc)
    return bundle.root, bundle.how.startswith("git archive"), None


def judge_bundle(app_dir, check):
    """Run CHECK (a function of a View that fails through `expect`) on the bundle `eb deploy`
    would upload from APP_DIR; a failure the working tree does not share is an uncommitted fix."""
    tree = deploy_root(app_dir)
    expect(tree is not None, f"{app_dir.name}/ has no .ebextensions/ folder (nor does a parent "
           "folder that deploys it)", "no_ebextensions")
    root, committed, error = bundle_of(tree)
    try:
        check(view_of(root, tree.name))
    except Verdict as failed:
        if not committed:
            raise
        try:
            check(view_of(tree, tree.name))
        except Verdict:
            raise failed from None
        where = f"nothing of {tree.name}/ is committed ({error})" if error else "the last commit"
        raise Verdict(f"in the bundle `eb deploy` uploads, {where}: {failed}; the working tree has "
                      "it right, uncommitted", "not_committed") from None


def no_findings(findings, reason=None):
    expect(not findings, "; ".join(map(str, findings)), reason)
