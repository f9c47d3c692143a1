"""`python -m instruments.dashboard`: the MemCachier analytics view, on the learner's own machine.

Serves one page at http://127.0.0.1:5050 (or the port chosen once with `make dashboard PORT=...`)
that shows memcached's counters (one column per server, plus a total), refreshed every second,
with a hits/misses chart and a "since you clicked Mark" strip. It reads MEMCACHIER_* like the apps
do, so by default it watches the app's memcached. It never writes to the app; its only writes to
memcached are the Reset and Flush buttons.
Standard library only (counters come from runtime.memcached).
"""
import argparse
import errno
import json
import os
import sys
import threading
import time
from collections import deque
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from runtime import UsageError, memcached, services

PAGE = Path(__file__).resolve().parent / "dashboard_assets" / "page.html"
SAMPLE_SECONDS = 1.0
FRESH_SECONDS = 0.25
HISTORY = 180  # samples on the chart: three minutes at one a second

# Counters memcached only ever adds to; Mark and Reset measure them from a baseline.
COUNTERS = ("get_hits", "get_misses", "cmd_set", "delete_hits", "delete_misses", "evictions")
# Levels: what memcached holds right now; a baseline means nothing for them.
LEVELS = ("curr_items", "bytes", "curr_connections")
# What the page shows, in order: (key, label, kind). Kinds tell the page how to format a value.
ROWS = (
    ("get_hits", "Get hits", "count"),
    ("get_misses", "Get misses", "count"),
    ("hit_ratio", "Hit ratio", "ratio"),
    ("cmd_set", "Sets", "count"),
    ("delete_hits", "Deletes", "count"),
    ("delete_misses", "Delete misses", "count"),
    ("curr_items", "Items", "count"),
    ("bytes", "Bytes", "bytes"),
    ("evictions", "Evictions", "count"),
    ("curr_connections", "Connections", "count"),
)
# How the delta strip names each counter: (singular, plural).
DELTA_WORDS = {
    "get_hits": ("hit", "hits"),
    "get_misses": ("miss", "misses"),
    "cmd_set": ("set", "sets"),
    "delete_hits": ("delete", "deletes"),
    "delete_misses": ("delete miss", "delete misses"),
    "evictions": ("eviction", "evictions"),
}


class DashboardError(Exception):
    """The dashboard cannot start (exit 1); the message is one line for stderr."""


# ---- the pure part: raw stats in, the numbers the page shows out --------------------------------

def numbers(raw):
    """One server's raw `stats` ({name: text or int}) as the integers the dashboard uses."""
    values = {}
    for key in COUNTERS + LEVELS + ("pid",):
        try:
            values[key] = int(raw.get(key, 0))
        except (TypeError, ValueError):
            values[key] = 0
    return values


def since(now, base):
    """Counters of one server counted from BASE (a `numbers` dict, or None for "since it started").

    A base from another memcached process (a restart), or one above today's counters (someone
    sent `stats reset`), no longer applies, so the count starts from zero again.
    """
    if not base or base["pid"] != now["pid"] or any(now[k] < base[k] for k in COUNTERS):
        return {k: now[k] for k in COUNTERS}
    return {k: now[k] - base[k] for k in COUNTERS}


def hit_ratio(hits, misses):
    return hits / (hits + misses) if hits + misses else None


def describe(delta):
    """The delta strip's words: {"get_hits": 1, "cmd_set": 0, ...} -> "+1 hit"."""
    parts = []
    for key, (one, many) in DELTA_WORDS.items():
        count = delta.get(key, 0)
        if count:
            parts.append(f"{count:+d} {one if abs(count) == 1 else many}")
    return ", ".join(parts) or "no change"


def summarise(samples, zeros=None, marks=None):
    """Everything the page shows, from one round of samples.

    samples: {address: raw stats dict, or an error message for a server that did not answer}.
    zeros: {address: numbers} where the dashboard reset its own baseline (stats reset refused).
    marks: {address: numbers} taken when Mark was last clicked.
    Returns {"columns": [...one per server, then "Total"...], "delta": {...}, "text": "+1 hit",
    "errors": [messages]}.
    """
    zeros, marks = zeros or {}, marks or {}
    columns, errors = [], []
    total = dict.fromkeys(COUNTERS + LEVELS, 0)
    delta = dict.fromkeys(COUNTERS, 0)
    for address, raw in samples.items():
        if not isinstance(raw, dict):
            errors.append(raw)
            columns.append({"name": address, "up": False, "values": None})
            continue
        now = numbers(raw)
        values = since(now, zeros.get(address))
        values.update({k: now[k] for k in LEVELS})
        values["hit_ratio"] = hit_ratio(values["get_hits"], values["get_misses"])
        columns.append({"name": address, "up": True, "values": values})
        for key in COUNTERS + LEVELS:
            total[key] += values[key]
        for key, count in since(now, marks.get(address)).items():
            delta[key] += count
    total["hit_ratio"] = hit_ratio(total["get_hits"], total["get_misses"])
    up = any(column["up"] for column in columns)
    columns.append({"name": "Total", "up": up, "values": total if up else None})
    text = describe(delta) if up else "unknown while memcached is unreachable"
    return {"columns": columns, "delta": delta, "text": text, "errors": errors}


