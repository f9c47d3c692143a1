"""When the machine, not the learner, spoiled a check: a sampler that watches the checker's own parts.

While checks run, a thread of the checker samples every INTERVAL seconds:
- each app's memcached round trip, by a probe that moves none of the counters the checks read
  (runtime/memcached.py `Probe`: a VERSION request on a connection kept open);
- the process state of memcached and of gunicorn (its master and workers): stopped (T), or
  starved (a thread that waited to run for most of a sample, from /proc/PID/task/TID/schedstat);
- its own scheduling delay (how late its sleep ended).
Each stretch of trouble is an Episode. A failure whose check overlaps an episode of STALL seconds
or more, or whose output shows the app's client giving up on memcached (GIVE_UP), is suspect:
checks/cli.py runs it once more on a fresh boot and `settle` decides what it was (a pass with the
stall noted, the learner's failure, or "machine_stalled"). pylibmc's SASL login bug (LOGIN_BUG)
is no more the learner's than a stall is, and is judged the same way.

Set WORKSHOP_STALL_PIDS to a file and the sampler writes there the pids and ports it watches
(the fault-injection tests freeze those processes).
"""
import contextlib
import json
import os
import re
import threading
import time
from dataclasses import dataclass

import pytest

from runtime import forkserver, harness, memcached

INTERVAL = 0.1
STALL = 0.5  # as long as this can fail a check: the lessons' client gives up after 750 ms
KEEP = 0.2  # shorter episodes are kept by no one
LOOKBACK = 1.0  # a stall that ended just before a check began can still spoil its first request
TASKS_EVERY = 10  # samples between two readings of a process's thread list
STARVED = 0.8  # a thread that waited to run for this share of a sample was starved (not just slowed)
GIVE_UP = re.compile(r"ServerDead|ServerDown|SERVER IS MARKED DEAD|SERVER HAS FAILED|"
                     r"A TIMEOUT OCCURRED|lost memcached at|cannot reach memcached at|"
                     r"FAILED TO SEND AUTHENTICATION TO SERVER")
# With the login data the harness gives, this is the libmemcached inside pylibmc 1.6.3 failing a
# SASL login (it reads the server's mechanism list into a buffer it never terminates; WORKSHOP.md,
# Troubleshooting). The workshop's memcached lists a second mechanism that absorbs it
# (runtime/services.py MECHANISMS); a memcached started with an older config can still show it.
LOGIN_BUG = "FAILED TO SEND AUTHENTICATION TO SERVER"
LOGIN_BUG_TEXT = ("pylibmc could not log in to memcached (FAILED TO SEND AUTHENTICATION TO SERVER: "
                  "the SASL bug of the libmemcached inside pylibmc 1.6.3; run `make services` to "
                  "refresh memcached's config, and see WORKSHOP.md, Troubleshooting), so the app's "
                  "client gave up on the server")
BOOTING = "an app starting"  # what the checker runs that no booted app owns yet
NAMES = {"sasl": "", "plain": " (plain)", None: " (no memcached)"}  # which boot, after a name


@dataclass
class Episode:
    """One stretch of trouble: KIND of WHO from START to END (monotonic seconds); AMOUNT is how
    long it cost (for "starved", the time spent waiting to run, else END - START)."""
    kind: str  # "probe", "stopped", "starved" or "checker"
    who: str
    start: float
    end: float
    amount: float = None

    def __post_init__(self):
        if self.amount is None:
            self.amount = self.end - self.start

    def text(self):
        return {"probe": f"{self.who} answered no probe for {self.amount:.1f} s",
                "stopped": f"{self.who} was stopped (T) for {self.amount:.1f} s",
                "starved": f"{self.who} waited {self.amount:.1f} s to run",
                "checker": f"the checker itself was not scheduled for {self.amount:.1f} s",
                }[self.kind]


def stall_line(episodes, most=3):
    """One line for the episodes that spoiled a check: each part's trouble of one kind summed,
    the MOST longest first."""
    merged = {}
    for e in episodes:
        key = (e.kind, e.who)
        m = merged.get(key)
        merged[key] = e if m is None else Episode(e.kind, e.who, min(m.start, e.start),
                                                   max(m.end, e.end), m.amount + e.amount)
    return "; ".join(e.text() for e in sorted(merged.values(), key=lambda e: -e.amount)[:most])


def overlapping(episodes, start, end, at_least=STALL):
    """The episodes of AT_LEAST seconds that touch [START - LOOKBACK, END]."""
    return [e for e in episodes if e.amount >= at_least and e.end >= start - LOOKBACK and e.start <= end]


