"""A deliberate fast path: the warm front page, answered before Flask builds a request.

Why: a warm `GET /` is one memcached get and the stored bytes, yet Flask's request, routing,
session object, before-request check and teardown cost more CPU than the get itself, and kept the
page well below what one pooled get allows (final/README.md, Scale).

Limits: only `GET` or `HEAD` of `/` with no query string, no chunked body and no `flash` cookie,
with the view layer on, memcached not down and no invalidation of this process waiting to land,
and only when the stored entry holds a page of this release.
Anything else, or any doubt, goes to Flask (tasks.index), which holds the full rules; a miss here
tells Flask so through caching.MISSED, so the page still costs the same memcached calls as before.
The answer is the one tasks.index gives: same headers (caching.page_headers), same ETag, same 304.

The usual request, a plain GET, is answered in one frame: when memcached answers the very bytes
that last gave this release's page, it is that page again, with no parsing, MAC or lookup.
"""
import time

from werkzeug.http import parse_etags

from task_list import caching, reads
from task_list.sessions import FLASH_COOKIE
from task_list.store import Reader


class FrontPage:
    """WSGI middleware in front of everything else: see the module's docstring."""

    def __init__(self, app, wsgi_app):
        self.wsgi_app = wsgi_app
        self.store = app.extensions["task_list.store"]
        self.on = "view" in app.config["CACHE_LAYERS"]
        self.read = self.store.reader(app.config["CACHE_KEY_PREFIX"] + caching.FRONT_PAGE)
        # Only memcached's reader gives its answers as received (the in-process store has none).
        self.answer = self.read.answer if self.on and isinstance(self.read, Reader) else None
        self.release = app.config["RELEASE"]
        # The last entry read, with its page's ETag, bytes and two header lists, made once per
        # entry: the reader gives back the same object while the stored value does not change.
        self.last = (None, None, None, None, None)
        # memcached's answer that last gave this release's page, its expiry, the page and its
        # headers: replaced whole, so a thread never sees the parts of two answers.
        self.hot = (None, 0, None, None)

    def answers(self, environ):
        # Any cookie whose name or value mentions the flash cookie goes to Flask: a message may wait.
        return (self.on and environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "") == "/"
                and not environ.get("QUERY_STRING")
                and environ.get("REQUEST_METHOD") in ("GET", "HEAD")
                and "HTTP_TRANSFER_ENCODING" not in environ
                and FLASH_COOKIE not in environ.get("HTTP_COOKIE", "")
                and not self.store.down() and not self.store.pending())

    def __call__(self, environ, start_response):
        # A plain GET that answers() would take, written out here to stay in this one frame.
        store = self.store
        if (self.answer is not None and environ.get("REQUEST_METHOD") == "GET"
                and environ.get("PATH_INFO") == "/" and not environ.get("SCRIPT_NAME")
                and not environ.get("QUERY_STRING") and "HTTP_IF_NONE_MATCH" not in environ
                and "HTTP_TRANSFER_ENCODING" not in environ
                and FLASH_COOKIE not in environ.get("HTTP_COOKIE", "")
                and not store.failures and not store.waiting):
            answer, hot = self.answer(), self.hot
            if answer and answer == hot[0] and not (hot[1] and hot[1] < time.time()):
                start_response("200 OK", list(hot[3]))
                return [hot[2]]
            return self.page(environ, start_response, answer)
        if not self.answers(environ):
            return self.wsgi_app(environ, start_response)
        return self.page(environ, start_response, None)

    def page(self, environ, start_response, answer):
        """The page of memcached's ANSWER (None: read it now), or Flask's when there is none."""
        if self.answer is None:
            entry = self.read()
        else:
            item = None if answer is Reader.FAILED else self.read.item(answer)
            entry = None if item is None else item[2]
        last = self.last
        if entry is None or entry is not last[0]:
            page = caching.this_release_page(entry, self.release)
            if page is None:
                environ[caching.MISSED] = True
                return self.wsgi_app(environ, start_response)
            etag, html = page["etag"], page["html"]
            not_modified = caching.page_headers(etag)
            ok = not_modified + [("Content-Type", "text/html; charset=utf-8"),
                                 ("Content-Length", str(len(html)))]
            self.last = last = (entry, etag, html, not_modified, ok)
        _, etag, html, not_modified, ok = last
        if answer and answer is not Reader.FAILED and reads.whole(answer):  # not a part of one
            self.hot = (answer, item[1], html, ok)
        match = environ.get("HTTP_IF_NONE_MATCH")
        if match is not None and etag in parse_etags(match):
            start_response("304 NOT MODIFIED", list(not_modified))
            return []
        start_response("200 OK", list(ok))
        return [] if environ["REQUEST_METHOD"] == "HEAD" else [html]
