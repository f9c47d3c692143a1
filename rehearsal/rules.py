"""The rules a bundle's configuration must follow: `.ebextensions/*.config`, `requirements.txt`, the
Procfile (or the WSGIPath option) and the static-file mappings. One module, used by the static phase
of `make deploy-check` (rehearsal/report.py) and by check 03 (checks/stages.py) alike.

Every rule takes the bundle's root folder or parsed files and returns Findings; none prints.
"""
import difflib
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from rehearsal.platform import (CONTAINER_COMMAND_KEYS, DEBIAN_NAMES, DEBIAN_SASL_PLUGINS,
                                DEFAULT_THREADS, DEFAULT_WORKERS, DEFAULT_WSGI_PATH,
                                ENVIRONMENT_NAMESPACE, NAMESPACE_PREFIXES, NAMESPACES,
                                NOT_IN_AL2023, OBSOLETE_NAMESPACES, PACKAGE_MANAGERS, PROXY_PORT,
                                PYTHON_NAMESPACE, SASL_PLUGINS, STATIC_NAMESPACE, TOP_LEVEL_KEYS,
                                VENV_ACTIVATE, VENV_FOLDER)
from rehearsal.readers import (CommandError, Config, EntryPoint, Finding, config_environment,
                               config_value, defines_name, option_settings, read_gunicorn,
                               read_requirements, static_mappings)

# Variables that hold secrets or per-environment endpoints: set them with `eb setenv`.
SECRET_VARIABLES = ("SECRET_KEY", "RDS_PASSWORD", "MEMCACHIER_USERNAME", "MEMCACHIER_PASSWORD",
                    "MEMCACHIER_SERVERS")
# Tools for developing, testing or deploying; the running app needs none of them.
DEV_TOOLS = {"pytest", "coverage", "playwright", "selenium", "locust", "notebook", "nbconvert",
             "nbformat", "nbclient", "nbmake", "ipython", "ipykernel", "ipywidgets", "black", "ruff",
             "flake8", "pylint", "pyflakes", "pycodestyle", "mypy", "isort", "tox", "nox",
             "pre-commit", "awsebcli", "awscli", "boto3-stubs", "debugpy", "pip-tools", "pathspec",
             "pyyaml", "matplotlib"}
DEV_TOOL_PREFIXES = ("pytest-", "jupyter", "types-", "flake8-")


def did_you_mean(word, choices):
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


# ---- .ebextensions ----------------------------------------------------------------------------

def load_configs(root, files):
    """Every .ebextensions/*.config among FILES (paths relative to ROOT), parsed; anything EB
    would skip or reject is a finding."""
    import yaml

    configs, findings = [], []
    for rel in files:
        parts = PurePosixPath(rel).parts
        if parts[0] != ".ebextensions":
            continue
        if len(parts) == 2 and not rel.endswith(".config"):
            findings.append(Finding(rel, "is not read: Elastic Beanstalk reads only .ebextensions/*.config"))
            continue
        if len(parts) != 2:
            continue
        text = (Path(root) / rel).read_text(errors="replace")
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
        if namespace == ENVIRONMENT_NAMESPACE:
            if option in SECRET_VARIABLES:
                findings.append(Finding(f"{where}: {namespace}: {option}",
                                        "is a secret or a per-environment endpoint: set it with "
                                        "`eb setenv`, never in a committed file"))
            if option == "SASL_PATH":
                findings.append(Finding(f"{where}: {namespace}: {option}",
                                        "is a Debian workaround; on Amazon Linux 2023 the pylibmc "
                                        f"wheel finds cyrus-sasl-plain in {SASL_PLUGINS} by itself"))
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
                                    f"knows ({', '.join(PACKAGE_MANAGERS)})"
                                    + did_you_mean(str(manager), PACKAGE_MANAGERS)))
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
            if manager == "yum" and name in NOT_IN_AL2023:
                findings.append(Finding(f"{where}: yum: {name}", "is not in Amazon Linux 2023, and "
                                        f"{NOT_IN_AL2023[name]}: drop it"))
    return findings


def mentions_venv(command):
    return VENV_FOLDER in command and "activate" in command


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
                                    f"start it with `{VENV_ACTIVATE} && `"))
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
    if DEBIAN_SASL_PLUGINS in text:
        findings.append(Finding(config.path, "names Debian's SASL plugin folder; Amazon Linux 2023 "
                                             f"keeps the plugins in {SASL_PLUGINS}"))
    return findings


# ---- requirements.txt -------------------------------------------------------------------------

