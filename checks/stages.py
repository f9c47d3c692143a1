"""What each stage of the workshop asks of the learner's app, checked on the running app.

One test per expectation in steps/steps.toml, named check_<stage>_<id>; checks/plugin.py runs
them and attaches the manifest's hint to each failure. Every app is booted through
runtime/harness.py: a copy of the folder, an empty SQLite database, and a memcached of its own,
SASL by default (as MemCachier runs it), plain where a check lists keys. The app is booted once
per configuration for the whole run, so every check leaves the app usable and names its own
tasks. Only stage 03 reads files (the deploy configuration); every other check judges what the
app does, through HTTP and memcached's own counters.
"""
import contextlib
import os
import re
import secrets
import subprocess
import sys
import threading
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
import requests

from runtime import harness
from runtime.visitor import Visitor


class AppProblem(Exception):
    """The app under test did not start, crashed or stopped answering; `output` holds its log."""

    def __init__(self, message, output=""):
        super().__init__(message)
        self.output = output


# ---- the app under test ------------------------------------------------------------------------

class Subject:
    """The app under test as a check sees it: visitors, memcached's counters and keys, its log."""

    # Set once a request timed out, so later checks (on either configuration) fail at once.
    hung = None

    def __init__(self, app, request_timeout):
        self.app = app
        self.request_timeout = request_timeout
        self._second = None

    def visitor(self, url=None):
        """A new visitor with no cookies."""
        return CheckVisitor(self, url or self.app.url)

    def second_process(self):
        """The URL of one more app process sharing this one's memcached and database."""
        if self._second is None:
            try:
                self._second = self.app.spawn().url
            except harness.HarnessError as exc:
                raise AppProblem(f"a second app process did not start: {summarise(str(exc))}") from None
        return self._second

    def counters(self):
        return self.app.counters()

    def flush(self):
        self.app.memcached.flush()

    def keys(self):
        return self.app.memcached.keys()

    def value(self, key):
        """The raw bytes memcached holds under KEY (plain memcached only), or None."""
        return harness.raw_get(self.app.memcached.port, key)

    def restart(self):
        try:
            for server in self.app.servers:
                kill(server.proc)
                server.start()
        except harness.HarnessError as exc:
            raise AppProblem(f"the app did not start again: {summarise(str(exc))}") from None

    def stop(self):
        """Kill the app's processes and its memcached: nothing in them is worth a clean exit,
        and a graceful stop costs seconds per process (longer still if a request hangs)."""
        for server in self.app.servers:
            kill(server.proc)
        if self.app.memcached is not None:
            kill(self.app.memcached.proc)

    def migration_versions(self):
        """The Alembic revisions recorded in the app's SQLite database, or None without one."""
        import sqlite3

        files = [p for pattern in ("*.sqlite", "*.sqlite3", "*.db")
                 for p in self.app.workdir.rglob(pattern)]
        if not files:
            return None
        versions = []
        for path in files:
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
                try:
                    versions += [r[0] for r in conn.execute("SELECT version_num FROM alembic_version")]
                except sqlite3.Error:
                    pass
        return versions

    def log_tail(self, lines=20):
        return harness.log_tail(self.app.log, lines)


class CheckVisitor(Visitor):
    """A visitor whose failures say what the app did: a 5xx, a dropped connection, no answer."""

    def __init__(self, subject, base_url):
        super().__init__(base_url, timeout=subject.request_timeout)
        self.subject = subject

    def _call(self, method, url, send):
        if self.subject.hung:
            raise AppProblem(f"the app stopped answering earlier ({self.subject.hung})")
        path = urlsplit(self.url(url) if "://" not in url else url).path or "/"
        try:
            response = send()
        except requests.Timeout:
            Subject.hung = f"{method} {path} got no answer within {self.timeout:.0f} s"
            raise AppProblem(self.subject.hung) from None
        except requests.ConnectionError:
            raise AppProblem(f"{method} {path}: the app closed the connection (did it crash?)") from None
        if response.status_code >= 500:
            raise AppProblem(f"{method} {path} answered {response.status_code} {response.reason}")
        return response

    def get(self, path="/", **kwargs):
        return self._call("GET", path, lambda: Visitor.get(self, path, **kwargs))

    def post(self, path, data=None, **kwargs):
        return self._call("POST", path, lambda: Visitor.post(self, path, data, **kwargs))

    def submit(self, form, values=None, follow=True):
        return self._call(form.method, form.action, lambda: Visitor.submit(self, form, values, follow))

    def add_form(self, path="/"):
        """The form that adds a task: a POST form with a text field."""
        form = next((f for f in self.forms(path) if f.method == "POST" and f.texts), None)
        assert form is not None, f"GET {path} shows no form with a text field for a task's name"
        return form

    def add_task(self, name, path="/", follow=True):
        form = self.add_form(path)
        return self.submit(form, {form.texts[0]: name}, follow=follow)

    def with_cookies_of(self, other):
        self.http.cookies.update(other.http.cookies)
        return self


