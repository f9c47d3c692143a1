"""The cache layers of the task list: memoized query, row fragments, and the whole front page.

Every key starts with CACHE_KEY_PREFIX, which always ends with the database's identity: apps on
different databases never share an entry. What says the data changed is shared by every release
on one database: the memoized query's version key, and the front page, which a write overwrites
with a tombstone. Rendered HTML (rows, the page) is tagged with the release that rendered it.
"""
import hashlib
import logging
import time

from flask import current_app, request

from task_list.backends import Cache
from task_list.cachedata import REFUSED

log = logging.getLogger("task_list.cache")
cache = Cache()
FRONT_PAGE = "view/front"
# Written over the front page on every change: a reader that rendered from older data and
# tries to store its page afterwards fails its compare-and-set instead of storing a stale page.
TOMBSTONE = "stale"
# Set in the WSGI environ by the fast path (fastpath.py) when its get found no page of this release.
MISSED = "task_list.front_page_missed"


def store():
    return current_app.extensions["task_list.store"]


def layer_on(name):
    # While memcached is down, every layer is off: no call that would fail, no stall.
    return name in current_app.config["CACHE_LAYERS"] and not store().down()


def key(name):
    """A key shared by every release on this database."""
    return current_app.config["CACHE_KEY_PREFIX"] + name


def release_key(name):
    """A key of this release's own: what it holds is HTML only this release renders."""
    return current_app.config["CACHE_KEY_PREFIX"] + current_app.config["RELEASE"] + ":" + name


def etag_of(html):
    return hashlib.md5(html, usedforsecurity=False).hexdigest()


def is_page(entry):
    return (isinstance(entry, dict) and isinstance(entry.get("html"), bytes)
            and isinstance(entry.get("etag"), str) and isinstance(entry.get("release"), str))


def this_release_page(entry, release):
    """ENTRY if it is a front page RELEASE stored, else None (a tombstone, another release's)."""
    return entry if is_page(entry) and entry["release"] == release else None


def page_headers(etag):
    """A shared page's headers: a browser's repeat visit costs a 304, not the page again."""
    return [("ETag", f'"{etag}"'), ("Cache-Control", "no-cache")]


def cached_front_page(build):
    """The front page's bytes and ETag, from one memcached get when warm.

    On a miss, a gets reads the key again with its CAS token, and BUILD returns the page and when
    its data was read from the database. The copy is stored only if nobody wrote the key since
    the gets (a write's tombstone makes it fail), and expires when its data is
    CACHE_DEFAULT_TIMEOUT old, so nothing stale outlives the TTL. Another release's page, a
    tombstone, a refused value and a missing one are all misses.
    """
    if not layer_on("view"):
        html = build()[0]
        return html, etag_of(html)
    release = current_app.config["RELEASE"]
    # A plain get on the hit path: libmemcached's gets costs a multi-get's exchange. Skipped when
    # the fast path's get has just missed.
    if not request.environ.get(MISSED):
        entry = this_release_page(store().get(key(FRONT_PAGE)), release)
        if entry:
            return entry["html"], entry["etag"]
    entry, token = store().gets(key(FRONT_PAGE))
    if this_release_page(entry, release):
        return entry["html"], entry["etag"]
    if token is REFUSED:
        # A value this app did not write: overwritten at once, so a later add() is not stuck.
        token = store().replace_refused(key(FRONT_PAGE), TOMBSTONE,
                                        current_app.config["CACHE_DEFAULT_TIMEOUT"])
    html, read_at = build()
    etag = etag_of(html)
    store().store(key(FRONT_PAGE), {"release": release, "html": html, "etag": etag}, token,
                  time_left(read_at))
    return html, etag


def time_left(read_at):
    """Seconds until data read at READ_AT (time.time()) is CACHE_DEFAULT_TIMEOUT old; at least 1."""
    return max(1, int(current_app.config["CACHE_DEFAULT_TIMEOUT"] - (time.time() - read_at)))


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
    version is written by delete_memoized() and once more by the store: Flask-Caching drops
    set_many's list of failed keys, so only the store's write is sure to be retried. Each write
    goes on its own with a retry on a new connection, so a server that is down, or has just come
    back, loses no invalidation. A failure is logged, never raised: the row is already committed,
    and an error page would make the visitor submit it again.
    """
    try:
        cache.delete_memoized(memoized)
    except Exception as exc:  # any backend error; Flask-Caching does not wrap this call
        log.warning("could not invalidate the memoized task pages: %s", exc)
    store().invalidate({key(cache.version_key(memoized)): cache.new_version(),
                        key(FRONT_PAGE): TOMBSTONE},
                       current_app.config["CACHE_DEFAULT_TIMEOUT"])
