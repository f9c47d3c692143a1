"""Load and what it costs, for instruments/bench.py: wrk's requests, and the CPU time the measured
gunicorn worker spent on them, servers measured in turns or at the same moment."""
import contextlib
import json
import os
import shutil
import statistics
import subprocess
from pathlib import Path

from runtime import processes

# wrk calls done() once at the end; this prints one JSON line that bench reads back.
WRK_REPORT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests": %d, "seconds": %.6f, "p50_us": %d, "p99_us": %d, ' ..
    '"non2xx": %d, "socket_errors": %d}\\n', summary.requests, summary.duration / 1e6,
    latency:percentile(50), latency:percentile(99), e.status, e.connect + e.read + e.write + e.timeout))
end
"""
TURN = 1  # seconds of load per turn in measure_turns()


class BenchError(Exception):
    """Something the benchmark needs is missing; the message says what to do."""


# Where things run, on a machine of two CPUs or more: the worker measured on a CPU of its own, and
# everything else the bench starts (wrk, memcached, the other apps) on the rest. Unpinned, the 15
# threads' GIL hand-offs across CPUs cost each request over twice the CPU time, and varied most.
CPUS = sorted(os.sched_getaffinity(0))
WORKER_CPUS = set(CPUS[-1:]) if len(CPUS) > 1 else None
LOAD_CPUS = set(CPUS[:-1]) if len(CPUS) > 1 else None


def pin(pid, cpus):
    """Keep every thread of PID (0: this process) on CPUS (None: leave it be)."""
    if cpus is None:
        return
    for tid in os.listdir(f"/proc/{pid}/task") if pid else [0]:
        with contextlib.suppress(OSError):  # a thread that just ended
            os.sched_setaffinity(int(tid), cpus)


@contextlib.contextmanager
def kept_off(pids):
    """PIDS, services the bench uses but did not start (MariaDB), kept off the measured CPU
    meanwhile and put back after: their threads would run there between the worker's."""
    before = {pid: os.sched_getaffinity(pid) for pid in pids if pid}
    for pid in before:
        pin(pid, LOAD_CPUS)
    try:
        yield
    finally:
        for pid, cpus in before.items():
            with contextlib.suppress(OSError):  # it stopped meanwhile
                pin(pid, cpus)


