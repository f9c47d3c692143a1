"""The learner's own copy of the app, in git-ignored workspace/, with a git repository of its own.

    python3 scripts/workspace.py create        # make workspace: step 01 into workspace/, git init
    python3 scripts/workspace.py catch-up 05   # make catch-up STEP=05: replace the code by checkpoint 05

A last argument names another folder than workspace/ (the course tests use a temporary one).

catch-up refuses while workspace/ has uncommitted changes, so nothing is ever lost: earlier
work stays in the workspace's git history. Local data (instance/, .elasticbeanstalk/) is kept.
Standard library only, so it runs before `make setup`.
"""
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository, for runtime

from runtime import DIFF_NAME, LEFTOVERS, LESSON, ROOT  # noqa: E402  (standard library only)

WORKSPACE = ROOT / "workspace"
STEPS = ROOT / "steps"
# A checkpoint's lesson and diff stay in steps/; local leftovers are never copied.
LEAVE_OUT = shutil.ignore_patterns(LESSON, DIFF_NAME, *LEFTOVERS)


class WorkspaceError(Exception):
    """One line for the learner; exit status 1 (2 for a usage error)."""

    def __init__(self, message, status=1):
        super().__init__(message)
        self.status = status


def git(workspace, *args, check=True):
    try:
        result = subprocess.run(["git", "-C", str(workspace), *args], capture_output=True, text=True)
    except FileNotFoundError:
        raise WorkspaceError("git is not installed: install it (make setup does) and run this again") from None
    if check and result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise WorkspaceError(f"git {args[0]} failed: {detail[-1] if detail else 'no message'}")
    return result


def checkpoint(number):
    if not number:
        raise WorkspaceError("say which checkpoint: make catch-up STEP=05", status=2)
    if not (len(number) == 2 and number.isdigit()):
        raise WorkspaceError(f"STEP must be two digits, such as 05 (got {number!r})", status=2)
    matches = sorted(p for p in STEPS.glob(f"{number}-*") if p.is_dir())
    if not matches:
        raise WorkspaceError(f"there is no checkpoint {number} in steps/", status=2)
    return matches[0]


def copy_checkpoint(folder, workspace):
    shutil.copytree(folder, workspace, ignore=LEAVE_OUT, dirs_exist_ok=True)


def commit(workspace, message):
    """Commit everything; without a git identity, leave it staged and say how to finish."""
    git(workspace, "add", "-A")
    result = git(workspace, "commit", "-q", "-m", message, check=False)
    if result.returncode != 0:
        if "nothing to commit" in result.stdout + result.stderr:
            return
        print("workspace: staged but not committed (git needs your name and email first):\n"
              "  git config --global user.name 'Your Name'\n"
              "  git config --global user.email you@example.com\n"
              f"  git -C {workspace.name} commit -m '{message}'")
        return
    print(f"workspace: committed '{message}'")


def create(workspace=WORKSPACE):
    if workspace.exists():
        raise WorkspaceError(f"{workspace.name}/ already exists: keep working there, or move it away "
                             f"first (mv {workspace.name} {workspace.name}.old) to start again from step 01")
    first = checkpoint("01")
    copy_checkpoint(first, workspace)
    try:
        git(workspace, "init", "-q")
        commit(workspace, f"Checkpoint {first.name}")
    except WorkspaceError:
        shutil.rmtree(workspace, ignore_errors=True)
        raise
    print(f"workspace: created {workspace.name}/ from steps/{first.name}; next: cd {workspace.name}, "
          f"then follow steps/{first.name}/README.md")


def catch_up(number, workspace=WORKSPACE):
    folder = checkpoint(number)
    if not (workspace / ".git").is_dir():
        raise WorkspaceError(f"there is no {workspace.name}/ repository yet: run `make workspace` first")
    if git(workspace, "status", "--porcelain").stdout.strip():
        raise WorkspaceError(f"{workspace.name}/ has uncommitted changes; commit them first (cd "
                             f"{workspace.name} && git add -A && git commit -m 'my attempt'), then run this again")
    if git(workspace, "rev-parse", "--verify", "-q", "HEAD", check=False).returncode == 0:
        for rel in filter(None, git(workspace, "ls-files", "-z").stdout.split("\0")):
            (workspace / rel).unlink(missing_ok=True)
        # Folders the removed files leave empty go too; ignored ones (instance/) keep their content.
        for directory in sorted((p for p in workspace.rglob("*") if p.is_dir()), reverse=True):
            if ".git" not in directory.relative_to(workspace).parts and not any(directory.iterdir()):
                directory.rmdir()
    copy_checkpoint(folder, workspace)
    commit(workspace, f"Catch up to checkpoint {folder.name}")
    print(f"workspace: {workspace.name}/ now matches steps/{folder.name}; "
          f"your earlier work is in `git -C {workspace.name} log`")


def main(argv):
    try:
        if len(argv) in (1, 2) and argv[0] == "create":
            create(*map(Path, argv[1:]))
        elif len(argv) in (2, 3) and argv[0] == "catch-up":
            catch_up(argv[1], *map(Path, argv[2:]))
        else:
            raise WorkspaceError("usage: python3 scripts/workspace.py create [DIR] | catch-up NN [DIR]", status=2)
    except WorkspaceError as exc:
        print(f"workspace: {exc}", file=sys.stderr)
        return exc.status
    except OSError as exc:
        print(f"workspace: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
