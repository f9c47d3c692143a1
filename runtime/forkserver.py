"""Start an app's processes by forking one that has imported their libraries already.

Why: every boot used to import Flask, SQLAlchemy, Alembic and pylibmc twice (once to import and
migrate, once in gunicorn's worker): about 1.2 of a boot's 1.45 CPU seconds, and the test suite
boots some 280 apps. One fork server per harness process (`python -m runtime.forkserver`)
imports them once, then forks a child for each command, which runs as `python -c CODE` would, in
the app's folder, with the app's environment. The app's own modules are never imported before the
fork, so each child imports the learner's code afresh, as a new interpreter would.

    proc = spawn(CODE, argv, cwd=..., env=..., out=path, nice=0, name="gunicorn")   # a Forked

A child's command line in `ps` is the fork server's; its name (`ps -o comm`) is NAME.
"""
import contextlib
import ctypes
import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback

from runtime import ROOT, processes

# Imported once, before any fork: the libraries the workshop's apps use. A name that does not
# import is skipped; an app that needs it imports it (and fails) in its own child. Not gunicorn:
# its settings' defaults are read at its import (the folder, PORT, WEB_CONCURRENCY), so each
# server imports it afresh, in its own folder (0.05 CPU seconds).
PRELOAD = ("flask", "flask.cli", "jinja2", "werkzeug", "sqlalchemy", "flask_sqlalchemy",
           "sqlalchemy.dialects.sqlite", "sqlalchemy.dialects.mysql", "MySQLdb", "flask_migrate",
           "alembic.command", "alembic.config", "alembic.runtime.migration", "alembic.autogenerate",
           "alembic.operations", "flask_caching", "flask_caching.backends.memcache",
           "flask_session", "pylibmc", "msgspec", "dotenv")
PR_SET_NAME = 15


class Forked:
    """A child of the fork server, with the part of Popen's interface the harness uses."""

    def __init__(self, server, pid):
        self.server, self.pid, self.returncode = server, pid, None

    def poll(self):
        if self.returncode is None and not processes.alive(self.pid):  # gone, or a zombie
            self.returncode = self.server.status(self.pid)
        return self.returncode

    def wait(self, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout)
            time.sleep(0.02)
        return self.returncode


class Server:
    """The fork server, seen from the harness: one per process, started on first use."""

    def __init__(self, env):
        # Not at the top: imported there, pylibmc's SASL login failed in a pytest process that
        # imported the harness (cause not found; the tests show it).
        from runtime import services

        env = dict(env)
        with contextlib.suppress(services.ServiceError):  # pylibmc reads it once, at its import
            env["SASL_PATH"] = services.sasl_plugin_dir()
        ours, theirs = socket.socketpair()
        self.proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "runtime.forkserver", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),), env=env, cwd=ROOT, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL)  # stderr kept: if it fails, say why
        theirs.close()
        self.sock, self.reader = ours, ours.makefile("rb")
        self.lock = threading.Lock()
        self.owner = os.getpid()

    def ask(self, request):
        with self.lock:
            try:
                self.sock.sendall(json.dumps(request).encode() + b"\n")
                line = self.reader.readline()
            except BaseException:  # interrupted half way: the next answer would be this one's
                self.close()
                raise
        if not line:
            self.close()
            raise OSError("the fork server exited")
        return json.loads(line)

    def spawn(self, code, argv, *, cwd, env, out, nice, name):
        pid = self.ask({"op": "spawn", "code": code, "argv": argv, "cwd": str(cwd), "env": env,
                        "out": str(out), "nice": nice, "name": name})
        return Forked(self, pid)

    def status(self, pid):
        """PID's exit status once it exited, else None."""
        if self.sock is not None:
            with contextlib.suppress(OSError):
                return self.ask({"op": "status", "pid": pid})
        return None if processes.alive(pid) else -signal.SIGKILL  # the server is gone, so is that

    def usable(self):
        return self.sock is not None and self.owner == os.getpid() and self.proc.poll() is None

    def close(self):
        if self.sock is not None:
            self.sock.close()  # the server exits when it reads the end
        self.sock = None


_server = None
_lock = threading.Lock()


def spawn(code, argv, *, cwd, env, out, nice=0, name="python", base_env=None):
    """Run CODE as `python -c CODE` with ARGV would, in CWD with ENV, its output appended to OUT,
    at niceness NICE, named NAME. BASE_ENV: the fork server's environment, if it must start."""
    global _server
    with _lock:
        if _server is None or not _server.usable():
            _server = Server(base_env or env)
        server = _server
    return server.spawn(code, argv, cwd=cwd, env=env, out=out, nice=nice, name=name)


def pids():
    """The fork server's pid in this process, if one runs: not an app, whatever it forks."""
    server = _server
    return [server.proc.pid] if server is not None and server.owner == os.getpid() else []


# ---- the fork server itself ---------------------------------------------------------------------

def serve(sock):
    """Answer the harness's requests on SOCK until it closes it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the harness's to handle
    statuses = {}
    for line in sock.makefile("rb"):
        request = json.loads(line)
        while True:  # reap: an exit status waits here until it is asked for
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if not pid:
                break
            statuses[pid] = os.waitstatus_to_exitcode(status)
        if request["op"] == "spawn":
            answer = os.fork()
            if answer == 0:
                run(sock, request)
        else:
            answer = statuses.pop(request["pid"], None)
        sock.sendall(json.dumps(answer).encode() + b"\n")


def run(sock, request):
    """In the child: become REQUEST's command, then exit with its status."""
    code = 1
    try:
        sock.close()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        out = os.open(request["out"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.closerange(3, 1 << 16)
        ctypes.CDLL(None).prctl(PR_SET_NAME, request["name"].encode()[:15], 0, 0, 0)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        if request["nice"]:
            os.nice(request["nice"])
        sys.argv = request["argv"]
        sys.path.insert(0, "")  # as `python -c` has it
        try:
            exec(compile(request["code"], "<string>", "exec"), {"__name__": "__main__"})
            code = 0
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def main():
    sock = socket.socket(fileno=int(sys.argv[1]))
    os.chdir("/")
    sys.path[:] = [p for p in sys.path if p and os.path.abspath(p) != str(ROOT)]
    for name in PRELOAD:
        with contextlib.suppress(Exception):  # the app that needs it fails in its own child
            importlib.import_module(name)
    serve(sock)


if __name__ == "__main__":
    main()