class Wrk:
    def __init__(self, threads, connections, workdir, warmup):
        self.path = shutil.which("wrk")
        if not self.path:
            raise BenchError("wrk is not installed: run `make setup` (Debian package wrk)")
        self.threads, self.connections, self.warmup = threads, connections, warmup
        self.script = Path(workdir) / "report.lua"
        self.script.write_text(WRK_REPORT)

    def run(self, url, seconds, headers=()):
        return self.result(self.start(url, seconds, headers), url, seconds)

    def start(self, url, seconds, headers=()):
        """wrk loading URL for SECONDS, started and not waited for: result() reads it."""
        cmd = [self.path, f"-t{self.threads}", f"-c{self.connections}", f"-d{seconds}s",
               "-s", str(self.script), *[arg for h in headers for arg in ("-H", h)], url]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def result(self, proc, url, seconds):
        try:
            out, err = proc.communicate(timeout=seconds + 60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise BenchError(f"wrk on {url} did not end {seconds + 60}s after it started")
        lines = [line for line in out.splitlines() if line.startswith("{")]
        if proc.returncode != 0 or not lines:
            raise BenchError(f"wrk failed on {url}: {(err or out).strip()[-200:]}")
        raw = json.loads(lines[-1])
        return {
            "rps": raw["requests"] / raw["seconds"],
            "p50_ms": raw["p50_us"] / 1000,
            "p99_ms": raw["p99_us"] / 1000,
            "requests": raw["requests"],
            "seconds": raw["seconds"],
            "errors": raw["non2xx"] + raw["socket_errors"],
        }


def measure_turns(wrk, runs, duration, start=0):
    """RUNS, each (label, server, headers), measured for DURATION seconds each in turns of TURN
    seconds after a warm-up each, the order reversed every turn: a swing of the machine's speed,
    which lasts seconds, hits each run alike. START, a round's number: an odd one begins reversed.
    For each label, over all its turns: req/s, the worker's CPU time per request, requests,
    errors, the medians of the turns' p50 and p99, and the server's URL."""
    for _, server, headers in runs:
        warm_up(wrk, server, duration, headers)
    turns = {label: [] for label, _, _ in runs}
    for n in range(start, start + max(1, duration // TURN)):
        for label, server, headers in in_order(runs, n):
            turns[label].append(measured(wrk, server, TURN, headers))
    totals = {}
    for label, server, _ in runs:
        rows = turns[label]
        requests = sum(r["requests"] for r in rows)
        totals[label] = {
            "rps": requests / sum(r["seconds"] for r in rows),
            "p50_ms": statistics.median(r["p50_ms"] for r in rows),
            "p99_ms": statistics.median(r["p99_ms"] for r in rows),
            "requests": requests,
            "seconds": sum(r["seconds"] for r in rows),
            "errors": sum(r["errors"] for r in rows),
            "cpu_us": sum(r["cpu_us"] * r["requests"] for r in rows) / max(1, requests),
            "turn_rps": [r["rps"] for r in rows],  # in order: turn k of each run came together
            "url": server.url,  # the server measured: which rows share a process
        }
    return totals


def measure_together(wrk, runs, seconds, start=0):
    """RUNS, each (label, server, headers), already warm, measured at the same moment for SECONDS,
    each by a wrk of its own, their workers sharing one CPU: a swing of the machine's speed, however
    short, hits each alike. START: an odd one starts them in reverse order. For each label: req/s,
    the worker's CPU time per request, requests and errors. The CPU time is each worker's own cost;
    the req/s also depends on how the kernel shared the CPU between them."""
    started, totals = [], {}
    with on_measured_cpu(*[server for _, server, _ in runs]) as pids:
        workers = dict(zip([label for label, _, _ in runs], pids))
        cpu = {label: processes.cpu_seconds(pid) for label, pid in workers.items()}
        try:
            for label, server, headers in in_order(runs, start):
                started.append((label, server, wrk.start(server.url + "/", seconds, headers)))
            for label, server, proc in started:
                result = wrk.result(proc, server.url + "/", seconds)
                totals[label] = {key: result[key] for key in ("rps", "requests", "errors")}
        finally:  # when one wrk failed, the others stop too
            for _, _, proc in started:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        for label, pid in workers.items():
            totals[label]["cpu_us"] = cpu_per_request(pid, cpu[label], totals[label]["requests"])
    return totals


def in_order(runs, n):
    """RUNS as given for an even N, reversed for an odd one."""
    return runs if n % 2 == 0 else runs[::-1]


def cpu_per_request(pid, since, requests):
    """The microseconds of CPU time PID spent per request since its CPU time was SINCE."""
    return (processes.cpu_seconds(pid) - since) / max(1, requests) * 1e6


@contextlib.contextmanager
def on_measured_cpu(*servers):
    """The pids of SERVERS' gunicorn workers (one each), on the measured CPU meanwhile, threads
    started since included, then back with everything else: an idle worker left there would wake
    up between the measured ones."""
    pids = []
    for server in servers:
        (pid,) = processes.children(server.proc.pid)
        pin(pid, WORKER_CPUS)
        pids.append(pid)
    try:
        yield pids
    finally:
        for pid in pids:
            pin(pid, LOAD_CPUS)


def warm_up(wrk, server, duration, headers):
    """Two seconds of load by default: after memcached restarts, each pooled client fails once
    and is replaced a second later."""
    with on_measured_cpu(server):
        wrk.run(server.url + "/", wrk.warmup or max(2, duration // 5), headers)


def measured(wrk, server, seconds, headers):
    with on_measured_cpu(server) as (pid,):
        started = processes.cpu_seconds(pid)
        result = wrk.run(server.url + "/", seconds, headers)
        result["cpu_us"] = cpu_per_request(pid, started, result["requests"])
    return result
