"""python -m checks deploy: rehearse `eb deploy` of the repository root on this machine.

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
import ast
import contextlib
import difflib
import fcntl
import io
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from checks.services import ServiceError

ROOT = Path(__file__).resolve().parent.parent
WHEELS = ROOT / "build" / "wheels"
PLATFORM = "Python 3.11 running on 64bit Amazon Linux 2023"
# EB's virtualenv lives at /var/app/venv/staging-<random>; this is the name seen on AL2 instances.
VENV_NAME = "staging-LQM1lest"
MAX_BUNDLE_BYTES = 500 * 1024 * 1024  # EB rejects larger source bundles
USAGE = "usage: python -m checks deploy [--ref REF | --dir DIR] [--static]"

# Top-level keys of a configuration file (docs: customize-containers-ec2, environment-resources).
TOP_LEVEL_KEYS = ("option_settings", "packages", "groups", "users", "sources", "files", "commands",
                  "services", "container_commands", "Resources", "Outputs")
PACKAGE_MANAGERS = ("yum", "rpm", "rubygems", "python")
CONTAINER_COMMAND_KEYS = ("command", "env", "cwd", "leader_only", "test", "ignoreErrors")
PROCESS_OPTIONS = {"DeregistrationDelay", "HealthCheckInterval", "HealthCheckPath",
                   "HealthCheckTimeout", "HealthyThresholdCount", "MatcherHTTPCode", "Port",
                   "Protocol", "StickinessEnabled", "StickinessLBCookieDuration", "StickinessType",
                   "UnhealthyThresholdCount"}
# Option namespaces a Python environment on AL2023 accepts (docs: command-options-general and
# command-options-specific). A set names the options checked; None accepts any option name.
NAMESPACES = {
    "aws:autoscaling:asg": {"Availability Zones", "Cooldown", "Custom Availability Zones",
                            "EnableCapacityRebalancing", "MinSize", "MaxSize"},
    "aws:autoscaling:launchconfiguration": None,
    "aws:autoscaling:scheduledaction": None,
    "aws:autoscaling:trigger": None,
    "aws:autoscaling:updatepolicy:rollingupdate": None,
    "aws:ec2:instances": None,
    "aws:ec2:vpc": None,
    "aws:elasticbeanstalk:application": {"Application Healthcheck URL"},
    "aws:elasticbeanstalk:application:environment": None,
    "aws:elasticbeanstalk:application:environmentsecrets": None,
    "aws:elasticbeanstalk:cloudwatch:logs": None,
    "aws:elasticbeanstalk:cloudwatch:logs:health": None,
    "aws:elasticbeanstalk:command": None,
    "aws:elasticbeanstalk:container:python": {"WSGIPath", "NumProcesses", "NumThreads"},
    "aws:elasticbeanstalk:customoption": None,
    "aws:elasticbeanstalk:environment": None,
    "aws:elasticbeanstalk:environment:process:default": PROCESS_OPTIONS,
    "aws:elasticbeanstalk:environment:proxy": {"ProxyServer"},
    "aws:elasticbeanstalk:environment:proxy:staticfiles": None,
    "aws:elasticbeanstalk:healthreporting:system": None,
    "aws:elasticbeanstalk:hostmanager": None,
    "aws:elasticbeanstalk:managedactions": None,
    "aws:elasticbeanstalk:managedactions:platformupdate": None,
    "aws:elasticbeanstalk:monitoring": None,
    "aws:elasticbeanstalk:sns:topics": None,
    "aws:elasticbeanstalk:sqsd": None,
    "aws:elasticbeanstalk:trafficsplitting": None,
    "aws:elasticbeanstalk:xray": None,
    "aws:elb:healthcheck": None,
    "aws:elb:listener": None,
    "aws:elb:loadbalancer": None,
    "aws:elb:policies": None,
    "aws:elbv2:listener:default": None,
    "aws:elbv2:loadbalancer": None,
    "aws:rds:dbinstance": None,
}
# Namespaces that end in a name of your choosing: a process, a port, a policy or a rule.
NAMESPACE_PREFIXES = {
    "aws:elasticbeanstalk:environment:process:": PROCESS_OPTIONS,
    "aws:elb:listener:": None,
    "aws:elb:policies:": None,
    "aws:elbv2:listener:": None,
    "aws:elbv2:listenerrule:": None,
}
OBSOLETE_NAMESPACES = {
    "aws:elasticbeanstalk:container:python:staticfiles":
        "is for Amazon Linux AMI (AL1) platforms only; use aws:elasticbeanstalk:environment:proxy:staticfiles",
}
# Variables that hold secrets or per-environment endpoints: set them with `eb setenv`.
SECRET_VARIABLES = ("SECRET_KEY", "RDS_PASSWORD", "MEMCACHIER_USERNAME", "MEMCACHIER_PASSWORD",
                    "MEMCACHIER_SERVERS")
# Tools for developing, testing or deploying; the running app needs none of them.
DEV_TOOLS = {"pytest", "pytest-xdist", "pytest-cov", "coverage", "playwright", "jupyter",
             "jupyterlab", "notebook", "nbconvert", "nbformat", "nbclient", "ipython", "ipykernel",
             "ipywidgets", "black", "ruff", "flake8", "pylint", "mypy", "isort", "tox", "nox",
             "pre-commit", "awsebcli", "awscli", "debugpy", "pip-tools", "pathspec", "pyyaml",
             "matplotlib", "selenium"}
# Debian build packages that learners copy into `yum:` lists, and what AL2023 calls them.
DEBIAN_NAMES = {"libmariadb-dev": "mariadb105-devel", "default-libmysqlclient-dev": "mariadb105-devel",
                "libsasl2-modules": "cyrus-sasl-plain", "python3-dev": "python3.11-devel",
                "python3.11-dev": "python3.11-devel", "build-essential": "gcc",
                "pkg-config": "pkgconf-pkg-config"}
# What a bundle must never carry: the workshop's own tooling and local state.
FORBIDDEN_TOP = {"steps", "tests", "checks", "notebooks", "workspace", "scripts", "build", ".ci",
                 ".git", ".venv", "venv", ".services", ".pytest_cache", "services.env",
                 "requirements-dev.txt", ".elasticbeanstalk"}
FORBIDDEN_PARTS = {"__pycache__", "instance", ".ipynb_checkpoints", "node_modules"}
FORBIDDEN_SUFFIXES = {".pyc", ".ipynb", ".sqlite", ".sqlite3"}


class UsageError(Exception):
    """Bad input: one line on stderr, exit 2."""


class ReplayError(Exception):
    """The rehearsal itself could not run (services missing, no Python 3.11): exit 1."""


@dataclass
class Finding:
    where: str  # the file, and the key inside it
    problem: str

    def __str__(self):
        return f"{self.where}: {self.problem}"


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


@dataclass
class Config:
    path: str  # relative to the bundle root, e.g. ".ebextensions/03-migrate.config"
    data: dict


@dataclass
class EntryPoint:
    """The web process: the Procfile's command, or the platform's default gunicorn."""
    command: str
    source: str  # "Procfile" or the WSGIPath option
    app_dir: str  # folder (in the bundle) the server imports the app from
    module: str
    name: str  # the WSGI callable


class Output:
    """Progress and report lines, printed as they come."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout

    def line(self, text=""):
        print(text, file=self.stream, flush=True)

    def step(self, label, text):
        self.line(f"   {label:<11} {text}")


