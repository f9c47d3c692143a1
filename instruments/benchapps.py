"""The bench's reference apps, each a one-file app that serves final/'s own page (see
instruments/bench.py for how they are measured): the ceiling and the limit on Flask, and their
bare WSGI twins, which do the same with no framework at all."""
from pathlib import Path

PAGE = '''from pathlib import Path

PAGE = (Path(__file__).parent / "page.html").read_bytes()
'''
# One pooled pylibmc get of the page, shared by the limit and its bare twin.
POOLED_GET = '''import os
import queue

import pylibmc

KEY = "bench-{name}:page"
SERVERS = os.environ["MEMCACHIER_SERVERS"].split(",")
LOGIN = {{"username": os.environ.get("MEMCACHIER_USERNAME"),
         "password": os.environ.get("MEMCACHIER_PASSWORD")}}


def new_client():
    return pylibmc.Client(SERVERS, binary=True, behaviors={{"tcp_nodelay": True, "ketama": True}},
                          **LOGIN)


idle = queue.LifoQueue()
for _ in range(16):
    idle.put(new_client())


def one_get():
    client = idle.get()
    try:
        try:
            page = client.get(KEY)
        except pylibmc.Error:  # memcached restarted (the benchmark stops it): a new connection
            client = new_client()
            page = client.get(KEY)
        if page is None:  # the benchmark flushes memcached between measurements
            client.set(KEY, PAGE)
            page = PAGE
    finally:
        idle.put(client)
    return page
'''
CEILING_APP = '''"""The ceiling: final/'s page, answered by Flask with no work at all."""
from flask import Flask, Response
''' + PAGE + '''
application = Flask(__name__)


@application.get("/")
def index():
    return Response(PAGE, mimetype="text/html")
'''
LIMIT_APP = '''"""The limit: final/'s extensions, and one pooled pylibmc get of final/'s page."""
from flask import Flask, Response
from flask_caching import Cache
from flask_session import Session
''' + PAGE + POOLED_GET.format(name="limit") + '''

application = Flask(__name__)
application.config.update(
    SECRET_KEY=os.environ["SECRET_KEY"], SESSION_TYPE="memcached", SESSION_MEMCACHED=new_client(),
    CACHE_TYPE="SASLMemcachedCache", CACHE_MEMCACHED_SERVERS=SERVERS,
    CACHE_MEMCACHED_USERNAME=LOGIN["username"], CACHE_MEMCACHED_PASSWORD=LOGIN["password"],
    CACHE_OPTIONS={"pool_size": 16})
Cache(application)
Session(application)


@application.get("/")
def index():
    return Response(one_get(), mimetype="text/html")
'''
# The bare pair: WSGI itself, the least any Python app on this server can cost.
BARE_RESPONSE = '''

def application(environ, start_response):
    page = {page}
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                              ("Content-Length", str(len(page)))])
    return [page]
'''
BARE_STATIC_APP = ('"""Bare WSGI: final/\'s page from memory, with no framework."""\n' + PAGE
                   + BARE_RESPONSE.format(page="PAGE"))
BARE_GET_APP = ('"""Bare WSGI: one pooled pylibmc get of final/\'s page, with no framework."""\n'
                + PAGE + POOLED_GET.format(name="bare") + BARE_RESPONSE.format(page="one_get()"))


def flask_dir(workdir, name, source, page):
    """A folder holding a one-file app SOURCE that serves PAGE (page.html)."""
    folder = Path(workdir) / name
    folder.mkdir()
    (folder / "application.py").write_text(source)
    (folder / "page.html").write_bytes(page)
    return folder


def memcached_env(memcached):
    return {"MEMCACHIER_SERVERS": memcached.address, "MEMCACHIER_USERNAME": memcached.username,
            "MEMCACHIER_PASSWORD": memcached.password}
