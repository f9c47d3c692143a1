"""Ports chosen once are the workshop's from then on: terminals share one set of services and one
services.env, and a port held by another program is reported as foreign, never as the workshop's.

Each test works in a checkout of its own (runtime/ and checks/ copied into a temporary folder), so
its services, pid files, `ports` file and services.env are its own, on free ports; the services the
other tests use are never touched.
"""
import os
import shutil
import socket
import subprocess
import sys

import pytest

from conftest import ROOT
from runtime import services

VARIABLES = ("WORKSHOP_MARIADB_PORT", "WORKSHOP_MEMCACHED_PORT", "WORKSHOP_SASL_MEMCACHED_PORT", "PORT")


@pytest.fixture
def checkout(tmp_path):
    """A second checkout of the workshop: its own .services/ and services.env; stopped at the end."""
    root = tmp_path / "workshop"
    for package in ("runtime", "checks"):
        shutil.copytree(ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("requirements.txt", "requirements-dev.txt"):
        shutil.copy(ROOT / name, root / name)
    yield root
    shell(root, {}, "-m", "runtime.services", "stop")


def shell(root, variables, *args, python="python3"):
    """A terminal in ROOT whose environment holds no port variable but VARIABLES."""
    env = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    env.update({k: str(v) for k, v in variables.items()})
    return subprocess.run([python, *map(str, args)], cwd=root, env=env, capture_output=True, text=True,
                          timeout=180)


def free_ports(count):
    ports = set()
    while len(ports) < count:
        ports.add(services.free_port())
    return sorted(ports)


def test_two_terminals_share_the_services_and_services_env(checkout):
    mariadb, plain, sasl = free_ports(3)
    chosen = {"WORKSHOP_MARIADB_PORT": mariadb, "WORKSHOP_MEMCACHED_PORT": plain,
              "WORKSHOP_SASL_MEMCACHED_PORT": sasl}
    first = shell(checkout, chosen, "-m", "runtime.services", "start")
    assert first.returncode == 0, first.stderr
    env_file = checkout / "services.env"
    written = env_file.read_text()
    assert f"RDS_PORT='{mariadb}'" in written and f"127.0.0.1:{sasl}" in written

    # A second terminal, without the variables: the same services, the same file.
    second = shell(checkout, {}, "-m", "runtime.services", "start")
    assert second.returncode == 0, second.stderr
    assert second.stdout.count("already running") == 3, second.stdout
    assert env_file.read_text() == written
    status = shell(checkout, {}, "-m", "runtime.services", "status").stdout
    for port in (mariadb, plain, sasl):
        assert f"127.0.0.1:{port}" in status
    assert status.count("running (pid ") == 3, status

    # A third asks for another port while they run: refused in one line; nothing is rewritten.
    moved = shell(checkout, {"WORKSHOP_MEMCACHED_PORT": free_ports(1)[0]}, "-m", "runtime.services", "start")
    assert moved.returncode == 1
    assert len(moved.stderr.strip().splitlines()) == 1 and "make services-stop" in moved.stderr
    assert env_file.read_text() == written

    # doctor knows them by their pid files.
    doctor = shell(checkout, {}, "-m", "checks", "doctor", python=sys.executable).stdout
    assert f"✓ port {mariadb} is the workshop's MariaDB (pid " in doctor
    assert f"✓ port {sasl} is the workshop's SASL memcached (pid " in doctor


def test_a_port_held_by_another_program_is_reported_as_foreign(checkout):
    with socket.socket() as foreign:
        foreign.bind(("127.0.0.1", 0))
        foreign.listen()
        port = foreign.getsockname()[1]
        start = shell(checkout, {"WORKSHOP_MARIADB_PORT": port}, "-m", "runtime.services", "start")
        assert start.returncode == 1 and "already running" not in start.stdout
        lines = start.stderr.strip().splitlines()
        assert len(lines) == 1, start.stderr
        assert f"port {port} is taken by" in lines[0] and f"(pid {os.getpid()})" in lines[0]
        assert "not by the workshop's MariaDB" in lines[0] and "WORKSHOP_MARIADB_PORT=" in lines[0]
        assert not (checkout / "services.env").exists()
        doctor = shell(checkout, {"WORKSHOP_MARIADB_PORT": port}, "-m", "checks", "doctor",
                       python=sys.executable).stdout.splitlines()
        found = next(i for i, line in enumerate(doctor) if f"port {port} is taken by" in line)
        assert doctor[found].startswith("  ✗ ") and doctor[found + 1].strip().startswith("fix: ")


def test_make_run_and_dashboard_ports_are_remembered(checkout):
    app, dashboard = free_ports(2)
    assert shell(checkout, {}, "-m", "runtime.services", "port", "app").stdout.strip() == "5000"
    assert shell(checkout, {}, "-m", "runtime.services", "port", "app", app).stdout.strip() == str(app)
    shell(checkout, {}, "-m", "runtime.services", "port", "dashboard", dashboard)
    assert shell(checkout, {}, "-m", "runtime.services", "port", "app").stdout.strip() == str(app)
    assert shell(checkout, {}, "-m", "runtime.services", "port", "dashboard").stdout.strip() == str(dashboard)
    bad = shell(checkout, {}, "-m", "runtime.services", "port", "app", "http")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "Traceback" not in bad.stderr
