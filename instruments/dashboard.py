"""`python -m instruments.dashboard`: the MemCachier analytics view, and the learner's cockpit, on
the learner's own machine.

Serves one page at http://127.0.0.1:5050 (or the port chosen once with `make dashboard PORT=...`)
that shows memcached's counters (one column per server, plus a total), refreshed every second,
with a hits/misses chart and a "since you clicked Mark" strip (instruments/counters.py). It reads
MEMCACHIER_* like the apps do, so by default it watches the app's memcached. Beside them, the
learner's app (--app, default workspace/ as `make check` chooses it): each stage, the first one
that does not pass and why, from the checker's results file (instruments/cockpit.py). It never
writes to the app; its only writes to memcached are the Reset and Flush buttons.
Standard library only (counters come from runtime.memcached).
"""
import argparse
import errno
import json
import os
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from instruments.cockpit import Cockpit
from instruments.counters import SAMPLE_SECONDS, Monitor, log
from runtime import UsageError, checkruns, services

ASSETS = Path(__file__).resolve().parent / "dashboard_assets"
# What the server sends besides the API: path -> (file in ASSETS, content type).
FILES = {"/": ("page.html", "text/html"), "/dashboard.css": ("dashboard.css", "text/css"),
         "/common.js": ("common.js", "text/javascript"), "/counters.js": ("counters.js", "text/javascript"),
         "/cockpit.js": ("cockpit.js", "text/javascript")}
DEFAULT_APP = checkruns.ROOT / "workspace"


class DashboardError(Exception):
    """The dashboard cannot start (exit 1); the message is one line for stderr."""


# ---- the web server ----------------------------------------------------------------------------

class Handler(BaseHTTPRequestHandler):
    server_version = "workshop-dashboard"
    monitor = cockpit = None  # set by serve()
    files = {}  # path -> (body, content type)

    def log_message(self, format, *args):
        pass  # one line a second per open tab would drown the terminal

    def _host_ok(self):
        # Refuse other host names, so a web page cannot reach this through DNS rebinding.
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0]
        return host in ("127.0.0.1", "localhost")

    def _send(self, status, body, content_type="application/json"):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type + "; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if not self._host_ok():
            return self._send(HTTPStatus.FORBIDDEN, {"error": "use http://127.0.0.1"})
        if self.path in self.files:
            return self._send(HTTPStatus.OK, *self.files[self.path])
        if self.path == "/api/stats":
            return self._answer(self.monitor.snapshot)
        if self.path == "/api/app":
            return self._answer(self.cockpit.view)
        self._send(HTTPStatus.NOT_FOUND, {"error": "not found"})

    def do_POST(self):
        actions = {"/api/mark": self.monitor.mark, "/api/reset": self.monitor.reset,
                   "/api/flush": self.monitor.flush, "/api/check": self.cockpit.check_now}
        if not self._host_ok() or self.headers.get("X-Dashboard") != "1":
            # Only the page itself sends this header; a form on another site cannot.
            return self._send(HTTPStatus.FORBIDDEN, {"error": "use the dashboard page"})
        if self.path not in actions:
            return self._send(HTTPStatus.NOT_FOUND, {"error": "not found"})
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path == "/api/flush" and body != b'{"confirm":"flush"}':
            return self._send(HTTPStatus.BAD_REQUEST, {"error": "flush needs confirming"})
        self._answer(actions[self.path])

    def _answer(self, action):
        try:
            self._send(HTTPStatus.OK, action())
        except Exception as exc:  # the dashboard must keep serving whatever happens
            log(f"error: {type(exc).__name__}: {exc}")
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": str(exc)})


def sampler(monitor, stop):
    while not stop.wait(SAMPLE_SECONDS):
        try:
            monitor.tick()
        except Exception as exc:  # keep sampling; the page shows what went wrong
            log(f"sampling failed: {type(exc).__name__}: {exc}")


