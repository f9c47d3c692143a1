"""What the notebooks share, and the runner behind `make notebooks`.

In a notebook, `import nbtools` puts the repository on sys.path (so `from runtime import harness`
works) and offers: BUILD (where summaries and plots go), max_tasks(), cleanup(), Table,
save_summary(), save_plot(), metadump(), raw_get(), poll(), stage_dir(), names_on() and Recorder.

From the shell, `python notebooks/nbtools.py [NN ...]` executes the notebooks (all of them by
default) on the project's kernel with nbclient, and writes an HTML copy of each to build/notebooks/;
`python notebooks/nbtools.py --kernel` only registers that kernel (`make lab` does).
"""
import atexit
import contextlib
import html
import json
import os
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parent
if str(NOTEBOOKS.parent) not in sys.path:
    sys.path.insert(0, str(NOTEBOOKS.parent))  # the repository, for runtime

from runtime import ROOT  # noqa: E402
from runtime.memcached import metadump, raw_get  # noqa: E402,F401  (notebooks call them via nbtools)
from runtime.taskpage import add_form, names as names_on, parse_forms, task_id  # noqa: E402

BUILD = ROOT / "build" / "notebooks"
KERNEL = "workshop"
SIZE_SETTING = "NOTEBOOK_MAX_TASKS"
FULL_RUN = 10_000


def max_tasks():
    """The largest task count the notebooks create: NOTEBOOK_MAX_TASKS, or the full run."""
    raw = os.environ.get(SIZE_SETTING, "").strip()
    if not raw:
        return FULL_RUN
    if not raw.isdigit() or int(raw) < 10:
        raise ValueError(f"{SIZE_SETTING} must be a whole number of at least 10, not {raw!r}")
    return int(raw)


def cleanup():
    """An ExitStack for the servers a notebook starts; also closed when the kernel exits."""
    stack = contextlib.ExitStack()
    atexit.register(stack.close)
    return stack


class Table:
    """Rows of dicts, shown as an HTML table in Jupyter and as aligned text elsewhere."""

    def __init__(self, rows, columns=None):
        self.rows = list(rows)
        self.columns = columns or (list(self.rows[0]) if self.rows else [])

    def _cells(self, row):
        return [_format(row.get(c, "")) for c in self.columns]

    def _repr_html_(self):
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in self._cells(r)) + "</tr>"
                       for r in self.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def __repr__(self):
        cells = [self.columns] + [self._cells(r) for r in self.rows]
        widths = [max(len(line[i]) for line in cells) for i in range(len(self.columns))]
        return "\n".join("  ".join(v.rjust(w) for v, w in zip(line, widths)) for line in cells)


def _format(value):
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def save_summary(name, data):
    """Write what a notebook observed to build/notebooks/NAME.json; the tests read it."""
    BUILD.mkdir(parents=True, exist_ok=True)
    path = BUILD / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path


def save_plot(fig, name):
    """Save a matplotlib figure as build/notebooks/NAME.png."""
    BUILD.mkdir(parents=True, exist_ok=True)
    path = BUILD / f"{name}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def poll(predicate, timeout=10.0, interval=0.05):
    """Call PREDICATE until it returns something true, or until TIMEOUT seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def stage_dir(number):
    """The folder of workshop stage NUMBER ("04" -> steps/04-query-cache)."""
    found = sorted((ROOT / "steps").glob(f"{number}-*"))
    if not found:
        raise FileNotFoundError(f"steps/{number}-* does not exist yet")
    return found[0]


def names_in_database(app):
    """The task names the app's MariaDB database holds, oldest first."""
    conn = app.database.connect()
    try:
        cursor = conn.cursor()
        cursor.execute("SELECT name FROM task ORDER BY id")
        return [row[0] for row in cursor.fetchall()]
    finally:
        conn.close()


class Recorder:
    """One visitor of an app; every request it makes becomes a row of memcached counter deltas.

    The dashboard's view, one request at a time: what each page load or form post asked of
    memcached, and whether the page agreed with the database.
    """

    def __init__(self, app, stage):
        self.app, self.stage = app, stage
        self.visitor = app.visitor()
        self.rows = []
        self.page = None

    def _record(self, label, send):
        with self.app.counters() as delta:
            response = send()
        row = {"stage": self.stage, "request": label, "status": response.status_code,
               "get hits": delta["get_hits"], "get misses": delta["get_misses"],
               "sets": delta["cmd_set"], "deletes": delta["delete_hits"] + delta["delete_misses"]}
        if response.request.method == "GET" and response.status_code == 200 and \
                urllib.parse.urlsplit(response.url).path == "/":
            self.page = response.text
            shown, stored = names_on(response.text), names_in_database(self.app)
            row.update({"tasks shown": len(shown), "tasks in database": len(stored),
                        "stale": sorted(shown) != sorted(stored)})
        self.rows.append(row)
        return row

    def load(self, path="/", label=None):
        return self._record(label or f"GET {path}", lambda: self.visitor.get(path))

    def add(self, name):
        """POST the add form of the last page loaded (without following the redirect)."""
        form = add_form(parse_forms_on(self.page, self.visitor))
        return self._record(f"POST / (add {name!r})",
                            lambda: self.visitor.submit(form, {form.texts[0]: name}, follow=False))

    def delete(self, name):
        """Press the delete button next to NAME on the last page loaded."""
        task = task_id(self.page, name)
        form = next(f for f in parse_forms_on(self.page, self.visitor) if f"/{task}/delete" in f.action)
        return self._record(f"POST /{task}/delete ({name!r})",
                            lambda: self.visitor.submit(form, follow=False))

    def table(self):
        return Table(self.rows)


