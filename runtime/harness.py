"""Run any app folder the way the tests, the checker, the notebooks and the benchmark all do.

    with run_app("steps/08-view-cache", database="mariadb", cache="sasl") as app:
        with app.counters() as delta:
            app.visitor().get("/")
        print(delta["get_hits"])

`run_app` copies the folder (a learner's instance data is never touched), starts a memcached of its
own, gives the app an empty database, migrates it, and serves it with gunicorn using Elastic
Beanstalk's default flags. Every step's package is called `task_list`, so apps always run in
other processes, never imported here: forked by runtime/forkserver.py, which has imported their
libraries once.
"""
import contextlib
import fcntl
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from runtime import LEFTOVERS, forkserver, memcached, processes, services
from runtime.services import HarnessError

# Elastic Beanstalk's default: gunicorn --workers=1 --threads=15 application:application
EB_WORKERS = 1
EB_THREADS = 15
COPY_IGNORE = shutil.ignore_patterns(*LEFTOVERS)
# Variables the harness decides; whatever the caller's shell holds for them is dropped.
OWNED_PREFIXES = ("RDS_", "MEMCACHIER_", "CACHE_", "SESSION_", "FLASK_", "SECRET_KEY", "APP_RELEASE")
COUNTERS = ("get_hits", "get_misses", "cmd_get", "cmd_set", "delete_hits", "delete_misses",
            "curr_items", "total_items", "bytes", "evictions", "curr_connections", "get_expired",
            "cmd_touch", "incr_hits", "incr_misses", "cas_hits", "cas_misses", "cas_badval")


class BootError(HarnessError):
    """The app did not come up: `state` is "hung" (no answer in time) or "crashed" (it exited);
    `phase` is "import", "migrate" or "serve"; `output` is what the app printed, whole, from
    its copy in `folder`."""

    def __init__(self, message, state, phase="serve", output="", folder=None):
        super().__init__(message)
        self.state, self.phase, self.output, self.folder = state, phase, output, folder


# Import the app under a watchdog, then migrate with no watchdog: a hang at import is caught in
# LIMIT seconds (faulthandler prints where it waits, then exits), a slow migration is not.
IMPORT_THEN_MIGRATE = r"""
import faulthandler, sys
limit, migrate = float(sys.argv[1]), sys.argv[2] == "migrate"
faulthandler.dump_traceback_later(limit, exit=True)
import flask.cli
flask.cli.load_dotenv()  # as `flask` does before it imports the app
import application
faulthandler.cancel_dump_traceback_later()
print(sys.argv[3], file=sys.stderr, flush=True)
if migrate:
    sys.argv = ["flask", "--app", "application", "db", "upgrade"]
    flask.cli.main()
"""
IMPORTED = "workshop-harness: the app imported"
GUNICORN = "from gunicorn.app.wsgiapp import run\nrun()"  # `python -m gunicorn`
WATCHDOG = re.compile(r"^Timeout \([\d:.]+\)!$", re.M)  # faulthandler's first line: a hung import
# Held shared by every check while it runs, machine-wide: an app that boots meanwhile yields.
CHECKING = Path(tempfile.gettempdir()) / "workshop-checking.lock"
NICE = 10  # the niceness of a boot that yields to running checks


