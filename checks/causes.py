"""Why the learner's app went wrong, in a few lines, read from what it printed.

`cause(text, roots)` finds the last Python traceback in TEXT (the app's log, or the output of its
import and migration) and gives the exception as Python printed it, with the innermost frame in
the learner's own files (under one of ROOTS, the app's copies) shown as `path:line` and its line
of code. Without a traceback: gunicorn's own complaint (a missing WSGI attribute), or where a
hang at import waits (faulthandler's dump). Nothing here imports or runs the learner's code.
"""
import re

from runtime.harness import WATCHDOG

TRACEBACK = "Traceback (most recent call last):"
FRAME = re.compile(r'^\s*File "(?P<path>[^"]+)", line (?P<line>\d+)(?:,? in (?P<func>\S+))?')
# gunicorn's words when it cannot load the app object (no traceback), and when a worker died.
NO_APP = re.compile(r"(Failed to find attribute .*|Failed to parse .*|"
                    r"Application object must be callable\.?)")
WORKER_DIED = re.compile(r"(WORKER TIMEOUT .*|Worker \(pid:\d+\) (?:was sent \S+|exited with code \d+).*)")
LIMIT = 600  # characters of a cause: a few lines, whatever the app printed


def cause(text, roots):
    """A few lines saying what the app raised and where in the learner's files, or None."""
    text = text or ""
    lines = text.splitlines()
    no_app = last_match(NO_APP, lines)
    if no_app:
        return f"gunicorn: {no_app}"
    start = max((i for i, line in enumerate(lines) if line.strip().endswith(TRACEBACK)), default=None)
    if start is not None:
        return raised(lines[start + 1:], roots)
    died = last_match(WORKER_DIED, lines)
    if died:
        return f"gunicorn: {died}"
    if WATCHDOG.search(text):
        return waiting(lines, roots)
    return None


def last_match(pattern, lines):
    return next((m.group(1).strip() for m in map(pattern.search, reversed(lines)) if m), None)


def raised(lines, roots):
    """The exception line and the innermost own frame of one traceback's LINES."""
    frames, exception = [], None
    for line in lines:
        match = FRAME.match(line)
        if match:
            frames.append([match.group("path"), match.group("line"), match.group("func"), None])
        elif line[:1].isspace() or not line.strip():
            if frames and frames[-1][3] is None and line.strip() and not set(line.strip()) <= set("^~ "):
                frames[-1][3] = line.strip()
        else:
            exception = line.strip()
            break
    if exception is None:
        return None
    own = [f for f in frames if shown_path(f[0], roots)]
    text = exception
    for root in roots:  # a path in the message: the copy's folder means nothing to a learner
        text = text.replace(str(root).rstrip("/") + "/", "")
    if own:
        path, number, func, code = own[-1]
        text += f"\n  at {shown_path(path, roots)}:{number}" + (f" in {func}" if func else "")
        if code:
            text += f"\n      {code}"
    return clip(text)


def waiting(lines, roots):
    """Where a hung import waits, from faulthandler's dump (most recent call first)."""
    for line in lines:
        match = FRAME.match(line)
        if match and shown_path(match.group("path"), roots):
            return f"waiting at {shown_path(match.group('path'), roots)}:{match.group('line')}" \
                   + (f" in {match.group('func')}" if match.group("func") else "")
    return None


def shown_path(path, roots):
    """PATH relative to the root it lies under, or None when it is not the learner's file."""
    for root in roots:
        root = str(root).rstrip("/") + "/"
        if path.startswith(root):
            rest = path[len(root):]
            return None if rest.startswith((".venv/", "venv/")) else rest
    return None


def clip(text, limit=LIMIT):
    return text if len(text) <= limit else text[:limit - 1] + "…"
