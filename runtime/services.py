"""The workshop's local services: one MariaDB, one plain memcached, one SASL memcached.

`make services` runs `python3 -m runtime.services start`. Everything runs on loopback from
`.services/`, on ports of its own, so a distribution's own MariaDB or memcached never gets in the
way. The connection settings go to one env file, `services.env`; every tool and test reads it
through `load_env()`. Standard library only: this runs before the virtualenv exists.
"""
import glob
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from runtime import ROOT, processes

RUN_DIR = ROOT / ".services"
ENV_FILE = ROOT / "services.env"

# Ports chosen once (a WORKSHOP_*_PORT variable, or `make run PORT=...`) are remembered here, so a
# terminal without the variables uses the same ones and never rewrites services.env to others.
PORTS_FILE = RUN_DIR / "ports"
# name: (the variable that chooses it, its default, what it is, the program the workshop runs there)
PORTS = {
    "mariadb": ("WORKSHOP_MARIADB_PORT", 3307, "MariaDB", "mariadbd"),
    "memcached": ("WORKSHOP_MEMCACHED_PORT", 11311, "memcached", "memcached"),
    "memcached-sasl": ("WORKSHOP_SASL_MEMCACHED_PORT", 11312, "SASL memcached", "memcached"),
    "app": ("PORT", 5000, "app (`make run`)", None),
    "dashboard": ("PORT", 5050, "dashboard (`make dashboard`)", None),
}
SERVICES = ("mariadb", "memcached", "memcached-sasl")

DB_NAME = "workshop"
DB_USER = "workshop"
# Symbols on purpose: the apps build their URL with sqlalchemy.URL.create, so these must work.
DB_PASSWORD = "task:list/p@ss#1"
SASL_USER = "workshop"
SASL_PASSWORD = "memcachier:like/p@ss"


class ServiceError(Exception):
    """A service could not be started or reached; the message says what to do."""


# The harness raises the same kind of error: one class for "the set-up is not right".
HarnessError = ServiceError


def port_number(value, what):
    if not str(value).isdigit() or not 0 < int(value) < 65536:
        raise ServiceError(f"{what}={value!r} is not a port number (1 to 65535)")
    return int(value)


def remembered_ports():
    """The ports chosen earlier, by name."""
    ports = {}
    try:
        lines = PORTS_FILE.read_text().splitlines()
    except OSError:
        return ports
    for line in lines:
        name, _, value = line.partition("=")
        if name.strip() in PORTS and value.strip().isdigit():
            ports[name.strip()] = int(value)
    return ports


def remember_ports(chosen):
    ports = {**remembered_ports(), **chosen}
    PORTS_FILE.parent.mkdir(exist_ok=True)
    PORTS_FILE.write_text("# Ports the workshop uses, as chosen once; see README.md, The services.\n"
                          + "".join(f"{name}={port}\n" for name, port in sorted(ports.items())))


def port(name, chosen=None):
    """NAME's port: CHOSEN (remembered from now on), else the one chosen earlier, else the default.
    A service's WORKSHOP_*_PORT variable counts as chosen; `make services` remembers it."""
    variable, default = PORTS[name][:2]
    if chosen not in (None, ""):
        number = port_number(chosen, variable)
        remember_ports({name: number})
        return number
    if name in SERVICES and os.environ.get(variable):
        return port_number(os.environ[variable], variable)
    return remembered_ports().get(name, default)


def running(name, run_dir=RUN_DIR):
    """The pid of the workshop's own NAME service, from its pid file; None if it is not running.
    A port being open says nothing: another program may hold it."""
    pid = processes.read_pid(Path(run_dir) / f"{name}.pid")
    if pid and processes.alive(pid) and processes.program(pid) == PORTS[name][3]:
        return pid
    return None


def foreign(port_taken, name):
    """What holds PORT_TAKEN instead of the workshop's NAME, and the fix: one line joined by ": "."""
    variable, _, what = PORTS[name][:3]
    pid = processes.listener(port_taken)
    owner = f"{processes.program(pid)} (pid {pid})" if pid else "another program"
    ours = {port(other) for other in PORTS}
    spare = next((p for p in range(port_taken + 1, port_taken + 20)
                  if p not in ours and not port_open(p)), free_port())
    target = "make services" if name in SERVICES else f"make {'run' if name == 'app' else name}"
    command = f"{variable}={spare} {target}" if name in SERVICES else f"{target} {variable}={spare}"
    return (f"port {port_taken} is taken by {owner}, not by the workshop's {what}",
            f"stop that program, or choose another port once: {command}")


