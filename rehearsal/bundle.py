"""The source bundle, built the way the EB CLI builds it, and what it must never carry.

With a `.ebignore`, the EB CLI zips the working tree and leaves out every path the file matches
(gitignore rules, via `pathspec`, the matcher the EB CLI pins); without one, in a git repository,
it uploads `git archive HEAD` (of the folder it runs in, when that is inside the repository).
"""
import io
import os
import shutil
import subprocess
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from rehearsal.platform import MAX_BUNDLE_BYTES
from rehearsal.rules import Finding
from runtime import UsageError

# What a bundle must never carry: the workshop's own tooling and local state.
FORBIDDEN_TOP = {"steps", "tests", "checks", "runtime", "instruments", "rehearsal", "notebooks",
                 "workspace", "scripts", "build", ".ci", ".git", ".venv", "venv", ".services",
                 ".pytest_cache", "services.env", "requirements-dev.txt", ".elasticbeanstalk"}
FORBIDDEN_PARTS = {"__pycache__", "instance", ".ipynb_checkpoints", "node_modules"}
FORBIDDEN_SUFFIXES = {".pyc", ".ipynb", ".sqlite", ".sqlite3"}


@dataclass
class Bundle:
    """The files eb deploy would upload, unpacked in `root`."""
    root: Path
    files: list
    how: str
    zip_path: Path = None
    zip_size: int = 0
    notes: list = field(default_factory=list)

    @property
    def unpacked_size(self):
        return sum((self.root / f).stat().st_size for f in self.files)


def size_text(n):
    for unit in ("B", "KB", "MB"):
        if n < 1024 or unit == "MB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def ebignore_spec(text):
    import pathspec

    return pathspec.PathSpec.from_lines("gitwildmatch", text.splitlines())


def git(repo, *args, binary=False):
    result = subprocess.run(["git", "-C", str(repo), *args], capture_output=True,
                            text=not binary)
    if result.returncode != 0:
        err = result.stderr if isinstance(result.stderr, str) else result.stderr.decode(errors="replace")
        raise UsageError(f"git {' '.join(args)} failed: {err.strip().splitlines()[-1] if err.strip() else 'no output'}")
    return result.stdout


def in_git_work_tree(path):
    """Whether PATH lies in a git repository's working tree (its root, or a folder inside)."""
    result = subprocess.run(["git", "-C", str(path), "rev-parse", "--is-inside-work-tree"],
                            capture_output=True, text=True)
    return result.returncode == 0 and result.stdout.strip() == "true"


def export_git(repo, ref, dest):
    """`git archive REF` unpacked into DEST; returns the relative file paths."""
    data = git(repo, "archive", "--format=tar", ref, binary=True)
    # Extraction filters arrived in Python 3.11.4; Debian 12 ships 3.11.2.
    safe = {"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}
    files = []
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar.getmembers():
            if member.isfile() or member.issym():
                tar.extract(member, dest, **safe)
                files.append(member.name)
    return sorted(files)


def walk_tree(root):
    """Every file under ROOT the way the EB CLI's zipper walks it (editor backups skipped)."""
    files = []
    for folder, dirs, names in os.walk(root):
        rel = Path(folder).relative_to(root)
        if ".elasticbeanstalk" in rel.parts:
            continue
        for name in names:
            if not name.endswith("~"):
                files.append((rel / name).as_posix())
    return sorted(files)


def apply_ebignore(files, text):
    spec = ebignore_spec(text)
    return [f for f in files if f != ".ebignore" and not spec.match_file(f)]


def copy_files(src, dest, files):
    for rel in files:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        source = src / rel
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, target)


def bundle_from_git(repo, ref, dest):
    """The commit REF of REPO, as `eb deploy` uploads it from a clean checkout."""
    repo = Path(repo)
    sha = git(repo, "rev-parse", "--short", f"{ref}^{{commit}}").strip()
    archive = dest / "archive"
    archive.mkdir(parents=True)
    files = export_git(repo, ref, archive)
    notes = []
    ebignore = archive / ".ebignore"
    if ebignore.is_file():
        kept = apply_ebignore(files, ebignore.read_text())
        how = (f"git archive of {ref} ({sha}) filtered by its .ebignore: the EB CLI zips the "
               "working tree when .ebignore exists, which is this on a clean checkout")
        notes += worktree_extras(repo, ebignore.read_text(), set(kept))
    else:
        kept = files
        how = f"git archive of {ref} ({sha}), as the EB CLI uploads a git repository without .ebignore"
    root = dest / "bundle"
    root.mkdir()
    copy_files(archive, root, kept)
    shutil.rmtree(archive)
    return Bundle(root, kept, how, notes=notes)


def worktree_extras(repo, ebignore_text, committed):
    """Files eb deploy would also upload from this working tree: present but not committed."""
    try:
        present = apply_ebignore(walk_tree(repo), ebignore_text)
    except OSError:
        return []
    extra = [f for f in present if f not in committed]
    if not extra:
        return []
    shown = ", ".join(extra[:5]) + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
    return [f"this working tree also holds {len(extra)} uncommitted file(s) that `eb deploy` "
            f"would upload: {shown}"]


def bundle_from_dir(path, dest):
    """The folder PATH, bundled exactly as the EB CLI bundles it."""
    path = Path(path)
    root = dest / "bundle"
    ebignore = path / ".ebignore"
    if ebignore.is_file():
        files = apply_ebignore(walk_tree(path), ebignore.read_text())
        root.mkdir(parents=True)
        copy_files(path, root, files)
        return Bundle(root, files, f"the folder {path} filtered by its .ebignore (EB CLI rules)")
    if in_git_work_tree(path):  # `git archive HEAD` run in a folder archives that folder's files
        return bundle_from_git(path, "HEAD", dest)
    files = walk_tree(path)
    root.mkdir(parents=True)
    copy_files(path, root, files)
    return Bundle(root, files, f"every file in {path} (no .ebignore, not a git repository)")


def zip_bundle(bundle, zip_path):
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
        for rel in bundle.files:
            zf.write(bundle.root / rel, rel)
    bundle.zip_path = zip_path
    bundle.zip_size = zip_path.stat().st_size
    return bundle


def check_contents(bundle):
    """What the bundle carries that the running app never reads, and whether EB accepts its size."""
    findings = []
    if "requirements.txt" not in bundle.files:
        findings.append(Finding("bundle", "no requirements.txt at its root: the platform installs "
                                          "the app's packages only from there"))
    groups = {}
    for rel in bundle.files:
        parts = PurePosixPath(rel).parts
        if parts[0] in FORBIDDEN_TOP:
            groups.setdefault(parts[0] + ("/" if len(parts) > 1 else ""), []).append(rel)
        elif FORBIDDEN_PARTS & set(parts[:-1]):
            groups.setdefault(next(p for p in parts if p in FORBIDDEN_PARTS) + "/", []).append(rel)
        elif PurePosixPath(rel).suffix in FORBIDDEN_SUFFIXES:
            groups.setdefault("*" + PurePosixPath(rel).suffix, []).append(rel)
    for name, rels in sorted(groups.items()):
        findings.append(Finding("bundle", f"ships {name} ({len(rels)} file(s), e.g. {rels[0]}): the "
                                          "running app never reads it; leave it out with .ebignore"))
    if bundle.zip_size > MAX_BUNDLE_BYTES:
        findings.append(Finding("bundle", f"is {size_text(bundle.zip_size)}; Elastic Beanstalk "
                                          "accepts at most 500 MB"))
    return findings