def kill(proc):
    """SIGKILL a process and its children (gunicorn's workers), and reap it."""
    if proc is None or proc.poll() is not None:
        return
    import psutil

    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    for process in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    proc.kill()
    proc.wait()  # the workers are init's to reap now; waiting on that is slow and needless


def summarise(text):
    """The line of a harness error that says what went wrong: the exception, if one is shown."""
    text = re.sub(r"/\S*?/workshop-app-[^/\s]+/app/", "", text)  # the copy's path means nothing to a learner
    head, _, rest = text.partition(": ")
    errors = [line.strip() for line in rest.splitlines()
              if re.match(r"^\s*[\w.]*(Error|Exception|Exit|Interrupt)\b", line)]
    detail = errors[-1] if errors else (rest.strip().splitlines() or [""])[-1].strip()
    return f"{head}: {detail}" if detail else head


class Boot:
    """One configuration of the app, started in a background thread so that two start at once."""

    def __init__(self, config, cache):
        self.config, self.cache = config, cache
        self.subject = self.error = None
        self.stack = contextlib.ExitStack()
        self.thread = threading.Thread(target=self._start, name=f"boot-{cache}", daemon=True)
        self.thread.start()

    def _start(self):
        try:
            app = self.stack.enter_context(harness.run_app(
                Path(self.config.getoption("--app")), database="sqlite", cache=self.cache,
                boot_timeout=self.config.getoption("--boot-timeout")))
            self.subject = Subject(app, self.config.getoption("--request-timeout"))
        except harness.HarnessError as exc:
            summary = summarise(str(exc))
            if not summary.startswith("the app"):
                summary = "the app did not start: " + summary
            self.error = AppProblem(summary, str(exc))
        except BaseException as exc:  # handed to the test that waits for this app
            self.error = exc

    def result(self):
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.subject

    def close(self):
        self.thread.join()
        if self.subject is not None:
            self.subject.stop()
        self.stack.close()


@pytest.fixture(scope="session")
def boots(request):
    """Each configuration this run needs, started together as soon as one is asked for."""
    needed = {name for item in request.session.items for name in item.fixturenames}
    started = {}

    def start(cache):
        if cache not in started:
            started[cache] = Boot(request.config, cache)
        return started[cache]

    def get(cache):
        start(cache)
        for fixture, other in (("app", "sasl"), ("listing_app", "plain")):
            if fixture in needed:
                start(other)
        return started[cache].result()

    yield get
    for boot in started.values():
        boot.close()


@pytest.fixture(scope="session")
def app(boots):
    """The app on SQLite with a SASL memcached of its own, the way MemCachier serves it."""
    return boots("sasl")


@pytest.fixture(scope="session")
def listing_app(boots):
    """The app with a plain memcached of its own, whose keys can be listed."""
    return boots("plain")


@pytest.fixture(scope="session")
def app_dir(pytestconfig):
    return Path(pytestconfig.getoption("--app")).resolve()


@pytest.fixture
def observe(request):
    """Record what an informational check saw; it is reported, never failed."""
    return lambda text: request.node.user_properties.append(("observed", text))


# ---- reading pages -----------------------------------------------------------------------------

class TextParser(HTMLParser):
    def __init__(self):
        super().__init__()
        self.texts, self._skip = [], 0

    def handle_starttag(self, tag, attrs):
        self._skip += tag in ("script", "style")

    def handle_endtag(self, tag):
        self._skip -= tag in ("script", "style") and self._skip > 0

    def handle_data(self, data):
        if not self._skip and data.strip():
            self.texts.append(" ".join(data.split()))


