"""Cross-site request forgery protection without tokens, as Go 1.25's CrossOriginProtection does it.

Browsers say where a request comes from: Sec-Fetch-Site on every request from a modern browser,
Origin on a POST from older ones. A form posted from another site is refused with 403 before any
view runs, so nothing is stored. Pages then carry nothing per visitor and can be cached whole.
"""
from urllib.parse import urlsplit

from flask import abort, request

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def cross_origin():
    """True when this request comes from another site, as far as the browser tells."""
    if request.method in SAFE_METHODS:
        return False
    site = request.headers.get("Sec-Fetch-Site")
    if site:
        return site not in ("same-origin", "none")
    origin = request.headers.get("Origin")
    if not origin:
        return False  # neither header: a same-origin request of an old browser, or not a browser
    try:
        origin_host = urlsplit(origin).netloc
    except ValueError:
        return True
    # Host, not the scheme: behind Elastic Beanstalk's load balancer the app sees http.
    return origin_host.lower() != request.headers.get("Host", "").lower()


def protect():
    if cross_origin():
        abort(403, description="This form was sent from another site, so nothing was saved. "
                               "Open the task list and use its own form.")


def init_app(app):
    app.before_request(protect)