def serve(monitor, cockpit, port):
    Handler.monitor, Handler.cockpit = monitor, cockpit
    Handler.files = {path: ((ASSETS / name).read_bytes(), kind) for path, (name, kind) in FILES.items()}
    try:
        server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise DashboardError(f"port {port} is already in use (another dashboard?); pick one with --port") from None
        raise DashboardError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}") from None
    server.daemon_threads = True
    stop = threading.Event()
    threading.Thread(target=sampler, args=(monitor, stop), daemon=True).start()
    who = f"SASL user {monitor.username}" if monitor.username else "no SASL"
    print(f"dashboard: watching memcached at {', '.join(monitor.servers)} ({who}) "
          f"and the checker's verdicts on {cockpit.name}\n"
          f"dashboard: open http://127.0.0.1:{server.server_address[1]} (Ctrl-C stops it)", flush=True)
    try:
        server.serve_forever(poll_interval=0.25)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        server.server_close()
        cockpit.close()
    return 0


# ---- options -----------------------------------------------------------------------------------

class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{message} (see --help)")


def parse_args(args):
    parser = Parser(prog="python -m instruments.dashboard",
                    description="A live view of memcached's counters and of your app's stages "
                                "at http://127.0.0.1:5050. "
                                "Each setting comes from its option, else the environment, "
                                "else services.env.")
    parser.add_argument("--port", type=int, default=None,
                        help="port on 127.0.0.1 (default: the one chosen with make dashboard PORT=..., else 5050)")
    parser.add_argument("--servers", help="host:port[,host:port...] (MEMCACHIER_SERVERS)")
    parser.add_argument("--username", help="SASL user (MEMCACHIER_USERNAME)")
    parser.add_argument("--password", help="SASL password (MEMCACHIER_PASSWORD; prefer the variable)")
    parser.add_argument("--app", help="the app whose verdicts the page shows (default: workspace/)")
    parser.add_argument("--plain", action="store_true",
                        help="no SASL; without --servers, watch the plain memcached of services.env")
    return parser.parse_args(args)


def settings(options):
    """(servers, username, password): option, else environment, else services.env."""
    file_env = None

    def pick(option, name):
        nonlocal file_env
        if option is not None:
            return option
        if name in os.environ:
            return os.environ[name]
        if file_env is None:
            try:
                file_env = services.load_env()
            except services.ServiceError as exc:
                raise DashboardError(f"{exc} (or give --servers)") from None
        return file_env.get(name, "")

    if options.plain:
        servers = pick(options.servers, "MEMCACHED_PLAIN_SERVERS")
        username = password = None
    else:
        servers = pick(options.servers, "MEMCACHIER_SERVERS")
        username = pick(options.username, "MEMCACHIER_USERNAME") or None
        password = pick(options.password, "MEMCACHIER_PASSWORD") if username else None
    addresses = [s.strip() for s in servers.split(",") if s.strip()]
    if not addresses:
        raise UsageError("no memcached servers: give --servers host:port or run `make services`")
    for address in addresses:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageError(f"{address!r} is not host:port")
    if options.port is None:
        options.port = services.port("dashboard")
    if not 0 < options.port < 65536:
        raise UsageError(f"--port {options.port} is not a port number")
    return addresses, username, password


def app_folder(value):
    """The app named with --app (it must be a folder), else workspace/ (made later is fine too)."""
    if value is None:
        return DEFAULT_APP
    path = Path(value).expanduser()
    if not path.is_dir():
        raise UsageError(f"--app {value}: no such folder")
    return path


def main(argv):
    try:
        options = parse_args(argv[1:])
        servers, username, password = settings(options)
        return serve(Monitor(servers, username, password), Cockpit(app_folder(options.app)),
                     options.port)
    except UsageError as exc:
        print(f"dashboard: {exc}", file=sys.stderr)
        return 2
    except DashboardError as exc:
        print(f"dashboard: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(["dashboard", *sys.argv[1:]]))