@contextlib.contextmanager
def checking():
    """Hold the machine-wide "a check is running" lock (shared) for the block."""
    fd = os.open(CHECKING, os.O_RDONLY | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def checks_running():
    """Whether a check runs anywhere on this machine (this process's own included)."""
    fd = os.open(CHECKING, os.O_RDONLY | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


class Niceness:
    """How nice a boot's processes start (NICE: it yields to running checks), until hurry():
    then what starts later starts at 0, and what this process started niced is reniced to 0."""

    def __init__(self, value=0):
        self.value = value

    def hurry(self):
        if self.value:
            self.value = 0
            renice([pid for pid in processes.children(os.getpid()) if niceness(pid) > 0])


def niceness(pid):
    try:
        return os.getpriority(os.PRIO_PROCESS, pid)
    except OSError:  # gone
        return 0


def forked(code, argv, workdir, env, out, nice, name):
    """Run CODE as `python -c CODE` with ARGV in WORKDIR, forked by the fork server
    (forkserver.py), its output appended to OUT, at NICE's niceness (a Niceness), named NAME."""
    return forkserver.spawn(code, argv, cwd=workdir, env=env, out=out, nice=nice.value,
                            name=name, base_env=inherited())


def renice(pids, nice=0):
    """Give PIDS, every thread of them, niceness NICE once their boot is over (only root may
    lower it): Linux keeps a niceness per thread."""
    try:
        for pid in pids:
            for tid in os.listdir(f"/proc/{pid}/task"):
                os.setpriority(os.PRIO_PROCESS, int(tid), nice)
    except (PermissionError, ProcessLookupError, FileNotFoundError):
        return False
    return True


def services_env():
    """The services env file, as a dict; its SASL_PATH is exported so pylibmc can log in."""
    env = services.load_env()
    os.environ.setdefault("SASL_PATH", env["SASL_PATH"])
    return env


class CacheServer(services.Memcached):
    """A memcached owned by one app run, with counters and key listing."""

    def __init__(self, sasl=True):
        conf = None
        self.username = self.password = None
        if sasl:
            env = services_env()
            conf = env["WORKSHOP_SASL_CONF"]
            self.username, self.password = env["MEMCACHIER_USERNAME"], env["MEMCACHIER_PASSWORD"]
        super().__init__(sasl=sasl, sasl_conf=conf)

    def stop(self):
        """Kill it: what it holds is this run's, and a polite SIGTERM costs over half a second."""
        if self.proc is not None:
            processes.stop(self.proc, signal.SIGKILL)
        self.proc = None

    def client(self):
        """A pylibmc client for this server."""
        import pylibmc

        return pylibmc.Client([self.address], binary=True, username=self.username, password=self.password)

    def stats(self):
        """memcached's own counters, as integers."""
        raw = memcached.counters(self.address, self.username, self.password)
        return {k: raw.get(k, 0) for k in COUNTERS}

    @contextlib.contextmanager
    def counters(self):
        """Yield a dict that holds the counter deltas once the block ends."""
        before = self.stats()
        delta = {}
        yield delta
        after = self.stats()
        delta.update({k: after[k] - before.get(k, 0) for k in after})

    def flush(self):
        memcached.flush(self.address, self.username, self.password)

    def keys(self):
        """Every key in memcached. Only a plain instance can list them (lru_crawler metadump)."""
        if self.sasl:
            raise HarnessError("a SASL memcached speaks only the binary protocol; list keys on a plain one")
        return memcached.keys(self.port)


class Database:
    """An empty database for one run: SQLite inside the copy, or a fresh MariaDB database."""

    def __init__(self, kind):
        if kind not in ("sqlite", "mariadb"):
            raise HarnessError(f"unknown database {kind!r}: use 'sqlite' or 'mariadb'")
        self.kind = kind
        self.name = None
        self.env = {}

    def connect(self):
        import MySQLdb

        env = services_env()
        return MySQLdb.connect(host=env["RDS_HOSTNAME"], port=int(env["RDS_PORT"]),
                               user=env["RDS_USERNAME"], password=env["RDS_PASSWORD"],
                               database=self.name, autocommit=True)

    def create(self):
        if self.kind == "sqlite":
            return self
        env = services_env()
        self.name = f"{env['RDS_DB_NAME']}_{secrets.token_hex(4)}"
        with contextlib.closing(self._admin(env)) as conn:
            conn.cursor().execute(f"CREATE DATABASE `{self.name}` CHARACTER SET utf8mb4")
        self.env = {k: env[k] for k in ("RDS_HOSTNAME", "RDS_PORT", "RDS_USERNAME", "RDS_PASSWORD")}
        self.env["RDS_DB_NAME"] = self.name
        return self

    def _admin(self, env):
        import MySQLdb

        try:
            return MySQLdb.connect(host=env["RDS_HOSTNAME"], port=int(env["RDS_PORT"]),
                                   user=env["RDS_USERNAME"], password=env["RDS_PASSWORD"])
        except MySQLdb.OperationalError as exc:
            raise HarnessError(f"MariaDB is not reachable ({exc.args[-1]}): run `make services`") from None

    def drop(self):
        if self.name:
            with contextlib.closing(self._admin(services_env())) as conn:
                conn.cursor().execute(f"DROP DATABASE IF EXISTS `{self.name}`")
            self.name = None


class Server:
    """One gunicorn serving the copied app."""

    def __init__(self, workdir, env, workers, threads, log, nice=None):
        self.workdir, self.env, self.log = workdir, env, log
        self.workers, self.threads = workers, threads
        self.nice = nice or Niceness()  # boot at this niceness, then serve at 0 where allowed
        # Chosen by the kernel at the first bind, read from /proc, kept for restarts: a
        # port found free beforehand can be taken by anything before gunicorn binds it, and then
        # the readiness probe reaches the wrong app (it happened, under two busy workers).
        self.port = None
        self.proc = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout=30.0):
        # No control socket: gunicorn 25+ opens one at a single path per user, which every app
        # booted here would share.
        argv = ["gunicorn", "--bind", f"127.0.0.1:{self.port or 0}",
                f"--workers={self.workers}", f"--threads={self.threads}", "--timeout", "60",
                "--graceful-timeout", "3", "--no-control-socket", "application:application"]
        with open(self.log, "ab") as out:
            self.log_start = out.tell()  # what this start prints comes after this
        self.proc = forked(GUNICORN, argv, self.workdir, self.env, self.log, self.nice, "gunicorn")
        self._wait_ready(timeout)
        if self.nice.value and renice([self.proc.pid, *processes.children(self.proc.pid)]):
            self.nice = Niceness()  # a restart of this server starts at 0
        return self

    def _wait_ready(self, timeout):
        import requests

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BootError(f"the app exited while starting: {log_tail(self.log)}", "crashed",
                                output=read_from(self.log, self.log_start), folder=self.workdir)
            if self.port is None:
                bound = processes.listening_ports(self.proc.pid)
                if not bound:
                    time.sleep(0.05)
                    continue
                self.port = bound[0]
            try:
                # Any answer means a worker has imported the app; this path touches no cache.
                requests.get(self.url + "/__harness_ready__", timeout=2)
                return
            except requests.RequestException:
                time.sleep(0.05)
        self.stop()
        raise BootError(f"the app did not answer within {timeout:.0f}s: {log_tail(self.log)}", "hung",
                        output=read_from(self.log, self.log_start), folder=self.workdir)

    def stop(self):
        """Kill gunicorn and its workers: nothing in them is worth a clean exit, and even its
        quick shutdown costs half a second per app."""
        if self.proc is not None:
            processes.stop(self.proc, signal.SIGKILL, family=True)
        self.proc = None


def read_from(path, offset):
    """The text of PATH from byte OFFSET on ("" when there is none)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def database_files(folder):
    """The SQLite database files under FOLDER."""
    return [p for pattern in ("*.sqlite", "*.sqlite3", "*.db") for p in Path(folder).rglob(pattern)]


def log_tail(path, lines=12):
    try:
        return log_tail_text(Path(path).read_text(errors="replace"), lines)
    except OSError:
        return "(no log)"


def log_tail_text(text, lines=12):
    return "\n".join(text.strip().splitlines()[-lines:]) or "(empty log)"


class App:
    """A running app: its URL, its memcached, its database and a way to read counters."""

    def __init__(self, workdir, env, cache, database, workers, threads, nice=0):
        self.workdir = Path(workdir)
        self.env = env
        self.memcached = cache
        self.database = database
        self.nice = nice if isinstance(nice, Niceness) else Niceness(nice)
        self.log = self.workdir.parent / "app.log"
        self.servers = [Server(self.workdir, env, workers, threads, self.log, self.nice)]

    @property
    def url(self):
        return self.servers[0].url

    def visitor(self):
        """A fresh visitor with its own cookies, who submits forms the way a browser does."""
        from runtime.visitor import Visitor

        return Visitor(self.url)

    def counters(self):
        if self.memcached is None:
            raise HarnessError("this app runs without memcached, so there are no counters")
        return self.memcached.counters()

    def spawn(self, env=None):
        """Start one more app process sharing the same database and memcached (ENV: overrides)."""
        server = Server(self.workdir, dict(self.env, **(env or {})), self.servers[0].workers,
                        self.servers[0].threads, self.log).start()
        self.servers.append(server)
        return server

    def restart(self):
        for server in self.servers:
            server.stop()
            server.start()

    def flask(self, *args, timeout=120):
        """Run `flask --app application ARGS` in the copy, with the app's environment."""
        result = subprocess.run([sys.executable, "-m", "flask", "--app", "application", *args],
                                cwd=self.workdir, env=self.env, capture_output=True, text=True,
                                timeout=timeout)
        if result.returncode != 0:
            out = (result.stderr or result.stdout).strip().splitlines()[-6:]
            raise HarnessError(f"flask {' '.join(args)} failed: " + " | ".join(out))
        return result.stdout

    def import_and_migrate(self, import_timeout, migrate_timeout, migrate=True):
        """Import the app within IMPORT_TIMEOUT seconds, then run `flask db upgrade` (when
        MIGRATE) within MIGRATE_TIMEOUT more. Raises BootError with the phase that failed."""
        limit = import_timeout + migrate_timeout
        argv = ["-c", str(import_timeout), "migrate" if migrate else "import", IMPORTED]
        out = self.workdir.parent / "boot.out"
        out.write_bytes(b"")
        proc = forked(IMPORT_THEN_MIGRATE, argv, self.workdir, self.env, out, self.nice, "migrate")
        try:
            proc.wait(limit)
        except BaseException as exc:  # a timeout, or Ctrl-C: nothing of the boot may outlive it
            processes.stop(proc, signal.SIGKILL, family=True)
            if not isinstance(exc, subprocess.TimeoutExpired):
                raise
            raise BootError(f"the migration did not finish within {migrate_timeout:.0f} s", "hung",
                            "migrate", read_from(out, 0), self.workdir) from None
        output = read_from(out, 0)
        with open(self.log, "a", encoding="utf-8") as log:
            log.write(output.replace(IMPORTED + "\n", ""))
        if proc.returncode == 0:
            return
        imported = IMPORTED in output
        if not imported and WATCHDOG.search(output):
            raise BootError(f"hung at import: no answer in {import_timeout:.0f} s", "hung", "import",
                            output, self.workdir)
        phase = "migrate" if imported else "import"
        what = "flask db upgrade failed" if imported else "importing the app failed"
        raise BootError(f"{what}: {log_tail_text(output, 6)}", "crashed", phase, output, self.workdir)

    def log_text(self):
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self):
        for server in self.servers:
            server.stop()


