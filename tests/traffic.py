"""Visitors reading and writing while a test injects a fault, and what they saw: every answer
with its time, every acknowledged task stored exactly once, and the reads older than a write."""
import threading
import time
import uuid
from collections import Counter

import requests

from runtime.taskpage import task_ids
from runtime.visitor import Visitor
from conftest import wait_for


class Load:
    """THREADS visitors, each with its own cookies, reading the list through URL and adding a
    task every WRITE_EVERY page views (reads=False: only adding). Every answer is recorded with
    its time."""

    def __init__(self, url, threads=6, write_every=2, reads=True):
        self.url, self.threads, self.write_every, self.reading = url, threads, write_every, reads
        self.tag = f"load-{uuid.uuid4().hex[:6]}"
        self.lock = threading.Lock()
        self.statuses = Counter()
        self.reads = []   # (sent, answered, highest task id on the page)
        self.writes = []  # (name, sent, answered, status or exception name)
        self.errors = []  # 5xx and exceptions: (time, what, body excerpt)
        self.halt = threading.Event()
        self.writing = threading.Event()
        self.writing.set()
        self.in_flight = 0  # writes sent and not yet answered
        self.workers = []

    def __enter__(self):
        self.started = time.monotonic()
        self.workers = [threading.Thread(target=self.visit, args=(n,), daemon=True)
                        for n in range(self.threads)]
        for worker in self.workers:
            worker.start()
        return self

    def __exit__(self, *exc):
        self.halt.set()
        for worker in self.workers:
            worker.join(30)
        self.seconds = time.monotonic() - self.started

    def visit(self, n):
        visitor = Visitor(self.url, timeout=20)
        i = 0
        while not self.halt.is_set():
            sent = time.monotonic()
            page = self.request("GET", visitor.get, "/") if self.reading else None
            if page is not None and page.status_code == 200:
                with self.lock:
                    self.reads.append((sent, time.monotonic(), max(task_ids(page.text), default=0)))
            if i % self.write_every == 0 and self.writing.is_set():
                name = f"{self.tag} {n}-{i}"
                with self.lock:
                    self.in_flight += 1
                sent = time.monotonic()
                answer = self.request("POST", visitor.post, "/", {"name": name},
                                      allow_redirects=False)
                status = answer.status_code if answer is not None else "exception"
                with self.lock:
                    self.writes.append((name, sent, time.monotonic(), status))
                    self.in_flight -= 1
            i += 1

    def request(self, method, call, *args, **kwargs):
        try:
            response = call(*args, **kwargs)
        except requests.RequestException as exc:
            with self.lock:
                self.statuses["exception"] += 1
                self.errors.append((time.monotonic(), f"{method} {type(exc).__name__}", str(exc)[:200]))
            return None
        with self.lock:
            self.statuses[response.status_code] += 1
            if response.status_code >= 500:
                self.errors.append((time.monotonic(), f"{method} {response.status_code}",
                                    response.text[:2000]))
        return response

    # --- what the visitors saw ---

    def acked(self):
        with self.lock:
            return [w for w in self.writes if w[3] == 302]

    def pause_writes(self):
        """Stop writing, and wait until every write sent so far has been answered."""
        self.writing.clear()
        wait_for(lambda: self.in_flight == 0, "writes in flight to finish")

    def wait_for_writes(self, count, what, timeout=30.0):
        """Wait until COUNT more writes than now have been acknowledged."""
        target = len(self.acked()) + count
        wait_for(lambda: len(self.acked()) >= target, what, timeout)

    def server_errors(self):
        return sum(n for status, n in self.statuses.items() if status != "exception" and status >= 500)

    @property
    def requests(self):
        return sum(self.statuses.values())


def stored(connect, tag):
    """Every stored task whose name starts with TAG, as {name: [ids]}; CONNECT opens the database."""
    conn = connect()
    try:
        cur = conn.cursor()
        cur.execute("SELECT id, name FROM task WHERE name LIKE %s", (tag + " %",))
        rows = cur.fetchall()
    finally:
        conn.close()
    found = {}
    for task_id, name in rows:
        found.setdefault(name, []).append(task_id)
    return found


def check_exactly_once(connect, load):
    """Every acknowledged task is stored once; none is stored twice. Returns {name: id}."""
    found = stored(connect, load.tag)
    doubled = [name for name, ids in found.items() if len(ids) > 1]
    lost = [w[0] for w in load.acked() if w[0] not in found]
    assert not doubled, f"stored twice: {doubled[:5]}"
    assert not lost, f"acknowledged but not stored: {lost[:5]}"
    return {name: ids[0] for name, ids in found.items()}


def stale_reads(load, ids, writers=None):
    """LOAD's reads that missed a task acknowledged before they were sent (to WRITERS, the loads
    whose writes count, LOAD's own by default), with how late each was.

    The list shows the newest tasks first, so a read that started after task T was acknowledged
    must show T's id or a higher one; otherwise it served an older list.
    """
    acked = sorted((w[2], ids[w[0]]) for writer in (writers or [load]) for w in writer.acked())
    stale = []
    for sent, _, highest in load.reads:
        missed = [at for at, task_id in acked if at < sent and task_id > highest]
        if missed:
            stale.append((sent, sent - min(missed)))
    return stale
