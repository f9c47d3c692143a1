"""final/ against an attacker: cross-origin forms, hostile requests, and a cache that anyone
else can write to (a shared cache, a leaked MemCachier password, a neighbour app)."""
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from runtime.harness import HarnessError, run_app
from runtime.memcached import raw_get
from conftest import FINAL, unique
from test_final import LIST_URL, app, cached_app, stored_names  # noqa: F401 (fixtures)

# --- security -------------------------------------------------------------------------------

def stored(app, name):
    """True when a task named NAME is stored, read from the database (MariaDB) or the list."""
    if app.database.kind == "mariadb":
        return name in stored_names(app)
    return name in app.visitor().get(LIST_URL).text


# (headers a browser sends with a form post, whether the app takes it)
CROSS_ORIGIN_CASES = {
    "Sec-Fetch-Site same-origin": ({"Sec-Fetch-Site": "same-origin"}, True),
    "Sec-Fetch-Site none (typed or bookmarked)": ({"Sec-Fetch-Site": "none"}, True),
    "Sec-Fetch-Site same-site": ({"Sec-Fetch-Site": "same-site"}, False),
    "Sec-Fetch-Site cross-site": ({"Sec-Fetch-Site": "cross-site"}, False),
    "Sec-Fetch-Site wins over a matching Origin": (
        {"Sec-Fetch-Site": "cross-site", "Origin": "{own}"}, False),
    "Origin of this host and port": ({"Origin": "{own}"}, True),
    "Origin of this host and port over https": ({"Origin": "{own_https}"}, True),
    "Origin of this host, another port": ({"Origin": "http://127.0.0.1:1"}, False),
    "Origin of another host": ({"Origin": "http://evil.example"}, False),
    "Origin null": ({"Origin": "null"}, False),
    "neither header": ({}, True),
}


@pytest.mark.parametrize("case", CROSS_ORIGIN_CASES)
def test_cross_origin_posts_are_refused_and_store_nothing(app, case):
    headers, allowed = CROSS_ORIGIN_CASES[case]
    own = app.url
    headers = {k: v.format(own=own, own_https=own.replace("http://", "https://"))
               for k, v in headers.items()}
    name = unique("cross origin")
    # A field that looks like a token changes nothing: there are no tokens.
    response = requests.post(app.url + "/", data={"name": name, "csrf_token": "x" * 32},
                             headers=headers, allow_redirects=False, timeout=10)
    assert response.status_code == (302 if allowed else 403)
    assert stored(app, name) == allowed
    if not allowed:
        assert "another site" in response.text and "Set-Cookie" not in response.headers


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
def test_safe_methods_are_allowed_from_anywhere(app, method):
    response = requests.request(method, app.url + "/", headers={"Sec-Fetch-Site": "cross-site"},
                                timeout=10)
    assert response.status_code < 400


def test_pages_carry_no_token_and_anonymous_views_set_no_cookie(app):
    response = requests.get(app.url + "/", timeout=10)
    assert "csrf" not in response.text
    assert "Set-Cookie" not in response.headers


def test_session_cookie_flags(app):
    visitor = app.visitor()
    response = visitor.add_task(unique("cookie flags"), follow=False)
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


@pytest.mark.parametrize("secret", ["", "dev_key", "x" * 31])
def test_refuses_to_start_without_a_real_secret_key(secret):
    with pytest.raises(HarnessError, match="SECRET_KEY is not set"):
        with run_app(FINAL, cache=None, env={"SECRET_KEY": secret}):
            pass


def test_request_size_is_limited(app):
    response = app.visitor().post("/", {"name": "x" * 100_000})
    assert response.status_code == 413