def check_requirements(root):
    path = Path(root) / "requirements.txt"
    if not path.is_file():
        return []
    findings, seen = [], {}
    for row in read_requirements(path.read_text()):
        where = f"requirements.txt: line {row.number}"
        if row.problem:
            findings.append(Finding(where, f"{row.text!r} is not a requirement pip can read: {row.problem}"))
            continue
        if row.requirement is None:
            findings.append(Finding(where, f"{row.text!r}: keep every deployed requirement in this one "
                                           "file, pinned with =="))
            continue
        if not row.installed:
            continue  # its marker is false on the platform, so pip skips it there
        name, key = row.requirement.name, row.name
        if key in seen:
            findings.append(Finding(where, f"{name} is listed twice (first on line {seen[key]})"))
        seen[key] = row.number
        if key in DEV_TOOLS or key.startswith(DEV_TOOL_PREFIXES):
            findings.append(Finding(f"{where}: {name}", "is a development tool; the running app "
                                    "never imports it (it belongs in requirements-dev.txt)"))
        if not row.pinned:
            findings.append(Finding(f"{where}: {name}", "is not pinned with ==; the instance would "
                                    "install whatever is newest on the day it deploys"))
    return findings


# Import the app as the platform runs it, RDS_* and MEMCACHIER_* set (so SQLAlchemy loads the MySQL
# driver and Flask-Caching loads pylibmc), with every installed distribution hidden that
# `pip install -r requirements.txt` would not install: the pinned ones and what they require.
ONLY_REQUIRED = r"""
import importlib, importlib.metadata as md, json, os, sys
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name as canonical
visible, todo = set(), [canonical(n) for n in json.loads(sys.argv[1])]
while todo:
    name = todo.pop()
    if name not in visible:
        visible.add(name)
        try:
            todo += [canonical(r.name) for r in map(Requirement, md.distribution(name).requires or [])
                     if r.marker is None or r.marker.evaluate({"extra": ""})]
        except md.PackageNotFoundError:
            pass
hidden = {module: sorted(dists) for module, dists in md.packages_distributions().items()
          if not visible & {canonical(d) for d in dists} and module not in sys.modules}

class Hide:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in hidden:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name.partition(".")[0])

sys.meta_path.insert(0, Hide())
sys.path.insert(0, os.getcwd())
try:
    app = getattr(importlib.import_module(sys.argv[2]), sys.argv[3])
    with app.app_context():
        getattr(app.extensions.get("sqlalchemy"), "engine", None)  # the driver loads here at the latest
except ModuleNotFoundError as exc:
    if exc.name in hidden:
        dist = hidden[exc.name][0]
        print(json.dumps({"module": exc.name, "distribution": dist, "version": md.version(dist)}))
except BaseException:
    pass  # not a missing requirement: the replay and the checks report it
"""
# Where nothing listens: the app may build clients, never reach a server.
PLATFORM_VARIABLES = {"RDS_HOSTNAME": "127.0.0.1", "RDS_PORT": "9", "RDS_DB_NAME": "ebdb",
                      "RDS_USERNAME": "ebroot", "RDS_PASSWORD": "rules", "MEMCACHIER_SERVERS": "127.0.0.1:9",
                      "MEMCACHIER_USERNAME": "rules", "MEMCACHIER_PASSWORD": "rules",
                      "SECRET_KEY": "rules-" + "0" * 32}


