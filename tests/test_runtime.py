"""runtime/: the one process-stop helper, the fork server, the memcached protocol module and the
task-page reader."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, wait_for
from runtime import forkserver, harness, memcached, processes, services, taskpage

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


# What a forked command sees, as JSON, then its exit status.
REPORT = """
import json, os, sys
local = [m for m, mod in list(sys.modules.items()) if os.getcwd() in str(getattr(mod, "__file__", ""))]
print(json.dumps({"argv": sys.argv, "cwd": os.getcwd(), "env": dict(os.environ), "path0": sys.path[0],
                  "flask": "flask" in sys.modules, "local": local}))
sys.exit(3)
"""


def test_a_forked_command_runs_as_python_c_would(tmp_path):
    (tmp_path / "application.py").write_text("raise SystemExit('imported too early')\n")
    out = tmp_path / "out.txt"
    env = {"ONLY_THIS": "1", "PATH": os.environ["PATH"]}
    proc = forkserver.spawn(REPORT, ["-c", "an argument"], cwd=tmp_path, env=env, out=out,
                            base_env=dict(os.environ, FORK_SERVER_ONLY="1"))
    assert proc.wait(30) == 3
    seen = json.loads(out.read_text())
    # Its own arguments, folder and environment only; libraries imported, the app's code not.
    assert seen == {"argv": ["-c", "an argument"], "cwd": str(tmp_path), "env": env, "path0": "",
                    "flask": True, "local": []}
    assert processes.stop(proc) is False  # exited and reaped


def test_a_killed_child_of_the_fork_server_is_reaped_with_its_signal(tmp_path):
    proc = forkserver.spawn("import time; time.sleep(600)", ["-c"], cwd=tmp_path, env={},
                            out=tmp_path / "out.txt", name="sleeper")
    wait_for(lambda: processes.program(proc.pid) == "sleeper", "the child named")
    assert proc.poll() is None
    assert processes.stop(proc, timeout=0.2) is False  # SIGTERM was enough
    assert proc.returncode == -signal.SIGTERM and not processes.alive(proc.pid)


def test_the_fork_server_goes_with_the_process_that_started_it(tmp_path):
    script = ("import sys; from runtime import forkserver\n"
              f"forkserver.spawn('pass', ['-c'], cwd={str(tmp_path)!r}, env={{}}, out={str(tmp_path / 'o')!r}).wait(30)\n"
              "print(forkserver.pids()[0])")
    server = int(subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                                text=True, check=True).stdout)
    wait_for(lambda: not processes.alive(server), "the fork server gone", timeout=10)


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


def test_a_fork_server_started_without_sasl_path_still_logs_in(sasl, tmp_path):
    """pylibmc reads SASL_PATH once, at its import: before the fork server forks anything."""
    login = f"[{sasl.address!r}], binary=True, username={sasl.username!r}, password={sasl.password!r}"
    code = f"import pylibmc; c = pylibmc.Client({login}); c.set('fork', b'in'); print(c.get('fork'))"
    script = ("from runtime import forkserver\n"
              f"forkserver.spawn({code!r}, ['-c'], cwd={str(tmp_path)!r}, env={{}}, "
              f"out={str(tmp_path / 'out')!r}).wait(30)")
    env = {k: v for k, v in os.environ.items() if k != "SASL_PATH"}
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, check=True, timeout=60)
    assert (tmp_path / "out").read_text() == "b'in'\n"


# Preloaded, it hands libsasl2 what the libmemcached in pylibmc 1.6.3 hands it when the byte after
# the server's mechanism list, in a buffer it never terminates, is a letter.
DIRTY_BUFFER = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
typedef int (*start_fn)(void *, const char *, void *, const char **, unsigned *, const char **);
int sasl_client_start(void *conn, const char *mechs, void *prompt, const char **out, unsigned *len,
                      const char **chosen) {
    char dirty[4096];
    snprintf(dirty, sizeof dirty, "%sx", mechs);
    void *bundled = dlopen(getenv("BUNDLED_SASL"), RTLD_NOW | RTLD_NOLOAD);
    return ((start_fn) dlsym(bundled, "sasl_client_start"))(conn, dirty, prompt, out, len, chosen);
}
"""
LOGIN = """import pylibmc, sys
for password in sys.argv[2:]:
    client = pylibmc.Client([sys.argv[1]], binary=True, username="{user}", password=password)
    try:
        client.set("login", b"in"); print(client.get("login"))
    except pylibmc.Error as exc:
        print(exc)
"""


def test_the_workshops_memcached_lets_pylibmc_log_in_past_its_mechanism_buffer_bug(sasl, tmp_path):
    """With a letter after the mechanism list, pylibmc cannot log in to a memcached that offers
    PLAIN alone; the workshop's offers PLAIN, then LOGIN, and the client logs in with PLAIN. A wrong
    password is still refused."""
    import pylibmc

    (tmp_path / "dirty.c").write_text(DIRTY_BUFFER)
    subprocess.run([services.require("gcc"), "-shared", "-fPIC", "-o", tmp_path / "dirty.so",
                    tmp_path / "dirty.c", "-ldl"], check=True)
    bundled, = (Path(pylibmc.__file__).parents[1] / "pylibmc.libs").glob("libsasl2-*")
    env = dict(os.environ, LD_PRELOAD=str(tmp_path / "dirty.so"), BUNDLED_SASL=str(bundled),
               SASL_PATH=harness.services_env()["SASL_PATH"])

    def logins(server):
        code = LOGIN.format(user=sasl.username)
        return subprocess.run([sys.executable, "-c", code, server.address, sasl.password, "wrong"],
                              env=env, capture_output=True, text=True, check=True, timeout=60).stdout

    with memcached.connect(sasl.address) as sock:
        memcached.request(sock, 0x20)  # SASL_LIST_MECHS
        assert memcached.response(sock)[2] == b"PLAIN LOGIN"
    assert logins(sasl) == "b'in'\nerror 41 from memcached_set: AUTHENTICATION FAILURE\n"
    alone = services.Memcached(sasl=True, sasl_conf=services.sasl_conf_dir(tmp_path, mechanisms="plain"))
    try:
        assert logins(alone.start()) == "error 40 from memcached_set: FAILED TO SEND AUTHENTICATION TO SERVER\n" * 2
    finally:
        alone.stop()


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


def test_an_app_serves_on_the_port_its_gunicorn_bound_and_keeps_it_on_restart(services_env):
    """The kernel picks the port at gunicorn's first bind: a port found free beforehand could be
    taken before gunicorn bound it, and the app's URL would lead to somebody else."""
    with harness.run_app(ROOT / "steps" / "01-skeleton", cache=None) as app:
        server = app.servers[0]
        port = server.port
        assert processes.listener(port) == server.proc.pid
        app.restart()
        assert server.port == port and processes.listener(port) == server.proc.pid
        assert app.visitor().get("/").status_code == 200


def test_an_apps_memcached_taken_port_moves_it_to_another(monkeypatch):
    """A port found free can be taken before memcached binds it; memcached then exits, and the
    app would talk to whatever holds the port (another app's memcached, which goes when that app
    stops: ServerDown in the middle of a check)."""
    with services.socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ports = iter([taken.getsockname()[1]])
        monkeypatch.setattr(services, "free_port", lambda real=services.free_port: next(ports, None) or real())
        server = services.Memcached().start()
        try:
            assert server.port != taken.getsockname()[1]
            assert processes.listening_ports(server.proc.pid) == [server.port]
        finally:
            server.stop()
        with pytest.raises(services.ServiceError, match="already in use"):
            services.Memcached(port=taken.getsockname()[1]).start()