def give_up_sign(result):
    """The words that show the app's memcached client (or the checker's) giving up, or None."""
    for text in (result.cause, result.observed, result.output):
        match = GIVE_UP.search(text or "")
        if match:
            return match.group(0)
    return None


class Process:
    """One process the sampler watches: its state and its threads' run-queue delay."""

    def __init__(self, who, pid):
        self.who, self.pid = who, pid
        self.stat = self._open(f"/proc/{pid}/stat")
        self.tasks = {}  # tid -> (fd of its schedstat, its run delay at the last sample)
        self.stopped_since = self.starved_since = None
        self.starved = 0.0

    @staticmethod
    def _open(path):
        try:
            return os.open(path, os.O_RDONLY)
        except OSError:
            return None

    def state(self):
        """The one-letter state of /proc/PID/stat, or None once the process is gone."""
        try:
            return os.pread(self.stat, 512, 0).rsplit(b")", 1)[1].split()[0].decode()
        except (OSError, IndexError, TypeError):
            return None

    def refresh_tasks(self):
        try:
            tids = {int(t) for t in os.listdir(f"/proc/{self.pid}/task")}
        except OSError:
            tids = set()
        for tid in set(self.tasks) - tids:
            os.close(self.tasks.pop(tid)[0])
        for tid in tids - set(self.tasks):
            fd = self._open(f"/proc/{self.pid}/task/{tid}/schedstat")
            if fd is not None:
                self.tasks[tid] = (fd, self._delay(fd))

    @staticmethod
    def _delay(fd):
        try:
            return int(os.pread(fd, 128, 0).split()[1]) / 1e9
        except (OSError, IndexError, ValueError):
            return None

    def waited(self):
        """The longest any thread waited to run since the last call, in seconds."""
        longest = 0.0
        for tid, (fd, before) in list(self.tasks.items()):
            now = self._delay(fd)
            if now is not None and before is not None:
                longest = max(longest, now - before)
            self.tasks[tid] = (fd, now)
        return longest

    def close(self):
        for fd in [self.stat] + [fd for fd, _ in self.tasks.values()]:
            if fd is not None:
                os.close(fd)
        self.tasks = {}


class Watched:
    """One booted app: its memcached (a probe and a process) and its gunicorn processes."""

    def __init__(self, cache, app):
        self.cache, self.app = cache, app
        suffix = NAMES.get(cache, f" ({cache})")
        self.memcached = f"memcached{suffix}"
        self.gunicorn = f"gunicorn{suffix}"
        self.probe = memcached.Probe(app.memcached.address) if app.memcached else None
        self.probe_since = None
        self.processes = {}  # pid -> Process

    def pids(self):
        """{"gunicorn": [pid, ...], "memcached": [pid]} of what this app runs now (gunicorn's
        workers included)."""
        masters = [s.proc.pid for s in self.app.servers if s.proc is not None]
        workers = []
        for pid in masters:
            with contextlib.suppress(OSError, ValueError):
                with open(f"/proc/{pid}/task/{pid}/children") as f:
                    workers += [int(p) for p in f.read().split()]
        found = {"gunicorn": masters + workers}
        if self.app.memcached is not None and self.app.memcached.proc is not None:
            found["memcached"] = [self.app.memcached.proc.pid]
        return found


