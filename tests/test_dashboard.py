"""The local memcached dashboard: its arithmetic, its command line, and the page in a real browser
watching a real app's memcached."""
import contextlib
import os
import re
import subprocess
import sys

import pytest
import requests
from playwright.sync_api import expect

from instruments import counters
from runtime import harness, services

from conftest import ROOT
STAGE_08 = ROOT / "steps" / "08-view-cache"
SHOTS = ROOT / "build"


def raw_stats(pid=100, **values):
    """One server's `stats` answer as memcached sends it: every value is text."""
    stats = dict.fromkeys(counters.COUNTERS + counters.LEVELS, "0")
    stats.update({"pid": str(pid), "uptime": "50", "version": "1.6.21"})
    stats.update({k: str(v) for k, v in values.items()})
    return stats


# ---- the pure part -----------------------------------------------------------------------------

def test_one_server_shows_its_counters_and_ratio():
    view = counters.summarise({"127.0.0.1:11312": raw_stats(get_hits=3, get_misses=1, cmd_set=2,
                                                             curr_items=2, bytes=140)})
    server, total = view["columns"]
    assert server["name"] == "127.0.0.1:11312" and server["up"]
    assert server["values"]["get_hits"] == 3
    assert server["values"]["hit_ratio"] == 0.75
    assert total["values"] == server["values"]
    assert view["errors"] == []


def test_three_servers_add_up_to_a_total():
    samples = {
        "a:1": raw_stats(get_hits=5, get_misses=5, cmd_set=5, curr_items=5, bytes=500, curr_connections=2),
        "b:2": raw_stats(get_hits=10, delete_hits=1, curr_items=1, bytes=100, curr_connections=2),
        "c:3": raw_stats(get_misses=5, delete_misses=2, evictions=1, curr_connections=2),
    }
    view = counters.summarise(samples)
    names = [column["name"] for column in view["columns"]]
    assert names == ["a:1", "b:2", "c:3", "Total"]
    total = view["columns"][-1]["values"]
    assert total["get_hits"] == 15 and total["get_misses"] == 10 and total["hit_ratio"] == 0.6
    assert total["delete_hits"] == 1 and total["delete_misses"] == 2 and total["evictions"] == 1
    assert total["curr_items"] == 6 and total["bytes"] == 600 and total["curr_connections"] == 6
    assert view["columns"][2]["values"]["hit_ratio"] == 0.0
    assert view["columns"][1]["values"]["get_misses"] == 0


def test_the_delta_counts_from_the_mark_on_every_server():
    marks = {a: counters.numbers(raw_stats(get_hits=1)) for a in ("a:1", "b:2", "c:3")}
    view = counters.summarise({"a:1": raw_stats(get_hits=2), "b:2": raw_stats(get_hits=1, get_misses=1, cmd_set=1),
                                "c:3": raw_stats(get_hits=1)}, marks=marks)
    assert view["delta"]["get_hits"] == 1 and view["delta"]["get_misses"] == 1
    assert view["text"] == "+1 hit, +1 miss, +1 set"
    assert view["columns"][-1]["values"]["get_hits"] == 4  # the table still shows memcached's own counts


def test_a_restarted_server_counts_from_zero_again():
    mark = {"a:1": counters.numbers(raw_stats(pid=100, get_hits=7))}
    view = counters.summarise({"a:1": raw_stats(pid=200, get_hits=9)}, marks=mark)
    assert view["delta"]["get_hits"] == 9


def test_the_dashboards_own_baseline_zeroes_counters_but_not_items():
    zero = {"a:1": counters.numbers(raw_stats(get_hits=7, cmd_set=3, curr_items=3))}
    values = counters.summarise({"a:1": raw_stats(get_hits=8, cmd_set=3, curr_items=3)}, zeros=zero)["columns"][0]["values"]
    assert values["get_hits"] == 1 and values["cmd_set"] == 0 and values["curr_items"] == 3


