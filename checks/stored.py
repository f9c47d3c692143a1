"""What the app stored, read as data and never run: the classes a pickle refers to, and whether
a cookie is Flask's own signed session. A learner's pickle is never unpickled here.
"""
import base64
import json
import pickletools
import zlib


def pickled_globals(value):
    """The module.name of every class or function a pickle refers to, read with pickletools
    without unpickling (the data is the learner's); None when VALUE is not a pickle."""
    if not value or value[:1] != b"\x80":
        return None
    found, strings, memo, top = [], [], {}, None  # top: what the last op pushed
    try:
        for op, arg, _ in pickletools.genops(value):
            if op.name == "GLOBAL":
                found.append(arg.replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
            if "UNICODE" in op.name or op.name in ("BINGET", "LONG_BINGET", "GET"):
                top = arg if "UNICODE" in op.name else memo.get(arg)
                if isinstance(top, str):
                    strings.append(top)
            elif op.name == "MEMOIZE":
                memo[len(memo)] = top
            elif op.name in ("BINPUT", "LONG_BINPUT", "PUT"):
                memo[arg] = top
            else:
                top = None
    except (ValueError, TypeError, KeyError, IndexError):
        return None
    return found


def signed_data(cookie):
    """True when COOKIE is Flask's own session cookie: base64 JSON (zlib-compressed when the cookie
    starts with "."), a timestamp and a signature. A Flask-Session cookie is a random id (then
    ".signature" with a signer), whose bytes can start with "{" by chance: it is not JSON."""
    parts = cookie.lstrip(".").split(".")
    if len(parts) != 3:
        return False
    try:
        data = base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4))
        data = zlib.decompress(data) if cookie.startswith(".") else data
        return isinstance(json.loads(data), dict)
    except (ValueError, zlib.error):
        return False