class Sampler:
    """A pytest plugin: samples in a thread for the whole session and keeps each check's window."""

    def __init__(self):
        self.episodes = []
        self.windows = {}  # test name -> [start, end or None while it runs] of its test body
        self.setups = {}  # the same for its setup (where apps boot)
        self.collected = []  # the names of the checks this session runs
        self.watched = []
        self.starting = {}  # pid -> Process: the checker's children that no watched app owns
        self.suspect_causes = set()
        self.suspect_boots = set()  # what the failures of a suspect boot observed
        self.login_failed = False  # pylibmc's login bug struck in an app of this session
        self.cpu = 0.0  # the sampling thread's own CPU seconds
        self.samples = 0
        self.lock = threading.RLock()  # the thread samples under it; note() reads under it
        self.done = threading.Event()
        self.thread = None
        self.pids_file = os.environ.get("WORKSHOP_STALL_PIDS")

    # ---- what subject.py tells it ----

    def watch(self, cache, app):
        """Sample APP (booted for configuration CACHE) from now on."""
        with self.lock:
            self.watched.append(Watched(cache, app))
        self._write_pids()

    def _write_pids(self):
        if not self.pids_file:
            return
        with self.lock:  # the file too: apps boot on several threads, and share the tmp name
            data = {w.cache or "none": {"memcached_port": w.app.memcached.port if w.app.memcached
                                        else None, **w.pids()} for w in self.watched}
            tmp = f"{self.pids_file}.{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                json.dump(data, f)
            os.replace(tmp, self.pids_file)

    # ---- pytest hooks ----

    def pytest_sessionstart(self, session):
        self.thread = threading.Thread(target=self._run, name="stall-sampler", daemon=True)
        self.thread.start()

    def pytest_collection_finish(self, session):
        self.collected = [item.name for item in session.items]

    def pytest_sessionfinish(self, session):
        self.done.set()
        if self.thread is not None:
            self.thread.join()

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_setup(self, item):
        window = self.setups[item.name] = [time.monotonic(), None]
        try:
            return (yield)
        finally:
            window[1] = time.monotonic()

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item):
        window = self.windows[item.name] = [time.monotonic(), None]
        try:
            with harness.checking():  # boots elsewhere on the machine yield while this check runs
                return (yield)
        finally:
            window[1] = time.monotonic()
            self.login_bug()

    # ---- the sampling thread ----

    def _run(self):
        start_cpu = time.thread_time()
        due, last = time.monotonic(), None
        while not self.done.is_set():
            due += INTERVAL
            self.done.wait(max(0.0, due - time.monotonic()))
            now = time.monotonic()
            if now - due >= KEEP:  # this thread woke late: so would any part of the checker
                self._add(Episode("checker", "the checker", due, now))
            due = max(due, now)
            with self.lock:
                elapsed = now - (last or now - INTERVAL)
                for w in self.watched:
                    self._sample(w, now, elapsed)
                # What the checker runs that no booted app owns yet: an app importing, migrating
                # or starting (a boot that times out on a starved machine is no verdict either).
                known = {p for w in self.watched for p in w.processes}
                known.update(forkserver.pids())  # idle between boots, never an app
                self._track(self.starting, {pid: BOOTING for pid in descendants(os.getpid())
                                            if pid not in known}, now, elapsed)
            self.samples, last = self.samples + 1, now
        with self.lock:
            for w in self.watched:  # close what is still open
                self._close(w, time.monotonic())
            for process in self.starting.values():
                self._close_process(process, time.monotonic())
        self.cpu = time.thread_time() - start_cpu

    def _add(self, episode):
        if episode.amount >= KEEP:
            with self.lock:
                self.episodes.append(episode)

    def _sample(self, w, now, elapsed):
        if w.probe is not None:
            polled = w.probe.poll(now)
            if polled is not None:
                sent, answered = polled
                if answered and now - sent >= KEEP:
                    self._add(Episode("probe", w.memcached, sent, now))
                w.probe_since = None if answered else sent
        names = {"gunicorn": w.gunicorn, "memcached": w.memcached}
        self._track(w.processes, {pid: names[part] for part, found in w.pids().items() for pid in found},
                    now, elapsed)

    def _track(self, processes, pids, now, elapsed):
        """Sample PIDS ({pid: who}) into PROCESSES ({pid: Process}), closing those gone."""
        for pid in set(processes) - set(pids):
            self._close_process(processes.pop(pid), now)
        for pid, who in pids.items():
            if pid not in processes:
                processes[pid] = Process(who, pid)
            process = processes[pid]
            if self.samples % TASKS_EVERY == 0 or not process.tasks:
                process.refresh_tasks()
            stopped = process.state() == "T"
            if stopped and process.stopped_since is None:
                process.stopped_since = now
            elif not stopped and process.stopped_since is not None:
                self._add(Episode("stopped", who, process.stopped_since, now))
                process.stopped_since = None
            waited = process.waited()
            if waited >= STARVED * elapsed:
                process.starved_since = process.starved_since or now - waited
                process.starved += waited
            elif process.starved_since is not None:
                self._add(Episode("starved", who, process.starved_since, now, process.starved))
                process.starved_since, process.starved = None, 0.0

    def _close_process(self, process, now):
        if process.stopped_since is not None:
            self._add(Episode("stopped", process.who, process.stopped_since, now))
        if process.starved_since is not None:
            self._add(Episode("starved", process.who, process.starved_since, now, process.starved))
        process.close()

    def _close(self, w, now):
        if w.probe is not None:
            if w.probe_since is not None:
                self._add(Episode("probe", w.memcached, w.probe_since, now))
            w.probe.close()
            w.probe_since = None
        for process in w.processes.values():
            self._close_process(process, now)
        w.processes = {}

    def open_episodes(self, now):
        """The episodes still going on at NOW (a probe unanswered, a process stopped or starved)."""
        with self.lock:
            found = [Episode("probe", w.memcached, w.probe_since, now)
                     for w in self.watched if w.probe_since is not None]
            for p in [*(p for w in self.watched for p in w.processes.values()),
                      *self.starting.values()]:
                if p.stopped_since is not None:
                    found.append(Episode("stopped", p.who, p.stopped_since, now))
                if p.starved_since is not None:
                    found.append(Episode("starved", p.who, p.starved_since, now, p.starved))
        return found

    # ---- verdicts ----

    def window(self, result):
        """When RESULT's check ran: its setup for an error (the app did not start), else its body."""
        name = result.expectation.test_name
        first, second = (self.setups, self.windows) if result.status == "error" else (self.windows, self.setups)
        now = time.monotonic()
        start, end = first.get(name) or second.get(name) or (now, now)
        return start, end or now

    def login_bug(self):
        """Whether a watched app's log has shown pylibmc's random SASL login failure (LOGIN_BUG).
        Read after each check too: a rerun is judged once its apps and their logs are gone."""
        if not self.login_failed:
            with self.lock:  # the list only: the sampling thread waits on this lock
                apps = [w.app for w in self.watched if w.cache == "sasl"]
            self.login_failed = any(LOGIN_BUG in app.log_text() for app in apps)
        return self.login_failed

    def note(self, result):
        """Set RESULT.stall from what was slow during its check. For a failure the machine may
        have caused (to be run again on a fresh boot), why: "stall" (it overlaps one), "login bug"
        (the app's client gave up on memcached after pylibmc's login bug struck), "gave up" (it
        gave up otherwise) or "follows" (it fails on the cause of a suspect one); else None."""
        start, end = self.window(result)
        with self.lock:
            episodes = self.episodes + self.open_episodes(time.monotonic())
        if result.status != "error" and result.app_state != "hung":  # a starved boot: only a boot
            episodes = [e for e in episodes if e.who != BOOTING]
        stalls = overlapping(episodes, start, end)
        result.stall = stall_line(stalls) or None
        if result.passed:
            return None
        sign = give_up_sign(result)
        login_bug = bool(sign) and not stalls and self.login_bug()
        if login_bug:
            result.stall = LOGIN_BUG_TEXT
        elif sign and not stalls:
            earlier = [e for e in episodes if e.amount >= STALL and e.start < start]
            result.stall = (f"the app's memcached client gave up on the server ({sign})"
                            + (f" after {max(earlier, key=lambda e: e.end).text()}" if earlier else ""))
        # A stall delays an answer and raises nothing: a crash with the app's own exception is its own.
        raised = result.app_state == "crashed" and result.cause is not None and not sign
        # A later check that fails on the same cause, or on the same boot (an app that did not
        # start is raised again to every check of it, at once), follows from this one.
        follows = (result.cause is not None and result.cause in self.suspect_causes
                   or result.status == "error" and result.observed in self.suspect_boots)
        why = ("stall" if stalls and not raised else "login bug" if login_bug else "gave up" if sign
               else "follows" if follows else None)
        if why and result.cause:
            self.suspect_causes.add(result.cause)
        if why and result.status == "error":
            self.suspect_boots.add(result.observed)
        return why


