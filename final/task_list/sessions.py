"""Server-side sessions in memcached that cost nothing until a request uses them.

Flask-Session reads the session on every request that carries a session cookie. Here the session
is read on first use instead, so a returning visitor's page view costs no extra round trip. The
page shows flash messages, which wait in the session; so while one waits, a small cookie with no
secret in it, FLASH_COOKIE, says so, and the list reads the session only then.
Stored sessions are msgpack of a dict of known shape; anything else is no session (never pickle).
"""
import logging
import re

import msgspec
from flask import request
from flask_session.base import ServerSideSession
from flask_session.memcached import MemcachedSessionInterface

log = logging.getLogger("task_list.cache")
FLASH_COOKIE = "flash"
MAX_KEY = 250  # memcached's limit on a key's length, in bytes
SID = re.compile(r"[A-Za-z0-9_-]{16,64}")  # what secrets.token_urlsafe() makes


class StrictSerializer:
    """msgpack only; a stored session must be a dict of the keys the app writes."""

    encoder = msgspec.msgpack.Encoder()
    decoder = msgspec.msgpack.Decoder()

    def encode(self, session):
        return self.encoder.encode(dict(session))

    def decode(self, data):
        try:
            value = self.decoder.decode(data) if isinstance(data, bytes) else None
        except msgspec.DecodeError:
            value = None
        if not valid(value):
            log.warning("stored session refused: not a session this app wrote")
            return None
        return value


def valid(value):
    if not isinstance(value, dict) or not set(value) <= {"_permanent", "added", "_flashes"}:
        return False
    added, flashes = value.get("added", []), value.get("_flashes", [])
    return (isinstance(value.get("_permanent", False), bool)
            and isinstance(added, list) and all(type(i) is int for i in added)
            and isinstance(flashes, list)
            and all(isinstance(f, list) and len(f) == 2 and all(isinstance(s, str) for s in f)
                    for f in flashes))


class LazySession(ServerSideSession):
    """A session whose stored data is read the first time anything looks at it."""

    def __init__(self, load):
        super().__init__(sid=None)
        self.load = load
        self.loaded = False

    def ensure_loaded(self):
        if not self.loaded:
            self.loaded = True
            data, self.sid = self.load()
            dict.update(self, data)  # not an update by the app: the session is not modified


def loads_first(name):
    method = getattr(ServerSideSession, name)

    def loading(self, *args, **kwargs):
        self.ensure_loaded()
        return method(self, *args, **kwargs)

    loading.__name__ = name
    return loading


for _name in ("__getitem__", "__setitem__", "__delitem__", "__contains__", "__iter__", "__len__",
              "__bool__", "__repr__", "get", "setdefault", "pop", "popitem", "keys", "values",
              "items", "update", "clear", "copy"):
    setattr(LazySession, _name, loads_first(_name))


class SessionInterface(MemcachedSessionInterface):
    """Flask-Session's memcached sessions, read lazily, with a strict serializer."""

    def __init__(self, app, client, key_prefix):
        super().__init__(app, client=client, key_prefix=key_prefix)
        self.serializer = StrictSerializer()

    def open_session(self, app, request):
        sid = request.cookies.get(app.config["SESSION_COOKIE_NAME"])
        return LazySession(lambda: self.load(sid))

    def load(self, sid):
        """(data, sid) of the stored session SID; a new empty session for anything else."""
        store_id = self._get_store_id(sid) if sid and SID.fullmatch(sid) else None
        if store_id and len(store_id.encode()) <= MAX_KEY:
            data = self._retrieve_session_data(store_id)
            if data is not None:
                return data, sid
        return ({"_permanent": True} if self.permanent else {}), self._generate_sid(self.sid_length)

    def save_session(self, app, session, response):
        if not session.loaded:
            return  # nothing read it, so nothing changed: no write, no cookie
        super().save_session(app, session, response)
        waiting = dict.__contains__(session, "_flashes")
        if waiting != flash_waiting():
            path = self.get_cookie_path(app)
            if waiting:
                response.set_cookie(FLASH_COOKIE, "1", path=path, httponly=True,
                                    secure=self.get_cookie_secure(app), samesite="Lax")
            else:
                response.delete_cookie(FLASH_COOKIE, path=path)


def flash_waiting():
    """True when this visitor may have a flash message waiting (see FLASH_COOKIE)."""
    return request.cookies.get(FLASH_COOKIE) == "1"
