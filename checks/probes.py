"""What the checks of checks/stages.py share beyond a page and a counter: the app's database
held at its commit, the next load judged fresh or stale (and by which layer), the learner's own
code read for what it already calls, and pages seen by several visitors.
"""
import contextlib
import fcntl
import os
import re
import secrets
import sqlite3
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urljoin, urlsplit

from checks.subject import expect
from runtime import harness, memcached
from runtime.taskpage import links, shows, texts

# memcached's counters that a write to the cache moves (a set, a delete, a version bumped).
WRITES = ("cmd_set", "delete_hits", "delete_misses", "incr_hits", "incr_misses", "cas_hits",
          "cas_misses")
POLL = 0.01  # seconds between two looks at the database's lock
PENDING_BYTE = 0x40000000  # where SQLite's unix VFS takes its PENDING lock (os_unix.c)
FLOCK = "hhqqi4x"  # struct flock on 64-bit Linux: type, whence, start, len, pid


class HeldAtCommit:
    """A read transaction on each of the app's SQLite files: in SQLite's rollback-journal mode a
    writer may take its RESERVED lock and write, but its COMMIT waits (in the app's busy timeout,
    5 s by default) until the read ends. While it waits it holds a write lock on SQLite's PENDING
    byte: another process's lock that this one can see with F_GETLK, and the proof that the request
    reached its commit. (A second SQLite connection here would not see it: SQLite shares one
    process's locks among its connections.)"""

    def __init__(self, files):
        self.files = files
        self.readers, self.fds = [], []

    def __enter__(self):
        for path in self.files:
            # Opened first and closed last: closing any descriptor of a file drops every POSIX
            # lock this process holds on it, the reader's too.
            self.fds.append(os.open(path, os.O_RDONLY))
            reader = sqlite3.connect(path, timeout=0, isolation_level=None, check_same_thread=False)
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM sqlite_master").fetchall()  # takes the SHARED lock
            self.readers.append(reader)
        return self

    def journal_modes(self):
        return {r.execute("PRAGMA journal_mode").fetchone()[0].lower() for r in self.readers}

    def committing(self):
        """True while another process holds the PENDING byte for writing: a writer at its commit."""
        for fd in self.fds:
            query = struct.pack(FLOCK, fcntl.F_WRLCK, os.SEEK_SET, PENDING_BYTE, 1, 0)
            held = struct.unpack(FLOCK, fcntl.fcntl(fd, fcntl.F_GETLK, query))
            if held[0] == fcntl.F_WRLCK:
                return True
        return False

    def wait_for_commit(self, request, limit):
        """Poll until the writer waits at its commit (True), or REQUEST ends or LIMIT passes (False)."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline and not request.done():
            if self.committing():
                return True
            time.sleep(POLL)
        return self.committing()

    def __exit__(self, *exc):
        for reader in self.readers:
            with contextlib.suppress(sqlite3.Error):
                reader.close()  # ends the read transaction: the app's commit goes on
        for fd in self.fds:
            os.close(fd)


def held_at_commit(subject):
    files = harness.database_files(subject.app.workdir)
    return HeldAtCommit([str(p) for p in files]) if files else None


def in_background(call):
    """CALL running in a thread of its own; its future (result() re-raises what it raised)."""
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(call)
    pool.shutdown(wait=False)
    return future


def cache_writes(delta):
    return {k: delta.get(k, 0) for k in WRITES if delta.get(k, 0)}


# ---- what a check says, and the loads it judges ------------------------------------------------

def new_name(label):
    return f"{label} {secrets.token_hex(4)}"


def deltas(delta, *names):
    return ", ".join(f"{n} {delta[n]:+d}" for n in names)


def listed(keys, limit=6):
    shown = ", ".join(sorted(keys)[:limit])
    return (shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")) or "no keys at all"


def next_load(app, app_dir, name, stage, reason=None, shown=True, note=""):
    """The next load by a new visitor, and memcached's counters around it; it fails unless it
    shows NAME (or, SHOWN false, no longer shows it). A page that a flush puts right was stale:
    named as the view cache's of stage 08 when it came whole from the cache of an app that caches
    its view and STAGE is an earlier one, else for REASON (with NOTE, what the code shows). One
    that a flush does not put right is the write's own failure."""
    with app.counters() as delta:
        page = app.visitor().get("/").text
    if shows(page, name) == shown:
        return page, delta
    write = "adding" if shown else "deleting"
    seen = f"the next load after {write} {name!r} " + ("does not show it" if shown else "still shows it")
    app.flush()
    expect(shows(app.visitor().get("/").text, name) == shown, f"{seen}, nor does a load after a "
           "flush: " + ("it was not stored" if shown else "it was not deleted"),
           "not_stored" if shown else None)
    layer = "08" if stage < "08" and view_layer(app_dir, delta) else None
    expect(False, f"{seen} (after a flush it does{'' if shown else ' not'}: the cache was not "
           "invalidated)" + (
        f"; the page came whole from the cache ({deltas(delta, 'get_hits', 'get_misses', 'cmd_set')})"
        ", which is the view cache of stage 08" if layer else f"; {note}" if note else ""),
        "view_cache" if layer else reason, layer)


