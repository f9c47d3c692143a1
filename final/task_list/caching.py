"""The cache layers of the task list: memoized query, row fragments, and the whole front page.

Every key starts with CACHE_KEY_PREFIX, which always ends with the database's identity: apps on
different databases never share an entry. What says the data changed is shared by every release
on one database: the memoized query's version key, and the front page, which a write overwrites
with a tombstone. Rendered HTML (rows, the page) is tagged with the release that rendered it.
"""
import hashlib
import logging
import threading
import time

from flask import current_app, request

from task_list.backends import Cache
from task_list.cachedata import REFUSED

log = logging.getLogger("task_list.cache")
cache = Cache()
FRONT_PAGE = "view/front"
RELEASES_KEPT = 3  # pages in the front page's entry: releases a rolling deploy runs side by side
REBUILDS = "task_list.rebuilds"  # app.extensions: this process's Rebuilds
# Written over the front page on every change: a reader that rendered from older data and
# tries to store its page afterwards fails its compare-and-set instead of storing a stale page.
TOMBSTONE = "stale"
# Set in the WSGI environ by the fast path (fastpath.py) when its get found no page of this release.
MISSED = "task_list.front_page_missed"


def store():
    return current_app.extensions["task_list.store"]


def layer_on(name):
    """Whether layer NAME is used for this request.

    While memcached is down, every layer is off: no call that would fail, no stall. While an
    invalidation made here waits to land (store.pending()), this instance builds pages from the
    database: the query and view layers could still hold data from before its own write.
    Fragments cannot go stale, and sessions are not a layer, so both keep working.
    """
    if name not in current_app.config["CACHE_LAYERS"] or store().down():
        return False
    return name == "fragments" or not store().pending()


def key(name):
    """A key shared by every release on this database."""
    return current_app.config["CACHE_KEY_PREFIX"] + name


def release_key(name):
    """A key of this release's own: what it holds is HTML only this release renders."""
    return current_app.config["CACHE_KEY_PREFIX"] + current_app.config["RELEASE"] + ":" + name


def etag_of(html):
    return hashlib.md5(html, usedforsecurity=False).hexdigest()


def is_page(page):
    return (isinstance(page, dict) and isinstance(page.get("html"), bytes)
            and isinstance(page.get("etag"), str) and isinstance(page.get("read_at"), float))


def this_release_page(entry, release):
    """RELEASE's page in the front page ENTRY ({release: page}), or None (a tombstone, none yet)."""
    page = entry.get(release) if isinstance(entry, dict) else None
    return page if is_page(page) else None


def other_pages(entry, release):
    """The pages of ENTRY that other releases stored, the newest RELEASES_KEPT - 1 of them."""
    if not isinstance(entry, dict):
        return {}
    pages = {name: page for name, page in entry.items() if name != release and is_page(page)}
    newest = sorted(pages, key=lambda name: pages[name]["read_at"], reverse=True)
    return {name: pages[name] for name in newest[:RELEASES_KEPT - 1]}


def page_headers(etag):
    """A shared page's headers: a browser's repeat visit costs a 304, not the page again."""
    return [("ETag", f'"{etag}"'), ("Cache-Control", "no-cache")]


def cached_front_page(build):
    """The front page's bytes and ETag, from one memcached get when warm.

    On a miss, one rebuild per process at a time (Rebuilds) reads the key again with its CAS
    token, and BUILD returns the page and when its data was read from the database. The entry
    holds one page per live release, so releases deployed side by side keep their hits; it is
    stored only if nobody wrote the key since the gets (a write's tombstone makes it fail), and
    expires when its oldest data is CACHE_DEFAULT_TIMEOUT old, so nothing stale outlives the TTL.
    """
    if not layer_on("view"):
        html = build()[0]
        return html, etag_of(html)
    arrived = time.monotonic()
    release = current_app.config["RELEASE"]

    def read():
        page = this_release_page(store().get(key(FRONT_PAGE)), release)
        return (page["html"], page["etag"]) if page else None

    # A plain get on the hit path: libmemcached's gets costs a multi-get's exchange. Skipped when
    # the fast path's get has just missed.
    found = None if request.environ.get(MISSED) else read()
    if found:
        return found
    return current_app.extensions[REBUILDS].run(arrived, lambda: rebuild(build, release), read)


