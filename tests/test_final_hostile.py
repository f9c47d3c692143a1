"""final/ against hostile values and names: any value planted under the app's keys (every flag,
any size up to memcached's 1 MB item limit, zlib bombs included) costs a bounded share of a
worker, measured from /proc; task names that would hide or reorder text are refused; /health
tells an anonymous caller no host and no release."""
import itertools
import zlib
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from runtime import processes
from runtime.harness import run_app
from runtime.visitor import Visitor
from conftest import FINAL, unique
from test_final import app  # noqa: F401 (fixture)
from test_final_attacks import FLAG, flags_of, plant

# The bound (final/README.md, point 7): a planted value costs a worker at most this much.
CPU_PER_READ_S = 0.050
HWM_ONE_READER_MB = 16
HWM_CONCURRENT_MB = 64
READERS = 15  # Elastic Beanstalk's threads
# Every flag bit pylibmc gives a meaning (pickle 1, int 2, long 4, zlib 8, bool 16, text 32),
# ours, and bits nobody uses, in every combination.
FLAG_BITS = [1, 2, 4, 8, 16, 32, FLAG, 1 << 7, 1 << 15]
SIZES = [0, 1, 100, 10_000, 200_000, 1_000_000]  # memcached's item limit is 1 MB with the key


def zlib_bomb(size):
    """A zlib stream of about SIZE bytes that inflates about a thousand times larger."""
    deflate = zlib.compressobj(9)
    zeros, out = bytes(1 << 20), []
    while sum(map(len, out)) < size - 64:
        out.append(deflate.compress(zeros))
    return (b"".join(out) + deflate.flush())[:size]


def worker(app):
    """The pid of the app's one gunicorn worker."""
    (pid,) = processes.children(app.servers[0].proc.pid)
    return pid


@pytest.fixture(scope="module")
def planted():
    """final/ on MariaDB and a plain memcached (so keys can be listed and planted), with a few
    tasks, a visitor with a session, and every key the app writes present."""
    with run_app(FINAL, database="mariadb", cache="plain") as app:
        visitor = app.visitor()
        names = [unique(f"hostile {i}") for i in range(3)]
        for name in names:
            visitor.add_task(name, follow=False)
        read_everything(app, visitor, names)
        app.names, app.reader = names, visitor
        yield app


def read_everything(app, visitor, names):
    """The front page, anonymous and returning, and /me: every kind of key the app reads."""
    page = requests.get(app.url + "/", timeout=30)
    mine = visitor.get("/me")
    assert page.status_code == 200 and mine.status_code == 200
    assert all(name in page.text for name in names) and "owned" not in page.text + mine.text
    return page


def plant_all(app, flags, value):
    keys = app.memcached.keys()
    for key in keys:
        plant(app.memcached.port, key, flags, value)
    return keys


def test_every_flag_is_read_as_a_miss_and_the_page_repaired(planted):
    """All 512 combinations of the meaningful flag bits, under every key the app has written."""
    front = None
    for bits in range(len(FLAG_BITS) + 1):
        for chosen in itertools.combinations(FLAG_BITS, bits):
            flags = sum(chosen)
            value = zlib.compress(b"<h1>owned</h1>") if flags & 8 else b"<h1>owned</h1>"
            keys = plant_all(planted, flags, value)
            front = front or next(k for k in keys if k.endswith("view/front"))
            read_everything(planted, planted.reader, planted.names)
            assert flags_of(planted.memcached.port, front) == FLAG, flags
    with planted.counters() as delta:
        read_everything(planted, planted.reader, planted.names)
    assert delta["get_misses"] == 0, "repaired: the next reads all hit"


@pytest.mark.parametrize("size", SIZES)
def test_a_value_of_any_size_and_flag_costs_one_reader_little(planted, size):
    """zlib bombs, pickles and garbage up to 1 MB: each read is a miss, costs at most 50 ms of the
    worker's CPU, and raises its peak RSS by at most 16 MB."""
    pid = worker(planted)
    read_everything(planted, planted.reader, planted.names)
    before = processes.peak_rss_mb(pid)
    bomb = zlib_bomb(size)
    for flags in (8, 1 | 8, 8 | FLAG, 1, 0, FLAG, 0xFFFF, 0xFFFFFFFF):
        plant_all(planted, flags, bomb)
        started = processes.cpu_seconds(pid)
        page = read_everything(planted, planted.reader, planted.names)
        spent = processes.cpu_seconds(pid) - started
        # Two requests (the page, /me), each reading and refusing every key it touches.
        assert spent <= 2 * CPU_PER_READ_S, f"flags {flags}, {size:,} bytes: {spent * 1000:.0f} ms"
        assert "ETag" in page.headers
    grown = processes.peak_rss_mb(pid) - before
    assert grown <= HWM_ONE_READER_MB, f"{size:,} bytes: peak RSS grew {grown:.1f} MB"


