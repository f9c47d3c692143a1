"""`make bench` in miniature: the table, the JSON and the plot come out. Nothing about speed."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import ROOT

SIZES = (20,)  # one size: the table's shape, not how it scales
CONFIGS = ("ceiling", "limit: one pooled get", "bare WSGI: static bytes",
           "bare WSGI: one pooled get", "bare WSGI: one pooled get, with the cookie",
           "caching off", "query cache only", "full caching",
           "full caching, returning", "memcached stopped")
TUTORIAL = ("ceiling, its page", "steps/09 (tutorial)")  # at the smallest size only


def bench(*args):
    return subprocess.run([sys.executable, "-m", "instruments.bench", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def test_bench_prints_the_table_and_writes_json_and_a_plot(tmp_path, services_env):
    result = bench("--sizes", ",".join(map(str, SIZES)), "--duration", "1", "--rounds", "1",
                   "--warmup", "1", "--writes", "2",
                   "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "x ceiling" in result.stdout and "first read after a write" in result.stdout
    assert "[1/10] 20 tasks: inserting tasks" in result.stderr  # progress, as it runs
    # The first read after a write is timed before any round restarts memcached.
    assert "[2/10] 20 tasks: first read after a write, 2 times" in result.stderr
    assert "the measured worker runs on CPU " in result.stderr or len(os.sched_getaffinity(0)) == 1
    report = json.loads((tmp_path / "bench.json").read_text())
    measured = {(r["size"], r["config"]) for r in report["results"]}
    assert measured == ({(size, config) for size in SIZES for config in CONFIGS}
                        | {(SIZES[0], config) for config in TUTORIAL})
    assert all(r["page_bytes"] > 0 for r in report["results"])
    assert all(r["requests"] > 0 and r["errors"] == 0 for r in report["results"])
    assert all(r["cpu_us"] > 0 for r in report["results"])  # the worker's CPU per request
    assert [f["size"] for f in report["first_read_after_write"]] == list(SIZES)
    # The warm page's visitors and their bare gets are also measured two at once, every round.
    together = {r["config"]: r["round_together_cpu_us"] for r in report["results"]
                if r["round_together_cpu_us"]}
    assert set(together) == {CONFIGS[3], CONFIGS[4], CONFIGS[7], CONFIGS[8]}
    assert all(len(cpu) == 1 and cpu[0] > 0 for cpu in together.values())
    # Each visitor shares its server with its pair's other visitor, and the outage has a server
    # of its own: a worker that just built pages without memcached costs more on warm pages after.
    url = {r["config"]: r["url"] for r in report["results"] if r["config"] in CONFIGS}
    assert url[CONFIGS[7]] == url[CONFIGS[8]] and url[CONFIGS[3]] == url[CONFIGS[4]]
    assert len({url[c] for c in CONFIGS}) == len(CONFIGS) - 2
    # Every target is printed with its measured figure, met or not.
    for target in report["targets"]:
        assert target["target"] in result.stdout and target["measured"] in result.stdout
    # Five per size, the tutorial's and the first read's; p50's growth needs a second size.
    assert len(report["targets"]) == 5 * len(SIZES) + 2 + (len(SIZES) > 1)
    assert (tmp_path / "bench.png").read_bytes().startswith(b"\x89PNG")


def test_bench_refuses_bad_options_in_one_line():
    for args in (["--sizes", "ten"], ["--duration", "0"], ["--warmup", "-1"], ["--nope"]):
        result = bench(*args)
        assert result.returncode == 2
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_bench_only_warm_prints_each_rounds_ratios_and_their_median():
    result = bench("--only", "warm", "--sizes", "20", "--duration", "1", "--rounds", "2",
                   "--warmup", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines[:3]] == [
        "20 tasks, round 1", "20 tasks, round 2", "20 tasks, median of 2"]
    assert "full caching, returning" in lines[2] and "x CPU of bare WSGI: one pooled get" in lines[2]
    assert lines[3].startswith("load average ")


def test_p50_growth_is_judged_against_the_bare_get_measured_beside_it():
    """The two sizes are measured minutes apart: a machine that slowed down in between moves both
    p50s, and final/'s own growth is what is left."""
    from instruments.benchreport import BARE_GET, SHOWN, TUTORIAL, targets

    def results(full_p50_large, bare_p50_large):
        rows = []
        for size, full_p50, bare_p50 in ((100, 2.0, 2.0), (100_000, full_p50_large, bare_p50_large)):
            for config in SHOWN + [TUTORIAL]:
                p50 = {"full caching": full_p50, BARE_GET: bare_p50}.get(config, 2.0)
                rows.append({"size": size, "config": config, "page_bytes": 12_000, "ratio": 1.0,
                             "rps": 4000.0, "cpu_us": 250.0, "round_p50_ms": [p50] * 3,
                             "p50_ms": p50, "turn_rps": [4000.0] * 3, "round_cpu_us": [250.0] * 3,
                             "round_together_cpu_us": [250.0] * 3})
        return rows

    def growth(rows):
        checks = targets(rows, [{"size": 100_000, "p50_ms": 5.0}], [100, 100_000])
        [check] = [c for c in checks if "p50 at" in c["target"]]
        return check

    slowed = growth(results(3.0, 3.0))  # both 1.5x slower at 100,000: the machine
    assert slowed["met"] and slowed["measured"].startswith("1.00x")
    assert "1.50x as measured" in slowed["measured"]
    grew = growth(results(3.0, 2.0))  # final/ alone 1.5x slower: the app
    assert not grew["met"] and grew["measured"].startswith("1.50x")


