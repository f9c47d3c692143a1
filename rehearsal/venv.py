"""The app's virtualenv, built as the platform builds it: Python 3.11, `pip install -r
requirements.txt`, with wheels cached in build/wheels so runs after the first take seconds.
"""
import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

from runtime import ROOT

WHEELS = ROOT / "build" / "wheels"


class ReplayError(Exception):
    """The rehearsal itself could not run (services missing, no Python 3.11): exit 1."""


def find_python311():
    # The system's own first, where the platform keeps it: a user's build (pyenv under /root, say)
    # may be out of reach of the user the app runs as.
    candidates = ("/usr/bin/python3.11", shutil.which("python3.11"),
                  getattr(sys, "_base_executable", None), sys.executable)
    for candidate in candidates:
        if not candidate or not os.path.exists(candidate):
            continue
        result = subprocess.run([candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                capture_output=True, text=True)
        if result.returncode == 0 and result.stdout.strip() == "3.11":
            return candidate
    raise ReplayError("no Python 3.11 found to build the replay's venv (the platform runs 3.11): "
                      "install it, or run `make setup`")


def pip_env(offline):
    env = {k: v for k, v in os.environ.items() if not (offline and k.startswith("PIP_"))}
    if offline:
        env["PIP_CONFIG_FILE"] = os.devnull  # only our wheel cache, nothing else
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def pip_install(venv_python, requirements):
    return subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv_python), "install", "-q", "--no-compile",
         "--no-index", "--find-links", str(WHEELS), "-r", str(requirements)],
        capture_output=True, text=True, env=pip_env(offline=True))


def fill_wheel_cache(requirements, out):
    """Download or build every requirement's wheel into build/wheels (first run, or a new pin)."""
    WHEELS.mkdir(parents=True, exist_ok=True)
    with open(WHEELS / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        proc = subprocess.Popen(
            [sys.executable, "-m", "pip", "wheel", "--find-links", str(WHEELS), "-w", str(WHEELS),
             "-r", str(requirements)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=pip_env(offline=False))
        tail = []
        for line in proc.stdout:
            line = line.rstrip()
            tail = (tail + [line])[-8:]
            if line.startswith(("Collecting", "Building wheel", "  Building wheel", "Saved")):
                out.line(f"      {line.split(' (from ')[0].strip()}")
        return proc.wait(), tail


def pip_error(text):
    lines = [l.strip() for l in text.splitlines() if l.strip() and not l.startswith("WARNING: Location")]
    errors = [l for l in lines if l.startswith("ERROR")]
    return (errors or lines or ["no output"])[-1]


IMPORT_CHECK = r"""
import ast, importlib.util, json, sys
from pathlib import Path
root = Path(sys.argv[1])
local = {p.stem for p in root.iterdir() if p.suffix == ".py"} | {p.name for p in root.iterdir() if p.is_dir()}
def guarded(parents):
    return any(isinstance(p, ast.Try) and any(
        getattr(h.type, "id", None) in ("ImportError", "ModuleNotFoundError") for h in p.handlers)
        for p in parents)
missing = {}
for path in sorted(root.rglob("*.py")):
    tree = ast.parse(path.read_text(), str(path))
    parents = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module.split(".")[0]]
        else:
            continue
        chain, p = [], node
        while p in parents:
            p = parents[p]
            chain.append(p)
        if guarded(chain):
            continue
        for name in names:
            if name in sys.stdlib_module_names or name in local or name == "__future__":
                continue
            if importlib.util.find_spec(name) is None:
                missing.setdefault(name, str(path.relative_to(root)))
print(json.dumps(missing))
"""