def is_root():
    return os.geteuid() == 0


def load_env(path=ENV_FILE):
    """Read services.env into a dict."""
    path = Path(path)
    if not path.exists():
        raise ServiceError(f"{path.name} not found: run `make services` first")
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        if len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
        values[key] = value
    return values


def write_env(values, path=ENV_FILE):
    lines = ["# Written by `make services`. Load it with: set -a; . ./services.env; set +a"]
    lines += [f"{key}='{value}'" for key, value in values.items()]
    Path(path).write_text("\n".join(lines) + "\n")


def sasl_plugin_dir():
    """The folder holding libsasl2's PLAIN plugin, which the pylibmc wheel cannot find by itself."""
    for folder in sorted(glob.glob("/usr/lib/*/sasl2")) + ["/usr/lib64/sasl2", "/usr/lib/sasl2"]:
        if glob.glob(os.path.join(folder, "libplain.so*")):
            return folder
    raise ServiceError("the SASL PLAIN plugin is missing: run `make setup` (package libsasl2-modules)")


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port, host="127.0.0.1"):
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def wait_for_port(port, name, timeout=30.0, proc=None, log=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port):
            return
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.05)
    raise ServiceError(f"{name} did not answer on 127.0.0.1:{port} within {timeout:.0f}s.{last_line(log)}")


def last_line(log):
    """The last line of LOG, as the end of an error message; "" without one."""
    if log and Path(log).exists():
        return " Last log line: " + (Path(log).read_text().strip().splitlines() or [""])[-1]
    return ""