def test_measure_turns_takes_each_run_one_second_at_a_time_reversed_every_turn():
    """What is compared is measured in turns, so a swing of the machine's speed hits both sides.
    wrk only records here what it is asked (the real one runs in the tests above); the worker is a
    real process, as measure_turns reads its CPU time."""
    from instruments import load

    class Recording(load.Wrk):
        def __init__(self):
            self.warmup, self.calls = 1, []

        def run(self, url, seconds, headers=()):
            self.calls.append((url, seconds, headers))
            n = len(self.calls)
            return {"rps": 100.0 * n, "p50_ms": n, "p99_ms": 2 * n, "requests": 100 * n,
                    "seconds": 1.0, "errors": n % 2}

    parent = subprocess.Popen([sys.executable, "-c", ONE_CHILD.format(child=SLEEPING)],
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        parent.stdout.readline()
        a = SimpleNamespace(proc=parent, url="http://a")
        b = SimpleNamespace(proc=parent, url="http://b")
        wrk = Recording()
        totals = load.measure_turns(wrk, [("A", a, ()), ("B", b, ("Cookie: c=1",))], 3)
    finally:
        os.killpg(parent.pid, signal.SIGKILL)  # and its child
        parent.wait()
    assert wrk.calls[:2] == [("http://a/", 1, ()), ("http://b/", 1, ("Cookie: c=1",))]  # warm-ups
    turns = wrk.calls[2:]
    assert [url for url, _, _ in turns] == ["http://a/", "http://b/", "http://b/", "http://a/",
                                            "http://a/", "http://b/"]
    assert {seconds for _, seconds, _ in turns} == {load.TURN}
    # A's turns were calls 3, 6 and 7; B's 4, 5 and 8 (each answered 100 x its number requests).
    assert totals["A"]["requests"] == 1600 and totals["A"]["rps"] == 1600 / 3
    assert totals["B"]["requests"] == 1700 and totals["B"]["errors"] == 1
    assert totals["A"]["p50_ms"] == 6 and totals["B"]["p99_ms"] == 10
    assert all(t["cpu_us"] >= 0 for t in totals.values())


def test_measure_together_loads_both_at_once_and_takes_each_workers_own_cpu_time():
    """The CPU time compared is measured with both servers loaded at the same moment. wrk only
    records here; the workers are real processes, one busy and one asleep."""
    from instruments import load
    from runtime import processes

    class Recording(load.Wrk):
        def __init__(self, failing=None):
            self.calls, self.procs, self.failing = [], [], failing

        def start(self, url, seconds, headers=()):
            self.calls.append(("start", url, seconds, headers))
            self.procs.append(subprocess.Popen([sys.executable, "-c", SLEEPING]))  # a wrk running
            return self.procs[-1]

        def result(self, proc, url, seconds):
            self.calls.append(("result", url))
            if url == self.failing:
                raise load.BenchError(f"wrk failed on {url}")
            time.sleep(0.5)  # the load's time, in which the busy worker runs
            return {"rps": 100.0, "requests": 100, "errors": 0, "p50_ms": 1, "p99_ms": 1}

    parents = [subprocess.Popen([sys.executable, "-c", ONE_CHILD.format(child=child)],
                                stdout=subprocess.PIPE, text=True, start_new_session=True)
               for child in ("while True: pass", SLEEPING)]
    try:
        for parent in parents:
            parent.stdout.readline()
        a = SimpleNamespace(proc=parents[0], url="http://a")
        b = SimpleNamespace(proc=parents[1], url="http://b")
        wrk = Recording()
        totals = load.measure_together(wrk, [("A", a, ()), ("B", b, ("Cookie: c=1",))], 5, start=1)
        # Measured, the workers go back with everything else, off the measured CPU.
        workers = [processes.children(parent.pid)[0] for parent in parents]
        assert all(os.sched_getaffinity(pid) == (load.LOAD_CPUS or set(load.CPUS)) for pid in workers)
        # When one wrk fails, the error says so and no other wrk is left running.
        failing = Recording(failing="http://b/")
        with pytest.raises(load.BenchError, match="http://b/"):
            load.measure_together(failing, [("A", a, ()), ("B", b, ())], 5, start=1)
        assert len(failing.procs) == 2 and all(proc.poll() is not None for proc in failing.procs)
    finally:
        for parent in parents:
            os.killpg(parent.pid, signal.SIGKILL)  # and its child
            parent.wait()
    # Both loads start before either is read; an odd round starts them in reverse order.
    assert wrk.calls == [("start", "http://b/", 5, ("Cookie: c=1",)), ("start", "http://a/", 5, ()),
                         ("result", "http://b/"), ("result", "http://a/")]
    assert totals["A"]["requests"] == totals["B"]["requests"] == 100
    # Each worker's own CPU time: the busy one ran for most of a second, the sleeping one hardly.
    assert totals["A"]["cpu_us"] > 2_000 and totals["B"]["cpu_us"] < totals["A"]["cpu_us"] / 10


def test_pin_moves_every_thread_of_a_process():
    """The bench keeps the measured worker on a CPU of its own: all 15 threads, not just one."""
    from instruments.load import pin

    cpus = sorted(os.sched_getaffinity(0))
    proc = subprocess.Popen([sys.executable, "-c", THREADED], stdout=subprocess.PIPE, text=True)
    try:
        proc.stdout.readline()
        for wanted in ({cpus[-1]}, set(cpus)):
            pin(proc.pid, wanted)
            tasks = list(Path(f"/proc/{proc.pid}/task").iterdir())
            assert len(tasks) == 4
            assert all(os.sched_getaffinity(int(t.name)) == wanted for t in tasks)
    finally:
        proc.kill()
        proc.wait()


def test_kept_off_holds_a_service_off_the_measured_cpu_and_puts_it_back():
    """MariaDB is started by `make services`, not by the bench: the bench moves it while it runs."""
    from instruments.load import LOAD_CPUS, kept_off

    proc = subprocess.Popen([sys.executable, "-c", THREADED], stdout=subprocess.PIPE, text=True)
    try:
        proc.stdout.readline()
        threads = [int(t.name) for t in Path(f"/proc/{proc.pid}/task").iterdir()]
        before = {tid: os.sched_getaffinity(tid) for tid in threads}
        with kept_off([proc.pid, None]):  # None: a service that is not running
            assert all(os.sched_getaffinity(tid) == (LOAD_CPUS or before[tid]) for tid in threads)
        assert {tid: os.sched_getaffinity(tid) for tid in threads} == before
    finally:
        proc.kill()
        proc.wait()


ONE_CHILD = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "{child}"])
print("ready", flush=True)
time.sleep(60)
"""
SLEEPING = "import time; time.sleep(60)"
THREADED = """
import threading, time
for _ in range(3):
    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
print("ready", flush=True)
time.sleep(60)
"""
