"""A verdict is about the learner's code, never the machine (checks/stalls.py).

- the probe moves none of the counters the checks read, even on a SASL memcached, and sees a
  stopped memcached; the sampler sees a stopped and a starved process;
- which failures are suspect, and what their rerun makes of them, on recorded episodes;
- fault injection: the checker's own memcached frozen (SIGSTOP) for 1-3 s during checks of correct
  checkpoints, some runs with a CPU hog: a pass or "the machine stalled" (exit 3), never the
  learner's failure; a broken learner app still fails under the same freezes.
"""
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from checks import stalls
from checks.manifest import load_manifest
from checks.plugin import Result
from conftest import ROOT, wait_for
from runtime import harness, memcached
from test_checks import FOLDERS, materialise

EXPECTATIONS = {e.test_name: e for s in load_manifest() for e in s.expectations}
HOG = [sys.executable, "-c", "while 1: pass"]


def result(name="check_05_fresh_after_add", status="fail", **fields):
    return Result(EXPECTATIONS[name], status=status, **fields)


def sampler_with(episodes, windows):
    sampler = stalls.Sampler()
    sampler.episodes = [stalls.Episode(*e) for e in episodes]
    sampler.windows = {name: list(w) for name, w in windows.items()}
    return sampler


# ---- classification, on recorded episodes --------------------------------------------------------

FROZEN = [("stopped", "memcached", 10.2, 12.3), ("probe", "memcached", 10.2, 12.4),
          ("starved", "gunicorn", 30.0, 30.4, 0.3)]
WINDOWS = {"check_05_fresh_after_add": (10.0, 12.0), "check_05_fresh_after_delete": (20.0, 21.0)}


def test_a_failure_during_a_stall_is_suspect_and_says_what_was_slow():
    sampler = sampler_with(FROZEN, WINDOWS)
    failed = result()
    assert sampler.note(failed)
    assert failed.stall == ("memcached answered no probe for 2.2 s; "
                            "memcached was stopped (T) for 2.1 s")


def test_a_failure_with_no_stall_and_no_give_up_is_never_retried():
    sampler = sampler_with(FROZEN, WINDOWS)
    failed = result("check_05_fresh_after_delete", observed="the list was stale after a delete")
    assert not sampler.note(failed)
    assert failed.stall is None


def test_a_short_slowdown_is_no_stall():
    sampler = sampler_with([("probe", "memcached", 20.5, 20.8)], WINDOWS)
    assert not sampler.note(result("check_05_fresh_after_delete"))


def test_a_client_that_gave_up_on_memcached_makes_a_failure_suspect():
    sampler = sampler_with(FROZEN, WINDOWS)
    failed = result("check_05_fresh_after_delete", observed="POST / answered 500 INTERNAL SERVER ERROR",
                    cause="pylibmc.ServerDead: error 35 from memcached_delete: SERVER IS MARKED DEAD\n"
                          "  task_list/tasks.py:22")
    assert sampler.note(failed)
    assert failed.stall == ("the app's memcached client gave up on the server (ServerDead) after "
                            "memcached answered no probe for 2.2 s")


def test_a_failure_that_follows_a_suspect_one_is_suspect_too():
    sampler = sampler_with(FROZEN, WINDOWS)
    hung = "GET / got no answer within 10 s"
    assert sampler.note(result(cause=hung, reason="hung"))
    later = result("check_05_fresh_after_delete", cause=hung, reason="hung")
    assert sampler.note(later)


def test_a_later_check_of_a_suspect_boot_follows_it():
    """An app that did not start is raised again to every later check of it, at once, outside
    the boot's window: those failures follow the first one into the rerun, and only they do."""
    sampler = sampler_with([("starved", stalls.BOOTING, 5.0, 7.0, 1.5)], WINDOWS)
    sampler.setups = {"check_05_fresh_after_add": [4.0, 9.5], "check_05_fresh_after_delete": [20.0, 20.1]}
    boot = "the app did not start: hung at import: no answer in 3 s"
    assert sampler.note(result(status="error", app_state="hung", observed=boot)) == "stall"
    again = result("check_05_fresh_after_delete", status="error", app_state="hung", observed=boot)
    assert sampler.note(again) == "follows"
    other = result("check_05_fresh_after_delete", status="error", app_state="hung",
                   observed="the app did not start: hung at import: no answer in 20 s")
    assert sampler.note(other) is None


def test_a_starved_boot_spoils_a_boot_and_nothing_else():
    sampler = sampler_with([("starved", stalls.BOOTING, 5.0, 7.0, 1.5)], WINDOWS)
    sampler.setups = {"check_05_fresh_after_add": [4.0, 9.5]}
    assert not sampler.note(result(observed="the list was stale after an add"))
    did_not_start = result(status="error", reason="hung_at_start")
    assert sampler.note(did_not_start) == "stall"
    assert did_not_start.stall == "an app starting waited 1.5 s to run"


