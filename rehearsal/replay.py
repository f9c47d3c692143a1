"""The platform's deployment, replayed on this machine in a temporary /var/app.

Unpack into /var/app/staging, build the venv and pip install, check every import, run the
container commands against a fresh MariaDB database, move staging to current, start the web
process on loopback, probe the health URL and add, list and delete a task with SASL memcached.
"""
import contextlib
import json
import os
import pwd
import re
import secrets
import shlex
import subprocess
import time
import zipfile
from pathlib import Path, PurePosixPath

import requests

from rehearsal.platform import STATIC_NAMESPACE, VENV_NAME
from rehearsal.readers import Finding, config_environment, config_value, static_mappings
from rehearsal.venv import (IMPORT_CHECK, ReplayError, fill_wheel_cache, find_python311, pip_error,
                            pip_install)
from runtime import harness, processes, services
from runtime.visitor import Visitor

# The user Elastic Beanstalk runs the web process as; container commands run as root.
PLATFORM_USER = "webapp"


class AppUser:
    """Who runs the web process here: a system user `webapp` when this machine allows it (root),
    as on the platform, else whoever runs the rehearsal (then ownership cannot be rehearsed).
    `runs_app` turns false when the app user cannot run the venv's Python (see `reaches`)."""

    def __init__(self):
        self.separate = self.runs_app = os.geteuid() == 0
        if self.separate:
            try:
                pwd.getpwnam(PLATFORM_USER)
            except KeyError:
                subprocess.run(["useradd", "--system", "--user-group", "--no-create-home",
                                "--shell", "/usr/sbin/nologin", PLATFORM_USER],
                               check=True, capture_output=True)
        entry = pwd.getpwnam(PLATFORM_USER) if self.separate else pwd.getpwuid(os.geteuid())
        self.name, self.uid, self.gid = entry.pw_name, entry.pw_uid, entry.pw_gid

    def popen_options(self):
        """Popen's arguments that run a process as this user (none when it is us already)."""
        return dict(user=self.uid, group=self.gid, extra_groups=[]) if self.runs_app else {}

    def reaches(self, python):
        """Can this user run PYTHON? A Python built under a private home cannot be."""
        if self.runs_app:
            self.runs_app = subprocess.run([str(python), "-c", ""], capture_output=True,
                                           **self.popen_options()).returncode == 0
        return self.runs_app

    def can_write(self, path):
        info = path.lstat()
        return info.st_uid == self.uid or bool(info.st_mode & 0o002)


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
        self.home = workdir / "home"
        self.user = None

    # The platform's paths and app user, mapped into this machine.
    def local_paths(self, text):
        text = text.replace("/var/app/", f"{self.var_app}/")
        return text if self.user.separate else re.sub(rf"\b{PLATFORM_USER}\b", self.user.name, text)

    def run(self):
        self.log_dir.mkdir(parents=True)
        self.user = AppUser()
        self.home.mkdir()
        os.chown(self.home, self.user.uid, self.user.gid)
        # The app user must reach /var/app through the temporary folder (mkdtemp makes it 0700).
        os.chmod(self.home.parent.parent, 0o711)
        os.chmod(self.home.parent, 0o711)
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
        self.database = harness.Database("mariadb").create()
        self.memcached = harness.CacheServer(sasl=True).start()
        self.out.step("database", f"fresh MariaDB database {self.database.name} "
                                  f"({self.database.env['RDS_HOSTNAME']}:{self.database.env['RDS_PORT']})")
        self.out.step("memcached", f"SASL memcached at {self.memcached.address}, user "
                                   f"{self.memcached.username}, as MemCachier gives you")

    def environment(self, *, venv_on_path):
        """What EB gives the app: environment properties (config + `eb setenv`) and RDS_*."""
        path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        base = {"PATH": f"{self.venv}/bin:{path}" if venv_on_path else path,
                "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8",
                **config_environment(self.configs)}
        return harness.app_environment(
            base, database=self.database.env, servers=self.memcached.address,
            username=self.memcached.username, password=self.memcached.password,
            secret_key=self.secret_key)

    def container_commands(self):
        commands = []
        for config in sorted(self.configs, key=lambda c: c.path):
            for name, spec in sorted((config.data.get("container_commands") or {}).items()):
                commands.append((config.path, str(name), spec))
        if not commands:
            self.out.step("commands", "no container_commands")
            return True
        base = self.environment(venv_on_path=False)
        created = {}  # what each command left in the staging folder
        for path, name, spec in commands:
            before = set(self.staging.rglob("*"))
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
            created[(path, name)] = set(self.staging.rglob("*")) - before
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
        self.check_ownership(created)
        return True

    def check_ownership(self, created):
        """Container commands run as root; whatever they leave must be writable for the app user.
        Python's __pycache__ is exempt: unwritable, it is only not refreshed."""
        if not self.user.separate:
            self.out.step("ownership", "not rehearsed: the app runs as the user that ran the "
                                       "container commands (root can run it as webapp)")
            return
        reported = []
        for (path, name), paths in created.items():
            for new in sorted(paths):
                if "__pycache__" in new.parts or any(r in new.parents for r in reported):
                    continue
                if new.exists() and not self.user.can_write(new):
                    reported.append(new)
                    rel = new.relative_to(self.staging).as_posix()
                    self.findings.append(Finding(
                        f"{path}: container_commands: {name}",
                        f"leaves {rel} owned by root, and the app runs as {PLATFORM_USER}, which "
                        f"cannot write there: end with `chown -R {PLATFORM_USER}:{PLATFORM_USER} "
                        f"{new.name}` in its folder"))
        self.out.step("ownership", f"{len(reported)} path(s) the commands left unwritable for "
                                   f"{self.user.name}" if reported else
                      f"everything the commands made is writable for {self.user.name}")

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
        python = self.venv / "bin" / "python"
        if self.user.separate and not self.user.reaches(python):
            self.out.step("user", f"{PLATFORM_USER} cannot run this machine's Python 3.11 "
                                  f"({os.path.realpath(python)}), so the app runs as root here")
        port = services.free_port()
        env = self.environment(venv_on_path=True)
        env.update(PORT=str(port), HOME=str(self.home))
        command = self.server_command(port)
        self.url = f"http://127.0.0.1:{port}"
        self.server_log = self.log_dir / "web.stdout.log"
        started = time.monotonic()
        with open(self.server_log, "wb") as sink:
            # Its own session: the whole process group can be stopped at teardown.
            self.server = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=self.current,
                                           env=env, stdout=sink, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL, start_new_session=True,
                                           **self.user.popen_options())
        who = self.user.name if self.user.runs_app else pwd.getpwuid(os.geteuid()).pw_name
        self.out.step("web", f"{command}  (in /var/app/current, as {who})")

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
            processes.stop(self.server, group=True)
            steps.append("server stopped")
        if self.memcached is not None:
            self.memcached.stop()
            steps.append("memcached stopped")
        if self.database is not None:
            self.database.drop()
            steps.append("database dropped")
        if steps:
            self.out.step("teardown", ", ".join(steps) + ", temporary /var/app removed")


def log_tail(path):
    return harness.log_tail(path, lines=40)


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
