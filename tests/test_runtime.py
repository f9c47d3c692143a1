"""runtime/: the one process-stop helper, the memcached protocol module and the task-page reader."""
import signal
import subprocess
import sys

import pytest

from runtime import harness, memcached, processes, taskpage

# A parent that ignores SIGTERM and leaves a child behind, each printing its pid.
STUBBORN = """
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print(os.getpid(), child.pid, flush=True)
time.sleep(600)
"""


def stubborn(**popen):
    proc = subprocess.Popen([sys.executable, "-c", STUBBORN], stdout=subprocess.PIPE, text=True,
                            **popen)
    _, child = map(int, proc.stdout.readline().split())
    return proc, child


def test_stop_kills_what_ignores_sigterm_and_reaps_it():
    proc, child = stubborn()
    assert processes.stop(proc, timeout=0.2) is True
    assert proc.returncode == -signal.SIGKILL
    processes.stop(child, signal.SIGKILL)
    assert not processes.alive(child)


def test_stop_with_group_leaves_nothing_of_the_group():
    proc, child = stubborn(start_new_session=True)
    processes.stop(proc, timeout=0.2, group=True)
    assert not processes.alive(child)


def test_stop_with_family_kills_the_children_first():
    proc, child = stubborn()
    assert child in processes.children(proc.pid)
    processes.stop(proc, signal.SIGKILL, family=True)
    assert not processes.alive(child) and not processes.alive(proc.pid)


# A parent that starts a new child whenever one dies, as a gunicorn master does; each pid to stdout.
RESPAWNING = """
import os, subprocess, sys
print(os.getpid(), flush=True)
while True:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    print(child.pid, flush=True)
    child.wait()
"""


def test_stop_with_family_leaves_no_child_the_parent_started_meanwhile():
    for _ in range(20):
        proc = subprocess.Popen([sys.executable, "-c", RESPAWNING], stdout=subprocess.PIPE, text=True)
        proc.stdout.readline()
        first = int(proc.stdout.readline())
        processes.stop(proc, signal.SIGKILL, family=True)
        pids = [first, *map(int, proc.stdout.read().split())]
        assert not [pid for pid in pids if processes.alive(pid)], f"left running: {pids}"


def test_stopping_a_finished_process_is_a_no_op():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert processes.stop(proc) is False


@pytest.fixture(scope="module")
def plain(services_env):
    server = harness.CacheServer(sasl=False).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def sasl(services_env):
    server = harness.CacheServer(sasl=True).start()
    yield server
    server.stop()


def test_binary_get_reads_what_pylibmc_stored_over_sasl(sasl):
    sasl.client().set("runtime:key", b"raw bytes")
    assert memcached.get(sasl.address, "runtime:key", sasl.username, sasl.password) == b"raw bytes"
    assert memcached.get(sasl.address, "runtime:absent", sasl.username, sasl.password) is None


def test_text_protocol_lists_items_and_reads_raw_values(plain):
    plain.client().set("runtime:text", b"plain bytes", time=0)
    assert "runtime:text" in memcached.keys(plain.port)
    item = next(i for i in memcached.metadump(plain.port) if i["key"] == "runtime:text")
    assert item["exp"] == -1
    assert memcached.raw_get(plain.port, "runtime:text") == b"plain bytes"
    assert memcached.raw_get(plain.port, "runtime:absent") is None
    assert memcached.raw_delete(plain.port, "runtime:text") is True
    assert memcached.raw_get(plain.port, "runtime:text") is None
    assert memcached.raw_delete(plain.port, "runtime:text") is False


def test_a_wrong_password_is_one_clear_error(sasl):
    with pytest.raises(memcached.MemcachedError, match="refused the SASL login"):
        memcached.stats(sasl.address, sasl.username, "not the password")


PAGE = """<form method="post" action="/"><input type="hidden" name="csrf_token" value="t">
<input name="name"><button>Add</button></form>
<table><tr id="task-7"><td class="name">buy &lt;milk&gt;</td>
<td><form method="post" action="/7/delete"><button>Delete</button></form></td></tr>
<tr id="task-3"><td class="name">call grandma</td>
<td><form method="post" action="/3/delete"><button>Delete</button></form></td></tr></table>
<script>ignored()</script>"""


def test_the_task_page_reader():
    assert taskpage.task_ids(PAGE) == [7, 3]
    assert taskpage.task_id(PAGE, "buy <milk>") == 7 and taskpage.task_id(PAGE, "nobody") is None
    assert taskpage.names(PAGE) == ["buy <milk>", "call grandma"]
    assert taskpage.shows(PAGE, "call grandma") and not taskpage.shows(PAGE, "ignored")
    add = taskpage.parse_forms(PAGE)[0]
    assert (add.method, add.fields, add.texts) == ("POST", {"csrf_token": "t"}, ["name"])