def test_the_stall_line_sums_each_parts_trouble_and_keeps_the_longest():
    line = stalls.stall_line([stalls.Episode(*e) for e in [
        ("checker", "the checker", 1, 1.6), ("checker", "the checker", 3, 3.7),
        ("stopped", "memcached", 1, 3.1), ("starved", "gunicorn", 1, 2, 0.5),
        ("probe", "memcached (plain)", 2, 2.6)]])
    assert line == ("memcached was stopped (T) for 2.1 s; the checker itself was not scheduled "
                    "for 1.3 s; memcached (plain) answered no probe for 0.6 s")


def test_a_pass_is_never_retried_but_notes_the_stall():
    sampler = sampler_with(FROZEN, WINDOWS)
    passed = result(status="pass")
    assert not sampler.note(passed)
    assert "stopped (T) for 2.1 s" in passed.stall


def test_a_pass_on_the_rerun_is_a_pass_with_the_first_stall_noted():
    first = result(stall="memcached was stopped (T) for 1.4 s")  # as seen while it lasted
    again = stalls.settle(first, result(status="pass"), sampler_with(FROZEN, WINDOWS),
                          sampler_with([], WINDOWS))
    assert (again.status, again.rerun) == ("pass", True)
    assert again.stall == "memcached answered no probe for 2.2 s; memcached was stopped (T) for 2.1 s"


def test_a_failure_again_without_a_stall_is_the_learners():
    first = result(stall="memcached was stopped (T) for 2.1 s")
    again = stalls.settle(first, result(observed="stale", cause=None),
                          sampler_with(FROZEN, WINDOWS), sampler_with([], WINDOWS))
    assert (again.status, again.rerun, again.stall, again.reason) == ("fail", True, None, None)


def test_a_failure_still_stalled_is_the_machines():
    first = result(stall="memcached was stopped (T) for 2.1 s")
    again = stalls.settle(first, result(cause="pylibmc.ServerDead ... task_list/tasks.py:22"),
                          sampler_with(FROZEN, WINDOWS), sampler_with(FROZEN, WINDOWS))
    assert (again.status, again.reason, again.app_state, again.cause) == \
        ("error", "machine_stalled", "ok", None)
    assert again.rerun and "stopped (T) for 2.1 s" in again.stall
    assert again.as_dict()["stall"] == again.stall and again.as_dict()["points_earned"] == 0


LOGIN_LOG = ("Exception possibly due to cache backend.\n"
             "pylibmc.Error: error 40 from memcached_mget: FAILED TO SEND AUTHENTICATION TO SERVER\n")
DOWN = ("pylibmc.ServerDown: error 47 from memcached_mget: SERVER HAS FAILED AND IS DISABLED UNTIL "
        "TIMED RETRY\n  at task_list/tasks.py:22 in invalidate_task_list")


def watching(sampler, log):
    """SAMPLER watching a SASL app whose log holds LOG."""
    from types import SimpleNamespace

    app = SimpleNamespace(memcached=None, servers=[], log_text=lambda: log)
    sampler.watched.append(stalls.Watched("sasl", app))
    return sampler


def test_pylibmcs_login_bug_makes_a_failure_suspect_and_is_named():
    sampler = watching(sampler_with([], WINDOWS), LOGIN_LOG)
    failed = result("check_05_fresh_after_delete", observed="POST / answered 500", cause=DOWN)
    assert sampler.note(failed) == "login bug"
    assert failed.stall == stalls.LOGIN_BUG_TEXT
    # without the login failure in the log, the same failure is a client that gave up
    other = result("check_05_fresh_after_delete", observed="POST / answered 500", cause=DOWN)
    assert watching(sampler_with([], WINDOWS), "").note(other) == "gave up"


def test_pylibmcs_login_bug_on_the_rerun_too_is_no_verdict():
    first = result(cause=DOWN)
    again = stalls.settle(first, result(cause=DOWN), watching(sampler_with([], WINDOWS), LOGIN_LOG),
                          watching(sampler_with([], WINDOWS), LOGIN_LOG))
    assert (again.status, again.reason, again.cause, again.stall) == \
        ("error", "machine_stalled", None, stalls.LOGIN_BUG_TEXT)
    # the rerun failed by itself, with no login failure: the learner's
    clean = stalls.settle(result(cause=DOWN), result(observed="stale"),
                          watching(sampler_with([], WINDOWS), LOGIN_LOG), watching(sampler_with([], WINDOWS), ""))
    assert (clean.status, clean.reason, clean.stall) == ("fail", None, None)


# ---- the probe and the sampler, on real processes -----------------------------------------------

