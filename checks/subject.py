"""The app under test, as the checks see it: booted once per configuration for the whole run.

Every app is booted through runtime/harness.py: a copy of the folder, an empty SQLite database, and
a memcached of its own, SASL by default (as MemCachier runs it), plain where a check lists keys.
Two configurations start at once, in threads. Whatever goes wrong with the app itself (it did
not start, crashed, or stopped answering) is raised as an AppProblem whose `state` says "hung" or
"crashed"; the plugin records that on the check's Result. A request that times out marks the run's
Health as hung, so every later check, on either configuration, fails at once instead of waiting.
"""
import contextlib
import re
import signal
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from runtime import harness, memcached, processes
from runtime.visitor import Visitor


class AppProblem(Exception):
    """The app under test did not start, crashed or stopped answering; `output` holds its log,
    `state` is "hung", "crashed" or None (it answered, wrongly: a 5xx)."""

    def __init__(self, message, output="", state=None):
        super().__init__(message)
        self.output = output
        self.state = state


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
                raise AppProblem(f"a second app process did not start: {summarise(str(exc))}",
                                 state=state_of(exc)) from None
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
                kill(server.proc)
                server.start()
        except harness.HarnessError as exc:
            raise AppProblem(f"the app did not start again: {summarise(str(exc))}",
                             state=state_of(exc)) from None

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
        health = self.subject.health
        if health.hung:
            raise AppProblem(f"the app stopped answering earlier ({health.hung})", state="hung")
        path = urlsplit(self.url(url) if "://" not in url else url).path or "/"
        try:
            response = send()
        except requests.Timeout:
            health.hung = f"{method} {path} got no answer within {self.timeout:.0f} s"
            raise AppProblem(health.hung, state="hung") from None
        except requests.ConnectionError:
            raise AppProblem(f"{method} {path}: the app closed the connection (did it crash?)",
                             state="crashed") from None
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
    if proc is not None:
        processes.stop(proc, signal.SIGKILL, family=True)


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
        self.thread = threading.Thread(target=self._start, name=f"boot-{cache}", daemon=True)
        self.thread.start()

    def _start(self):
        try:
            app = self.stack.enter_context(harness.run_app(
                Path(self.config.getoption("--app")), database="sqlite", cache=self.cache,
                boot_timeout=self.config.getoption("--boot-timeout")))
            self.subject = Subject(app, self.config.getoption("--request-timeout"), self.health)
        except harness.HarnessError as exc:
            summary = summarise(str(exc))
            if not summary.startswith("the app"):
                summary = "the app did not start: " + summary
            self.error = AppProblem(summary, str(exc), state_of(exc))
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