def parse_forms_on(page_html, visitor):
    from urllib.parse import urljoin

    forms = parse_forms(page_html)
    for form in forms:
        form.action = urljoin(visitor.base_url, form.action)
    return forms


# ---- the runner -------------------------------------------------------------------------------

def notebook_paths():
    return sorted(NOTEBOOKS.glob("[0-9][0-9]-*.ipynb"))


def ensure_kernel():
    """Register the `workshop` kernel: this interpreter (.venv's Python), inside .venv."""
    from ipykernel.kernelspec import install

    install(kernel_name=KERNEL, display_name="Workshop (.venv Python 3.11)", prefix=sys.prefix)


def execute(path, timeout=900):
    """Run one notebook top to bottom; write its HTML and executed copies to build/notebooks/.

    Returns None, or one line saying what failed. The notebook in notebooks/ stays without outputs.
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
    from traitlets.config import Config
    from nbconvert import HTMLExporter

    nb = nbformat.read(path, as_version=4)
    error = None
    with tempfile.TemporaryDirectory(prefix="nb-kernel-") as sockets:
        # Unix sockets instead of loopback TCP: private to this user, and no warning about it.
        config = Config({"KernelManager": {"transport": "ipc", "ip": os.path.join(sockets, "k")}})
        client = NotebookClient(nb, kernel_name=KERNEL, timeout=timeout, config=config,
                                resources={"metadata": {"path": str(NOTEBOOKS)}},
                                on_cell_executed=cell_progress(path, nb))
        try:
            client.execute()
        except CellExecutionError as exc:
            error = f"{path.name}, cell {failed_cell(nb)}: {exc.ename}: {exc.evalue}"
        except (CellTimeoutError, DeadKernelError) as exc:
            error = f"{path.name}, cell {failed_cell(nb)}: {type(exc).__name__}: {str(exc).strip().splitlines()[0]}"
    BUILD.mkdir(parents=True, exist_ok=True)
    body, _ = HTMLExporter().from_notebook_node(nb)
    (BUILD / f"{path.stem}.html").write_text(body)
    nbformat.write(nb, BUILD / path.name)  # the executed copy, outputs and all
    return error


def cell_progress(path, nb):
    """nbclient's on_cell_executed hook: one line per code cell, with its time and the run's."""
    total = sum(1 for cell in nb.cells if cell.cell_type == "code")
    started = last = time.monotonic()
    done = 0

    def executed(cell, cell_index, execute_reply):
        nonlocal last, done
        now = time.monotonic()
        done += 1
        print(f"    {path.name}: code cell {done} of {total} (cell {cell_index + 1}) in {now - last:.1f} s, "
              f"{now - started:.0f} s so far", flush=True)
        last = now

    return executed


def failed_cell(nb):
    """The number (from 1, as Jupyter shows cells) of the first cell whose output is an error."""
    for number, cell in enumerate(nb.cells, 1):
        if any(out.get("output_type") == "error" for out in cell.get("outputs", [])):
            return number
    return "?"


def main(argv):
    if argv[1:] == ["--kernel"]:
        ensure_kernel()
        print(f"  kernel {KERNEL!r}: {sys.executable}")
        return 0
    paths = notebook_paths()
    wanted = argv[1:]
    if wanted:
        chosen = [p for p in paths if any(p.name.startswith(w) for w in wanted)]
        unknown = [w for w in wanted if not any(p.name.startswith(w) for p in paths)]
        if unknown:
            names = ", ".join(p.name[:2] for p in paths)
            print(f"notebooks: no notebook starts with {', '.join(unknown)} (have {names})", file=sys.stderr)
            return 2
        paths = chosen
    try:
        max_tasks()
    except ValueError as exc:
        print(f"notebooks: {exc}", file=sys.stderr)
        return 2
    ensure_kernel()
    failed = 0
    for path in paths:
        print(f"  running {path.name}", flush=True)
        start = time.monotonic()
        error = execute(path)
        took = time.monotonic() - start
        if error:
            failed += 1
            print(f"  FAILED {path.name} ({took:.0f} s): {error}", file=sys.stderr)
        else:
            print(f"  ran {path.name} in {took:.0f} s -> {(BUILD / path.stem).relative_to(ROOT)}.html")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