def texts(page):
    parser = TextParser()
    parser.feed(page)
    return parser.texts


def shows(page, name):
    return any(name in text for text in texts(page))


def occurrences(page, name):
    return sum(text.count(name) for text in texts(page))


DELETE_ACTION = re.compile(r"""action=["'][^"']*?/(\d+)/delete/?["']""")


def task_ids(page):
    """The ids of the tasks listed, read from their delete buttons."""
    return [int(i) for i in DELETE_ACTION.findall(page)]


def task_id(page, name):
    """The id of task NAME: the first delete button after its name, as in a table row."""
    at = page.find(name)
    match = DELETE_ACTION.search(page, at) if at >= 0 else None
    return int(match.group(1)) if match else None


def new_texts(page, baseline):
    """Text on PAGE that BASELINE (the same list seen by a fresh visitor) does not have."""
    seen = set(texts(baseline))
    return [t for t in texts(page) if t not in seen]


def new_name(label):
    return f"{label} {secrets.token_hex(4)}"


def deltas(delta, *names):
    return ", ".join(f"{n} {delta[n]:+d}" for n in names)


def listed(keys, limit=6):
    shown = ", ".join(sorted(keys)[:limit])
    return (shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")) or "no keys at all"


# ---- 01 the skeleton ---------------------------------------------------------------------------

def check_01_importable(app):
    # The fixture started gunicorn with application:application; a live server proves the import.
    assert app.app.servers[0].proc.poll() is None, "the app process exited after starting"


def check_01_index(app):
    response = app.visitor().get("/")
    assert response.status_code == 200, f"GET / answered {response.status_code}"


# ---- 02 the database ---------------------------------------------------------------------------
# Stage 04 serves a stale list on purpose, so these checks flush memcached before they look:
# they are about what the database holds.

def check_02_migrates(app):
    # The harness ran `flask --app application db upgrade` on the empty database, if it could.
    versions = app.migration_versions()
    assert versions is not None, "the app made no SQLite database in its folder"
    assert versions, ("the database holds no migration revision (no alembic_version row): "
                      "without a migrations/ folder, `flask db upgrade` had nothing to run")


def check_02_add_list_delete(app):
    visitor, name = app.visitor(), new_name("add list delete")
    visitor.add_task(name)
    app.flush()
    page = visitor.get("/").text
    assert shows(page, name), f"after adding {name!r}, the list does not show it"
    task = task_id(page, name)
    assert task, f"the list shows {name!r} but no form posting to /<id>/delete after it"
    visitor.delete_task(task)
    app.flush()
    assert not shows(visitor.get("/").text, name), \
        f"after pressing the delete button of {name!r} (task {task}), it is still listed"


def check_02_persists(app):
    name = new_name("persists")
    app.visitor().add_task(name)
    app.restart()
    app.flush()
    assert shows(app.visitor().get("/").text, name), \
        f"{name!r} was added, and after the app restarted it is gone"


def check_02_empty_name(app):
    visitor = app.visitor()
    app.flush()
    before = set(task_ids(visitor.get("/").text))
    page = visitor.add_task("").text
    app.flush()
    baseline = app.visitor().get("/").text
    stored = set(task_ids(baseline)) - before
    assert not stored, f"an empty name was stored as task {min(stored)}"
    assert new_texts(page, baseline), "after submitting an empty name, the page shows no message"


def check_02_no_double_add(app):
    visitor, name = app.visitor(), new_name("refresh")
    form = visitor.add_form()
    response = visitor.submit(form, {form.texts[0]: name}, follow=False)
    if response.is_redirect:
        target = urljoin(response.url, response.headers["Location"])
        visitor.get(target)
        visitor.get(target)  # the refresh: a browser repeats the GET it was redirected to
        how = "a redirect, then a refresh"
    else:
        visitor.submit(form, {form.texts[0]: name}, follow=False)  # the refresh repeats the POST
        how = f"a {response.status_code} page instead of a redirect, so the refresh posted again"
    app.flush()
    count = occurrences(visitor.get("/").text, name)
    assert count == 1, f"adding {name!r} answered {how}; the list shows it {count} times"


# ---- 03 the deploy files -----------------------------------------------------------------------
# The one stage judged by reading files: what Elastic Beanstalk reads from the bundle's root.

EB_KEYS = {"option_settings", "packages", "sources", "files", "users", "groups", "commands",
           "container_commands", "services", "Resources"}
DEV_TOOLS = re.compile(
    r"^(pytest(-.*)?|jupyter.*|jupyterlab.*|notebook|ipython|ipykernel|ipywidgets|nbclient|nbconvert"
    r"|nbformat|nbmake|awsebcli|awscli|boto3-stubs|playwright|selenium|black|ruff|flake8|pylint|mypy"
    r"|isort|coverage|tox|nox|pre-commit|debugpy|pip-tools|locust|pyflakes|pycodestyle)$")
ACTIVATE = re.compile(r"/var/app/venv/\S*/bin/activate")


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


def deploy_configs(app_dir):
    root = deploy_root(app_dir)
    assert root is not None, f"{app_dir.name}/ has no .ebextensions/ folder (nor does a parent folder that deploys it)"
    configs = sorted((root / ".ebextensions").glob("*.config"))
    assert configs, f"{root.name}/.ebextensions/ holds no *.config file"
    return root, configs


def load_config(path):
    import yaml

    try:
        doc = yaml.safe_load(path.read_text(errors="replace"))
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where else ""
        raise AssertionError(f".ebextensions/{path.name} is not valid YAML{line}: "
                             f"{getattr(exc, 'problem', None) or exc}") from None
    return doc


def check_03_ebextensions(app_dir):
    _, configs = deploy_configs(app_dir)
    for path in configs:
        doc = load_config(path)
        assert isinstance(doc, dict), f".ebextensions/{path.name} is not a mapping of sections"
        unknown = sorted(set(doc) - EB_KEYS)
        assert not unknown, f".ebextensions/{path.name} has unknown top-level keys: {', '.join(unknown)}"


def check_03_migration_command(app_dir):
    _, configs = deploy_configs(app_dir)
    found = []
    for path in configs:
        doc = load_config(path)
        commands = doc.get("container_commands") if isinstance(doc, dict) else None
        for name, entry in (commands or {}).items():
            command = entry.get("command", "") if isinstance(entry, dict) else ""
            command = " ".join(command) if isinstance(command, list) else str(command)
            if "db upgrade" in command:
                found.append((path.name, name, command, entry))
    assert found, "no container_commands entry runs `flask db upgrade`"
    for file, name, command, entry in found:
        assert ACTIVATE.search(command), \
            f"{file}: {name} runs `{command}` without activating /var/app/venv/*/bin/activate"
        assert str(entry.get("leader_only")).lower() == "true", \
            f"{file}: {name} lacks leader_only: true, so every instance would migrate"


def check_03_requirements(app_dir):
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    root = deploy_root(app_dir)
    assert root is not None, f"{app_dir.name}/ has no .ebextensions/, so there is no bundle root to hold requirements.txt"
    path = root / "requirements.txt"
    assert path.is_file(), f"{root.name}/ has no requirements.txt next to .ebextensions/"
    tools = []
    for line in path.read_text(errors="replace").splitlines():
        line = line.split(" #")[0].strip()
        if not line or line.startswith(("#", "-")):
            continue
        try:
            name = canonicalize_name(Requirement(line).name)
        except InvalidRequirement as exc:
            raise AssertionError(f"requirements.txt: {line!r} is not a requirement: {exc}") from None
        if DEV_TOOLS.match(name):
            tools.append(name)
    assert not tools, f"requirements.txt names development tools: {', '.join(tools)}"
    # A dry run against the packages installed for the workshop: offline, and no build.
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1",
           "PIP_NO_INPUT": "1"}
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-index",
                             "--quiet", "-r", path.name], cwd=root, env=env, capture_output=True,
                            text=True, timeout=120)
    problems = [l.removeprefix("ERROR: ") for l in result.stderr.splitlines() if l.startswith("ERROR")]
    assert result.returncode == 0, "requirements.txt does not resolve: " + (
        "; ".join(problems) or result.stderr.strip()[-300:])