def check_runtime_needs(root, entry, timeout=60):
    """A finding when the app, imported as Elastic Beanstalk runs it, needs a distribution that
    requirements.txt does not install (mysqlclient, loaded only when RDS_* are set)."""
    path = Path(root) / "requirements.txt"
    if entry is None or not entry.module or not path.is_file():
        return []
    names = [row.requirement.name for row in read_requirements(path.read_text()) if row.installed]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RDS_", "MEMCACHIER_", "FLASK_"))}
    env.update(PLATFORM_VARIABLES, PYTHONDONTWRITEBYTECODE="1")
    try:
        result = subprocess.run([sys.executable, "-c", ONLY_REQUIRED, json.dumps(names), entry.module,
                                 entry.name], cwd=Path(root) / entry.app_dir, env=env,
                                capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return []  # a hang is not a missing requirement; the checks and the replay report it
    lines = result.stdout.strip().splitlines()
    if not lines or not lines[-1].startswith("{"):
        return []
    need = json.loads(lines[-1])
    return [Finding("requirements.txt", f"installs nothing that provides {need['module']!r}, which "
                    f"the app imports on Elastic Beanstalk (with RDS_* and MEMCACHIER_* set): add "
                    f"{need['distribution']}=={need['version']}")]


# ---- the entry point: the Procfile, or the WSGIPath option --------------------------------------


def read_procfile(root):
    """{process: command}, and findings. The file's rules come from the EB Procfile docs."""
    path = Path(root) / "Procfile"
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


def check_entry_point(root, configs, notes=None):
    """Where the platform will import the app from; a finding for every way it would not.
    NOTES, when given, collects remarks that are not findings."""
    root = Path(root)
    wsgi = config_value(configs, PYTHON_NAMESPACE, "WSGIPath")
    if (root / "Procfile").is_file():
        processes, findings = read_procfile(root)
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
        try:
            gunicorn = read_gunicorn(tokens, config_environment(configs), root)
        except CommandError as exc:
            return None, findings + [Finding(where, f"gunicorn would refuse to start: {exc}")]
        for bind in gunicorn.bind:
            if not bind.endswith(f":{PROXY_PORT}"):
                findings.append(Finding(f"{where}: --bind", f"{bind}: nginx forwards to port {PROXY_PORT} "
                                        "unless the PORT environment property says otherwise"))
        spec = gunicorn.app
        if spec is None and gunicorn.ignored:
            return None, findings + [Finding(where, f"names no app: gunicorn ignores {gunicorn.ignored[0]!r} "
                                             "in GUNICORN_CMD_ARGS; name it on the command line or as "
                                             "wsgi_app in gunicorn.conf.py")]
        app_dir = gunicorn.chdir or "."
        source = "Procfile"
    else:
        findings = []
        spec = str(wsgi) if wsgi is not None else DEFAULT_WSGI_PATH
        where = (f"`{PYTHON_NAMESPACE}: WSGIPath`" if wsgi is not None
                 else f"the platform's default WSGIPath (`{DEFAULT_WSGI_PATH}`, no Procfile)")
        if spec.endswith(".py") or "/" in spec:
            return None, [Finding(where, f"{spec!r} is a file path, the Amazon Linux AMI form; on "
                                         "Amazon Linux 2023 give a module, e.g. application:application")]
        app_dir = "."
        source = "WSGIPath"
        workers = config_value(configs, PYTHON_NAMESPACE, "NumProcesses", DEFAULT_WORKERS)
        threads = config_value(configs, PYTHON_NAMESPACE, "NumThreads", DEFAULT_THREADS)
        command = (f"gunicorn --bind 127.0.0.1:{PROXY_PORT} --workers={workers} --threads={threads} "
                   f"{spec if ':' in spec else spec + ':application'}")
    if not spec:
        return None, findings + [Finding(where, "names no app to serve (module:callable)")]
    module, _, name = spec.partition(":")
    name = name or "application"
    folder = (root / app_dir).resolve()
    if not folder.is_dir() or root.resolve() not in (folder, *folder.parents):
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
    if source == "Procfile" and wsgi is not None and notes is not None:
        notes.append("the Procfile's web command overrides the WSGIPath option")
    return EntryPoint(command, source, app_dir, module, name), findings


# ---- static files ------------------------------------------------------------------------------


def check_static_files(root, configs, entry):
    """Each static mapping must name a bundle folder; the app's own static folder must be mapped."""
    root = Path(root)
    findings = []
    mappings = static_mappings(configs)
    where = f"option_settings: {STATIC_NAMESPACE}"
    for url, folder in mappings.items():
        if url == "/static" and folder == "static":
            continue  # the platform default; checked below
        if not (root / folder).is_dir():
            findings.append(Finding(f"{where}: {url}", f"{folder}: no such folder in the bundle; "
                                    "nginx would answer 404 for every file under it"))
    if mappings["/static"] == "static" and not (root / "static").is_dir() and entry:
        app_static = sorted(p.relative_to(root).as_posix()
                            for p in (root / entry.app_dir).glob("*/static") if p.is_dir())
        if app_static:
            findings.append(Finding(where, f"maps no /static, so nginx looks in a top-level static/ "
                                    f"folder the bundle lacks and answers 404 for the app's "
                                    f"{app_static[0]}/ files; map `/static: {app_static[0]}`"))
    return findings


# ---- every rule at once -------------------------------------------------------------------------

@dataclass
class Judgement:
    """What the rules found in one bundle root, grouped by the file they judge."""
    configs: list
    entry: EntryPoint
    notes: list
    unreadable: list  # .ebextensions files Elastic Beanstalk would skip or reject
    by_config: dict  # config path -> its findings
    requirements: list
    entry_point: list
    static_files: list
    runtime_needs: list  # what the app imports on the platform and requirements.txt lacks

    @property
    def findings(self):
        return [*self.unreadable, *(f for found in self.by_config.values() for f in found),
                *self.requirements, *self.runtime_needs, *self.entry_point, *self.static_files]


def judge(root, files):
    """Every rule on the bundle root ROOT, whose files (relative posix paths) are FILES."""
    configs, unreadable = load_configs(root, files)
    notes = []
    entry, entry_point = check_entry_point(root, configs, notes)
    requirements = check_requirements(root)
    return Judgement(configs, entry, notes, unreadable,
                     {config.path: check_config(config) for config in configs},
                     requirements, entry_point, check_static_files(root, configs, entry),
                     [] if requirements or entry_point else check_runtime_needs(root, entry))
