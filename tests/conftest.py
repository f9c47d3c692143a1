"""Fixtures shared by every test. Services come from services.env (`make services`); a missing
service is an error, never a skip. Apps run only through runtime.harness."""
import os
import sys
import time
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository, for its packages

from runtime import ROOT, harness  # noqa: E402  (the test modules take ROOT from here)

FINAL = ROOT / "final"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="session")
def services_env():
    """The connection settings `make services` wrote."""
    return harness.services_env()


@pytest.fixture(scope="session")
def browser():
    """Debian's chromium, driven by Playwright; never a downloaded browser."""
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: run `make setup`")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


def unique(name):
    """NAME with a random suffix, so tests sharing an app never see each other's tasks."""
    return f"{name} {uuid.uuid4().hex[:8]}"


def wait_for(condition, what="the condition", timeout=30.0):
    """Poll CONDITION until it holds; fail after TIMEOUT seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout:.0f}s")
        time.sleep(0.02)


def processes_marked(mark):
    """Pids of the processes whose environment holds MARK (NAME=VALUE): whatever a run started
    with that variable set, and its children, left behind."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if mark.encode() in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
        except OSError:  # gone already, or not ours to read
            pass
    return found