# ---- 04 the query cache ------------------------------------------------------------------------

def check_04_first_load(app):
    app.flush()
    with app.counters() as delta:
        app.visitor().get("/")
    assert delta["get_misses"] >= 1 and delta["cmd_set"] >= 1, \
        f"the first load after a flush added {deltas(delta, 'get_misses', 'cmd_set')}"


def check_04_reload_hits(app):
    app.visitor().get("/")
    with app.counters() as delta:
        app.visitor().get("/")
    assert delta["get_hits"] >= 1 and delta["get_misses"] == 0, \
        f"an immediate reload added {deltas(delta, 'get_hits', 'get_misses')}"


def check_04_stale_list(app, observe):
    visitor, name = app.visitor(), new_name("stale")
    visitor.get("/")
    page = visitor.add_task(name).text
    observe("the list was stale after an add" if not shows(page, name)
            else "the list showed the new task at once")


# ---- 05 invalidation ---------------------------------------------------------------------------

def check_05_fresh_after_add(app):
    visitor, name = app.visitor(), new_name("fresh add")
    visitor.get("/")
    visitor.get("/")  # the list is cached now
    visitor.add_task(name, follow=False)
    assert shows(app.visitor().get("/").text, name), \
        f"the next load after adding {name!r} does not show it"


def check_05_fresh_after_delete(app):
    visitor, name = app.visitor(), new_name("fresh delete")
    visitor.add_task(name)
    app.flush()
    page = visitor.get("/").text  # the list is cached now, with the task in it
    task = task_id(page, name)
    assert task, f"the list does not show {name!r} after a flush"
    visitor.delete_task(task, follow=False)
    assert not shows(app.visitor().get("/").text, name), \
        f"the next load after deleting {name!r} still shows it"


