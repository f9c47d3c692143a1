"""The app under test, as the checks see it: booted once per configuration for the whole run.

Every app is booted through runtime/harness.py: a copy of the folder, an empty SQLite database, and
a memcached of its own, SASL by default (as MemCachier runs it), plain where a check lists keys,
none at all for the app as `make run` starts it. The configurations a run needs start at once,
in threads. Whatever goes wrong with the app itself (it did not start, crashed, answered 5xx or
stopped answering) is raised as an AppProblem whose `state` says "hung" or "crashed", with the
`cause` read from the app's output; the plugin records both on the check's Result. A request that times out marks the run's
Health as hung, so every later check, on either configuration, fails at once instead of waiting.
"""
import contextlib
import re
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from checks import causes, stalls
from runtime import harness, memcached, taskpage
from runtime.visitor import Visitor


class AppProblem(Exception):
    """The app under test did not start, crashed or stopped answering; `output` holds its log,
    `state` is "hung" or "crashed" (a 5xx is a crash of that request), `cause` the exception
    and the learner's file and line (checks/causes.py), `reason` the manifest's [problems] key."""

    def __init__(self, message, output="", state="crashed", cause=None, reason=None):
        super().__init__(message)
        self.output = output
        self.state = state
        self.cause = cause
        self.reason = reason


def boot_problem(exc, what="the app did not start"):
    """The AppProblem for a BootError (or another HarnessError) from starting the app."""
    state = state_of(exc)
    phase = getattr(exc, "phase", "serve")
    folder = getattr(exc, "folder", None)
    cause = causes.cause(getattr(exc, "output", ""), [folder] if folder else [])
    if phase == "import" and state == "hung":
        cause = str(exc) + (f"\n  {cause}" if cause else "")
    summary = f"{what}: {cause.splitlines()[0]}" if cause else summarise(str(exc))
    if not summary.startswith("the app") and not summary.startswith(what):
        summary = f"{what}: {summary}"
    if cause and cause.startswith("gunicorn: Failed to find attribute"):
        reason = "wsgi_attribute"
    else:
        reason = {("import", "hung"): "hung_at_import", ("import", "crashed"): "crashed_at_import",
                  ("migrate", "hung"): "migration_hung", ("migrate", "crashed"): "migration_failed",
                  ("serve", "hung"): "hung_at_start"}.get((phase, state), "crashed_at_start")
    return AppProblem(summary, getattr(exc, "output", "") or str(exc), state, cause, reason)


class Verdict(AssertionError):
    """An expectation that does not hold, for REASON: the key of the manifest's hint that is
    true for this failure (the expectation's `reasons`, or the [problems] table). LAYER names
    the stage ("08") whose layer produced it, when that is a later stage than the check's."""

    def __init__(self, message, reason=None, layer=None):
        super().__init__(message)
        self.reason = reason
        self.layer = layer


def expect(condition, message, reason=None, layer=None):
    if not condition:
        raise Verdict(message, reason, layer)


class Health:
    """What every subject of one run shares: whether the app has stopped answering, and where."""

    def __init__(self):
        self.hung = None


class Subject:
    """The app under test as a check sees it: visitors, memcached's counters and keys, its log."""

    def __init__(self, app, request_timeout, health):
        self.app = app
        self.request_timeout = request_timeout
        self.health = health
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
                raise boot_problem(exc, "a second app process did not start") from None
        return self._second

    def counters(self):
        return self.app.counters()

    def flush(self):
        self.app.memcached.flush()

    def keys(self):
        return self.app.memcached.keys()

    def value(self, key):
        """The raw bytes memcached holds under KEY (plain memcached only), or None."""
        return memcached.raw_get(self.app.memcached.port, key)

    def restart(self):
        try:
            for server in self.app.servers:
                server.stop()
                server.start()
        except harness.HarnessError as exc:
            raise boot_problem(exc, "the app did not start again") from None

    def migration_versions(self):
        """The Alembic revisions recorded in the app's SQLite database, or None without one."""
        import sqlite3

        files = harness.database_files(self.app.workdir)
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

    def log_size(self):
        return self.app.log.stat().st_size if self.app.log.exists() else 0

    def cause_since(self, offset):
        """What the app raised since the log held OFFSET bytes, as checks/causes.py reads it."""
        return causes.cause(harness.read_from(self.app.log, offset),
                            [server.workdir for server in self.app.servers])


