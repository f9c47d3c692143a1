"""Readers of a bundle's files, shared by the rules, the replay and the config comparison:
the settings of .ebextensions (both forms), requirements lines, a gunicorn command line, and
whether a module binds a name.
"""
import ast
import re
from dataclasses import dataclass

from rehearsal.platform import ENVIRONMENT_NAMESPACE, STATIC_NAMESPACE


@dataclass
class Finding:
    where: str  # the file, and the key inside it
    problem: str

    def __str__(self):
        return f"{self.where}: {self.problem}"


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
            rows.append((str(item.get("namespace", ENVIRONMENT_NAMESPACE)),
                         str(item["option_name"]), item.get("value")))
    else:
        findings.append(Finding(where, "must be a mapping (namespace: {option: value}) or a list"))
    return rows, findings


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
            if ns == ENVIRONMENT_NAMESPACE:
                env[opt] = "" if val is None else str(val)
    return env


def static_mappings(configs):
    """{URL path: bundle folder} that nginx serves itself; the Python platform maps /static."""
    mappings = {"/static": "static"}
    for config in configs:
        rows, _ = option_settings(config)
        for namespace, option, value in rows:
            if namespace == STATIC_NAMESPACE:
                mappings["/" + option.strip("/")] = str(value).strip("/")
    return mappings


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