def wait_for_listener(proc, port, timeout):
    """True once PROC itself listens on PORT; False if it exits or TIMEOUT passes first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if port in processes.listening_ports(proc.pid):
            return True
        time.sleep(0.02)
    return False


def require(program):
    path = shutil.which(program) or next(
        (p for p in (f"/usr/sbin/{program}", f"/usr/bin/{program}") if os.path.exists(p)), None
    )
    if not path:
        raise ServiceError(f"{program} is not installed: run `make setup`")
    return path


# PLAIN first, as MemCachier offers it, then LOGIN, which libsasl2 never picks over an earlier
# PLAIN. LOGIN is a guard: the libmemcached inside pylibmc 1.6.3 reads this list into a buffer it
# never terminates, so a letter left after it on the stack makes a lone PLAIN an unknown name and
# the login fails (WORKSHOP.md, Troubleshooting). After LOGIN, it spoils a name nobody uses.
MECHANISMS = "plain login"


def sasl_conf_dir(run_dir=RUN_DIR, mechanisms=MECHANISMS):
    """A SASL config for memcached with one user who logs in with PLAIN, as MemCachier gives you."""
    folder = Path(run_dir) / "sasl"
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "sasldb2"
    (folder / "memcached.conf").write_text(f"mech_list: {mechanisms}\nsasldb_path: {db}\n")
    subprocess.run(
        [require("saslpasswd2"), "-a", "memcached", "-c", "-p", "-f", str(db), SASL_USER],
        input=SASL_PASSWORD.encode(), check=True, capture_output=True,
    )
    return folder


class Memcached:
    """One memcached process on loopback, plain or with SASL on."""

    def __init__(self, port=None, sasl=False, sasl_conf=None, memory_mb=64, log=None):
        self.chosen = port is None  # a port found free here, which another program may take first
        self.port = port or free_port()
        self.sasl = sasl
        self.sasl_conf = sasl_conf
        self.memory_mb = memory_mb
        self.log = log
        self.proc = None

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def command(self):
        cmd = [require("memcached"), "-l", "127.0.0.1", "-p", str(self.port), "-U", "0",
               "-m", str(self.memory_mb), "-c", "1024"]
        if self.sasl:
            cmd.append("-S")
        if is_root():
            cmd += ["-u", "root"]
        return cmd

    def start(self, detach=False):
        """Start memcached and wait until it, not just anything, listens on its port. A port found
        free here can be taken before memcached binds it (another app's server, another memcached):
        then memcached exits, and it is started again on another port."""
        if not self.chosen and port_open(self.port):
            raise ServiceError(f"port {self.port} is already in use; stop what runs there or pick another port")
        env = dict(os.environ)
        if self.sasl:
            env["SASL_CONF_PATH"] = str(self.sasl_conf)
        for attempt in range(5 if self.chosen else 1):
            if attempt:
                self.port = free_port()
            out = open(self.log, "ab") if self.log else subprocess.DEVNULL
            self.proc = subprocess.Popen(self.command(), env=env, stdout=out, stderr=out,
                                         stdin=subprocess.DEVNULL, start_new_session=detach)
            if self.log:
                out.close()
            if wait_for_listener(self.proc, self.port, timeout=10):
                return self
            processes.stop(self.proc, timeout=5)
        self.proc = None
        raise ServiceError(f"memcached did not listen on 127.0.0.1:{self.port} within 10s.{last_line(self.log)}")

    def stop(self):
        if self.proc is not None:
            processes.stop(self.proc, timeout=5)
        self.proc = None

    def restart(self):
        self.stop()
        return self.start()

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None


def mariadb_socket(run_dir=RUN_DIR):
    # Unix socket paths are limited to 107 bytes, so keep it short and out of the repository.
    owner = ROOT if Path(run_dir) == RUN_DIR else Path(run_dir).resolve()
    tag = hashlib.sha1(str(owner).encode()).hexdigest()[:8]
    return os.path.join(tempfile.gettempdir(), f"workshop-mariadb-{tag}.sock")


def shown(path):
    """PATH relative to the repository when it lies inside it, for messages."""
    path = Path(path)
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def start_mariadb(run_dir, port):
    """A private MariaDB with its data, pid file and log in RUN_DIR, on 127.0.0.1:PORT."""
    run_dir = Path(run_dir)
    pidfile = run_dir / "mariadb.pid"
    pid = running("mariadb", run_dir)
    if pid:
        print(f"  MariaDB already running (pid {pid}) on 127.0.0.1:{port}")
        return
    if port_open(port):
        raise ServiceError(": ".join(foreign(port, "mariadb")))
    datadir = run_dir / "mariadb"
    log = run_dir / "mariadb.log"
    user = ["--user=root"] if is_root() else []
    if not (datadir / "mysql").is_dir():
        print(f"  creating the MariaDB data folder {shown(datadir)}")
        result = subprocess.run(
            [require("mariadb-install-db"), "--no-defaults", f"--datadir={datadir}",
             "--auth-root-authentication-method=socket", "--skip-test-db", *user],
            capture_output=True, text=True)
        if result.returncode != 0:
            raise ServiceError("mariadb-install-db failed: " + (result.stderr or result.stdout).strip()[-300:])
    init = run_dir / "mariadb-init.sql"
    init.write_text(
        f"CREATE USER IF NOT EXISTS '{DB_USER}'@'127.0.0.1' IDENTIFIED BY '{DB_PASSWORD}';\n"
        f"ALTER USER '{DB_USER}'@'127.0.0.1' IDENTIFIED BY '{DB_PASSWORD}';\n"
        f"CREATE DATABASE IF NOT EXISTS `{DB_NAME}` CHARACTER SET utf8mb4;\n"
        # The harness gives every app run its own fresh database named workshop_*.
        f"GRANT ALL PRIVILEGES ON `{DB_NAME}%`.* TO '{DB_USER}'@'127.0.0.1';\n"
    )
    if is_root():
        # Debian's MariaDB expects this folder; outside systemd nobody creates it.
        os.makedirs("/run/mysqld", exist_ok=True)
    proc = subprocess.Popen(
        [require("mariadbd"), "--no-defaults", f"--datadir={datadir}", *user,
         "--bind-address=127.0.0.1", f"--port={port}", f"--socket={mariadb_socket(run_dir)}",
         f"--pid-file={pidfile}", f"--init-file={init}", f"--log-error={log}",
         "--skip-name-resolve", "--innodb-buffer-pool-size=128M", "--max-connections=500",
         # Debian's MariaDB defaults to latin1, which cannot store most task names; RDS uses utf8mb4.
         "--character-set-server=utf8mb4", "--collation-server=utf8mb4_unicode_ci"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    wait_for_port(port, "MariaDB", timeout=60, proc=proc, log=log)
    pidfile.write_text(str(proc.pid))
    print(f"  MariaDB started (pid {proc.pid}) on 127.0.0.1:{port}")


def start_memcached(name, port, sasl, run_dir=RUN_DIR):
    pidfile = Path(run_dir) / f"{name}.pid"
    conf = sasl_conf_dir(run_dir) if sasl else None  # current for the apps' own memcacheds too
    pid = running(name, run_dir)
    if pid:
        print(f"  {name} already running (pid {pid}) on 127.0.0.1:{port}")
        return
    if port_open(port):
        raise ServiceError(": ".join(foreign(port, name)))
    server = Memcached(port=port, sasl=sasl, sasl_conf=conf, log=Path(run_dir) / f"{name}.log")
    server.start(detach=True)
    pidfile.write_text(str(server.proc.pid))
    print(f"  {name} started (pid {server.proc.pid}) on 127.0.0.1:{port}" + (" with SASL" if sasl else ""))


def start():
    ports = {name: port(name) for name in SERVICES}
    earlier = remembered_ports()
    for name in SERVICES:
        pid, before = running(name), earlier.get(name, PORTS[name][1])
        if pid and ports[name] != before:
            raise ServiceError(
                f"the workshop's {PORTS[name][2]} already runs on 127.0.0.1:{before} (pid {pid}); to move "
                f"it to {ports[name]}, run `make services-stop` first, then "
                f"`{PORTS[name][0]}={ports[name]} make services`")
    RUN_DIR.mkdir(exist_ok=True)
    plugin_dir = sasl_plugin_dir()
    start_mariadb(RUN_DIR, ports["mariadb"])
    start_memcached("memcached", ports["memcached"], sasl=False)
    start_memcached("memcached-sasl", ports["memcached-sasl"], sasl=True)
    remember_ports(ports)
    write_env({
        "RDS_HOSTNAME": "127.0.0.1",
        "RDS_PORT": ports["mariadb"],
        "RDS_DB_NAME": DB_NAME,
        "RDS_USERNAME": DB_USER,
        "RDS_PASSWORD": DB_PASSWORD,
        "MEMCACHIER_SERVERS": f"127.0.0.1:{ports['memcached-sasl']}",
        "MEMCACHIER_USERNAME": SASL_USER,
        "MEMCACHIER_PASSWORD": SASL_PASSWORD,
        "MEMCACHED_PLAIN_SERVERS": f"127.0.0.1:{ports['memcached']}",
        "SASL_PATH": plugin_dir,
        "WORKSHOP_SASL_CONF": str(RUN_DIR / "sasl"),
    })
    print(f"  wrote {ENV_FILE.name}")


def stop():
    for name in reversed(SERVICES):
        pid = running(name)
        if pid:
            processes.stop(pid, timeout=30, name=name)
            print(f"  stopped {name} (pid {pid})")
        (RUN_DIR / f"{name}.pid").unlink(missing_ok=True)


def status():
    """Each port the workshop uses, and whether the workshop's own program holds it."""
    for name in PORTS:
        number, pid = port(name), running(name) if name in SERVICES else None
        if pid:
            state = f"running (pid {pid})"
        elif port_open(number):
            state = ": ".join(foreign(number, name))
        else:
            state = "stopped" if name in SERVICES else "free"
        print(f"  {name:15} 127.0.0.1:{number:<6} {state}")


def print_port(name, chosen=None):
    """`make run` and `make dashboard`: the port to serve on, remembering a PORT= given once."""
    print(port(name, chosen))


def main(argv):
    actions = {"start": start, "stop": stop, "status": status}
    if not (len(argv) == 1 and argv[0] in actions
            or argv[:1] == ["port"] and len(argv) in (2, 3) and argv[1] in ("app", "dashboard")):
        print("usage: python3 -m runtime.services start|stop|status|port {app,dashboard} [PORT]",
              file=sys.stderr)
        return 2
    try:
        if argv[0] == "port":
            print_port(*argv[1:])
        else:
            actions[argv[0]]()
    except ServiceError as exc:
        print(f"services: {exc}", file=sys.stderr)
        return 2 if argv[0] == "port" else 1
    except subprocess.CalledProcessError as exc:
        print(f"services: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