def size_text(n):
    for unit in ("B", "KB", "MB"):
        if n < 1024 or unit == "MB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def did_you_mean(word, choices):
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


# ---------------------------------------------------------------------------------------------
# 1. The source bundle
# ---------------------------------------------------------------------------------------------

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


def is_git_root(path):
    return (Path(path) / ".git").exists()


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
    if is_git_root(path):
        bundle = bundle_from_git(path, "HEAD", dest)
        return bundle
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


# ---------------------------------------------------------------------------------------------
# 2. Static checks
# ---------------------------------------------------------------------------------------------

def check_contents(bundle):
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


def load_configs(bundle):
    """Every .ebextensions/*.config, parsed; anything EB would skip or reject is a finding."""
    import yaml

    configs, findings = [], []
    for rel in bundle.files:
        parts = PurePosixPath(rel).parts
        if parts[0] != ".ebextensions":
            continue
        if len(parts) == 2 and not rel.endswith(".config"):
            findings.append(Finding(rel, "is not read: Elastic Beanstalk reads only .ebextensions/*.config"))
            continue
        if len(parts) != 2:
            continue
        text = (bundle.root / rel).read_text(errors="replace")
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f" at line {mark.line + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            findings.append(Finding(rel, f"is not valid YAML{at}: {problem}"))
            continue
        if not isinstance(data, dict):
            findings.append(Finding(rel, "must be a mapping of keys such as option_settings, "
                                         "packages or container_commands"))
            continue
        configs.append(Config(rel, data))
    return configs, findings


def option_settings(config):
    """(namespace, option, value, where) for both the mapping and the list form."""
    settings = config.data.get("option_settings")
    where = f"{config.path}: option_settings"
    if settings is None:
        return [], []
    rows, findings = [], []
    if isinstance(settings, dict):
        for namespace, options in settings.items():
            if not isinstance(options, dict):
                findings.append(Finding(f"{where}: {namespace}", "must map option names to values"))
                continue
            for option, value in options.items():
                rows.append((str(namespace), str(option), value))
    elif isinstance(settings, list):
        for i, item in enumerate(settings):
            if not isinstance(item, dict) or "option_name" not in item:
                findings.append(Finding(f"{where}[{i}]", "needs namespace, option_name and value"))
                continue
            rows.append((str(item.get("namespace", "aws:elasticbeanstalk:application:environment")),
                         str(item["option_name"]), item.get("value")))
    else:
        findings.append(Finding(where, "must be a mapping (namespace: {option: value}) or a list"))
    return rows, findings


def namespace_options(namespace):
    """The option names NAMESPACE accepts (None: any); raises KeyError for an unknown namespace."""
    if namespace in NAMESPACES:
        return NAMESPACES[namespace]
    for prefix, options in NAMESPACE_PREFIXES.items():
        if namespace.startswith(prefix) and len(namespace) > len(prefix):
            return options
    raise KeyError(namespace)


def check_option_settings(config):
    rows, findings = option_settings(config)
    where = f"{config.path}: option_settings"
    for namespace, option, value in rows:
        if namespace in OBSOLETE_NAMESPACES:
            findings.append(Finding(f"{where}: {namespace}", OBSOLETE_NAMESPACES[namespace]))
            continue
        try:
            allowed = namespace_options(namespace)
        except KeyError:
            findings.append(Finding(f"{where}: {namespace}", "unknown option namespace"
                                    + did_you_mean(namespace, NAMESPACES)))
            continue
        if allowed is not None and option not in allowed:
            findings.append(Finding(f"{where}: {namespace}: {option}",
                                    f"unknown option of {namespace}" + did_you_mean(option, allowed)))
        if isinstance(value, (dict, list)):
            findings.append(Finding(f"{where}: {namespace}: {option}", "must be a single value"))
        if namespace == "aws:elasticbeanstalk:application:environment":
            if option in SECRET_VARIABLES:
                findings.append(Finding(f"{where}: {namespace}: {option}",
                                        "is a secret or a per-environment endpoint: set it with "
                                        "`eb setenv`, never in a committed file"))
            if option == "SASL_PATH":
                findings.append(Finding(f"{where}: {namespace}: {option}",
                                        "is a Debian workaround; on Amazon Linux 2023 the pylibmc "
                                        "wheel finds cyrus-sasl-plain in /usr/lib64/sasl2 by itself"))
    return findings


