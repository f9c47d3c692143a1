"""The bench's reference apps: the ceiling and the limit, each a one-file Flask app that serves
final/'s own page (see instruments/bench.py for how they are measured)."""
from pathlib import Path

CEILING_APP = '''"""The ceiling: final/'s page, answered by Flask with no work at all."""
from pathlib import Path

from flask import Flask, Response

application = Flask(__name__)
PAGE = (Path(__file__).parent / "page.html").read_bytes()


@application.get("/")
def index():
    return Response(PAGE, mimetype="text/html")
'''
LIMIT_APP = '''"""The limit: final/'s extensions, and one pooled pylibmc get of final/'s page."""
import os
import queue
from pathlib import Path

import pylibmc
from flask import Flask, Response
from flask_caching import Cache
from flask_session import Session

PAGE = (Path(__file__).parent / "page.html").read_bytes()
KEY = "bench-limit:page"
SERVERS = os.environ["MEMCACHIER_SERVERS"].split(",")
LOGIN = {"username": os.environ.get("MEMCACHIER_USERNAME"),
         "password": os.environ.get("MEMCACHIER_PASSWORD")}


def new_client():
    return pylibmc.Client(SERVERS, binary=True, behaviors={"tcp_nodelay": True, "ketama": True},
                          **LOGIN)


idle = queue.LifoQueue()
for _ in range(16):
    idle.put(new_client())
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
    return Response(page, mimetype="text/html")
'''


def flask_dir(workdir, name, source, page):
    """A folder holding a one-file Flask app SOURCE that serves PAGE (page.html)."""
    folder = Path(workdir) / name
    folder.mkdir()
    (folder / "application.py").write_text(source)
    (folder / "page.html").write_bytes(page)
    return folder


def memcached_env(memcached):
    return {"MEMCACHIER_SERVERS": memcached.address, "MEMCACHIER_USERNAME": memcached.username,
            "MEMCACHIER_PASSWORD": memcached.password}
