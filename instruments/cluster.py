"""`make cluster`: a rehearsal of an Elastic Beanstalk environment with several instances, on loopback.

    python -m instruments.cluster start|stop|status

nginx stands in for EB's load balancer and spreads requests over two gunicorn instances of final/
(EB's flags). The instances share three SASL memcached nodes (ketama hashing, as MemCachier's
cluster does) and one MariaDB. Everything runs from `.cluster/` on ports of its own, so it never
disturbs `make services` or a distribution's own servers. tests/test_cluster.py starts the same
cluster in a temporary folder on free ports and injects faults into it.
"""
import json
import os
import re
import secrets
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

from runtime import ROOT, harness, memcached, processes, services
from runtime.services import ServiceError

RUN_DIR = ROOT / ".cluster"
FINAL = ROOT / "final"
STATE = "cluster.json"
# Keys of our own, so tests can find which node holds a given entry.
KEY_PREFIX = "task-list:cluster:"


@dataclass
class Ports:
    nginx: int
    mariadb: int
    memcached: list = field(default_factory=list)

    @classmethod
    def default(cls):
        base = int(os.environ.get("WORKSHOP_CLUSTER_PORT", "8700"))
        return cls(nginx=base, mariadb=base + 10, memcached=[base + 11, base + 12, base + 13])

    @classmethod
    def free(cls, nodes=3):
        return cls(nginx=services.free_port(), mariadb=services.free_port(),
                   memcached=[services.free_port() for _ in range(nodes)])


class Link:
    """A TCP relay in front of one memcached node, so a test can cut the network to it.

    While cut, nothing is relayed either way and new connections are accepted but never answered:
    clients see timeouts, as in a real partition, and the node keeps every entry it had. Mending
    closes the silenced connections, so clients reconnect and are relayed again. It runs in a
    thread of the process that made it, so only tests use it.
    """

    def __init__(self, target_port):
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.selector = selectors.DefaultSelector()
        self.peers = {}  # socket -> its other end, or None while cut
        self.is_cut = False
        self.mending = threading.Event()
        self.closed = False
        self.thread = threading.Thread(target=self._relay, daemon=True)

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def start(self):
        self.selector.register(self.listener, selectors.EVENT_READ)
        self.thread.start()
        return self

    def cut(self):
        self.is_cut = True

    def mend(self):
        self.mending.clear()
        self.is_cut = False
        self.mending.wait(5)  # the relay thread closes the silenced connections first

    def stop(self):
        self.closed = True
        self.thread.join(5)
        for sock in list(self.peers):
            sock.close()
        self.listener.close()

    def _relay(self):
        silenced = set()
        while not self.closed:
            if not self.is_cut and not self.mending.is_set():
                for sock in silenced:
                    self._drop(sock)
                silenced.clear()
                self.mending.set()
            for key, _ in self.selector.select(0.05):
                sock = key.fileobj
                if sock is self.listener:
                    client, _ = self.listener.accept()
                    self._open(client, silenced)
                    continue
                if sock not in self.peers:
                    continue
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    self._drop(sock)
                elif self.is_cut or sock in silenced:
                    silenced.update(s for s in (sock, self.peers[sock]) if s is not None)
                else:
                    try:
                        self.peers[sock].sendall(data)
                    except OSError:
                        self._drop(sock)

    def _open(self, client, silenced):
        upstream = None
        if not self.is_cut:
            try:
                upstream = socket.create_connection(self.target, timeout=2)
            except OSError:
                client.close()  # the node itself is down: refuse, as it would
                return
        self.peers[client] = upstream
        self.selector.register(client, selectors.EVENT_READ)
        if upstream is None:
            silenced.add(client)
        else:
            self.peers[upstream] = client
            self.selector.register(upstream, selectors.EVENT_READ)

    def _drop(self, sock):
        for end in (sock, self.peers.get(sock)):
            if end is not None and end in self.peers:
                self.selector.unregister(end)
                del self.peers[end]
                end.close()


