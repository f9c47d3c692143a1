"""Several instances behind a load balancer, and faults injected while load runs.

The cluster is instruments/cluster.py's (`make cluster`): nginx in front of two gunicorn instances of
final/, three SASL memcached nodes with ketama hashing, and a MariaDB of its own, all in a
temporary folder on free ports. Every fault test keeps visitors reading and writing through nginx
while the fault happens, then checks what they saw: no 5xx, every acknowledged task stored exactly
once, and no list older than the writes the visitor could already know about.
"""
import re
import threading
import time
import uuid
from collections import Counter

import pytest
import requests

from instruments.cluster import Cluster, Ports
from runtime.taskpage import task_ids
from runtime.visitor import Visitor
from conftest import unique, wait_for
from traffic import Load, check_exactly_once, stale_reads, stored

# The test cluster's CACHE_DEFAULT_TIMEOUT: longer than any fault here, so no entry expires
# during one and expiry cannot make a test pass.
TTL = 30
# From this long after a partition heals, no read may be stale: the writers' pending
# invalidations have landed by then (final/README.md, point 16).
SETTLE = 1.0
REPORT = []


# --- the cluster and its load ------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """nginx, two instances of final/, three memcached nodes and MariaDB, started once."""
    running = Cluster(tmp_path_factory.mktemp("cluster"), ports=Ports.free(),
                      env={"CACHE_DEFAULT_TIMEOUT": TTL}, links=True)
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module", autouse=True)
def report_at_the_end(request):
    """Print the load, faults and 5xx of every test here once the whole session ends."""
    if not request.config.pluginmanager.has_plugin("cluster-report"):
        request.config.pluginmanager.register(ClusterReport(), "cluster-report")
    yield


class ClusterReport:
    def pytest_terminal_summary(self, terminalreporter):
        if not REPORT:
            return
        write = terminalreporter.write_line
        terminalreporter.section("cluster: load held, faults injected, 5xx counted")
        write(f"{'test':38} {'threads':>7} {'secs':>5} {'req/s':>6} {'requests':>8} {'writes':>6} "
              f"{'5xx':>4} {'stale':>5} {'max stale s':>11}  fault")
        for row in REPORT:
            write(f"{row['test']:38} {row['threads']:>7} {row['seconds']:>5.1f} {row['rps']:>6.0f} "
                  f"{row['requests']:>8} {row['writes']:>6} {row['5xx']:>4} {row['stale']:>5} "
                  f"{row['max_stale']:>11.2f}  {row['fault']}")


def record(name, load, fault, stale=(), fivexx=None):
    REPORT.append({
        "test": name, "threads": load.threads, "seconds": load.seconds,
        "rps": load.requests / load.seconds, "requests": load.requests, "writes": len(load.acked()),
        "5xx": load.server_errors() if fivexx is None else fivexx, "stale": len(stale),
        "max_stale": max((s for _, s in stale), default=0.0), "fault": fault,
    })


def unhandled(cluster, since):
    """Lines of the instances' log since offset SINCE that report an unhandled exception."""
    return [line for line in cluster.log_text()[since:].splitlines()
            if line.startswith("ERROR") and "Exception on" in line]


# --- several instances ---------------------------------------------------------------------------

def test_a_write_through_one_instance_is_seen_through_the_other(cluster):
    a, b = cluster.instance_urls[:2]
    requests.get(b + "/", timeout=10)  # B now has the list cached
    writer = Visitor(a)
    name = unique("written through A")
    assert writer.add_task(name, follow=False).status_code == 302
    assert name in requests.get(b + "/", timeout=10).text
    task_id = max(task_ids(writer.get("/").text))
    assert writer.delete_task(task_id, follow=False).status_code == 302
    assert task_id not in task_ids(requests.get(b + "/", timeout=10).text)


def test_a_session_set_through_one_instance_is_read_through_the_other(cluster):
    a, b = cluster.instance_urls[:2]
    visitor = Visitor(a)
    name = unique("remembered by my session")
    visitor.add_task(name, follow=False)
    mine = requests.get(b + "/me", cookies=visitor.http.cookies, timeout=10)
    assert mine.status_code == 200 and name in mine.text
    stranger = requests.get(b + "/me", timeout=10)
    assert name not in stranger.text


