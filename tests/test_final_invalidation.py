"""final/ on the cache's bad days, counted on real memcached with two app instances: a memcached
that stalls while visitors write, two releases serving in turn, and a stampede after a write.

The instances run with LOG_QUERIES=1, so the log holds every SQL statement and every page built:
what was served from the cache is counted from those, not from memcached's own hit counter.
"""
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from runtime.harness import run_app
from runtime.taskpage import task_ids
from runtime.visitor import Visitor
from conftest import FINAL, unique, wait_for
from traffic import Load, check_exactly_once, stale_reads

FREEZES = [2, 10]  # seconds memcached is stopped with SIGSTOP
TTL = 3 * max(FREEZES)  # the entries' TTL: expiry alone cannot make a freeze test pass
SETTLE = 1.0  # from this long after memcached answers again, no read may be stale
LIST_QUERY = "FROM task ORDER BY task.id DESC"  # the page query, as SQLAlchemy logs it
BUILT = "page 1 built"  # what tasks.build_page logs for a front page built
SQL_LOG = {"LOG_QUERIES": "1", "CACHE_DEFAULT_TIMEOUT": str(TTL)}
ROWS = [50, 40]  # tasks a page in each release


@pytest.fixture(scope="module")
def pair():
    """Two instances of final/ on MariaDB and one SASL memcached, in two releases side by side, as
    during a rolling deploy. Their pages differ (ROWS), so each answer shows who rendered it."""
    with run_app(FINAL, database="mariadb", cache="sasl",
                 env=dict(SQL_LOG, APP_RELEASE="release-a")) as app:
        app.spawn(env={"APP_RELEASE": "release-b", "TASKS_PER_PAGE": str(ROWS[1])})
        yield app


def one_get_each(app, urls):
    """True when a warm reload of every URL costs exactly one memcached get, and nothing more."""
    for url in urls:
        requests.get(url + "/", timeout=10)
        with app.counters() as delta:
            requests.get(url + "/", timeout=10)
        if (delta["get_hits"], delta["get_misses"], delta["cmd_set"]) != (1, 0, 0):
            return False
    return True


# --- a stall: writes made while memcached is frozen ----------------------------------------------

@pytest.mark.parametrize("freeze", FREEZES)
def test_no_write_is_hidden_after_memcached_stalls(pair, freeze):
    urls = [server.url for server in pair.servers[:2]]
    for url in urls:
        assert requests.get(url + "/", timeout=10).status_code == 200  # the page is cached
    readers = [Load(url, threads=2) for url in urls]
    writers = [Load(url, threads=2, write_every=1, reads=False) for url in urls]
    for reader in readers:
        reader.writing.clear()
    pid = pair.memcached.proc.pid
    with readers[0], readers[1]:
        wait_for(lambda: all(reader.reads for reader in readers), "reads before the stall")
        os.kill(pid, signal.SIGSTOP)
        try:
            frozen = time.monotonic()
            for writer in writers:
                writer.__enter__()
            # The stall itself: writes start until shortly before it ends, then it lasts on.
            time.sleep(freeze - 0.3)
            for writer in writers:
                writer.halt.set()
            time.sleep(max(0.0, frozen + freeze - time.monotonic()))
        finally:
            os.kill(pid, signal.SIGCONT)
        thawed = time.monotonic()
        for writer in writers:
            writer.__exit__(None, None, None)
        wait_for(lambda: all(any(sent > thawed + 3 * SETTLE for sent, _, _ in reader.reads)
                             for reader in readers), "reads after the stall", timeout=60)
    ids = {}
    for writer in writers:
        assert writer.acked(), "each instance took a write while memcached was frozen"
        assert all(sent < thawed for _, sent, _, _ in writer.writes)
        ids.update(check_exactly_once(pair.database.connect, writer))
    for load in readers + writers:
        assert load.server_errors() == 0 and not load.errors, load.errors[:3]
    for n, (reader, writer) in enumerate(zip(readers, writers), 1):
        # The writing instance never shows a list without its own acknowledged write: no flapping.
        own = stale_reads(reader, ids, [writer])
        stale = stale_reads(reader, ids, writers)
        print(f"freeze {freeze}s, instance {n}: {len(writer.acked())} writes, {len(reader.reads)} "
              f"reads, {len(stale)} stale, of them {len(own)} after its own write and "
              f"{sum(sent > thawed + SETTLE for sent, _ in stale)} from +{SETTLE}s after the stall")
        assert not own, f"instance {n}: {len(own)} reads missed its own write"
        late = [sent - thawed for sent, _ in stale if sent > thawed + SETTLE]
        assert not late, (f"instance {n}: {len(late)} of {len(reader.reads)} reads stale from "
                          f"{SETTLE}s after memcached answered again (last at +{max(late):.1f}s)")
    # The invalidations landed: both instances are back on the cache.
    wait_for(lambda: one_get_each(pair, urls), "a warm page served with one get again", timeout=10)