class Cluster:
    """nginx, INSTANCES gunicorn processes of APP_DIR, three memcached nodes and MariaDB.

    links=True puts a Link in front of each node (tests only): cut_node() then partitions it.
    """

    def __init__(self, run_dir=RUN_DIR, ports=None, instances=2, app_dir=FINAL, env=None,
                 links=False):
        self.run_dir = Path(run_dir)
        self.ports = ports or Ports.default()
        self.instances = instances
        self.app_dir = Path(app_dir)
        self.extra_env = {k: str(v) for k, v in (env or {}).items()}
        self.nodes = [services.Memcached(port=port, sasl=True, sasl_conf=self.run_dir / "sasl",
                                         log=self.run_dir / f"memcached-{i + 1}.log")
                      for i, port in enumerate(self.ports.memcached)]
        self.links = [Link(node.port) for node in self.nodes] if links else []
        self.app = None
        self.nginx = None

    # --- addresses ------------------------------------------------------------------------

    @property
    def url(self):
        """The load balancer's address: what a visitor of the environment sees."""
        return f"http://127.0.0.1:{self.ports.nginx}"

    @property
    def instance_urls(self):
        return [server.url for server in self.app.servers] if self.app else []

    @property
    def key_prefix(self):
        """What final/ puts before its shared cache keys: CACHE_KEY_PREFIX and the database's tag,
        as the instances log it when they start."""
        logged = re.search(r"cache keys start with (\S+);", self.log_text())
        return logged.group(1) if logged else self.extra_env.get("CACHE_KEY_PREFIX", KEY_PREFIX)

    def db_connect(self):
        """A MySQLdb connection to the cluster's database, autocommit on."""
        import MySQLdb

        return MySQLdb.connect(host="127.0.0.1", port=self.ports.mariadb, user=services.DB_USER,
                               password=services.DB_PASSWORD, database=services.DB_NAME,
                               autocommit=True)

    # --- start and stop -------------------------------------------------------------------

    def start(self):
        if self.running():
            raise ServiceError(f"a cluster already runs from {services.shown(self.run_dir)}; "
                               "stop it first with `make cluster-stop`")
        busy = [p for p in (self.ports.nginx, self.ports.mariadb, *self.ports.memcached)
                if services.port_open(p)]
        if busy:
            raise ServiceError(f"port {busy[0]} is already in use; stop what runs there or set "
                               "WORKSHOP_CLUSTER_PORT to another base port")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            services.start_mariadb(self.run_dir, self.ports.mariadb)
            services.sasl_conf_dir(self.run_dir)
            for i in range(len(self.nodes)):
                self.start_node(i)
            for link in self.links:
                link.start()
            self._start_apps()
            self._start_nginx()
        except BaseException:
            self.stop()
            raise
        (self.run_dir / STATE).write_text(json.dumps(
            {"url": self.url, "instances": self.instance_urls, "ports": asdict(self.ports)}, indent=2))
        return self

    def _start_apps(self):
        workdir = self.run_dir / "app"
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.copytree(self.app_dir, workdir, ignore=harness.COPY_IGNORE)
        self.app = harness.App(workdir, self.app_env(), None, None, harness.EB_WORKERS,
                               harness.EB_THREADS)
        self.app.flask("db", "upgrade")
        self.app.servers[0].start()
        for _ in range(self.instances - 1):
            self.app.spawn()
        for i, server in enumerate(self.app.servers):
            (self.run_dir / f"app-{i + 1}.pid").write_text(str(server.proc.pid))

    def app_env(self):
        """What Elastic Beanstalk would give every instance: the same settings and SECRET_KEY."""
        database = {"RDS_HOSTNAME": "127.0.0.1", "RDS_PORT": str(self.ports.mariadb),
                    "RDS_DB_NAME": services.DB_NAME, "RDS_USERNAME": services.DB_USER,
                    "RDS_PASSWORD": services.DB_PASSWORD}
        return harness.app_environment(
            harness.inherited(), database=database,
            servers=",".join(n.address for n in (self.links or self.nodes)),
            username=services.SASL_USER, password=services.SASL_PASSWORD,
            secret_key="cluster-" + secrets.token_hex(16),
            extra={"CACHE_KEY_PREFIX": KEY_PREFIX, **self.extra_env})

    def _start_nginx(self):
        folder = self.run_dir / "nginx"
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        conf = folder / "nginx.conf"
        conf.write_text(nginx_conf(self.run_dir, self.ports.nginx,
                                   [server.port for server in self.app.servers]))
        log = self.run_dir / "nginx-error.log"
        self.nginx = subprocess.Popen(
            [services.require("nginx"), "-p", f"{folder}/", "-c", str(conf), "-e", str(log)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        services.wait_for_port(self.ports.nginx, "nginx", timeout=10, proc=self.nginx, log=log)

    def pidfiles(self):
        """Every pid file, in the order to stop them: the front door first, the database last."""
        names = ["nginx.pid", *sorted(p.name for p in self.run_dir.glob("app-*.pid")),
                 *sorted(p.name for p in self.run_dir.glob("memcached-*.pid")), "mariadb.pid"]
        return [self.run_dir / name for name in names]

    def running(self):
        return any(processes.alive(pid) for pid in map(processes.read_pid, self.pidfiles()) if pid)

    def stop(self):
        """Stop every process this cluster started, found by its pid file."""
        for pidfile in self.pidfiles():
            pid = processes.read_pid(pidfile)
            if pid and processes.alive(pid):
                processes.stop(pid, timeout=30, name=pidfile.stem)
            pidfile.unlink(missing_ok=True)
        for proc in [self.nginx] + [s.proc for s in (self.app.servers if self.app else [])]:
            if proc is not None and proc.poll() is None:
                proc.wait(10)  # already signalled through its pid file; reap it
        for node in self.nodes:
            if node.proc is not None:
                node.proc.wait(10)
            node.proc = None
        for link in self.links:
            if link.thread.is_alive():
                link.stop()
        (self.run_dir / STATE).unlink(missing_ok=True)

    # --- faults, for the tests ------------------------------------------------------------

    def start_node(self, i):
        """Start memcached node I (from 0): empty, as a restarted server always is."""
        self.nodes[i].start(detach=True)
        (self.run_dir / f"memcached-{i + 1}.pid").write_text(str(self.nodes[i].proc.pid))

    def stop_node(self, i):
        self.nodes[i].stop()
        (self.run_dir / f"memcached-{i + 1}.pid").unlink(missing_ok=True)

    def cut_node(self, i):
        """A partition: node I keeps its entries, but no instance reaches it until mended."""
        self.links[i].cut()

    def mend_node(self, i):
        self.links[i].mend()

    def freeze_node(self, i):
        """A partition: node I keeps its entries but answers nobody until thawed."""
        os.kill(self.nodes[i].proc.pid, signal.SIGSTOP)

    def thaw_node(self, i):
        os.kill(self.nodes[i].proc.pid, signal.SIGCONT)

    def stop_mariadb(self):
        pidfile = self.run_dir / "mariadb.pid"
        pid = processes.read_pid(pidfile)
        if pid:
            processes.stop(pid, timeout=30, name="mariadb")
        pidfile.unlink(missing_ok=True)

    def start_mariadb(self):
        services.start_mariadb(self.run_dir, self.ports.mariadb)

    def node_value(self, i, name):
        """The raw value of key CACHE_KEY_PREFIX + NAME on node I, or None when it is absent."""
        return memcached.get(self.nodes[i].address, self.key_prefix + name, services.SASL_USER,
                             services.SASL_PASSWORD)

    def node_holding(self, name):
        """The index of the node that holds key CACHE_KEY_PREFIX + NAME, or None."""
        return next((i for i in range(len(self.nodes)) if self.node_value(i, name) is not None), None)

    def log_text(self):
        return self.app.log_text() if self.app else ""


def nginx_conf(run_dir, port, app_ports):
    user = "user root root;\n" if services.is_root() else ""
    upstreams = "\n".join(f"        server 127.0.0.1:{p};" for p in app_ports)
    return f"""# Written by `make cluster`: nginx standing in for Elastic Beanstalk's load balancer.
{user}worker_processes 1;
daemon off;
pid {run_dir}/nginx.pid;
error_log {run_dir}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    log_format upstream '$time_iso8601 "$request" $status upstream=$upstream_addr '
                        'upstream_status=$upstream_status time=$request_time';
    access_log {run_dir}/nginx-access.log upstream;
    client_body_temp_path body;
    proxy_temp_path proxy;
    fastcgi_temp_path fastcgi;
    uwsgi_temp_path uwsgi;
    scgi_temp_path scgi;
    upstream app {{
{upstreams}
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://app;
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            # Pages of a few hundred KB stay in memory.
            proxy_buffer_size 32k;
            proxy_buffers 16 32k;
        }}
    }}
}}
"""


def start():
    print(f"==> starting the cluster in {services.shown(RUN_DIR)}")
    cluster = Cluster().start()
    print(f"  nginx on {cluster.url}, in front of: {', '.join(cluster.instance_urls)}")
    print("  memcached nodes: " + ", ".join(node.address for node in cluster.nodes))
    print(f"  MariaDB on 127.0.0.1:{cluster.ports.mariadb}")
    print(f"Open {cluster.url}; stop everything with `make cluster-stop`.")


def stop():
    cluster = Cluster()
    running = cluster.running()
    cluster.stop()  # also clears pid files a crashed run left behind
    print("  cluster stopped" if running else "  no cluster is running")


def status():
    state_file = RUN_DIR / STATE
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    addresses = {"nginx.pid": state.get("url", "")}
    addresses.update({f"app-{i + 1}.pid": url for i, url in enumerate(state.get("instances", []))})
    ports = state.get("ports", asdict(Ports.default()))
    addresses.update({f"memcached-{i + 1}.pid": f"127.0.0.1:{p}"
                      for i, p in enumerate(ports["memcached"])})
    addresses["mariadb.pid"] = f"127.0.0.1:{ports['mariadb']}"
    for pidfile in Cluster().pidfiles():
        pid = processes.read_pid(pidfile)
        state_text = f"running (pid {pid})" if pid and processes.alive(pid) else "stopped"
        print(f"  {pidfile.stem:12} {addresses.get(pidfile.name, ''):28} {state_text}")


def main(argv):
    actions = {"start": start, "stop": stop, "status": status}
    if len(argv) != 2 or argv[1] not in actions:
        print("usage: python -m instruments.cluster start|stop|status", file=sys.stderr)
        return 2
    try:
        actions[argv[1]]()
    except (ServiceError, subprocess.CalledProcessError, OSError) as exc:
        print(f"cluster: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("cluster: interrupted; run `make cluster-stop` to clean up", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(["cluster", *sys.argv[1:]]))