def test_fifteen_concurrent_readers_of_zlib_bombs_stay_bounded(planted):
    pid = worker(planted)
    returning = dict(planted.reader.http.cookies)

    def read(n):
        cookies = returning if n % 2 else {}
        return [requests.get(planted.url + path, cookies=cookies, timeout=30).status_code
                for path in ("/", "/me")]

    def all_at_once():
        with ThreadPoolExecutor(READERS) as pool:
            return [code for codes in pool.map(read, range(READERS)) for code in codes]

    planted.memcached.flush()
    assert set(all_at_once()) == {200}  # the worker's own peak, 15 threads rebuilding at once
    before = processes.peak_rss_mb(pid)
    for flags in (8, 1 | 8):
        plant_all(planted, flags, zlib_bomb(1_000_000))
        assert set(all_at_once()) == {200}
    grown = processes.peak_rss_mb(pid) - before
    assert grown <= HWM_CONCURRENT_MB, f"peak RSS grew {grown:.1f} MB"
    assert "Traceback" not in planted.log_text()


# --- names ------------------------------------------------------------------------------------

HIDDEN = {
    "NUL": "\x00", "bell": "\x07", "escape": "\x1b", "tab": "\t", "newline": "\n", "DEL": "\x7f",
    "C1 control": "\x85", "right-to-left override": "\u202e", "left-to-right embedding": "\u202a",
    "pop directional formatting": "\u202c", "right-to-left isolate": "\u2067",
    "pop directional isolate": "\u2069", "left-to-right mark": "\u200e",
    "right-to-left mark": "\u200f", "Arabic letter mark": "\u061c",
}


@pytest.mark.parametrize("what", HIDDEN)
def test_names_with_control_or_bidi_characters_are_refused(app, what):  # noqa: F811
    name = unique("invoice") + HIDDEN[what] + "exe.txt"
    visitor = app.visitor()
    page = visitor.add_task(name)
    assert page.status_code == 200
    assert f"U+{ord(HIDDEN[what]):04X}" in page.text and "cannot hold" in page.text
    assert "exe.txt" not in page.text  # nothing stored, nothing shown
    assert "exe.txt" not in requests.get(app.url + "/", timeout=10).text


@pytest.mark.parametrize("joined", ["\u200d", "\u200c"], ids=["ZWJ", "ZWNJ"])
def test_joiners_stay_allowed(app, joined):  # noqa: F811
    name = unique("family \U0001F468" + joined + "\U0001F469" + " \u0645\u06cc" + joined + "\u062e\u0648\u0627\u0645")
    assert name in app.visitor().add_task(name).text


# --- /health ----------------------------------------------------------------------------------

def test_health_tells_an_anonymous_caller_no_host_and_no_release(planted):
    response = requests.get(planted.url + "/health", timeout=10)
    body = response.json()
    assert response.status_code == 200 and body["status"] == "ok" and body["cache"]["ok"] is True
    assert str(planted.memcached.port) not in response.text and "127.0.0.1" not in response.text
    # A row's key is <prefix>:<database tag>:<release>:row/...
    release = next(k for k in planted.memcached.keys() if ":row/" in k).split(":")[2]
    assert "release" not in body and release not in response.text


# --- several servers --------------------------------------------------------------------------

def test_reads_find_what_pylibmc_wrote_across_three_servers():
    """Reads go to the server libmemcached's ketama put each key on: a second load of the pages
    is all hits (the front page, a page's data, its version, its rows, the session)."""
    from runtime import memcached
    from runtime.services import Memcached

    others = [Memcached().start(), Memcached().start()]
    try:
        with run_app(FINAL, database="mariadb", cache="plain") as app:
            addresses = [app.memcached.address] + [m.address for m in others]
            spread = app.spawn({"MEMCACHIER_SERVERS": ",".join(addresses), "TASKS_PER_PAGE": "10"})
            visitor = Visitor(spread.url)
            for i in range(20):
                visitor.add_task(unique(f"spread {i}"), follow=False)
            for path in ("/", "/?page=2", "/me"):
                visitor.get(path)
            before = [memcached.counters(a) for a in addresses]
            for path in ("/", "/?page=2", "/me"):
                assert visitor.get(path).status_code == 200
            after = [memcached.counters(a) for a in addresses]
            hits = [a["get_hits"] - b["get_hits"] for a, b in zip(after, before)]
            misses = sum(a["get_misses"] - b["get_misses"] for a, b in zip(after, before))
            assert misses == 0 and sum(hits) >= 14, hits  # page, its data, version, 10 rows, session
            assert all(memcached.keys(m.port) for m in others)  # every server holds keys
    finally:
        for server in others:
            server.stop()