def check_packages(config):
    packages = config.data.get("packages")
    where = f"{config.path}: packages"
    if packages is None:
        return []
    if not isinstance(packages, dict):
        return [Finding(where, "must map a package manager to its packages")]
    findings = []
    for manager, names in packages.items():
        if manager not in PACKAGE_MANAGERS:
            findings.append(Finding(f"{where}: {manager}", "is not a package manager Elastic Beanstalk "
                                    "knows (yum, rpm, rubygems, python)" + did_you_mean(str(manager), PACKAGE_MANAGERS)))
            continue
        if manager == "python":
            findings.append(Finding(f"{where}: python", "installs outside the app's virtualenv; "
                                    "list Python packages in requirements.txt"))
            continue
        if not isinstance(names, dict):
            findings.append(Finding(f"{where}: {manager}", "must map package names to versions "
                                    "(use [] for the latest)"))
            continue
        for name, version in names.items():
            if not isinstance(version, (str, list)) and version is not None:
                findings.append(Finding(f"{where}: {manager}: {name}",
                                        "version must be a string or a list ([] for the latest)"))
            if manager == "yum" and name in DEBIAN_NAMES:
                findings.append(Finding(f"{where}: yum: {name}", "is a Debian package name; Amazon "
                                        f"Linux 2023 calls it {DEBIAN_NAMES[name]}"))
            elif manager == "yum" and str(name).endswith("-dev"):
                findings.append(Finding(f"{where}: yum: {name}", "looks like a Debian -dev package; "
                                        "Amazon Linux 2023 names them -devel"))
            if manager == "yum" and name == "libmemcached-devel":
                findings.append(Finding(f"{where}: yum: {name}", "is not in Amazon Linux 2023, and the "
                                        "pylibmc wheel already bundles libmemcached: drop it"))
    return findings


def mentions_venv(command):
    return "/var/app/venv/" in command and "activate" in command


def check_container_commands(config):
    commands = config.data.get("container_commands")
    where = f"{config.path}: container_commands"
    if commands is None:
        return []
    if not isinstance(commands, dict):
        return [Finding(where, "must map command names to {command: ..., leader_only: ...}")]
    findings = []
    for name, spec in commands.items():
        here = f"{where}: {name}"
        if not isinstance(spec, dict):
            findings.append(Finding(here, "must be a mapping with a `command`"))
            continue
        for key in spec:
            if key not in CONTAINER_COMMAND_KEYS:
                findings.append(Finding(f"{here}: {key}", "unknown key of a container command"
                                        + did_you_mean(str(key), CONTAINER_COMMAND_KEYS)))
        command = spec.get("command")
        if isinstance(command, list):
            if not command or not all(isinstance(part, str) for part in command):
                findings.append(Finding(f"{here}: command", "a list must hold the program and its arguments as strings"))
                continue
            command = shlex.join(command)
        elif not isinstance(command, str) or not command.strip():
            findings.append(Finding(f"{here}: command", "is missing or empty"))
            continue
        for flag in ("leader_only", "ignoreErrors"):
            if flag in spec and not isinstance(spec[flag], bool):
                findings.append(Finding(f"{here}: {flag}", "must be true or false"))
        if spec.get("leader_only") is True and "test" in spec:
            findings.append(Finding(here, "has both leader_only and test; Elastic Beanstalk ignores the test"))
        if "env" in spec and not isinstance(spec["env"], dict):
            findings.append(Finding(f"{here}: env", "must map variable names to values"))
        if isinstance(spec.get("env"), dict):
            for var in spec["env"]:
                if var in SECRET_VARIABLES or var == "SASL_PATH":
                    findings.append(Finding(f"{here}: env: {var}", "never commit it; set it with `eb setenv`"))
        runs_python = re.search(r"(^|[\s;&|(])(flask|python3?|alembic|gunicorn|pip3?)\b", command)
        if runs_python and not mentions_venv(command):
            findings.append(Finding(f"{here}: command", "runs Python tools without the app's virtualenv; "
                                    "start it with `source /var/app/venv/*/bin/activate && `"))
        if re.search(r"\b(db\s+upgrade|migrate)\b", command) and spec.get("leader_only") is not True:
            findings.append(Finding(here, "runs migrations on every instance; add `leader_only: true`"))
        if spec.get("ignoreErrors") is True and re.search(r"\b(db\s+upgrade|migrate)\b", command):
            findings.append(Finding(f"{here}: ignoreErrors", "would deploy code against a schema "
                                    "whose migration failed"))
    return findings


def check_config(config):
    findings = []
    for key in config.data:
        if key not in TOP_LEVEL_KEYS:
            findings.append(Finding(f"{config.path}: {key}", "unknown top-level key; Elastic Beanstalk "
                                    "skips the whole file" + did_you_mean(str(key), TOP_LEVEL_KEYS)))
    findings += check_option_settings(config)
    findings += check_packages(config)
    findings += check_container_commands(config)
    text = json.dumps(config.data, default=str)
    if "x86_64-linux-gnu/sasl2" in text:
        findings.append(Finding(config.path, "names Debian's SASL plugin folder; Amazon Linux 2023 "
                                             "keeps the plugins in /usr/lib64/sasl2"))
    return findings


def parse_requirements(text):
    """(line number, name, specifier, raw line) for each requirement; options are returned as such."""
    rows = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*(.*)$", line)
        name = match.group(1) if match and not line.startswith("-") else None
        rows.append((number, name, match.group(3).strip() if name else "", line))
    return rows


def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def check_requirements(bundle):
    path = bundle.root / "requirements.txt"
    if not path.is_file():
        return []
    findings, seen = [], {}
    for number, name, spec, line in parse_requirements(path.read_text()):
        where = f"requirements.txt: line {number}"
        if name is None:
            findings.append(Finding(where, f"{line!r}: keep every deployed requirement in this one "
                                           "file, pinned with =="))
            continue
        key = canonical(name)
        if key in seen:
            findings.append(Finding(where, f"{name} is listed twice (first on line {seen[key]})"))
        seen[key] = number
        if key in DEV_TOOLS or key.startswith(("pytest-", "jupyter", "types-", "flake8-")):
            findings.append(Finding(f"{where}: {name}", "is a development tool; the running app "
                                    "never imports it (it belongs in requirements-dev.txt)"))
        if not re.match(r"^==\s*[0-9A-Za-z.!+*-]+$", spec):
            findings.append(Finding(f"{where}: {name}", "is not pinned with ==; the instance would "
                                    "install whatever is newest on the day it deploys"))
    return findings