# ---- the learner's source ----------------------------------------------------------------------

def code(app_dir):
    """The learner's Python (migrations and virtualenvs left out), comments left out."""
    skip = {"migrations", "instance", "__pycache__", ".venv", "venv"}
    files = [p for p in sorted(app_dir.rglob("*.py")) if not skip & set(p.relative_to(app_dir).parts)]
    return re.sub(r"#.*", "", "\n".join(p.read_text(errors="replace") for p in files))


def calls(app_dir, pattern):
    """Whether the learner's code holds PATTERN (a regular expression) outside a comment."""
    return re.search(pattern, code(app_dir)) is not None


def cache_keys(app_dir, method):
    """The literal keys the learner's code passes to cache.METHOD(...)."""
    return set(re.findall(rf"""\bcache\.{method}\(\s*["']([^"']*)["']""", code(app_dir)))


def other_key(app_dir):
    """"deletes 'a', caches under 'b'" when the code deletes literal keys, none of which it
    caches the list under; else ""."""
    deleted, cached = cache_keys(app_dir, "delete"), cache_keys(app_dir, "set") | cache_keys(app_dir, "get")
    if not deleted or not cached or deleted & cached:
        return ""
    return f"your code deletes {', '.join(map(repr, sorted(deleted)))} and caches under " \
        f"{', '.join(map(repr, sorted(cached)))}"


def from_cache(delta):
    """Whether a request with counters DELTA was answered from the cache: hits, no miss, no set."""
    return delta.get("get_hits", 0) >= 1 and not delta.get("get_misses") and not delta.get("cmd_set")


def view_layer(app_dir, delta):
    """Whether a load with counters DELTA came from the view cache (stage 08's layer): the page
    came whole from the cache, and the learner's source caches a view."""
    return delta.get("cmd_get", 0) == 1 and from_cache(delta) and calls(app_dir, r"\bcached\s*\(")


# ---- pages seen by several visitors ------------------------------------------------------------

MAX_PAGES = 4  # the list and the pages it links to: /me and the like


def own_pages(page, base_url):
    """"/" and the pages of this app that PAGE links to (no static files), at most MAX_PAGES."""
    paths = ["/"]
    for href in links(page):
        target = urlsplit(urljoin(base_url, href))
        if target.netloc != urlsplit(base_url).netloc or "." in target.path.rsplit("/", 1)[-1]:
            continue
        path = target.path + (f"?{target.query}" if target.query else "")
        if path not in paths and "/static/" not in path:
            paths.append(path)
    return paths[:MAX_PAGES]


class Seen:
    """One visitor's view of a page: its text, and memcached's counters around the request."""

    def __init__(self, who, path, response, delta):
        self.who, self.path, self.texts, self.delta = who, path, set(texts(response.text)), delta

    @property
    def from_cache(self):
        return from_cache(self.delta)

    def how(self):
        hits, misses = self.delta.get("get_hits", 0), self.delta.get("get_misses", 0)
        return ("served from the cache: " if self.from_cache else "") + f"get_hits {hits:+d}, " \
            f"get_misses {misses:+d}"


def session_key(cookies, keys):
    """The one of KEYS named after one of COOKIES (its value, or the part before a signature)."""
    return next((k for value in cookies.values() for sid in {value, value.split(".")[0]} - {""}
                 for k in keys if k.endswith(sid)), None)  # "": a compressed signed cookie


def flash_in_session(app):
    """A visitor whose session holds a flashed message (an empty name flashes one, which waits
    in the session until the next page), its cookies, and the session: keys that appeared."""
    visitor = app.visitor()
    form = visitor.add_form()
    before = set(app.keys())
    visitor.submit(form, {form.texts[0]: ""}, follow=False)
    cookies = {c.name: c.value for c in visitor.http.cookies}
    added = [k for k in set(app.keys()) - before if "session:" in k]
    return visitor, cookies, added


def forget_pages(subject, visitors):
    """Delete every key of a plain memcached but the sessions of VISITORS: what the app cached
    goes, what each visitor's history left in its session stays."""
    keys = set(subject.keys())
    kept = {session_key({c.name: c.value}, keys) for v in visitors for c in v.http.cookies}
    for key in keys - kept:
        memcached.raw_delete(subject.app.memcached.port, key)


def look(subject, who, visitor, path):
    with subject.counters() as delta:
        response = visitor.get(path)
    return Seen(who, path, response, delta)
