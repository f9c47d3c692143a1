"""CSRF protection with a signed double-submit cookie.

The secret lives in a signed cookie of its own, not in the session, so an anonymous visitor
costs no session write and forms keep working while memcached is down. Cached pages hold
PLACEHOLDER where the token goes; `personalise` fills in the visitor's own token afterwards.
"""
import hmac
import secrets

from flask import abort, current_app, g, request
from itsdangerous import BadSignature, Signer

COOKIE = "csrf"
FIELD = "csrf_token"
# A task name can never produce this text: its "<" is escaped in the HTML.
PLACEHOLDER = "<!--csrf-->"


def signer():
    # Made once per app: every page view of a new visitor signs a token.
    extensions = current_app.extensions
    if "task_list.csrf" not in extensions:
        extensions["task_list.csrf"] = Signer(current_app.config["SECRET_KEY"], salt="csrf")
    return extensions["task_list.csrf"]


def cookie_token():
    value = request.cookies.get(COOKIE)
    if not value:
        return None
    try:
        return signer().unsign(value).decode()
    except BadSignature:
        return None


def token():
    """This visitor's token, made (and sent as a cookie) on first use."""
    if "csrf_token" not in g:
        g.csrf_token = cookie_token()
        if not g.csrf_token:
            g.csrf_token = secrets.token_urlsafe(24)
            g.csrf_new = True
    return g.csrf_token


def personalise(html):
    return html.replace(PLACEHOLDER, token())


def protect():
    if request.method != "POST":
        return
    expected = cookie_token()
    sent = request.form.get(FIELD, "")
    if not expected or not hmac.compare_digest(expected, sent):
        abort(400, description="This form has expired or came from another site. "
                               "Reload the page and try again.")


def send_cookie(response):
    if g.get("csrf_new"):
        response.set_cookie(COOKIE, signer().sign(g.csrf_token).decode(), httponly=True,
                            samesite="Lax", secure=current_app.config["SESSION_COOKIE_SECURE"])
    return response


def init_app(app):
    app.before_request(protect)
    app.after_request(send_cookie)