# ---- 06 memoize --------------------------------------------------------------------------------

def memoize_versions(app):
    return {k: app.value(k) for k in app.keys() if k.endswith("_memver")}


def check_06_memoize_keys(listing_app):
    listing_app.flush()
    listing_app.visitor().get("/")
    keys = listing_app.keys()
    assert any(k.endswith("_memver") for k in keys), \
        f"after a load, memcached holds {listed(keys)}; none is a memoize version key (…_memver)"


def check_06_memoize_invalidated(listing_app):
    app, name = listing_app, new_name("memoize")
    visitor = app.visitor()
    visitor.get("/")
    before = memoize_versions(app)
    assert before, "after a load, memcached holds no memoize version key (…_memver) to invalidate"
    visitor.add_task(name, follow=False)
    after = memoize_versions(app)
    assert any(after.get(k) != v for k, v in before.items()), \
        f"after adding a task, {listed(before)} still holds the same version: the memoized query was not invalidated"
    page = visitor.get("/").text
    task = task_id(page, name)
    assert task, f"the next load after adding {name!r} does not show it"
    before = memoize_versions(app)
    visitor.delete_task(task, follow=False)
    after = memoize_versions(app)
    assert any(after.get(k) != v for k, v in before.items()), \
        f"after deleting a task, {listed(before)} still holds the same version: the memoized query was not invalidated"


# ---- 07 fragments ------------------------------------------------------------------------------

def check_07_fragments_reused(app):
    visitor = app.visitor()
    for _ in range(3):
        visitor.add_task(new_name("fragment"))
    visitor.get("/")
    before = task_ids(visitor.get("/").text)  # every row rendered once, so cached
    visitor.add_task(new_name("fragment new"), follow=False)
    with app.counters() as delta:
        after = task_ids(app.visitor().get("/").text)
    kept = len(set(before) & set(after))
    assert delta["get_hits"] >= kept, (
        f"after adding a task, the next load of {kept} rows that were already there added "
        f"{deltas(delta, 'get_hits', 'get_misses')}")


def check_07_reused_id(app):
    visitor, old, new = app.visitor(), new_name("old"), new_name("new")
    page = visitor.add_task(old).text
    visitor.get("/")  # the old task's row is cached now
    old_id = task_id(visitor.get("/").text, old)
    assert old_id, f"the list does not show {old!r} after adding it"
    visitor.delete_task(old_id)
    visitor.add_task(new)
    page = app.visitor().get("/").text
    new_id = task_id(page, new)
    assert shows(page, new) and not shows(page, old), (
        f"{old!r} (task {old_id}) was deleted and {new!r} added"
        + (f" as task {new_id}" if new_id else "") + f", yet the list shows {old!r}"
        + ("" if shows(page, new) else f" and not {new!r}"))


