"""Load and what it costs, for instruments/bench.py: wrk's requests, and the CPU time the measured
gunicorn worker spent on them, servers measured in turns."""
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


class Wrk:
    def __init__(self, threads, connections, workdir, warmup):
        self.path = shutil.which("wrk")
        if not self.path:
            raise BenchError("wrk is not installed: run `make setup` (Debian package wrk)")
        self.threads, self.connections, self.warmup = threads, connections, warmup
        self.script = Path(workdir) / "report.lua"
        self.script.write_text(WRK_REPORT)

    def run(self, url, seconds, headers=()):
        cmd = [self.path, f"-t{self.threads}", f"-c{self.connections}", f"-d{seconds}s",
               "-s", str(self.script), *[arg for h in headers for arg in ("-H", h)], url]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
        lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
        if result.returncode != 0 or not lines:
            raise BenchError(f"wrk failed on {url}: {(result.stderr or result.stdout).strip()[-200:]}")
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
    errors, and the medians of the turns' p50 and p99."""
    for _, server, headers in runs:
        warm_up(wrk, server, duration, headers)
    turns = {label: [] for label, _, _ in runs}
    for n in range(start, start + max(1, duration // TURN)):
        for label, server, headers in runs if n % 2 == 0 else runs[::-1]:
            turns[label].append(measured(wrk, server, TURN, headers))
    totals = {}
    for label, rows in turns.items():
        requests = sum(r["requests"] for r in rows)
        totals[label] = {
            "rps": requests / sum(r["seconds"] for r in rows),
            "p50_ms": statistics.median(r["p50_ms"] for r in rows),
            "p99_ms": statistics.median(r["p99_ms"] for r in rows),
            "requests": requests,
            "seconds": sum(r["seconds"] for r in rows),
            "errors": sum(r["errors"] for r in rows),
            "cpu_us": sum(r["cpu_us"] * r["requests"] for r in rows) / max(1, requests),
        }
    return totals


def warm_up(wrk, server, duration, headers):
    """Two seconds of load by default: after memcached restarts, each pooled client fails once
    and is replaced a second later."""
    (worker,) = processes.children(server.proc.pid)  # gunicorn's one worker
    pin(worker, WORKER_CPUS)
    wrk.run(server.url + "/", wrk.warmup or max(2, duration // 5), headers)


def measured(wrk, server, seconds, headers):
    (worker,) = processes.children(server.proc.pid)
    pin(worker, WORKER_CPUS)  # its threads started since the warm-up too
    started = processes.cpu_seconds(worker)
    result = wrk.run(server.url + "/", seconds, headers)
    result["cpu_us"] = (processes.cpu_seconds(worker) - started) / max(1, result["requests"]) * 1e6
    return result
