"""The cache layers of the task list: memoized query, row fragments, and the whole front page.

Keys carry CACHE_KEY_PREFIX (the app, its release and its database), so two apps, two
environments or two releases sharing one memcached never read each other's entries.
"""
import hashlib
import logging
import time

import flask_caching
from flask import current_app
from flask_caching.utils import function_namespace

from task_list import csrf

log = logging.getLogger("task_list.cache")


class Cache(flask_caching.Cache):
    """Flask-Caching's Cache without one step that can undo an invalidation.

    After computing a memoized value, Flask-Caching writes the function's version key again (to
    extend its expiry). A reader that fetched the version just before a write dropped it would put
    it back, and later readers would get that reader's data, read before the write.
    """

    def _memoize_version(self, f, *args, refresh=False, **kwargs):
        if refresh:
            return None, None
        return super()._memoize_version(f, *args, **kwargs)


cache = Cache()
FRONT_PAGE = "view/front"
# Written over the front page on every change: a reader that rendered from older data and
# tries to store its page afterwards fails its compare-and-set instead of storing a stale page.
TOMBSTONE = "stale"


def store():
    return current_app.extensions["task_list.store"]


def layer_on(name):
    # While memcached is down, every layer is off: no call that would fail, no stall.
    return name in current_app.config["CACHE_LAYERS"] and not store().down()


def key(name):
    return current_app.config["CACHE_KEY_PREFIX"] + name


def cached_front_page(render):
    """The front page's content, from one memcached get when warm.

    On a miss, RENDER returns the content and when its data was read from the database; the copy
    expires when that data is CACHE_DEFAULT_TIMEOUT old, so nothing stale outlives the TTL.
    """
    if not layer_on("view"):
        return render()[0]
    page, token = store().gets(key(FRONT_PAGE))
    if page is not None and page != TOMBSTONE:
        return page
    page, read_at = render()
    store().store(key(FRONT_PAGE), page, token, time_left(read_at))
    return page


def time_left(read_at):
    """Seconds until data read at READ_AT (time.time()) is CACHE_DEFAULT_TIMEOUT old; at least 1."""
    return max(1, int(current_app.config["CACHE_DEFAULT_TIMEOUT"] - (time.time() - read_at)))


def row_key(task_id, name):
    # The name is part of the key, so a reused id (SQLite reuses them) never shows an old row.
    return key(f"row/{task_id}/{hashlib.sha1(name.encode()).hexdigest()[:16]}")


def render_row(task_id, name):
    # The compiled template, without render_template's per-call work: a page renders 50 rows.
    return current_app.jinja_env.get_template("tasks/_row.html").render(
        task_id=task_id, name=name, csrf_placeholder=csrf.PLACEHOLDER)


def render_rows(tasks):
    """Each task's table row, fetched in one round trip; the missing ones rendered and stored."""
    if not layer_on("fragments"):
        return [render_row(*task) for task in tasks]
    keys = {row_key(*task): task for task in tasks}
    found = store().get_multi(list(keys))
    missing = {k: render_row(*task) for k, task in keys.items() if k not in found}
    store().set_multi(missing, current_app.config["FRAGMENT_TIMEOUT"])
    return [found.get(k) or missing[k] for k in keys]


def invalidate_task_list(memoized):
    """After a commit: forget every page's data and the cached front page.

    delete_memoized() gives every page's data a new version. The store then writes the tombstone
    and drops that version key once more, each write on its own with a retry on a new connection,
    so a server that is down, or has just come back, loses no invalidation. A failure is logged,
    never raised: the row is already committed, and an error page would make the visitor submit
    it again.
    """
    try:
        cache.delete_memoized(memoized)
    except Exception as exc:  # any backend error; Flask-Caching does not wrap this call
        log.warning("could not invalidate the memoized task pages: %s", exc)
    store().invalidate({key(FRONT_PAGE): TOMBSTONE}, [memoize_version_key(memoized)],
                       current_app.config["CACHE_DEFAULT_TIMEOUT"])


def memoize_version_key(function):
    """The key under which Flask-Caching keeps the version of FUNCTION's memoized values."""
    return key(function_namespace(function)[0] + "_memver")