# ---- 08 the view cache -------------------------------------------------------------------------

def check_08_single_hit(app):
    visitor = app.visitor()
    visitor.get("/")
    visitor.get("/")
    with app.counters() as delta:
        app.visitor().get("/")
    assert delta["get_hits"] == 1 and delta["get_misses"] == 0, \
        f"a warm reload added {deltas(delta, 'get_hits', 'get_misses')}"


def check_08_post_not_cached(app):
    visitor, name = app.visitor(), new_name("post")
    form = visitor.add_form()
    cached = visitor.get("/")
    response = visitor.submit(form, {form.texts[0]: name}, follow=False)
    app.flush()
    stored = shows(app.visitor().get("/").text, name)
    served = response.status_code == 200 and texts(response.text) == texts(cached.text)
    assert stored and not served, (
        f"POST / answered {response.status_code}"
        + (" with the cached list page" if served else "")
        + ("" if stored else f", and {name!r} was not stored"))


def check_08_fresh_after_writes(app):
    visitor, name = app.visitor(), new_name("view fresh")
    visitor.get("/")
    visitor.get("/")
    visitor.add_task(name, follow=False)
    page = app.visitor().get("/").text
    assert shows(page, name), f"the next load after adding {name!r} does not show it"
    app.visitor().get("/")  # cached again, with the task
    visitor.delete_task(task_id(page, name), follow=False)
    assert not shows(app.visitor().get("/").text, name), \
        f"the next load after deleting {name!r} still shows it"


def check_08_flash_not_shared(app):
    first = app.visitor()
    form = first.add_form()
    app.flush()  # the view is not cached: the page with the message is rendered fresh
    page = first.submit(form, {form.texts[0]: ""}).text
    other = app.visitor().get("/").text
    app.flush()
    message = new_texts(page, app.visitor().get("/").text)
    leaked = [t for t in message if t in texts(other)]
    assert not leaked, f"another visitor's page shows the first visitor's message {leaked[0]!r}"


# ---- 09 sessions -------------------------------------------------------------------------------

def check_09_session_in_memcached(listing_app):
    app = listing_app
    visitor = app.visitor()
    form = visitor.add_form()
    before = set(app.keys())
    # An empty name flashes a message, which waits in the session until the next page.
    visitor.submit(form, {form.texts[0]: ""}, follow=False)
    cookies = {c.name: c.value for c in visitor.http.cookies}
    assert cookies, "submitting an empty name set no cookie, so the message has no session to wait in"
    added = [k for k in set(app.keys()) - before if "session:" in k]
    for name, value in cookies.items():
        for sid in {value, value.split(".")[0]}:
            if any(k.endswith(sid) for k in added):
                return
    cookie = cookies.get("session") or max(cookies.values(), key=len)
    carries = " carries the data itself (Flask's signed cookie:" if signed_data(cookie) else " holds ("
    assert False, (
        f"the session cookie{carries} {len(cookie)} characters, {cookie[:16]}…) and memcached holds "
        + (f"no session: key named after it (new keys: {listed(added)})" if added else "no session: key"))


def signed_data(cookie):
    """True when COOKIE is Flask's own session cookie: signed, base64 JSON, compressed or not."""
    import base64
    import zlib

    payload = cookie.lstrip(".").split(".")[0]
    try:
        data = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        data = zlib.decompress(data) if cookie.startswith(".") else data
        return data.lstrip().startswith(b"{")
    except (ValueError, zlib.error):
        return False


def check_09_session_shared(listing_app):
    app = listing_app
    second = app.second_process()
    visitor = app.visitor()
    form = visitor.add_form()
    visitor.submit(form, {form.texts[0]: ""}, follow=False)  # the message waits in the session
    page = app.visitor(second).with_cookies_of(visitor).get("/").text
    baseline = app.visitor(second).get("/").text
    assert new_texts(page, baseline), (
        "the message flashed through the first process does not show through the second one, "
        "which shares the memcached")