def config_value(configs, namespace, option, default=None):
    value = default
    for config in configs:  # later files win, as in Elastic Beanstalk
        rows, _ = option_settings(config)
        for ns, opt, val in rows:
            if ns == namespace and opt == option:
                value = val
    return value


def config_environment(configs):
    env = {}
    for config in configs:
        rows, _ = option_settings(config)
        for ns, opt, val in rows:
            if ns == "aws:elasticbeanstalk:application:environment":
                env[opt] = "" if val is None else str(val)
    return env


def defines_name(path, name):
    """Does the module at PATH bind NAME at its top level?"""
    try:
        tree = ast.parse(path.read_text(), str(path))
    except SyntaxError:
        return False
    for node in tree.body:
        targets = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            targets = [node.target]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.name == name:
                return True
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            if any((alias.asname or alias.name.split(".")[0]) == name for alias in node.names):
                return True
        elif isinstance(node, ast.Try):
            if any(defines_name_in(stmt, name) for stmt in node.body):
                return True
        for target in targets:
            if isinstance(target, ast.Name) and target.id == name:
                return True
    return False


def defines_name_in(stmt, name):
    return isinstance(stmt, ast.Assign) and any(
        isinstance(t, ast.Name) and t.id == name for t in stmt.targets)


def gunicorn_parts(tokens):
    """(app spec, chdir, bind) from a gunicorn command line."""
    app, chdir, bind = None, None, None
    takes_value = {"-b", "--bind", "-w", "--workers", "--threads", "-k", "--worker-class", "-c",
                   "--config", "--chdir", "--pythonpath", "-t", "--timeout", "--graceful-timeout",
                   "--log-level", "--access-logfile", "--error-logfile", "-e", "--env", "--name",
                   "-n", "--max-requests", "--max-requests-jitter", "--keep-alive", "-u", "--user",
                   "-g", "--group", "--log-file", "--access-logformat", "--worker-tmp-dir"}
    i = 1
    while i < len(tokens):
        token = tokens[i]
        if token.startswith("--") and "=" in token:
            option, value = token.split("=", 1)
        elif token in takes_value and i + 1 < len(tokens):
            option, value = token, tokens[i + 1]
            i += 1
        elif token.startswith("-"):
            option, value = token, None
        else:
            app = token
            option = value = None
        if option in ("--chdir",):
            chdir = value
        elif option in ("-b", "--bind"):
            bind = value
        i += 1
    return app, chdir, bind


def read_procfile(bundle):
    """{process: command}, and findings. The file's rules come from the EB Procfile docs."""
    path = bundle.root / "Procfile"
    processes, findings = {}, []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = re.match(r"^([A-Za-z0-9_-]+):\s*([^\s].*)$", line)
        if not match:
            findings.append(Finding(f"Procfile: line {number}", "must read `name: command`"))
            continue
        processes[match.group(1)] = match.group(2).strip()
    return processes, findings


def check_entry_point(bundle, configs):
    """Where the platform will import the app from; a finding for every way it would not."""
    wsgi = config_value(configs, "aws:elasticbeanstalk:container:python", "WSGIPath")
    if (bundle.root / "Procfile").is_file():
        processes, findings = read_procfile(bundle)
        if "web" not in processes:
            return None, findings + [Finding("Procfile", "has no `web:` process; nginx forwards "
                                                         "requests only to the web process")]
        command = processes["web"]
        where = "Procfile: web"
        try:
            tokens = shlex.split(command)
        except ValueError as exc:
            return None, findings + [Finding(where, f"cannot be parsed: {exc}")]
        program = Path(tokens[0]).name if tokens else ""
        if program != "gunicorn":
            return EntryPoint(command, "Procfile", ".", "", ""), findings
        spec, chdir, bind = gunicorn_parts(tokens)
        if bind and not bind.endswith(":8000"):
            findings.append(Finding(f"{where}: --bind", f"{bind}: nginx forwards to port 8000 "
                                    "unless the PORT environment property says otherwise"))
        app_dir = chdir or "."
        source = "Procfile"
    else:
        findings = []
        spec = str(wsgi) if wsgi is not None else "application"
        where = ("`aws:elasticbeanstalk:container:python: WSGIPath`" if wsgi is not None
                 else "the platform's default WSGIPath (`application`, no Procfile)")
        if spec.endswith(".py") or "/" in spec:
            return None, [Finding(where, f"{spec!r} is a file path, the Amazon Linux AMI form; on "
                                         "Amazon Linux 2023 give a module, e.g. application:application")]
        app_dir = "."
        source = "WSGIPath"
        workers = config_value(configs, "aws:elasticbeanstalk:container:python", "NumProcesses", 1)
        threads = config_value(configs, "aws:elasticbeanstalk:container:python", "NumThreads", 15)
        command = (f"gunicorn --bind 127.0.0.1:8000 --workers={workers} --threads={threads} "
                   f"{spec if ':' in spec else spec + ':application'}")
    if not spec:
        return None, findings + [Finding(where, "names no app to serve (module:callable)")]
    module, _, name = spec.partition(":")
    name = name or "application"
    folder = (bundle.root / app_dir).resolve()
    if not folder.is_dir() or bundle.root.resolve() not in (folder, *folder.parents):
        return None, findings + [Finding(where, f"--chdir {app_dir}: no such folder in the bundle")]
    module_file = folder / (module.replace(".", "/") + ".py")
    package_init = folder / module.replace(".", "/") / "__init__.py"
    shown = PurePosixPath(app_dir, module.replace(".", "/") + ".py").as_posix().removeprefix("./")
    if not module_file.is_file() and not package_init.is_file():
        return None, findings + [Finding(where, f"{spec}: the bundle has no {shown}, so no worker "
                                         "can import the app; behind nginx every request gets a 502")]
    target = module_file if module_file.is_file() else package_init
    if not defines_name(target, name):
        return None, findings + [Finding(where, f"{spec}: {shown} defines no {name!r}; the worker "
                                         "fails to boot and nginx answers 502")]
    if source == "Procfile" and wsgi is not None:
        bundle.notes.append("the Procfile's web command overrides the WSGIPath option")
    return EntryPoint(command, source, app_dir, module, name), findings