def increments(before, after):
    """Hits and misses between two rounds of samples, summed over servers, for the chart."""
    hits = misses = 0
    for address, raw in after.items():
        if not isinstance(raw, dict):
            continue
        now = numbers(raw)
        old = numbers(before[address]) if isinstance(before.get(address), dict) else None
        step = since(now, old) if old else dict.fromkeys(COUNTERS, 0)
        hits += step["get_hits"]
        misses += step["get_misses"]
    return hits, misses


# ---- the live part: sampling memcached, and the buttons -----------------------------------------

def problem(address, exc):
    """What the page says about a server that did not answer."""
    text = str(exc)
    prefix = f"cannot reach memcached at {address}: "
    if text.startswith(prefix):
        return f"memcached at {address} is unreachable — retrying ({text[len(prefix):]})"
    if text.startswith("lost memcached") or "closed the connection" in text:
        return f"memcached at {address} is unreachable — retrying (it dropped the connection)"
    if "SASL" in text:
        return (f"{text} — check MEMCACHIER_USERNAME and MEMCACHIER_PASSWORD "
                "(for a plain memcached use --plain) — retrying")
    return f"{text} — retrying"


class Monitor:
    """Samples every server once a second and keeps the baselines behind Mark and Reset."""

    def __init__(self, servers, username=None, password=None):
        self.servers = servers
        self.username = username or None
        self._password = password or None
        self.lock = threading.Lock()
        self.samples = self.ticked = {}
        self.zeros, self.marks = {}, {}
        self.history = deque(maxlen=HISTORY)
        # The strip counts from each server's first answer, not from memcached's own start.
        self.baseline = "the dashboard started"
        self.marked_at = time.time()
        self.late = {}  # address -> when a server that was unreachable at first gave its baseline
        self.notice = ""
        self.sampled_at = None

    def _read(self, address):
        try:
            return memcached.stats(address, self.username, self._password)
        except memcached.MemcachedError as exc:
            return problem(address, exc)
        except Exception as exc:  # never let one bad answer stop the dashboard
            return problem(address, f"memcached at {address} gave an answer the dashboard "
                                    f"cannot read ({type(exc).__name__}: {exc})")

    def sample(self):
        """Read every server now; the caller holds the lock."""
        first = self.sampled_at is None
        self.samples = {address: self._read(address) for address in self.servers}
        self.sampled_at = time.time()
        for address, now in self._current().items():
            if address not in self.marks:
                self.marks[address] = now
                if not first:
                    self.late[address] = self.sampled_at
        if first:
            self.marked_at = self.sampled_at
        return self.samples

    def _current(self):
        return {a: numbers(raw) for a, raw in self.samples.items() if isinstance(raw, dict)}

    def tick(self):
        """The once-a-second sample; the chart counts gets between ticks, so its steps are even."""
        with self.lock:
            before = self.ticked
            self.ticked = self.sample()
            if before:
                self.history.append((self.sampled_at, *increments(before, self.ticked)))

    def mark(self):
        with self.lock:
            self.sample()
            self.marks = self._current()
            self.baseline, self.marked_at = "you clicked Mark", time.time()
            self.late = {}
            return self._snapshot()

    def reset(self):
        """`stats reset` on every server; where that fails, zero the dashboard's own baseline."""
        with self.lock:
            self.sample()
            current = self._current()
            done, own, down = [], [], []
            for address in self.servers:
                if address not in current:
                    down.append(address)
                    continue
                try:
                    memcached.reset(address, self.username, self._password)
                    self.zeros.pop(address, None)
                    done.append(address)
                except (memcached.MemcachedError, OSError) as exc:
                    self.zeros[address] = current[address]
                    own.append(f"{address} ({exc})")
            self.sample()
            self.marks = self._current()
            self.baseline, self.marked_at = "you reset the counters", time.time()
            self.late = {}
            notes = []
            if done:
                notes.append("Counters zeroed with memcached's stats reset; the cached data is kept.")
            if own:
                notes.append("memcached refused stats reset at " + ", ".join(own)
                             + ", so the dashboard reset its own baseline instead.")
            if down:
                notes.append("Nothing was reset at " + ", ".join(down) + ": unreachable.")
            self.notice = " ".join(notes)
            log(f"reset: {self.notice}")
            return self._snapshot()

    def flush(self):
        with self.lock:
            failed = []
            for address in self.servers:
                try:
                    memcached.flush(address, self.username, self._password)
                except (memcached.MemcachedError, OSError) as exc:
                    failed.append(str(exc))
            self.notice = ("Flush failed: " + "; ".join(failed)) if failed else \
                "Flushed: every item is gone; the next reads will miss."
            log(f"flush: {self.notice}")
            self.sample()
            return self._snapshot()

    def snapshot(self):
        with self.lock:
            # Sampling on demand too, so the page is never more than one poll behind memcached.
            if self.sampled_at is None or time.time() - self.sampled_at > FRESH_SECONDS:
                self.sample()
            return self._snapshot()

    def _since(self):
        """The baseline in force, in words; a server that answered late counts from that answer."""
        now = time.time()
        late = [f"{a} since it first answered {round(now - t)} s ago" for a, t in self.late.items()]
        return self.baseline + (f" ({'; '.join(late)})" if late else "")

    def _snapshot(self):
        view = summarise(self.samples, self.zeros, self.marks)
        start = self.history[0][0] if self.history else self.sampled_at
        return {
            "servers": self.servers,
            "sasl": bool(self.username),
            "username": self.username,
            "rows": [{"key": k, "label": label, "kind": kind} for k, label, kind in ROWS],
            "columns": view["columns"] if len(self.servers) > 1 else view["columns"][:1],
            "errors": view["errors"],
            "delta": {"counts": view["delta"], "text": view["text"], "since": self._since(),
                      "seconds": round(time.time() - self.marked_at)},
            "notice": self.notice,
            "history": [[round(t - start, 1), h, m] for t, h, m in self.history],
            "window": HISTORY * SAMPLE_SECONDS,
        }