# --- a stampede: many readers right after a write ------------------------------------------------

def stampede(app, urls, readers):
    """A write, then READERS concurrent GET / spread over URLS: the list queries they caused."""
    name = unique("stampede")
    assert Visitor(urls[0]).post("/", {"name": name}, allow_redirects=False).status_code == 302
    since = len(app.log_text())
    start = threading.Barrier(readers)

    def read(url):
        start.wait()
        page = requests.get(url + "/", timeout=30)
        return page.status_code, name in page.text

    with ThreadPoolExecutor(readers) as pool:
        answers = list(pool.map(read, [urls[i % len(urls)] for i in range(readers)]))
    assert answers == [(200, True)] * readers
    return app.log_text()[since:].count(LIST_QUERY)


def test_one_rebuild_per_change(pair):
    urls = [server.url for server in pair.servers[:2]]
    one, two = stampede(pair, urls[:1], 50), stampede(pair, urls, 50)
    print(f"50 readers after a write: {one} list query on one instance, {two} on two")
    assert one == 1
    assert two <= 2


def test_nobody_is_served_a_rebuild_older_than_their_own_write(pair):
    """Writers read right after their write while others keep the page rebuilding."""
    url = pair.url
    stop = threading.Event()

    def browse():
        while not stop.is_set():
            requests.get(url + "/", timeout=30)

    def write_then_read(n):
        visitor = Visitor(url)
        seen = []
        for i in range(5):
            name = unique(f"mine {n}-{i}")
            assert visitor.post("/", {"name": name}, allow_redirects=False).status_code == 302
            seen.append(name in visitor.get("/").text)
        return seen

    with ThreadPoolExecutor(14) as pool:
        browsers = [pool.submit(browse) for _ in range(8)]
        try:
            writers = [pool.submit(write_then_read, n) for n in range(6)]
            seen = [shown for writer in writers for shown in writer.result()]
        finally:
            stop.set()
        for browser in browsers:
            browser.result()
    assert seen == [True] * len(seen)


# --- a rolling deploy: two releases serving in turn ----------------------------------------------

def test_a_rolling_deploy_keeps_its_hits_and_sees_every_write(pair):
    """The two releases serve in turn; each answer must come from the release that rendered it."""
    a, b = (server.url for server in pair.servers[:2])
    rows = dict(zip((a, b), ROWS))
    conn = pair.database.connect()
    try:
        conn.cursor().executemany("INSERT INTO task (name) VALUES (%s)",
                                  [(unique("deployed"),) for _ in range(max(ROWS) + 10)])
    finally:
        conn.close()
    # A write through the app makes the rows inserted with SQL part of every cached list.
    assert Visitor(a).post("/", {"name": unique("deploy")}, allow_redirects=False).status_code == 302
    turns = [a, b] * 60
    for url in rows:
        requests.get(url + "/", timeout=10)  # each release renders its page once
    since = len(pair.log_text())
    with pair.counters() as delta:
        for url in turns:
            assert len(task_ids(requests.get(url + "/", timeout=10).text)) == rows[url]
    log = pair.log_text()[since:]
    built = log.count(BUILT)
    served = (len(turns) - built) / len(turns)
    print(f"rolling deploy: {len(turns) - built} of {len(turns)} front pages served from the cache "
          f"({built} built, {log.count(LIST_QUERY)} list queries, {delta['get_hits']} gets)")
    assert served >= 0.95, f"{served:.0%} of front pages served from the cache ({built} built)"
    assert log.count(LIST_QUERY) <= built
    # A hit is one plain get: memcached saw one get per page and nothing else.
    assert (delta["get_hits"], delta["get_misses"], delta["cmd_set"]) == (len(turns), 0, 0)
    first, second = Visitor(a), Visitor(b)
    for writer in (first, second, first, second):
        name = unique("rolling")
        assert writer.post("/", {"name": name}, allow_redirects=False).status_code == 302
        for reader in (first, second, first, second):
            page = reader.get("/").text
            assert name in page and len(task_ids(page)) == rows[reader.base_url.rstrip("/")]
        task_id = max(task_ids(writer.get("/").text))
        assert writer.post(f"/{task_id}/delete", allow_redirects=False).status_code == 302
        for reader in (second, first):
            assert task_id not in task_ids(reader.get("/").text)