def descendants(pid):
    """The pids of every process PID started (from any of its threads), and of theirs (from
    their main thread: an app's processes start theirs there), from /proc."""
    found, todo = [], []
    with contextlib.suppress(OSError):
        todo = [f"/proc/{pid}/task/{tid}/children" for tid in os.listdir(f"/proc/{pid}/task")]
    while todo:
        with contextlib.suppress(OSError, ValueError):
            with open(todo.pop()) as f:
                kids = [int(k) for k in f.read().split()]
            found += kids
            todo += [f"/proc/{kid}/task/{kid}/children" for kid in kids]
    return found


def sampler_of(config):
    """The Sampler of this pytest run, or None."""
    return next((p for p in config.pluginmanager.get_plugins() if isinstance(p, Sampler)), None)


def settle(first, again, first_sampler, sampler):
    """The verdict for a suspect check: FIRST from the first run (judged by FIRST_SAMPLER), AGAIN
    from its run on a fresh boot (judged by SAMPLER)."""
    first_sampler.note(first)  # now that every episode of the first run has ended
    again.rerun = True
    if again.passed:
        again.stall = first.stall  # a pass, with what spoiled the first run noted
    elif sampler.note(again) in ("stall", "login bug", "follows"):
        again.status, again.reason, again.app_state, again.cause = "error", "machine_stalled", "ok", None
    else:
        again.stall = None  # failed again with nothing slow: the learner's
    return again