# ---- the web server ----------------------------------------------------------------------------

def log(message):
    print(f"dashboard: {message}", file=sys.stderr, flush=True)


class Handler(BaseHTTPRequestHandler):
    server_version = "workshop-dashboard"
    monitor = None  # set by serve()
    page = b""

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
        if self.path == "/":
            return self._send(HTTPStatus.OK, self.page, "text/html")
        if self.path == "/api/stats":
            return self._answer(self.monitor.snapshot)
        self._send(HTTPStatus.NOT_FOUND, {"error": "not found"})

    def do_POST(self):
        actions = {"/api/mark": self.monitor.mark, "/api/reset": self.monitor.reset,
                   "/api/flush": self.monitor.flush}
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


def serve(monitor, port):
    Handler.monitor = monitor
    Handler.page = PAGE.read_bytes()
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
    print(f"dashboard: watching memcached at {', '.join(monitor.servers)} ({who})\n"
          f"dashboard: open http://127.0.0.1:{server.server_address[1]} (Ctrl-C stops it)", flush=True)
    try:
        server.serve_forever(poll_interval=0.25)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        server.server_close()
    return 0


# ---- options -----------------------------------------------------------------------------------

class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{message} (see --help)")


def parse_args(args):
    parser = Parser(prog="python -m instruments.dashboard",
                    description="A live view of memcached's counters at http://127.0.0.1:5050. "
                                "Each setting comes from its option, else the environment, "
                                "else services.env.")
    parser.add_argument("--port", type=int, default=None,
                        help="port on 127.0.0.1 (default: the one chosen with make dashboard PORT=..., else 5050)")
    parser.add_argument("--servers", help="host:port[,host:port...] (MEMCACHIER_SERVERS)")
    parser.add_argument("--username", help="SASL user (MEMCACHIER_USERNAME)")
    parser.add_argument("--password", help="SASL password (MEMCACHIER_PASSWORD; prefer the variable)")
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


def main(argv):
    try:
        options = parse_args(argv[1:])
        servers, username, password = settings(options)
        return serve(Monitor(servers, username, password), options.port)
    except UsageError as exc:
        print(f"dashboard: {exc}", file=sys.stderr)
        return 2
    except DashboardError as exc:
        print(f"dashboard: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(["dashboard", *sys.argv[1:]]))