STATIC_NAMESPACE = "aws:elasticbeanstalk:environment:proxy:staticfiles"


def static_mappings(configs):
    """{URL path: bundle folder} that nginx serves itself; the Python platform maps /static."""
    mappings = {"/static": "static"}
    for config in configs:
        rows, _ = option_settings(config)
        for namespace, option, value in rows:
            if namespace == STATIC_NAMESPACE:
                mappings["/" + option.strip("/")] = str(value).strip("/")
    return mappings


def check_static_files(bundle, configs, entry):
    """Each static mapping must name a bundle folder; the app's own static folder must be mapped."""
    findings = []
    mappings = static_mappings(configs)
    where = f"option_settings: {STATIC_NAMESPACE}"
    for url, folder in mappings.items():
        if url == "/static" and folder == "static":
            continue  # the platform default; checked below
        if not (bundle.root / folder).is_dir():
            findings.append(Finding(f"{where}: {url}", f"{folder}: no such folder in the bundle; "
                                    "nginx would answer 404 for every file under it"))
    if mappings["/static"] == "static" and not (bundle.root / "static").is_dir() and entry:
        app_static = sorted(p.relative_to(bundle.root).as_posix()
                            for p in (bundle.root / entry.app_dir).glob("*/static") if p.is_dir())
        if app_static:
            findings.append(Finding(where, f"maps no /static, so nginx looks in a top-level static/ "
                                    f"folder the bundle lacks and answers 404 for the app's "
                                    f"{app_static[0]}/ files; map `/static: {app_static[0]}`"))
    return findings


def static_checks(bundle, out):
    """Every finding that needs no replay, with one progress line per file."""
    findings = check_contents(bundle)
    out.step("ok" if not findings else "FINDING", "bundle: only what the running app needs"
             if not findings else "bundle: carries files the app does not need")
    configs, unreadable = load_configs(bundle)
    for finding in unreadable:
        out.step("FINDING", finding.where)
    findings += unreadable
    for config in configs:
        found = check_config(config)
        out.step("ok" if not found else "FINDING", f"{config.path}  {describe_config(config)}")
        findings += found
    requirements = bundle.root / "requirements.txt"
    found = check_requirements(bundle)
    count = len(parse_requirements(requirements.read_text())) if requirements.is_file() else 0
    out.step("ok" if not found else "FINDING", f"requirements.txt  {count} requirement(s), "
             "each pinned, no development tools" if not found else "requirements.txt")
    findings += found
    entry, found = check_entry_point(bundle, configs)
    if entry is None:
        out.step("FINDING", "entry point: the platform could not start the app")
    else:
        out.step("ok" if not found else "FINDING", f"{entry.source}  {entry.command}")
    findings += found
    found = check_static_files(bundle, configs, entry)
    shown = ", ".join(f"{url} -> {folder}/" for url, folder in static_mappings(configs).items())
    out.step("ok" if not found else "FINDING", f"static files  nginx serves {shown}")
    findings += found
    return configs, entry, findings


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


# ---------------------------------------------------------------------------------------------
# 3. The replay
# ---------------------------------------------------------------------------------------------

def find_python311():
    for candidate in (shutil.which("python3.11"), getattr(sys, "_base_executable", None), sys.executable):
        if not candidate:
            continue
        result = subprocess.run([candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                capture_output=True, text=True)
        if result.returncode == 0 and result.stdout.strip() == "3.11":
            return candidate
    raise ReplayError("no Python 3.11 found to build the replay's venv (the platform runs 3.11): "
                      "install it, or run `make setup`")


def pip_env(offline):
    env = {k: v for k, v in os.environ.items() if not (offline and k.startswith("PIP_"))}
    if offline:
        env["PIP_CONFIG_FILE"] = os.devnull  # only our wheel cache, nothing else
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def pip_install(venv_python, requirements):
    return subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv_python), "install", "-q", "--no-compile",
         "--no-index", "--find-links", str(WHEELS), "-r", str(requirements)],
        capture_output=True, text=True, env=pip_env(offline=True))


