"""Readers of a bundle's files, shared by the rules, the replay and the config comparison:
the settings of .ebextensions (both forms), requirements lines (read with packaging, as pip
reads them), a gunicorn command line (read by gunicorn's own option parser), and whether a
module binds a name.
"""
import ast
import contextlib
import io
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from gunicorn.config import Config as GunicornConfig
from gunicorn.errors import ConfigError
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from rehearsal.platform import DEFAULT_STATIC, ENVIRONMENT_NAMESPACE, MARKER_ENVIRONMENT, STATIC_NAMESPACE


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
    mappings = dict(DEFAULT_STATIC)
    for config in configs:
        rows, _ = option_settings(config)
        for namespace, option, value in rows:
            if namespace == STATIC_NAMESPACE:
                mappings["/" + option.strip("/")] = str(value).strip("/")
    return mappings


# pip's own reading of a requirements file (pip/_internal/req/req_file.py): continued lines are
# joined first, then comments dropped; a requirement's options (--hash=...) follow it after a " -".
COMMENT = re.compile(r"(^|\s+)#.*$")


@dataclass
class RequirementLine:
    """One logical line of a requirements file, as pip reads it."""
    number: int  # the line it starts on
    text: str  # without its comment, its continuations and its options
    requirement: Requirement = None  # None for an option line (-r, --index-url) or an unreadable one
    problem: str = None  # why packaging cannot read it as a requirement

    @property
    def name(self):
        return canonicalize_name(self.requirement.name) if self.requirement else None

    @property
    def installed(self):
        """Would pip install it on the platform (its marker holds for Python 3.11 on Linux)?"""
        if self.requirement is None:
            return False
        marker = self.requirement.marker
        return marker is None or marker.evaluate(MARKER_ENVIRONMENT)

    @property
    def pinned(self):
        specs = list(self.requirement.specifier) if self.requirement else []
        return (self.requirement is not None and self.requirement.url is None and len(specs) == 1
                and specs[0].operator in ("==", "===") and not specs[0].version.endswith("*"))


def logical_lines(text):
    """(first line number, line) with continuations joined and comments dropped, as pip does."""
    joined, first = [], None
    for number, line in enumerate(text.splitlines(), 1):
        if line.endswith("\\") and not COMMENT.match(line):
            first = first if joined else number
            joined.append(line[:-1])
            continue
        if joined:
            yield first, COMMENT.sub("", "".join(joined) + line).strip()
            joined = []
        else:
            yield number, COMMENT.sub("", line).strip()
    if joined:
        yield first, COMMENT.sub("", "".join(joined)).strip()


def read_requirements(text):
    """Every non-empty line of a requirements file, read with packaging."""
    rows = []
    for number, line in logical_lines(text):
        if not line:
            continue
        if line.startswith("-"):
            rows.append(RequirementLine(number, line))
            continue
        words = line.split()
        options = next((i for i, word in enumerate(words) if word.startswith("-")), len(words))
        spec = " ".join(words[:options])  # what follows (--hash=..., --config-settings) is pip's
        try:
            rows.append(RequirementLine(number, spec, Requirement(spec)))
        except InvalidRequirement as exc:
            rows.append(RequirementLine(number, spec, problem=str(exc).splitlines()[0]))
    return rows


class CommandError(ValueError):
    """gunicorn would refuse the command line (or its settings) and exit at once."""


@dataclass
class GunicornCommand:
    """What gunicorn makes of a command line, its GUNICORN_CMD_ARGS and its config file."""
    app: str  # module:callable, or None
    chdir: str  # as given, or None
    bind: list  # the addresses given, [] for gunicorn's default
    ignored: list  # an app named in GUNICORN_CMD_ARGS, which gunicorn never uses


# Settings whose validation looks at this machine (a folder, a user, a file); the rules judge
# the folder themselves and cannot judge the rest here.
MACHINE_SETTINGS = {"chdir", "user", "group", "reload_extra_files"}


def read_gunicorn(tokens, env, root):
    """TOKENS (a gunicorn command line) read by gunicorn's own parser, in gunicorn's order: the
    config file (-c, else ROOT/gunicorn.conf.py), then GUNICORN_CMD_ARGS from ENV, then the command
    line. Raises CommandError where gunicorn would exit."""
    config = GunicornConfig(prog="gunicorn")
    parser = config.parser()
    args = parse_options(parser, tokens[1:], "the command line")
    try:
        env_words = shlex.split(env.get("GUNICORN_CMD_ARGS", ""))
    except ValueError as exc:
        raise CommandError(f"GUNICORN_CMD_ARGS cannot be parsed: {exc}") from None
    env_args = parse_options(parser, env_words, "GUNICORN_CMD_ARGS")
    given = {}
    for name, value in config_file_settings(args.config or env_args.config, root).items():
        if name in config.settings:
            given[name] = checked(config, name, value, "the config file")
    for where, options in (("GUNICORN_CMD_ARGS", env_args), ("the command line", args)):
        for name, value in vars(options).items():
            if name != "args" and value is not None:
                given[name] = checked(config, name, value, where)
    app = args.args[0] if args.args else given.get("wsgi_app")
    if app is not None and not isinstance(app, str):
        raise CommandError(f"wsgi_app must be a string such as application:application, not {app!r}")
    chdir = given.get("chdir")
    return GunicornCommand(app, None if chdir is None else str(chdir), list(given.get("bind") or []),
                           env_args.args)


def parse_options(parser, words, where):
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said), contextlib.redirect_stdout(said):
            return parser.parse_args(words)
    except SystemExit as exc:
        last = (said.getvalue().strip().splitlines() or ["no message"])[-1]
        if not exc.code:  # --version or --help: it prints, then exits before serving anything
            raise CommandError(f"{where}: it only prints {last!r} and exits") from None
        raise CommandError(f"{where}: {last.removeprefix('gunicorn: error: ')}") from None


def checked(config, name, value, where):
    """VALUE, as gunicorn's validator for setting NAME returns it."""
    if name in MACHINE_SETTINGS or not config.settings[name].cli:
        return value
    try:
        config.set(name, value)
    except (ValueError, TypeError, ConfigError) as exc:
        raise CommandError(f"{where}: {config.settings[name].cli[-1]} {value!r}: {exc}") from None
    return config.settings[name].get()


def config_file_settings(location, root):
    """The literal top-level settings of a gunicorn config file (never run here), or {}."""
    if location and location.startswith("python:"):
        return {}  # a module on the path: only gunicorn, on the instance, can import it
    path = Path(root) / (location.removeprefix("file:") if location else "gunicorn.conf.py")
    if not path.is_file():
        if location:
            raise CommandError(f"--config {location}: no such file in the bundle")
        return {}
    try:
        tree = ast.parse(path.read_text(errors="replace"), str(path))
    except SyntaxError as exc:
        raise CommandError(f"{location or 'gunicorn.conf.py'}: invalid Python at line {exc.lineno}") from None
    settings = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                settings[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                settings.pop(node.targets[0].id, None)  # computed at run time: not judged here
    return settings


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
