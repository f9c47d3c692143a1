"""The one way to stop a process: ask, wait, then kill. Standard library only (`make services`).

    stop(proc)                              SIGTERM, up to 10 s, then SIGKILL; a Popen is reaped
    stop(pid, timeout=30, name="mariadb")   the same for a pid read from a pid file
    stop(proc, signal.SIGINT)               gunicorn's quick shutdown
    stop(proc, group=True)                  the whole process group (started with start_new_session)
    stop(proc, signal.SIGKILL, family=True) at once, with its children (gunicorn's workers)

And what a process has used, from /proc: cpu_seconds(pid), peak_rss_mb(pid).
"""
import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path


def alive(pid):
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    # A zombie still answers kill(0); treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def program(pid):
    """The name of PID's program (as `ps -o comm` shows it), or None when it cannot be read."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def listening():
    """{"socket:[inode]": port} of every listening TCP socket, from /proc."""
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "0A":  # LISTEN
                found[f"socket:[{fields[9]}]"] = int(fields[1].rsplit(":", 1)[1], 16)
    return found


def sockets(pid):
    """The "socket:[inode]" names of PID's open files."""
    names = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):  # closed meanwhile
                names.add(os.readlink(fd))
    except OSError:  # gone, or not ours to read
        pass
    return names


def listener(port):
    """The pid of the process listening on loopback TCP PORT, or None when none is found."""
    inodes = {inode for inode, bound in listening().items() if bound == port}
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        if inodes & sockets(int(fd_dir.parent.name)):
            return int(fd_dir.parent.name)
    return None


def listening_ports(pid):
    """The TCP ports PID listens on, from /proc."""
    mine = sockets(pid)
    return sorted(port for inode, port in listening().items() if inode in mine)


def read_pid(pidfile):
    try:
        return int(Path(pidfile).read_text().strip())
    except (OSError, ValueError):
        return None


def children(pid):
    """Every descendant of PID, read from /proc."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parent = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(parent, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def cpu_seconds(pid):
    """PID's CPU time over all its threads, in seconds, to the nanosecond (schedstat). Unlike wall
    time, it holds on a busy machine."""
    total = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            total += int(stat.read_text().split()[0])
        except (OSError, IndexError, ValueError):  # a thread that just ended
            continue
    return total / 1e9


def peak_rss_mb(pid):
    """PID's peak resident memory (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise OSError(f"/proc/{pid}/status has no VmHWM")


def group_of(pid):
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def send(pid, sig, group=False):
    try:
        (os.killpg if group else os.kill)(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop(target, sig=signal.SIGTERM, *, timeout=10.0, group=False, family=False, name=None):
    """Send SIG to TARGET (a Popen or a pid); SIGKILL whatever is left after TIMEOUT seconds.

    group: signal TARGET's process group, and SIGKILL what is left of the group at the end.
    family: SIGKILL its descendants first (they are init's to reap once it dies), then it (SIG is
    then SIGKILL). It is frozen meanwhile, so it forks no new child, and killed even if this is
    interrupted half way.
    NAME, when given, is printed if a kill was needed.
    Returns True when the process had to be killed.
    """
    proc = target if hasattr(target, "poll") else None  # a Popen, or a forkserver.Forked
    pid = proc.pid if proc else int(target)
    if (proc.poll() is not None) if proc else not alive(pid):
        return False
    # What else must be gone when this returns: the children killed, or the rest of the group.
    doomed = []
    if family:  # frozen first: a gunicorn master would fork a new worker for each one killed
        send(pid, signal.SIGSTOP)
        try:
            doomed = children(pid)
            for child in doomed:
                send(child, signal.SIGKILL)
        finally:
            send(pid, signal.SIGKILL)  # never left frozen
    elif group:
        doomed = [c for c in children(pid) if group_of(c) == pid]
    send(pid, sig, group)
    killed = not gone(proc, pid, timeout if sig != signal.SIGKILL else None)
    if killed or group:
        send(pid, signal.SIGKILL, group)
        gone(proc, pid, None)
    for child in doomed:
        gone(None, child, None)
    if killed and name:
        print(f"  {name} did not stop in {timeout:.0f}s; killed it")
    return killed


def gone(proc, pid, timeout):
    """Wait until the process is gone (TIMEOUT None: until it is reaped after a SIGKILL)."""
    if proc is not None:
        try:
            proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
    deadline = time.monotonic() + (timeout if timeout is not None else 10.0)
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return not alive(pid)
