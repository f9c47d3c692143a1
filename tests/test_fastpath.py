"""final/'s fast path (task_list/fastpath.py): the warm front page answered before Flask, exactly as
Flask answers it, with every guarantee of the page kept."""
import socket
import time

import pytest
import requests

from runtime.harness import run_app
from conftest import FINAL, unique


@pytest.fixture(scope="module")
def cached_app():
    """final/ on MariaDB and SASL memcached, for counter tests."""
    with run_app(FINAL, database="mariadb", cache="sasl") as running:
        yield running


# Headers that say what the answer is; Date and Server come from gunicorn alike for both.
SAME_HEADERS = ("ETag", "Cache-Control", "Content-Type", "Content-Length", "Set-Cookie", "Vary")


def answer(app, method, path, **kwargs):
    response = requests.request(method, app.url + path, timeout=10, allow_redirects=False, **kwargs)
    return (response.status_code, response.content,
            {h: response.headers.get(h) for h in SAME_HEADERS})


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_the_fast_path_answers_the_front_page_as_flask_does(cached_app, method):
    """`/` is answered by fastpath.py when warm; `/?page=1` is the same page, always from Flask."""
    visitor = cached_app.visitor()
    visitor.add_task(unique("fast path"))
    returning = dict(visitor.http.cookies)
    assert "session" in returning and "flash" not in returning
    requests.get(cached_app.url + "/", timeout=10)  # warm: stored by this release
    etag = requests.get(cached_app.url + "/", timeout=10).headers["ETag"]
    cases = [{}, {"cookies": returning}, {"headers": {"If-None-Match": etag}},
             {"headers": {"If-None-Match": f'"other", {etag}'}},
             {"headers": {"If-None-Match": "W/" + etag}}, {"headers": {"If-None-Match": "*"}},
             {"headers": {"If-None-Match": '"other"'}}]
    for kwargs in cases:
        with cached_app.counters() as delta:
            fast = answer(cached_app, method, "/", **kwargs)
        flask = answer(cached_app, method, "/?page=1", **kwargs)
        assert fast == flask, kwargs
        assert fast[2]["Set-Cookie"] is None and fast[0] in (200, 304)
        assert (delta["get_hits"], delta["get_misses"], delta["cmd_set"]) == (1, 0, 0)


def test_after_a_write_the_fast_path_misses_once_and_flask_rebuilds(cached_app):
    """A tombstone is a miss for the fast path too; Flask rebuilds, and the next load is warm."""
    requests.get(cached_app.url + "/", timeout=10)
    name = unique("after a write")
    cached_app.visitor().add_task(name, follow=False)
    with cached_app.counters() as cold:
        page = requests.get(cached_app.url + "/", timeout=10)
    assert name in page.text and "ETag" in page.headers
    # Stored over the write's tombstone with compare-and-set, as without the fast path.
    assert cold["cas_hits"] == 1
    with cached_app.counters() as warm:
        requests.get(cached_app.url + "/", timeout=10)
    assert (warm["get_hits"], warm["get_misses"], warm["cmd_set"]) == (1, 0, 0)


def test_a_page_past_its_signed_expiry_is_rebuilt_though_memcached_keeps_its_bytes():
    """The fast path serves the same bytes again without opening them, but never past the expiry
    signed into them: memcached's `touch` (anyone with the cache's password can send it) keeps
    the bytes, CAS and all, beyond it."""
    with run_app(FINAL, database="sqlite", cache="plain", env={"CACHE_DEFAULT_TIMEOUT": "4"}) as app:
        app.visitor().add_task(unique("touched"), follow=False)
        requests.get(app.url + "/", timeout=10)
        with app.counters() as warm:
            requests.get(app.url + "/", timeout=10)
        assert (warm["get_hits"], warm["cmd_set"]) == (1, 0)  # answered from the same bytes
        key, = [k for k in app.memcached.keys() if k.endswith("view/front")]
        with socket.create_connection(("127.0.0.1", app.memcached.port), timeout=5) as sock:
            sock.sendall(f"touch {key} 600\r\n".encode())
            assert sock.recv(100) == b"TOUCHED\r\n"
        time.sleep(4.5)  # the signed expiry passes; memcached keeps the bytes (touched)
        with app.counters() as past:
            page = requests.get(app.url + "/", timeout=10)
        assert page.status_code == 200 and past["cas_hits"] + past["cmd_set"] >= 1  # rebuilt, stored