class CheckVisitor(Visitor):
    """A visitor whose failures say what the app did: a 5xx, a dropped connection, no answer."""

    def __init__(self, subject, base_url):
        super().__init__(base_url, timeout=subject.request_timeout)
        self.subject = subject

    def _call(self, method, url, send):
        health = self.subject.health
        if health.hung:
            raise AppProblem(f"the app stopped answering earlier ({health.hung})", state="hung",
                             cause=health.hung, reason="hung")
        path = urlsplit(self.url(url) if "://" not in url else url).path or "/"
        offset = self.subject.log_size()
        try:
            response = send()
        except requests.Timeout:
            health.hung = f"{method} {path} got no answer within {self.timeout:.0f} s"
            raise AppProblem(health.hung, state="hung", cause=health.hung, reason="hung") from None
        except requests.TooManyRedirects:
            raise Verdict(f"{method} {path} redirects in a loop", "redirect_loop") from None
        except requests.ConnectionError:
            raise AppProblem(f"{method} {path}: the app closed the connection (did it crash?)",
                             cause=self.subject.cause_since(offset), reason="crashed") from None
        if response.status_code >= 500:
            raise AppProblem(f"{method} {path} answered {response.status_code} {response.reason}",
                             cause=self.subject.cause_since(offset), reason="server_error")
        return response

    def get(self, path="/", **kwargs):
        return self._call("GET", path, lambda: Visitor.get(self, path, **kwargs))

    def post(self, path, data=None, **kwargs):
        return self._call("POST", path, lambda: Visitor.post(self, path, data, **kwargs))

    def submit(self, form, values=None, follow=True):
        return self._call(form.method, form.action, lambda: Visitor.submit(self, form, values, follow))

    def add_form(self, path="/"):
        """The form that adds a task: a POST form with a text field."""
        form = taskpage.add_form(self.forms(path))
        expect(form is not None, f"GET {path} shows no form with a text field for a task's name",
               "no_add_form")
        return form

    def with_cookies_of(self, other):
        self.http.cookies.update(other.http.cookies)
        return self



def state_of(error):
    """"hung" when the app never answered in time, else "crashed" (it exited, or never started)."""
    return getattr(error, "state", None) or "crashed"


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

    def __init__(self, config, cache, health):
        self.config, self.cache, self.health = config, cache, health
        self.subject = self.error = None
        self.stack = contextlib.ExitStack()
        # Yield to running checks: always for the app without memcached, which boots during
        # this run's own first checks, else when a check of another app runs on this machine,
        # and only until a check waits for this app. The rerun of a check a stall spoiled
        # yields to nothing: its verdict counts.
        self.nice = harness.Niceness(0 if config.getoption("--full-priority") else (
            harness.NICE if cache is None or harness.checks_running() else 0))
        self.thread = threading.Thread(target=self._start, name=f"boot-{cache}", daemon=True)
        self.thread.start()

    def _start(self):
        try:
            app = self.stack.enter_context(harness.run_app(
                Path(self.config.getoption("--app")), database="sqlite", cache=self.cache,
                boot_timeout=self.config.getoption("--boot-timeout"), nice=self.nice))
            self.subject = Subject(app, self.config.getoption("--request-timeout"), self.health)
            sampler = stalls.sampler_of(self.config)
            if sampler is not None:
                sampler.watch(self.cache, app)
        except harness.HarnessError as exc:
            self.error = boot_problem(exc)
        except BaseException as exc:  # handed to the test that waits for this app
            self.error = exc

    def result(self):
        if self.thread.is_alive():  # a check waits for it: nothing of this run is left to yield to
            self.nice.hurry()
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.subject

    def close(self):
        self.thread.join()
        self.stack.close()  # the harness kills the app and its memcached, never asks


@pytest.fixture(scope="session")
def boots(request):
    """Each configuration this run needs, started together as soon as one is asked for."""
    needed = {name for item in request.session.items for name in item.fixturenames}
    started, health = {}, Health()

    def start(cache):
        if cache not in started:
            started[cache] = Boot(request.config, cache, health)
        return started[cache]

    def get(cache):
        start(cache)
        for fixture, other in (("app", "sasl"), ("listing_app", "plain")):
            if fixture in needed:
                start(other)
        subject = started[cache].result()
        if "app_without_memcached" in needed:
            start(None)  # once the others are up: it boots while the early stages are checked
        return subject

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
def app_without_memcached(boots):
    """The app with no MEMCACHIER_* at all, as `make run` starts it: (its Subject, None), or
    (None, the AppProblem that kept it from starting), which is that check's own failure."""
    try:
        return boots(None), None
    except AppProblem as problem:
        return None, problem


@pytest.fixture(scope="session")
def app_dir(pytestconfig):
    return Path(pytestconfig.getoption("--app")).resolve()