@pytest.fixture
def sasl_memcached(services_env):
    server = harness.CacheServer(sasl=True).start()
    yield server
    os.kill(server.proc.pid, signal.SIGCONT)
    server.stop()


def test_the_probe_moves_no_counter_and_needs_no_login_on_a_sasl_memcached(sasl_memcached):
    probe = memcached.Probe(sasl_memcached.address)
    assert wait_for_answer(probe)
    before = memcached.counters(sasl_memcached.address, sasl_memcached.username, sasl_memcached.password)
    for _ in range(20):
        assert wait_for_answer(probe)
    after = memcached.counters(sasl_memcached.address, sasl_memcached.username, sasl_memcached.password)
    moved = {k for k in harness.COUNTERS + ("auth_errors", "cmd_flush", "total_connections")
             if before.get(k) != after.get(k) - (k == "total_connections")}  # the reading's own
    assert not moved
    assert after["auth_cmds"] - before["auth_cmds"] == 1  # the second reading's own login
    probe.close()


def wait_for_answer(probe, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        polled = probe.poll(time.monotonic())
        if polled and polled[1]:
            return True
    return False


class Booted:
    """What the sampler watches of a booted app: its memcached and its gunicorn processes."""

    def __init__(self, cache_server, procs):
        self.memcached = cache_server
        self.servers = [type("Server", (), {"proc": proc})() for proc in procs]


def test_the_sampler_sees_a_stopped_memcached_and_an_unanswered_probe(sasl_memcached):
    sampler = stalls.Sampler()
    sampler.pytest_sessionstart(None)
    sampler.watch("sasl", Booted(sasl_memcached, []))
    os.kill(sasl_memcached.proc.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: any(e.kind == "stopped" and e.amount >= 0.6
                             for e in sampler.open_episodes(time.monotonic())), "a stopped memcached")
    finally:
        os.kill(sasl_memcached.proc.pid, signal.SIGCONT)
    sampler.pytest_sessionfinish(None)
    kinds = {e.kind for e in sampler.episodes if e.amount >= stalls.STALL}
    assert {"stopped", "probe"} <= kinds
    assert sampler.cpu < sampler.samples * stalls.INTERVAL  # it samples, it does not spin


def test_the_sampler_sees_a_starved_process(sasl_memcached):
    # An idle-policy process on the CPU a hog holds: runnable, and almost never run.
    cpu = str(min(os.sched_getaffinity(0)))
    hog = subprocess.Popen(["taskset", "-c", cpu, *HOG])
    starved = subprocess.Popen(["chrt", "--idle", "0", "taskset", "-c", cpu, *HOG])
    sampler = stalls.Sampler()
    try:
        sampler.pytest_sessionstart(None)
        sampler.watch("sasl", Booted(sasl_memcached, [starved]))
        wait_for(lambda: any(e.kind == "starved" and e.amount >= 0.6
                             for e in sampler.episodes + sampler.open_episodes(time.monotonic())),
                 "a starved process")
    finally:
        for proc in (hog, starved):
            proc.kill()
            proc.wait()
        sampler.pytest_sessionfinish(None)
    assert any(e.kind == "starved" and e.who == "gunicorn" and e.amount >= stalls.STALL
               for e in sampler.episodes)


# ---- fault injection: the checker's own memcached frozen during checks ---------------------------

def run_frozen(tmp_path, stage, app_dir, freeze, hog=False, delay=0.0, times=1):
    """`checks run STAGE APP_DIR` with the memcached of its first app up stopped for FREEZE
    seconds, DELAY seconds after it is up, and so for the next TIMES - 1 memcached it starts (a
    rerun's): (exit status, results, whether the first freeze fell during the run, its output)."""
    pids, out = tmp_path / f"pids-{stage}.json", tmp_path / f"results-{stage}.json"
    env = dict(os.environ, WORKSHOP_STALL_PIDS=str(pids))
    hogs = [subprocess.Popen(HOG)] if hog else []
    frozen = []
    try:
        proc = subprocess.Popen([sys.executable, "-m", "checks", "run", stage, str(app_dir), "-q",
                                 "--json", str(out)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        while len(frozen) < times:
            wait_for(lambda: proc.poll() is not None or first_memcached(pids) not in (None, *frozen),
                     "an app's memcached", timeout=120)
            if proc.poll() is not None:
                break
            time.sleep(delay)  # the moment of the fault, not a wait for anything
            frozen.append(first_memcached(pids))
            freeze_process(frozen[-1], freeze, proc)
        output, _ = proc.communicate(timeout=300)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    return proc.returncode, read_json(out), bool(frozen) and frozen[0] is not None, output


def freeze_process(pid, seconds, run):
    """SIGSTOP PID for SECONDS while RUN goes on; nothing once RUN or PID has ended."""
    try:
        os.kill(pid, signal.SIGSTOP)
        if run.poll() is None:
            time.sleep(seconds)  # the fault itself
    except (ProcessLookupError, TypeError):  # ended meanwhile
        pass
    finally:
        with contextlib.suppress(ProcessLookupError, TypeError):
            os.kill(pid, signal.SIGCONT)


def first_memcached(pids):
    """The pid of the memcached of the first app the checker booted, or None yet."""
    return next((app["memcached"][0] for app in read_json(pids).values() if app.get("memcached")), None)


def read_json(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def blamed_on_the_learner(data):
    return [f"{t['name']}: {t['observed']}" for t in data["tests"]
            if t["status"] in ("fail", "error") and t.get("reason") != "machine_stalled"]


@pytest.mark.parametrize("stage, freeze, hog, delay", [
    ("04", 2.0, False, 0.0), ("05", 2.0, True, 0.3), ("06", 1.0, False, 0.0),
    ("07", 3.0, False, 0.0), ("08", 1.5, True, 0.0), ("09", 2.5, False, 0.2)])
def test_a_correct_checkpoint_with_a_frozen_memcached_is_never_blamed(tmp_path, services_env,
                                                                       stage, freeze, hog, delay):
    code, data, during, output = run_frozen(tmp_path, stage, FOLDERS[stage], freeze, hog, delay)
    assert during, "the freeze came after the run had ended"
    assert code in (0, 3), output
    assert not blamed_on_the_learner(data), output
    stalled = [t for t in data["tests"] if t["status"] == "error"]
    assert (code == 3) == bool(stalled) == bool(data["machine_stalled"])
    for test in data["tests"]:  # a rerun says what spoiled the first run, or the second
        assert not test["rerun"] or test["stall"], test


@pytest.mark.parametrize("stage", ["05", "08"])
def test_a_check_frozen_again_on_its_rerun_is_the_machines(tmp_path, services_env, stage):
    code, data, during, output = run_frozen(tmp_path, stage, FOLDERS[stage], 3.0, times=2)
    assert during and code in (0, 3), output
    assert not blamed_on_the_learner(data), output
    stalled = [t for t in data["tests"] if t["status"] == "error"]
    assert (code == 3) == bool(stalled) == bool(data["machine_stalled"]), output
    for test in stalled:
        assert test["rerun"] and test["stall"] and test["cause"] is None and test["app_state"] == "ok"
        assert test["points_earned"] == 0 and "no verdict on your code" in test["hint"]


@pytest.mark.parametrize("freeze, hog", [(2.0, False), (3.0, True)])
def test_a_broken_app_still_fails_under_the_same_freezes(tmp_path, services_env, freeze, hog):
    spec = materialise("no-invalidation", tmp_path / "app")
    code, data, during, output = run_frozen(tmp_path, spec["stage"], tmp_path / "app", freeze, hog)
    assert during and code == 1, output
    failed = {t["id"] for t in data["tests"] if t["status"] == "fail"}
    assert set(spec["fails"]) <= failed, output


# ---- less contention: boots yield to running checks ---------------------------------------------

def test_a_running_check_is_seen_machine_wide_and_a_yielding_boot_serves_at_full_priority(services_env):
    holder = subprocess.Popen([sys.executable, "-c", "import sys; from runtime import harness\n"
                               "with harness.checking():\n    print('held', flush=True); sys.stdin.read()"],
                              cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert harness.checks_running()
    finally:
        holder.communicate("")
    with harness.run_app(FOLDERS["04"], cache=None, nice=harness.NICE) as app:
        pids = [app.servers[0].proc.pid, *stalls.descendants(app.servers[0].proc.pid)]
        niceness = {os.getpriority(os.PRIO_PROCESS, int(tid))
                    for pid in pids for tid in os.listdir(f"/proc/{pid}/task")}
    # Only root may lower a niceness again: elsewhere the app keeps the one it booted with.
    assert niceness == ({0} if os.geteuid() == 0 else {harness.NICE})


def test_apps_booting_on_several_threads_all_reach_the_pids_file(tmp_path, monkeypatch):
    """The pids file these tests freeze by: each config's app boots on a thread of its own, and
    the writes shared one temporary name (a check failed with FileNotFoundError once)."""
    from types import SimpleNamespace

    monkeypatch.setenv("WORKSHOP_STALL_PIDS", str(tmp_path / "pids.json"))
    sampler = stalls.Sampler()
    errors = []

    def boot(n):
        try:
            for i in range(100):
                sampler.watch(f"config-{n}-{i}", SimpleNamespace(memcached=None, servers=[]))
        except Exception as exc:  # noqa: BLE001 - any error here is the defect
            errors.append(exc)

    threads = [threading.Thread(target=boot, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(json.loads((tmp_path / "pids.json").read_text())) == 400