def test_a_repeat_visit_is_answered_304_by_either_instance(cluster):
    a, b = cluster.instance_urls[:2]
    visitor = Visitor(a)
    tag = visitor.get("/").headers["ETag"]
    again = requests.get(b + "/", cookies=visitor.http.cookies, headers={"If-None-Match": tag},
                         timeout=10)
    assert again.status_code == 304 and not again.content
    name = unique("a change")
    Visitor(b).add_task(name, follow=False)
    changed = requests.get(a + "/", cookies=visitor.http.cookies, headers={"If-None-Match": tag},
                           timeout=10)
    assert changed.status_code == 200 and name in changed.text


def test_fifteen_threads_of_mixed_reads_and_writes_through_the_balancer(cluster):
    tag = f"mixed-{uuid.uuid4().hex[:6]}"
    since = len(cluster.log_text())
    access_log = cluster.run_dir / "nginx-access.log"
    log_start = access_log.stat().st_size

    def visitor_thread(n):
        visitor = Visitor(cluster.url, timeout=20)
        codes, added, deleted = [], [], []
        for i in range(6):
            name = f"{tag} {n}-{i}"
            codes.append(visitor.post("/", {"name": name}, allow_redirects=False).status_code)
            added.append(name)
            page = visitor.get("/")
            codes.append(page.status_code)
            row = re.search(rf'id="task-(\d+)">\s*<td class="name">{re.escape(name)}<', page.text)
            if i % 2 and row:
                codes.append(visitor.post(f"/{row.group(1)}/delete",
                                          allow_redirects=False).status_code)
                deleted.append(name)
        return codes, added, deleted

    started = time.monotonic()
    results = []
    threads = [threading.Thread(target=lambda n=n: results.append(visitor_thread(n)))
               for n in range(15)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    seconds = time.monotonic() - started
    assert len(results) == 15, "a visitor thread failed; see the captured output"
    codes = Counter(c for r in results for c in r[0])
    expected = Counter(n for r in results for n in r[1]) - Counter(n for r in results for n in r[2])
    assert set(codes) <= {200, 302}, codes
    assert Counter({name: len(ids) for name, ids in stored(cluster.db_connect, tag).items()}) == expected
    # Once the writes are over, both instances serve the database's own first page.
    conn = cluster.db_connect()
    try:
        cur = conn.cursor()
        cur.execute("SELECT id FROM task ORDER BY id DESC LIMIT 50")
        newest = [row[0] for row in cur.fetchall()]
    finally:
        conn.close()
    for url in cluster.instance_urls:
        assert task_ids(requests.get(url + "/", timeout=10).text) == newest
    upstreams = set(re.findall(r"upstream=(\S+)", access_log.read_text()[log_start:]))
    assert len(upstreams) == len(cluster.instance_urls), "nginx used every instance"
    assert not unhandled(cluster, since)
    REPORT.append({"test": "mixed reads and writes", "threads": 15, "seconds": seconds,
                   "rps": sum(codes.values()) / seconds, "requests": sum(codes.values()),
                   "writes": sum(expected.values()) + 2 * sum(len(r[2]) for r in results),
                   "5xx": sum(n for c, n in codes.items() if c >= 500), "stale": 0,
                   "max_stale": 0.0, "fault": "none"})


# --- faults under load ---------------------------------------------------------------------------

def is_list(value):
    """True when VALUE, a front page entry's raw bytes, holds a copy of the list (not a tombstone)."""
    return value is not None and b'id="task-' in value


def warm(cluster):
    """Every instance has served the list, so the front page sits in memcached. Asked again for
    a few seconds: right after the previous test restarted every node, an instance keeps its
    pages out of memcached for a second (final/README.md, Scale)."""
    held = []

    def holder():
        for url in cluster.instance_urls:
            assert requests.get(url + "/", timeout=10).status_code == 200
        held[:] = [cluster.node_holding("view/front")]
        return held[0] is not None

    wait_for(holder, "the front page cached on one of the nodes", timeout=10)
    return held[0]


def test_one_memcached_node_stopped_then_back_empty(cluster):
    node = warm(cluster)
    since = len(cluster.log_text())
    with Load(cluster.url) as load:
        load.wait_for_writes(5, "writes before the fault")
        cluster.stop_node(node)
        load.wait_for_writes(15, "writes with one node stopped")
        cluster.start_node(node)
        load.wait_for_writes(15, "writes after the node came back empty")
    ids = check_exactly_once(cluster.db_connect, load)
    stale = stale_reads(load, ids)
    record("one memcached node stopped, back empty", load,
           f"node {node + 1} of 3 stopped, restarted", stale)
    assert load.server_errors() == 0 and not load.errors, load.errors[:3]
    assert not stale, f"{len(stale)} reads served a list older than an acknowledged write"
    assert not unhandled(cluster, since)


def test_no_read_is_stale_a_second_after_a_partition_heals(cluster):
    node = warm(cluster)
    since = len(cluster.log_text())
    with Load(cluster.url, threads=4) as load:
        load.wait_for_writes(3, "writes before the partition")
        # A quiet moment: the readers put a fresh copy of the list back on its node.
        load.pause_writes()
        wait_for(lambda: is_list(cluster.node_value(node, "view/front")),
                 "a fresh copy of the list on its node")
        cluster.cut_node(node)
        load.writing.set()
        try:
            load.wait_for_writes(1, "a write during the partition")
            # No write after the partition: only the writers' retries can end the staleness.
            load.pause_writes()
            left = cluster.node_value(node, "view/front")  # read past the cut, on the node itself
        finally:
            cluster.mend_node(node)
        healed = time.monotonic()
        newest = load.acked()[-1][0]
        wait_for(lambda: any(sent > healed + 3 * SETTLE for sent, _, _ in load.reads),
                 "reads for a while after the partition healed")
    ids = check_exactly_once(cluster.db_connect, load)
    stale = stale_reads(load, ids)
    record("partition: a node cut off, then back", load, f"node {node + 1} of 3 cut off", stale)
    assert is_list(left) and newest.encode() not in left, \
        "the partition should have left an old copy of the list behind"
    assert load.server_errors() == 0 and not load.errors, load.errors[:3]
    late = [sent - healed for sent, _ in stale if sent > healed + SETTLE]
    assert not late, (f"{len(late)} reads stale from {SETTLE}s after the partition healed "
                      f"(last at +{max(late):.1f}s)")
    assert not unhandled(cluster, since)


def test_all_memcached_nodes_stopped(cluster):
    warm(cluster)
    since = len(cluster.log_text())
    with Load(cluster.url) as load:
        load.wait_for_writes(5, "writes before the fault")
        for i in range(len(cluster.nodes)):
            cluster.stop_node(i)
        load.wait_for_writes(15, "writes with every node stopped")
        for i in range(len(cluster.nodes)):
            cluster.start_node(i)
        load.wait_for_writes(10, "writes after the nodes came back")
    ids = check_exactly_once(cluster.db_connect, load)
    stale = stale_reads(load, ids)
    record("all memcached nodes stopped", load, "3 of 3 nodes stopped, restarted", stale)
    assert load.server_errors() == 0 and not load.errors, load.errors[:3]
    assert not stale
    assert not unhandled(cluster, since)


def test_mariadb_restarted(cluster):
    warm(cluster)
    since = len(cluster.log_text())
    with Load(cluster.url, threads=4) as load:
        load.wait_for_writes(5, "writes before the restart")
        visitor = Visitor(cluster.url)
        down = time.monotonic()
        cluster.stop_mariadb()
        refused = visitor.post("/", {"name": unique("while the database is down")},
                                allow_redirects=False)
        cluster.start_mariadb()
        up = time.monotonic()

        def answers_correctly():
            name = unique("after the restart")
            fresh = Visitor(cluster.url, timeout=5)
            try:
                return name in fresh.add_task(name).text
            except (requests.RequestException, AssertionError, IndexError):
                return False

        wait_for(answers_correctly, "a write and read after MariaDB came back", timeout=5)
        recovered = time.monotonic()
        load.wait_for_writes(5, "writes after the restart")
    assert refused.status_code == 503
    assert "The database is not answering" in refused.text and "Traceback" not in refused.text
    ids = check_exactly_once(cluster.db_connect, load)
    stale = stale_reads(load, ids)
    outage = [e for e in load.errors if down <= e[0] <= recovered + 1]
    others = [e for e in load.errors if e not in outage]
    assert all(e[1].endswith(" 503") and "Traceback" not in e[2] for e in outage), outage[:3]
    assert not others, others[:3]
    assert not stale
    assert not unhandled(cluster, since)
    record("MariaDB restarted", load, f"MariaDB down {up - down:.1f}s (the 5xx: its 503 page), "
           f"answering {recovered - up:.1f}s after", stale, fivexx=load.server_errors())