def inherited():
    """This process's environment minus what the harness decides, for an app run here."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(OWNED_PREFIXES)}
    env.update(PYTHONDONTWRITEBYTECODE="1", PYTHONUNBUFFERED="1")
    return env


def app_environment(base, *, database, servers=None, username=None, password=None,
                    secret_key=None, extra=None):
    """The one builder of an app's environment, as Elastic Beanstalk gives it: BASE, then RDS_*
    (DATABASE), MEMCACHIER_* (SERVERS, comma-separated; USERNAME for SASL), SECRET_KEY, EXTRA."""
    env = dict(base)
    env.update(database)
    env["SECRET_KEY"] = secret_key or "harness-" + secrets.token_hex(16)
    if servers:
        env["MEMCACHIER_SERVERS"] = servers
    if username:
        env["MEMCACHIER_USERNAME"], env["MEMCACHIER_PASSWORD"] = username, password
        # Debian only: stands in for cyrus-sasl-plain in /usr/lib64/sasl2 on Amazon Linux 2023.
        env["SASL_PATH"] = services.sasl_plugin_dir()
    env.update({k: str(v) for k, v in (extra or {}).items()})
    return env


@contextlib.contextmanager
def run_app(app_dir, *, database="sqlite", cache="sasl", env=None, workers=EB_WORKERS,
            threads=EB_THREADS, migrate=True, boot_timeout=30.0, migrate_timeout=300.0, nice=0):
    """Copy APP_DIR, give it its own memcached and empty database, migrate, serve, tear down.

    database: "sqlite" or "mariadb". cache: "sasl", "plain" or None (no MEMCACHIER_* at all).
    The app must import and then answer within BOOT_TIMEOUT seconds each; the migration, which
    runs once the import succeeded, gets MIGRATE_TIMEOUT.
    """
    app_dir = Path(app_dir)
    if not (app_dir / "application.py").is_file():
        raise HarnessError(f"{app_dir} has no application.py")
    if cache not in ("sasl", "plain", None):
        raise HarnessError(f"unknown cache {cache!r}: use 'sasl', 'plain' or None")
    tmp = Path(tempfile.mkdtemp(prefix="workshop-app-"))
    server = db = app = None
    try:
        workdir = tmp / "app"
        shutil.copytree(app_dir, workdir, ignore=COPY_IGNORE)
        if cache is not None:
            server = CacheServer(sasl=cache == "sasl").start()
        db = Database(database).create()
        app_env = app_environment(inherited(), database=db.env, extra=env,
                                  servers=server.address if server else None,
                                  username=server.username if server else None,
                                  password=server.password if server else None)
        app = App(workdir, app_env, server, db, workers, threads, nice)
        app.import_and_migrate(boot_timeout, migrate_timeout,
                               migrate=migrate and (workdir / "migrations").is_dir())
        app.servers[0].start(boot_timeout)
        yield app
    finally:
        if app is not None:
            app.stop()
        if server is not None:
            server.stop()
        if db is not None:
            db.drop()
        shutil.rmtree(tmp, ignore_errors=True)
