"""python -m checks doctor: this machine, checked for the workshop (Python, packages, services, ports)."""
import os
import subprocess
import sys
from pathlib import Path

from checks.cli import Parser, symbols
from checks.manifest import ROOT
from checks.results import wrap
from runtime import memcached, services


def main(args):
    parser = Parser(prog="python -m checks doctor",
                    description="Check this machine for the workshop: Python, packages, services, ports.")
    parser.parse_args(args)
    problems = 0
    for ok, what, fix in doctor_findings():
        print(f"  {symbols()['pass' if ok else 'fail']} {what}", flush=True)
        if not ok:
            problems += 1
            print(wrap("fix: ", fix), flush=True)
    print(f"\n{problems} problem{'s' if problems != 1 else ''} found." if problems
          else "\nEverything the workshop needs is in place.")
    return 1 if problems else 0


def doctor_findings():
    """(ok, what was found, how to fix it) for each thing the workshop needs."""
    version = ".".join(map(str, sys.version_info[:3]))
    yield (sys.version_info[:2] == (3, 11), f"Python {version} at {sys.executable}",
           "The workshop needs exactly Python 3.11 (pylibmc 1.6.3 has no wheels for 3.12 or later): "
           "install python3.11, run `make setup`, and use .venv/bin/python.")
    wrong = package_problems(ROOT / "requirements-dev.txt")
    yield (not wrong, "every pinned package is installed at its pinned version" if not wrong else
           f"{len(wrong)} pinned packages missing or at another version: {', '.join(wrong[:5])}"
           + (" ..." if len(wrong) > 5 else ""),
           "Run `make setup` (it installs requirements-dev.txt into .venv), then use .venv/bin/python.")
    for program in ("memcached", "mariadbd", "saslpasswd2"):
        try:
            yield True, f"{program} is installed at {services.require(program)}", ""
        except services.ServiceError:
            yield False, f"{program} is not installed", "Run `make setup` (it installs the Debian packages)."
    try:
        plugin_dir = services.sasl_plugin_dir()
        yield True, f"the SASL PLAIN plugin is in {plugin_dir}", ""
    except services.ServiceError:
        plugin_dir = None
        yield False, "the SASL PLAIN plugin (libplain.so) is missing", \
            "Install it: sudo apt-get install libsasl2-modules (or run `make setup`)."
    try:
        env = services.load_env()
    except services.ServiceError as exc:
        yield False, f"services: {exc}", "Run `make services`: it starts MariaDB and both memcached and writes services.env."
        yield from port_findings(services, None)
        return
    plain = env.get("MEMCACHED_PLAIN_SERVERS", "")
    try:
        version = memcached.stats(plain).get("version", "?")
        yield True, f"memcached answers at {plain} (version {version})", ""
    except memcached.MemcachedError as exc:
        yield False, f"memcached: {exc}", "Run `make services`; its log is .services/memcached.log."
    sasl = env.get("MEMCACHIER_SERVERS", "")
    try:
        memcached.stats(sasl, env.get("MEMCACHIER_USERNAME"), env.get("MEMCACHIER_PASSWORD"))
        yield True, f"SASL memcached answers at {sasl} and accepts the workshop's login", ""
    except memcached.MemcachedError as exc:
        yield False, f"SASL memcached: {exc}", "Run `make services`; its log is .services/memcached-sasl.log."
    else:
        yield sasl_login_finding(env, plugin_dir)
    yield mariadb_finding(env)
    yield from port_findings(services, env)


def package_problems(requirements):
    """Pins of REQUIREMENTS (following -r) that are not installed at that exact version."""
    from importlib import metadata

    problems, files, seen = [], [Path(requirements)], set()
    while files:
        path = files.pop()
        if path in seen or not path.is_file():
            continue
        seen.add(path)
        for line in path.read_text().splitlines():
            line = line.split("#")[0].strip()
            if line.startswith("-r"):
                files.append(path.parent / line[2:].strip())
            elif "==" in line:
                name, want = (part.strip() for part in line.split("==", 1))
                try:
                    have = metadata.version(name)
                except metadata.PackageNotFoundError:
                    problems.append(f"{name} (missing)")
                    continue
                if have != want:
                    problems.append(f"{name} {have} (want {want})")
    return problems


def sasl_login_finding(env, plugin_dir):
    """A real pylibmc SASL login, in a child process, the way the apps log in."""
    code = ("import os, pylibmc; c = pylibmc.Client([os.environ['S']], binary=True, "
            "username=os.environ['U'], password=os.environ['P']); c.set('doctor', '1'); "
            "assert c.get('doctor') == '1'; c.delete('doctor')")
    child_env = {**os.environ, "S": env["MEMCACHIER_SERVERS"], "U": env["MEMCACHIER_USERNAME"],
                 "P": env["MEMCACHIER_PASSWORD"], "SASL_PATH": env.get("SASL_PATH", "")}
    result = subprocess.run([sys.executable, "-c", code], env=child_env, capture_output=True,
                            text=True, timeout=30)
    if result.returncode == 0:
        return True, f"pylibmc logs in over SASL with SASL_PATH={env.get('SASL_PATH')}", ""
    last = (result.stderr.strip().splitlines() or ["failed"])[-1]
    return (False, f"pylibmc cannot log in over SASL: {last}",
            f"Export SASL_PATH={plugin_dir or '/usr/lib/x86_64-linux-gnu/sasl2'} (the folder holding "
            "libplain.so; `make services` writes it into services.env), and install libsasl2-modules.")


def mariadb_finding(env):
    try:
        import MySQLdb

        conn = MySQLdb.connect(host=env["RDS_HOSTNAME"], port=int(env["RDS_PORT"]),
                               user=env["RDS_USERNAME"], password=env["RDS_PASSWORD"],
                               database=env["RDS_DB_NAME"], connect_timeout=5)
        version = conn.get_server_info()
        conn.close()
        return True, f"MariaDB answers at {env['RDS_HOSTNAME']}:{env['RDS_PORT']} (server {version})", ""
    except ImportError:
        return False, "mysqlclient is not installed", "Run `make setup`."
    except Exception as exc:  # any driver error: the message is what the learner needs
        detail = exc.args[-1] if exc.args else exc
        return (False, f"MariaDB at {env['RDS_HOSTNAME']}:{env['RDS_PORT']} refused: {detail}",
                "Run `make services`; its log is .services/mariadb.log.")


def port_findings(services, env):
    """Each port the workshop uses: its own program there (known by its pid file), free, or foreign."""
    for name, (_, _, what, _) in services.PORTS.items():
        port = services.port(name)
        pid = services.running(name) if name in services.SERVICES else None
        if pid:
            yield True, f"port {port} is the workshop's {what} (pid {pid})", ""
        elif services.port_open(port):
            yield (False, *services.foreign(port, name))
        else:
            yield True, f"port {port} is free for the workshop's {what}", ""