def test_an_unreachable_server_is_reported_and_left_out_of_the_total():
    view = counters.summarise({"a:1": raw_stats(get_hits=2), "b:2": "memcached at b:2 is unreachable — retrying"})
    assert view["errors"] == ["memcached at b:2 is unreachable — retrying"]
    assert view["columns"][1]["up"] is False
    assert view["columns"][-1]["values"]["get_hits"] == 2
    nothing = counters.summarise({"a:1": "memcached at a:1 is unreachable — retrying"})
    assert nothing["columns"][-1]["values"] is None
    assert nothing["text"] == "unknown while memcached is unreachable"


def test_the_delta_strip_says_plurals_and_no_change():
    assert counters.describe({"get_misses": 2, "cmd_set": 1}) == "+2 misses, +1 set"
    assert counters.describe({"delete_hits": 1, "delete_misses": 3}) == "+1 delete, +3 delete misses"
    assert counters.describe({}) == "no change"


# ---- the command line --------------------------------------------------------------------------

def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "instruments.dashboard", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=30)


def test_a_bad_server_address_is_a_usage_error():
    result = run_cli("--servers", "localhost")
    assert result.returncode == 2
    assert result.stderr == "dashboard: 'localhost' is not host:port\n"


def test_a_taken_port_is_one_clear_line():
    port = services.free_port()
    with socket_listening(port):
        result = run_cli("--port", str(port), "--servers", "127.0.0.1:1", "--plain")
    assert result.returncode == 1
    assert result.stderr == f"dashboard: port {port} is already in use (another dashboard?); pick one with --port\n"


@contextlib.contextmanager
def socket_listening(port):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        yield


# ---- the page ----------------------------------------------------------------------------------