def rebuild(build, release):
    entry, token = store().gets(key(FRONT_PAGE))
    page = this_release_page(entry, release)
    if page:
        return page["html"], page["etag"]
    if token is REFUSED:
        # A value this app did not write: overwritten at once, so a later add() is not stuck.
        token = store().replace_refused(key(FRONT_PAGE), TOMBSTONE,
                                        current_app.config["CACHE_DEFAULT_TIMEOUT"])
    html, read_at = build()
    etag = etag_of(html)
    # Every page in the entry was built since the last tombstone: the cas below fails otherwise.
    pages = other_pages(entry, release)
    pages[release] = {"html": html, "etag": etag, "read_at": read_at}
    oldest = min(page["read_at"] for page in pages.values())
    store().store(key(FRONT_PAGE), pages, token, time_left(oldest))
    return html, etag


def time_left(read_at):
    """Seconds until data read at READ_AT (time.time()) is CACHE_DEFAULT_TIMEOUT old; at least 1."""
    return max(1, int(current_app.config["CACHE_DEFAULT_TIMEOUT"] - (time.time() - read_at)))


class Rebuilds:
    """One rebuild of the front page at a time in this process: a stampede costs one list query.

    A request may take the page of a rebuild only if that rebuild started after the request
    arrived, so its data was read after any write the visitor could know of. A request that
    arrived later waits for the rebuild under way, then reads the cache again (the rebuild has
    usually stored the page), and only then starts a rebuild of its own.
    """

    WAIT = 10.0  # seconds; a rebuild slower than this is not waited for

    def __init__(self):
        self.lock = threading.Lock()
        self.current = None  # the Rebuild under way

    def run(self, arrived, rebuild, read):
        while True:
            with self.lock:
                leader = self.current is None
                if leader:
                    self.current = Rebuild()
                flight = self.current
            if leader:
                try:
                    flight.result = rebuild()
                finally:
                    with self.lock:
                        self.current = None
                    flight.done.set()
                return flight.result
            if not flight.done.wait(max(0.0, arrived + self.WAIT - time.monotonic())):
                return rebuild()
            if flight.started > arrived and flight.result is not None:
                return flight.result
            found = read()
            if found:
                return found


class Rebuild:
    def __init__(self):
        self.started = time.monotonic()
        self.done = threading.Event()
        self.result = None


def row_key(task_id, name):
    # The name is part of the key, so a reused id (SQLite reuses them) never shows an old row.
    return release_key(f"row/{task_id}/{hashlib.sha1(name.encode()).hexdigest()[:16]}")


def render_row(task_id, name):
    # The compiled template, without render_template's per-call work: a page renders 50 rows.
    return current_app.jinja_env.get_template("tasks/_row.html").render(task_id=task_id, name=name)


def render_rows(tasks):
    """Each task's table row, fetched in one round trip; the missing ones rendered and stored.

    A fragment that is not text is a miss too, so the set_multi below overwrites it.
    """
    if not layer_on("fragments"):
        return [render_row(*task) for task in tasks]
    keys = {row_key(*task): task for task in tasks}
    found = {k: v for k, v in store().get_multi(list(keys)).items() if isinstance(v, str)}
    missing = {k: render_row(*task) for k, task in keys.items() if k not in found}
    store().set_multi(missing, current_app.config["FRAGMENT_TIMEOUT"])
    return [found.get(k) or missing[k] for k in keys]


def invalidate_task_list(memoized):
    """After a commit: a new version for every page's data, and a tombstone on the front page.

    Both are shared by every release on this database, so every reader sees the write. The
    version is a function, so every retry writes a new one (store.Memcache.invalidate). A write
    that does not land waits for its retry, and this instance bypasses the query and view layers
    until it lands (layer_on). A failure is logged, never raised: the row is already committed,
    and an error page would make the visitor submit it again.
    """
    if not current_app.config["MEMCACHED_SERVERS"]:
        # Without memcached, memoize keeps its data in Flask-Caching's in-process SimpleCache.
        cache.delete_memoized(memoized)
    store().invalidate({key(cache.version_key(memoized)): cache.new_version,
                        key(FRONT_PAGE): TOMBSTONE},
                       current_app.config["CACHE_DEFAULT_TIMEOUT"])