def fill_wheel_cache(requirements, out):
    """Download or build every requirement's wheel into build/wheels (first run, or a new pin)."""
    WHEELS.mkdir(parents=True, exist_ok=True)
    with open(WHEELS / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        proc = subprocess.Popen(
            [sys.executable, "-m", "pip", "wheel", "--find-links", str(WHEELS), "-w", str(WHEELS),
             "-r", str(requirements)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=pip_env(offline=False))
        tail = []
        for line in proc.stdout:
            line = line.rstrip()
            tail = (tail + [line])[-8:]
            if line.startswith(("Collecting", "Building wheel", "  Building wheel", "Saved")):
                out.line(f"      {line.split(' (from ')[0].strip()}")
        return proc.wait(), tail


def pip_error(text):
    lines = [l.strip() for l in text.splitlines() if l.strip() and not l.startswith("WARNING: Location")]
    errors = [l for l in lines if l.startswith("ERROR")]
    return (errors or lines or ["no output"])[-1]


IMPORT_CHECK = r"""
import ast, importlib.util, json, sys
from pathlib import Path
root = Path(sys.argv[1])
local = {p.stem for p in root.iterdir() if p.suffix == ".py"} | {p.name for p in root.iterdir() if p.is_dir()}
def guarded(parents):
    return any(isinstance(p, ast.Try) and any(
        getattr(h.type, "id", None) in ("ImportError", "ModuleNotFoundError") for h in p.handlers)
        for p in parents)
missing = {}
for path in sorted(root.rglob("*.py")):
    tree = ast.parse(path.read_text(), str(path))
    parents = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module.split(".")[0]]
        else:
            continue
        chain, p = [], node
        while p in parents:
            p = parents[p]
            chain.append(p)
        if guarded(chain):
            continue
        for name in names:
            if name in sys.stdlib_module_names or name in local or name == "__future__":
                continue
            if importlib.util.find_spec(name) is None:
                missing.setdefault(name, str(path.relative_to(root)))
print(json.dumps(missing))
"""


class Replay:
    """One replay of the platform in a temporary /var/app, torn down at the end."""

    def __init__(self, bundle, configs, entry, out, workdir):
        self.bundle, self.configs, self.entry, self.out = bundle, configs, entry, out
        self.var_app = workdir / "var" / "app"
        self.staging = self.var_app / "staging"
        self.current = self.var_app / "current"
        self.venv = self.var_app / "venv" / VENV_NAME
        self.log_dir = workdir / "logs"
        self.findings = []
        self.database = self.memcached = self.server = None
        self.secret_key = secrets.token_hex(32)  # what `eb create --envvars SECRET_KEY=...` gives

    # The platform's paths, mapped into the temporary folder.
    def local_paths(self, text):
        return text.replace("/var/app/", f"{self.var_app}/")

    def run(self):
        self.log_dir.mkdir(parents=True)
        try:
            self.unpack()
            if not self.build_venv() or not self.check_imports():
                return self.findings
            self.start_services()
            if not self.container_commands():
                return self.findings
            self.staging.rename(self.current)
            if self.start_server():
                self.probe()
        finally:
            self.teardown()
        return self.findings

    def unpack(self):
        with zipfile.ZipFile(self.bundle.zip_path) as zf:
            zf.extractall(self.staging)
        self.out.step("unpack", f"{len(self.bundle.files)} files into a temporary /var/app/staging")

    def build_venv(self):
        started = time.monotonic()
        python = find_python311()
        self.out.step("venv", f"python3.11 -m venv /var/app/venv/{VENV_NAME} ...")
        result = subprocess.run([python, "-m", "venv", "--without-pip", str(self.venv)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise ReplayError(f"could not create a venv with {python}: {pip_error(result.stderr)}")
        version = subprocess.run([str(self.venv / "bin" / "python"), "-c",
                                  "import platform; print(platform.python_version())"],
                                 capture_output=True, text=True).stdout.strip()
        requirements = self.staging / "requirements.txt"
        if not requirements.is_file():
            self.findings.append(Finding("bundle", "no requirements.txt: nothing to install"))
            return False
        self.out.step("", f"pip install -r requirements.txt (wheels from build/wheels) ...")
        result = pip_install(self.venv / "bin" / "python", requirements)
        if result.returncode != 0 and re.search(r"No matching distribution|Could not find a version",
                                                result.stderr + result.stdout):
            self.out.step("", "filling the wheel cache build/wheels (first run, or new pins; "
                              "mysqlclient compiles) ...")
            code, tail = fill_wheel_cache(requirements, self.out)
            if code != 0:
                self.findings.append(Finding("requirements.txt", "pip could not download or build "
                                             f"every requirement: {pip_error(chr(10).join(tail))}"))
                return False
            result = pip_install(self.venv / "bin" / "python", requirements)
        if result.returncode != 0:
            self.findings.append(Finding("requirements.txt", "pip install failed: "
                                         + pip_error(result.stderr + result.stdout)))
            return False
        count = len(list((self.venv / "lib").glob("python3.11/site-packages/*.dist-info")))
        self.out.step("", f"Python {version}, {count} packages installed in "
                          f"{time.monotonic() - started:.1f} s")
        return True

    def check_imports(self):
        app_dir = (self.staging / self.entry.app_dir).resolve()
        result = subprocess.run([str(self.venv / "bin" / "python"), "-c", IMPORT_CHECK, str(app_dir)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            self.findings.append(Finding(self.entry.app_dir, "has Python that does not parse: "
                                         + pip_error(result.stderr)))
            return False
        missing = json.loads(result.stdout)
        for module, path in sorted(missing.items()):
            shown = PurePosixPath(self.entry.app_dir, path).as_posix().removeprefix("./")
            self.findings.append(Finding("requirements.txt", f"installs nothing that provides "
                                         f"{module!r}, which {shown} imports: a missing requirement"))
        self.out.step("imports", "every module the app imports is installed" if not missing
                      else f"MISSING: {', '.join(sorted(missing))}")
        return not missing

    def start_services(self):
        from checks import harness

        self.database = harness.Database("mariadb").create()
        self.memcached = harness.CacheServer(sasl=True).start()
        self.out.step("database", f"fresh MariaDB database {self.database.name} "
                                  f"({self.database.env['RDS_HOSTNAME']}:{self.database.env['RDS_PORT']})")
        self.out.step("memcached", f"SASL memcached at {self.memcached.address}, user "
                                   f"{self.memcached.username}, as MemCachier gives you")

    def environment(self, *, venv_on_path):
        """What EB gives the app: environment properties (config + `eb setenv`) and RDS_*."""
        from checks import harness

        path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        env = {"PATH": f"{self.venv}/bin:{path}" if venv_on_path else path,
               "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8"}
        env.update(config_environment(self.configs))
        env.update(self.database.env)
        env["SECRET_KEY"] = self.secret_key
        env["MEMCACHIER_SERVERS"] = self.memcached.address
        env["MEMCACHIER_USERNAME"] = self.memcached.username
        env["MEMCACHIER_PASSWORD"] = self.memcached.password
        # Debian only: stands in for cyrus-sasl-plain in /usr/lib64/sasl2 on Amazon Linux 2023.
        env["SASL_PATH"] = harness.services_env()["SASL_PATH"]
        return env

    def container_commands(self):
        commands = []
        for config in sorted(self.configs, key=lambda c: c.path):
            for name, spec in sorted((config.data.get("container_commands") or {}).items()):
                commands.append((config.path, str(name), spec))
        if not commands:
            self.out.step("commands", "no container_commands")
            return True
        base = self.environment(venv_on_path=False)
        for path, name, spec in commands:
            started = time.monotonic()
            env = dict(base)
            env.update({str(k): str(v) for k, v in (spec.get("env") or {}).items()})
            cwd = Path(self.local_paths(str(spec["cwd"]))) if spec.get("cwd") else self.staging
            command = spec["command"]
            flags = " (leader_only: this instance is the leader)" if spec.get("leader_only") else ""
            if spec.get("test") and not spec.get("leader_only"):
                test = subprocess.run(["bash", "-c", self.local_paths(str(spec["test"]))], cwd=cwd,
                                      env=env, capture_output=True)
                if test.returncode != 0:
                    self.out.step(name, "skipped: its test is false")
                    continue
            argv = ([self.local_paths(c) for c in command] if isinstance(command, list)
                    else ["bash", "-c", self.local_paths(command)])
            log = self.log_dir / f"container-{name}.log"
            with open(log, "wb") as sink:
                result = subprocess.run(argv, cwd=cwd, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, timeout=600)
            elapsed = time.monotonic() - started
            if result.returncode == 0:
                self.out.step(name, f"ok in {elapsed:.1f} s{flags}")
                continue
            tail = log_tail(log)
            if spec.get("ignoreErrors") is True:
                self.out.step(name, f"exit {result.returncode}, ignored (ignoreErrors)")
                continue
            self.out.step(name, f"FAILED with exit {result.returncode}{flags}")
            self.findings.append(Finding(f"{path}: container_commands: {name}",
                                         f"failed (exit {result.returncode}), so the deployment fails: "
                                         + explain_failure(tail)))
            return False
        return True

    def server_command(self, port):
        """The web command with its bind address moved to a free loopback port."""
        command = self.entry.command
        tokens = shlex.split(command)
        if Path(tokens[0]).name != "gunicorn":
            return command.replace(":8000", f":{port}")
        out, i, bound = [], 0, False
        while i < len(tokens):
            token = tokens[i]
            if token in ("-b", "--bind") and i + 1 < len(tokens):
                out += [token, f"127.0.0.1:{port}"]
                i += 2
                bound = True
                continue
            if token.startswith("--bind="):
                token, bound = f"--bind=127.0.0.1:{port}", True
            out.append(token)
            i += 1
        if not bound:
            out[1:1] = ["--bind", f"127.0.0.1:{port}"]
        return shlex.join(out)

    def start_server(self):
        from checks import services

        port = services.free_port()
        env = self.environment(venv_on_path=True)
        env["PORT"] = str(port)
        command = self.server_command(port)
        self.url = f"http://127.0.0.1:{port}"
        self.server_log = self.log_dir / "web.stdout.log"
        started = time.monotonic()
        with open(self.server_log, "wb") as sink:
            # Its own session: the whole process group can be stopped at teardown.
            self.server = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=self.current,
                                           env=env, stdout=sink, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL, start_new_session=True)
        self.out.step("web", f"{command}  (in /var/app/current)")
        import requests

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                self.findings.append(Finding(f"{self.entry.source}: web" if self.entry.source == "Procfile"
                                             else "WSGIPath",
                                             "the server exited while starting; behind nginx every "
                                             "request would get a 502: " + explain_failure(log_tail(self.server_log))))
                return False
            try:
                requests.get(self.url + "/__deploy_check_ready__", timeout=2)
                break
            except requests.RequestException:
                time.sleep(0.1)
        else:
            self.findings.append(Finding("web", "the server did not answer within 60 s: "
                                         + explain_failure(log_tail(self.server_log))))
            return False
        self.out.step("", f"answering on {self.url} after {time.monotonic() - started:.1f} s")
        return True

    def health_path(self):
        path = config_value(self.configs, "aws:elasticbeanstalk:environment:process:default",
                            "HealthCheckPath")
        path = path or config_value(self.configs, "aws:elasticbeanstalk:application",
                                    "Application Healthcheck URL") or "/"
        path = str(path)
        return "/" + path.split("/", 1)[1] if not path.startswith("/") and "/" in path else path

    def probe(self):
        import requests
        from checks.visitor import Visitor

        path = self.health_path()
        try:
            response = requests.get(self.url + path, timeout=10)
        except requests.RequestException as exc:
            self.findings.append(Finding("health check", f"GET {path} failed: {exc}"))
            return
        body = response.text.strip().replace("\n", " ")[:200]
        if response.status_code != 200:
            self.findings.append(Finding("health check", f"GET {path} answered {response.status_code}; "
                                         f"the load balancer would mark the instance unhealthy: {body}"))
            return
        detail = ""
        with contextlib.suppress(ValueError):
            data = response.json()
            detail = f", status {data.get('status')!r}"
            if data.get("status") != "ok":
                self.findings.append(Finding("health check", f"GET {path}: the app reports {body}"))
        self.out.step("health", f"GET {path} -> 200{detail}")
        self.check_static_urls(requests.get(self.url + "/", timeout=10).text)
        name = f"rehearsal {secrets.token_hex(3)}"
        visitor = Visitor(self.url)
        with self.memcached.counters() as delta:
            try:
                added = visitor.add_task(name)
                listed = visitor.get("/")
                ids = re.findall(r"/(\d+)/delete", listed.text)
                if added.status_code != 200 or name not in listed.text or not ids:
                    raise AssertionError(f"after adding {name!r}, GET / answered "
                                         f"{listed.status_code} without it")
                task_id = ids[0]
                deleted = visitor.delete_task(task_id)
                after = visitor.get("/")
                if deleted.status_code != 200 or name in after.text:
                    raise AssertionError(f"task {task_id} is still listed after its delete button")
            except (AssertionError, requests.RequestException) as exc:
                self.findings.append(Finding("app", f"add, list and delete over HTTP failed: {exc}"))
                return
        self.out.step("tasks", f"added {name!r} (id {task_id}), listed on /, deleted, gone from /")
        if delta["cmd_set"] <= 0 or delta["get_hits"] + delta["get_misses"] <= 0:
            self.findings.append(Finding("cache", "the app served pages without using memcached "
                                         f"(sets {delta['cmd_set']}, gets "
                                         f"{delta['get_hits'] + delta['get_misses']}): check MEMCACHIER_*"))
            return
        self.out.step("cache", f"memcached saw {delta['cmd_set']} sets, {delta['get_hits']} hits, "
                               f"{delta['get_misses']} misses over SASL")

    def check_static_urls(self, html):
        """What nginx would answer for each /static URL the front page links to."""
        mappings = static_mappings(self.configs)
        urls = sorted(set(re.findall(r'(?:href|src)="(/[^"?#]+)', html)))
        served = []
        for url in urls:
            prefix = max((p for p in mappings if url == p or url.startswith(p + "/")),
                         key=len, default=None)
            if prefix is None:
                continue
            target = self.current / mappings[prefix] / url[len(prefix):].lstrip("/")
            if not target.is_file():
                self.findings.append(Finding(f"option_settings: {STATIC_NAMESPACE}: {prefix}",
                                             f"GET {url} would be a 404 from nginx: the bundle has "
                                             f"no {mappings[prefix]}/{url[len(prefix):].lstrip('/')}"))
            else:
                served.append(url)
        if served:
            self.out.step("static", f"nginx would serve {', '.join(served)} from the bundle")

    def teardown(self):
        steps = []
        if self.server is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.server.pid, signal.SIGTERM)
            try:
                self.server.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.server.pid, signal.SIGKILL)
                self.server.wait()
            steps.append("server stopped")
        if self.memcached is not None:
            self.memcached.stop()
            steps.append("memcached stopped")
        if self.database is not None:
            self.database.drop()
            steps.append("database dropped")
        if steps:
            self.out.step("teardown", ", ".join(steps) + ", temporary /var/app removed")


def log_tail(path, lines=40):
    try:
        text = Path(path).read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


def explain_failure(tail):
    """The most telling line of a failed command's output."""
    missing = re.search(r"No module named '([^']+)'", tail)
    if missing:
        return (f"No module named {missing.group(1)!r}: requirements.txt does not install it "
                "(a missing requirement)")
    if "SECRET_KEY is not set" in tail:
        return ("SECRET_KEY is not set, a default or under 32 characters: create the environment "
                "with `eb create --envvars SECRET_KEY=...` (64 hex characters from secrets.token_hex(32))")
    lines = [l.strip() for l in tail.splitlines() if l.strip() and not l.startswith("(Background")]
    raised = [l for l in lines if re.match(r"^[\w.]+(Error|Exception|Exit)\b.*:", l)]
    telling = raised or [l for l in lines if re.search(r"[Ee]rror|[Ff]ailed|not found|No such", l)]
    return (telling or lines or ["no output"])[-1][:300]


# ---------------------------------------------------------------------------------------------
# Step configs against the root config
# ---------------------------------------------------------------------------------------------

def flatten(configs, app_dir=None):
    """{(section, key, field): value} for the settings that can overlap between two apps."""
    flat = {}
    for config in configs:
        rows, _ = option_settings(config)
        for namespace, option, value in rows:
            value = str(value)
            if namespace == STATIC_NAMESPACE and app_dir and value.startswith(app_dir + "/"):
                value = value[len(app_dir) + 1:]  # the root serves final/ from a subfolder
            flat[("option_settings", namespace, option)] = value
        for manager, names in (config.data.get("packages") or {}).items():
            for name, version in (names or {}).items():
                flat[("packages", manager, name)] = json.dumps(version or [])
        for name, spec in (config.data.get("container_commands") or {}).items():
            spec = spec if isinstance(spec, dict) else {"command": spec}
            command = spec.get("command")
            if isinstance(command, str):
                # The root serves final/ from a subfolder; a step app is its own root.
                parts = [" ".join(p.split()) for p in command.split("&&")]
                command = " && ".join(p for p in parts if not app_dir or p != f"cd {app_dir}")
            flat[("container_commands", name, "command")] = str(command)
            for key in ("leader_only", "ignoreErrors", "test", "cwd"):
                if key in spec:
                    flat[("container_commands", name, key)] = str(spec[key])
        for path, spec in (config.data.get("files") or {}).items():
            flat[("files", path, "")] = json.dumps(spec, sort_keys=True, default=str)
    return flat


def config_disagreements(root_configs, other_configs, app_dir="final"):
    """Settings both config sets carry with different values, as readable lines."""
    root = flatten(root_configs, app_dir)
    other = flatten(other_configs)
    lines = []
    for key in sorted(set(root) & set(other)):
        if root[key] != other[key]:
            lines.append(f"{': '.join(k for k in key if k)}: root has {root[key]!r}, step has {other[key]!r}")
    return lines


def read_config_dir(folder):
    """The .config files of FOLDER/.ebextensions, parsed (raises on bad YAML)."""
    import yaml

    configs = []
    for path in sorted((Path(folder) / ".ebextensions").glob("*.config")):
        configs.append(Config(f"{Path(folder).name}/.ebextensions/{path.name}",
                              yaml.safe_load(path.read_text()) or {}))
    return configs


# ---------------------------------------------------------------------------------------------
# 4. The rehearsal and its report
# ---------------------------------------------------------------------------------------------

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
        timings = {}
        if static_only:
            out.line("3. Replay: skipped (--static)")
        elif findings:
            out.line("3. Replay: skipped until the static findings are fixed; Elastic Beanstalk "
                     "would reject or skip what they name")
        else:
            out.line("3. Replay on this machine (paths under /var/app map to a temporary folder)")
            started = time.monotonic()
            findings += Replay(bundle, configs, entry, out, tmp / "replay").run()
            timings["replay"] = time.monotonic() - started
            out.line(f"   replay took {timings['replay']:.1f} s")
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
    parser = argparse.ArgumentParser(prog="python -m checks deploy", add_help=False)
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