@contextlib.contextmanager
def running_dashboard(memcached):
    """The dashboard in its own process, watching MEMCACHED; yields (url, process)."""
    port = services.free_port()
    env = dict(os.environ, MEMCACHIER_PASSWORD=memcached.password)  # never on the command line
    proc = subprocess.Popen(
        [sys.executable, "-m", "instruments.dashboard", "--port", str(port),
         "--servers", memcached.address, "--username", memcached.username],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        services.wait_for_port(port, "the dashboard", timeout=15, proc=proc)
        yield f"http://127.0.0.1:{port}", proc
    finally:
        proc.terminate()
        proc.wait(10)


def cell(page, stat, server):
    return page.locator(f'td[data-stat="{stat}"][data-server="{server}"]')


def press(page, button, action):
    """Click a dashboard button and wait for its answer, so the next request counts after it."""
    with page.expect_response(f"**/api/{action}"):
        page.click(button)


def test_the_strip_counts_from_the_dashboards_start_not_memcacheds(browser):
    with harness.run_app(STAGE_08, cache="sasl") as app:
        site = browser.new_page()
        site.goto(app.url)
        site.reload()  # the cache is warm and memcached has counted both loads
        with running_dashboard(app.memcached) as (url, proc):
            board = browser.new_page()
            board.goto(url)
            delta = board.locator("#delta-text")
            expect(board.locator("#delta-since")).to_have_text(
                re.compile(r"^Since the dashboard started \(\d+ s ago\):$|^Since the dashboard started:$"))
            expect(delta).to_have_text("no change")
            with app.counters() as counted:
                site.reload()
            assert (counted["get_hits"], counted["get_misses"], counted["cmd_set"]) == (1, 0, 0)
            expect(delta).to_have_text("+1 hit")
            print(f"strip: {board.locator('#delta-since').inner_text()} {delta.inner_text()}")
            board.close()
        site.close()


def test_a_server_first_reached_late_counts_from_its_first_answer():
    memcached = harness.CacheServer(sasl=False)
    monitor = counters.Monitor([memcached.address])
    monitor.tick()  # unreachable: no baseline yet
    assert monitor.snapshot()["delta"]["text"] == "unknown while memcached is unreachable"
    memcached.start()
    try:
        client = memcached.client()
        client.set("k", "v")
        client.get("k")  # traffic before the dashboard ever reached this server
        monitor.tick()
        view = monitor.snapshot()["delta"]
        assert view["text"] == "no change"
        assert f"{memcached.address} since it first answered" in view["since"]
        client.get("k")
        monitor.tick()
        assert monitor.snapshot()["delta"]["text"] == "+1 hit"
    finally:
        memcached.stop()


def test_the_dashboard_follows_the_app_reload_by_reload(browser):
    SHOTS.mkdir(exist_ok=True)
    with harness.run_app(STAGE_08, cache="sasl") as app, running_dashboard(app.memcached) as (url, proc):
        server = app.memcached.address
        board = browser.new_page(viewport={"width": 1040, "height": 640})
        site = browser.new_page()
        board.goto(url)
        delta = board.locator("#delta-text")
        expect(board.locator("#errors")).to_be_hidden()
        expect(board.locator("#target")).to_have_text(f"{server} · SASL user workshop")

        # The first load fills the cache: misses and sets.
        press(board, "#mark", "mark")
        expect(delta).to_have_text("no change")
        with app.counters() as cold:
            site.goto(app.url)
        assert cold["get_misses"] >= 1 and cold["cmd_set"] >= 1
        expect(delta).to_have_text(counters.describe(cold))

        # The second load is one get of the cached view, and nothing else.
        press(board, "#mark", "mark")
        expect(board.locator("#delta-since")).to_have_text(re.compile("^Since you clicked Mark"))
        expect(delta).to_have_text("no change")
        with app.counters() as counted:
            site.reload()
        expect(delta).to_have_text("+1 hit")
        assert (counted["get_hits"], counted["get_misses"], counted["cmd_set"]) == (1, 0, 0)
        hits_before_reset = int(cell(board, "get_hits", server).inner_text())
        assert hits_before_reset >= 1

        # Reset zeroes memcached's counters and keeps the data.
        items = cell(board, "curr_items", server).inner_text()
        assert int(items) >= 1
        press(board, "#reset", "reset")
        expect(board.locator("#notice")).to_contain_text("stats reset")
        for stat in ("get_hits", "get_misses", "cmd_set"):
            expect(cell(board, stat, server)).to_have_text("0")
        expect(cell(board, "hit_ratio", server)).to_have_text("—")
        expect(cell(board, "curr_items", server)).to_have_text(items)
        site.reload()
        expect(cell(board, "get_hits", server)).to_have_text("1")
        expect(cell(board, "hit_ratio", server)).to_have_text("100.0%")
        expect(delta).to_have_text("+1 hit")
        board.screenshot(path=str(SHOTS / "dashboard.png"), full_page=True)

        # Flush asks first; a dismissed question flushes nothing.
        board.once("dialog", lambda dialog: dialog.dismiss())
        press(board, "#mark", "mark")
        board.click("#flush")
        site.reload()
        expect(delta).to_have_text("+1 hit")
        board.once("dialog", lambda dialog: dialog.accept())
        press(board, "#flush", "flush")
        expect(board.locator("#notice")).to_contain_text("Flushed")
        press(board, "#mark", "mark")
        with app.counters() as flushed:
            site.reload()
        assert {k: flushed[k] for k in counters.COUNTERS} == {k: cold[k] for k in counters.COUNTERS}
        expect(delta).to_have_text(counters.describe(cold))

        # memcached goes away: the page says so and keeps retrying; it comes back on its own.
        password = app.memcached.password
        assert password not in board.content()
        assert password not in requests.get(url + "/api/stats", timeout=5).text
        app.memcached.stop()
        errors = board.locator("#errors")
        expect(errors).to_have_text(f"memcached at {server} is unreachable — retrying (Connection refused)", timeout=10_000)
        expect(delta).to_have_text("unknown while memcached is unreachable")
        board.screenshot(path=str(SHOTS / "dashboard-unreachable.png"), full_page=True)
        app.memcached.start()
        expect(errors).to_be_hidden(timeout=10_000)
        expect(cell(board, "get_hits", server)).to_have_text("0")
        board.close()
        site.close()
    out, err = proc.communicate(timeout=10)
    assert proc.returncode is not None
    assert password not in out + err
    assert "Traceback" not in err