def test_a_chunked_body_over_the_limit_is_refused_whole(app):
    name = unique("chunked")
    body = f"name={name}&pad={'x' * 100_000}".encode()

    def chunks():
        for i in range(0, len(body), 8192):
            yield body[i:i + 8192]

    response = requests.post(app.url + "/", data=chunks(), timeout=10, allow_redirects=False,
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 413
    assert name not in app.visitor().get(LIST_URL).text


@pytest.mark.parametrize("page", ["368934881474191034", "-1", "0", "1e9", "x", "99999"])
def test_absurd_page_numbers_are_a_404_or_the_first_page(app, page):
    response = requests.get(app.url + "/", params={"page": page}, timeout=10)
    assert response.status_code in (200, 404)
    assert "Traceback" not in response.text


def test_an_overlong_session_cookie_is_no_session(app):
    for cookie in ("a" * 226, "a" * 300, "../../etc", "x"):
        for path in ("/", "/me"):
            response = requests.get(app.url + path, cookies={"session": cookie}, timeout=10)
            assert response.status_code == 200
        response = requests.post(app.url + "/", data={"name": ""}, cookies={"session": cookie},
                                 allow_redirects=False, timeout=10)
        assert response.status_code == 302



def test_a_script_name_header_changes_nothing_shared(cached_app):
    cached_app.memcached.flush()
    for n in range(20):
        response = requests.get(f"{cached_app.url}/evil{n}/", headers={"SCRIPT_NAME": f"/evil{n}"},
                                timeout=10)
        assert response.status_code == 404
    page = requests.get(cached_app.url + "/", timeout=10).text
    assert "/evil" not in page and 'action="/"' in page


# --- a cache that anyone else can write to ---------------------------------------------------

FLAG = 1 << 12  # the flag final/ stores its values under (task_list/cachedata.py)


class RunsACommand:
    """Unpickled, this would create MARKER: the proof that a planted pickle never runs."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def plant(port, key, flags, value):
    from runtime.memcached import text_command

    reply = text_command(port, f"set {key} {flags} 0 {len(value)}\r\n".encode() + value + b"\r\n",
                         end=b"\r\n")
    assert reply == b"STORED\r\n", reply


def flags_of(port, key):
    from runtime.memcached import text_command

    header = text_command(port, f"get {key}\r\n".encode()).split(b"\r\n")[0].split()
    return int(header[2]) if header and header[0] == b"VALUE" else None


def poisons(marker, copied):
    import pickle
    import zlib

    bomb = pickle.dumps(RunsACommand(marker))
    return {
        "a pickle under flag 1": (1, bomb),
        "a pickle as plain bytes": (0, bomb),
        "a zlib-compressed pickle": (1 | 8, zlib.compress(bomb)),
        "bytes that do not inflate": (8, b"not zlib"),
        "empty": (0, b""),
        "empty under our flag": (FLAG, b""),
        "an integer": (4, b"12345"),
        "odd bytes under our flag": (FLAG, b"\xff\x00\x13" * 7),
        "msgpack without a valid MAC": (FLAG, b"\x00" * 16 + b"\x93\xa1k\x00\xa5hello"),
        "a valid value copied from another key": copied,
        "the attacker's HTML": (0, b"<h1>owned</h1><script>alert(1)</script>"),
        "the attacker's HTML under our flag": (FLAG, b"<h1>owned</h1>"),
    }


def test_values_planted_in_the_cache_never_run_never_show_and_are_repaired(tmp_path):
    marker = tmp_path / "pickle-ran"
    with run_app(FINAL, database="mariadb", cache="plain") as app:
        port = app.memcached.port
        visitor = app.visitor()
        names = [unique(f"planted {i}") for i in range(3)]
        for name in names:
            visitor.add_task(name, follow=False)
        visitor.get("/")
        visitor.get("/me")
        keys = app.memcached.keys()
        front = next(k for k in keys if k.endswith("view/front"))
        row = next(k for k in keys if ":row/" in k)
        copied = (FLAG, raw_get(port, row))
        for what, (flags, value) in poisons(marker, copied).items():
            for key in keys:
                plant(port, key, flags, value)
            page = requests.get(app.url + "/", timeout=10)
            mine = visitor.get("/me")
            assert page.status_code == 200 and mine.status_code == 200, what
            assert all(name in page.text for name in names), what
            assert "owned" not in page.text + mine.text, what
            assert not marker.exists(), f"{what}: the planted pickle ran"
            # Repaired on that read: the next one is a single hit on values the app wrote.
            assert flags_of(port, front) == FLAG and flags_of(port, row) == FLAG, what
            with app.counters() as delta:
                again = requests.get(app.url + "/", timeout=10)
            assert again.text == page.text, what
            assert (delta["get_hits"], delta["get_misses"]) == (1, 0), what
        later = unique("after the planting")
        assert later in visitor.add_task(later).text
        assert "Traceback" not in app.log_text()
        refusals = [line for line in app.log_text().splitlines() if "value refused" in line]
        assert refusals, "a refused value is logged"


# --- logging ----------------------------------------------------------------------------------

def test_a_thousand_writes_with_memcached_down_log_a_handful_of_lines():
    with run_app(FINAL, database="sqlite", cache="sasl") as app:
        app.visitor().get("/")
        app.memcached.stop()
        start = len(app.log_text())

        def writes(n):
            session = requests.Session()
            return [session.post(app.url + "/", data={"name": f"down {n}-{i}"},
                                 allow_redirects=False, timeout=20).status_code
                    for i in range(125)]

        with ThreadPoolExecutor(8) as pool:
            codes = [c for batch in pool.map(writes, range(8)) for c in batch]
        assert codes.count(302) == 1000
        warnings = [line for line in app.log_text()[start:].splitlines()
                    if line.startswith(("WARNING", "ERROR"))]
        assert 0 < len(warnings) <= 30, f"{len(warnings)} lines logged for 1,000 writes"


# --- faults -----------------------------------------------------------------------------------


@pytest.mark.browser
def test_browser_form_posted_from_another_site_is_refused(browser, tmp_path):
    """A page on another origin that submits a form to the app as soon as it loads."""
    import http.server
    from functools import partial

    with run_app(FINAL, database="mariadb", cache="sasl") as app:
        name = unique("forged in chromium")
        (tmp_path / "attack.html").write_text(
            f'<form method="post" action="{app.url}/"><input name="name" value="{name}">'
            '<input name="csrf_token" value="looks-like-a-token"></form>'
            "<script>document.forms[0].submit()</script>")
        handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
        attacker = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        serving = threading.Thread(target=attacker.serve_forever, daemon=True)
        serving.start()
        try:
            page = browser.new_page()
            with page.expect_response(lambda r: r.request.method == "POST") as posted:
                page.goto(f"http://localhost:{attacker.server_port}/attack.html")
            assert posted.value.status == 403
            page.close()
        finally:
            attacker.shutdown()
        assert name not in stored_names(app)
        # The app's own form, in the same browser, still works.
        own = browser.new_page()
        own.goto(app.url + "/")
        mine = unique("from the app's own form")
        own.fill("input[name=name]", mine)
        own.click("form.new-task button")
        own.locator("tr", has_text=mine).wait_for()
        own.close()
        assert mine in stored_names(app)
