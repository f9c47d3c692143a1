"""`make bench`: how fast final/ is, next to the fastest a Flask app can be on this machine.

    python -m instruments.bench [--sizes 100,10000,100000] [--duration 5] [--rounds 5]
    python -m instruments.bench --only warm [--sizes 100] [--rounds 5]

Everything runs through runtime.harness with Elastic Beanstalk's server (gunicorn, 1 worker, 15
threads), MariaDB and SASL memcached, and is measured with wrk (Debian's package):

- the ceiling: a Flask app that answers with final/'s own page, byte for byte, and does nothing else;
- the limit: a Flask app with final/'s extensions that answers with one pooled pylibmc get of
  final/'s own page from the same memcached, the least a cached page can cost on Flask;
- their bare WSGI twins, with no framework: static bytes, and one pooled get of the same page
  (the reference final/'s warm page is held to), the get also sent the returning visitor's cookie;
- final/ with caching off, with the query cache only, and with every layer (the default), the
  last for a first-time visitor (no cookies) and for a returning one (the cookies a browser holds
  after adding a task through the form, sent with every request);
- final/ with its memcached stopped, which must fail fast and so be no slower than caching off
  (on a server of its own: a worker that served the outage costs more on warm pages after);
- the first read of the list after a write (the page is rebuilt), timed one request at a time;
- steps/09-sessions, the tutorial's design, at 100 tasks only (its unpaginated page outgrows
  memcached's 1 MB at a few thousand), next to a ceiling serving its own page.

Every measurement also takes the gunicorn worker's CPU time per request (from /proc), steadier
than throughput on a shared machine. With two CPUs or more, the measured worker runs on a CPU of
its own and everything else on the rest, MariaDB too while the bench runs (instruments/load.py).
What is compared is measured in turns of one second, the order reversed every turn
(load.measure_turns): each visitor of full caching with its bare get, memcached stopped with
caching off, the tutorial with its ceiling. Each visitor and its bare get are then also measured
at the same moment, their workers sharing the one CPU (load.measure_together): the warm page's
req/s is judged turn by turn, its CPU time on those two-at-once rounds.
Each size is a list of that many tasks, inserted with SQL. The output is a table on stdout, the
same figures with the targets in build/bench/bench.json, and a plot in build/bench/bench.png.
`--only warm` measures just final/'s warm page (both visitors) against the bare get, in paired
rounds, and prints each round's ratios and their medians (a minute or two, not the full bench's
twenty): the loop to run while making the warm page faster. It is a command, not a test:
tests/test_bench.py runs a small version and checks only its output.
"""
import argparse
import http.client
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

from instruments.benchapps import (BARE_GET_APP, BARE_STATIC_APP, CEILING_APP, LIMIT_APP,
                                   flask_dir, memcached_env)
from instruments.benchreport import (BARE_GET, BARE_GET_COOKIE, BARE_STATIC, CEILING, LIMIT,
                                     RETURNING, SHOWN, STOPPED, TUTORIAL, TUTORIAL_CEILING,
                                     WARM_PAIRS, median_of, plot, table, targets, warm_figures)
from instruments.load import (LOAD_CPUS, WORKER_CPUS, BenchError, Wrk, kept_off,
                              measure_together, measure_turns, pin)
from runtime import ROOT, harness, services
from runtime.services import ServiceError

FINAL = ROOT / "final"
OUT_DIR = ROOT / "build" / "bench"
TUTORIAL_SIZE = 100  # steps/09 lists every task on one page: measured at this size only
CONFIGS = [  # (label, CACHE_LAYERS); None keeps final/'s default, every layer on
    ("full caching", None),
    ("query cache only", "query"),
    ("caching off", ""),
]
VERBS = ["water", "paint", "fix", "call", "clean", "buy", "sort", "plan", "read", "wash"]
NOUNS = ["the plants", "the fence", "the bike", "grandma", "the garage", "more milk",
         "the receipts", "the trip", "chapter four", "the car"]


def say(text):
    print(text, file=sys.stderr, flush=True)


# --- measuring (wrk, and the worker's CPU time: instruments/load.py) ----------------------------

def timed_get(conn, path="/"):
    """One GET without cookies, as a new visitor would send it; its time in milliseconds."""
    started = time.perf_counter()
    conn.request("GET", path)
    response = conn.getresponse()
    response.read()
    if response.status != 200:
        raise BenchError(f"GET {path} answered {response.status}")
    return (time.perf_counter() - started) * 1000


def first_reads_after_writes(url, repeats):
    """Add a task, then time the next read of the list (rebuilt) and the one after (cached)."""
    from runtime.visitor import Visitor

    address = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    visitor = Visitor(url)
    first, warm = [], []
    try:
        for n in range(repeats):
            response = visitor.add_task(f"bench write {n} {time.time_ns()}", follow=False)
            if response.status_code != 302:
                raise BenchError(f"adding a task answered {response.status_code}")
            first.append(timed_get(conn))
            warm.append(timed_get(conn))
    finally:
        conn.close()
    return {"p50_ms": statistics.median(first), "warm_p50_ms": statistics.median(warm),
            "max_ms": max(first), "repeats": repeats}


# --- the data ----------------------------------------------------------------------------------

def count_tasks(app):
    conn = app.database.connect()
    try:
        cur = conn.cursor()
        cur.execute("SELECT COUNT(*) FROM task")
        return cur.fetchone()[0]
    finally:
        conn.close()


def seed(app, size, batch=5000):
    """Insert tasks with SQL until the list holds SIZE of them; memcached is flushed after."""
    conn = app.database.connect()
    try:
        cur = conn.cursor()
        have = count_tasks(app)
        while have < size:
            rows = [(f"Task {i + 1}: {VERBS[i % 10]} {NOUNS[(i // 10) % 10]}",)
                    for i in range(have, min(size, have + batch))]
            cur.executemany("INSERT INTO task (name) VALUES (%s)", rows)
            have += len(rows)
    finally:
        conn.close()
    # The rows bypassed the app, so nothing cached may survive them.
    app.memcached.flush()


def page_bytes(url):
    address = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        return response.read()
    finally:
        conn.close()


# --- one run -----------------------------------------------------------------------------------

def returning_cookies(url):
    """The Cookie header a browser sends after adding a task through the list's form."""
    from runtime.visitor import Visitor

    visitor = Visitor(url)
    if visitor.add_task(f"bench returning visitor {time.time_ns()}", follow=False).status_code != 302:
        raise BenchError("adding a task through the form did not answer 302")
    return "Cookie: " + "; ".join(f"{c.name}={c.value}" for c in visitor.http.cookies)


def run(options, workdir):
    """Every configuration at every size, ROUNDS times in turn: the ceiling and each
    configuration are measured a few seconds apart, so a neighbour's load hits them alike."""
    wrk = Wrk(options.threads, options.connections, workdir, options.warmup)
    results, first_reads = [], []
    tutorial_size = min(TUTORIAL_SIZE, options.sizes[0])
    per_round = len(CONFIGS) + 3
    steps = len(options.sizes) * (2 + options.rounds * per_round) + 1 + options.rounds
    step = 0

    def progress(size, label):
        nonlocal step
        step += 1
        say(f"[{step}/{steps}] {size:,} tasks: {label}")

    with harness.run_app(FINAL, database="mariadb", cache="sasl") as app:
        for size in options.sizes:
            progress(size, "inserting tasks")
            seed(app, size)
            servers = {label: app.spawn(env={} if layers is None else {"CACHE_LAYERS": layers})
                       for label, layers in CONFIGS}
            # Full caching's twin for the outage: after seconds of building pages without
            # memcached, a worker's warm pages cost 1% to 2% more CPU (final/README.md, Scale).
            servers[STOPPED] = app.spawn()
            cookie = returning_cookies(servers["full caching"].url)
            rounds = []
            try:
                # Before the rounds: each ends with memcached restarted, and an instance's first
                # calls after a restart fail and turn its cache off for a second (store.down()).
                progress(size, f"first read after a write, {options.writes} times")
                first = first_reads_after_writes(servers["full caching"].url, options.writes)
                say(f"      p50 {first['p50_ms']:.1f} ms (a warm read: {first['warm_p50_ms']:.1f} ms)")
                page = page_bytes(app.url)  # with the tasks just added, as the servers show it
                ceiling_dir = flask_dir(workdir, f"ceiling-{size}", CEILING_APP, page)
                limit_dir = flask_dir(workdir, f"limit-{size}", LIMIT_APP, page)
                static_dir = flask_dir(workdir, f"bare-static-{size}", BARE_STATIC_APP, page)
                get_dir = flask_dir(workdir, f"bare-get-{size}", BARE_GET_APP, page)
                on_memcached = memcached_env(app.memcached)
                with harness.run_app(ceiling_dir, cache=None) as ceiling, \
                        harness.run_app(limit_dir, cache=None, env=on_memcached) as limit, \
                        harness.run_app(static_dir, cache=None) as bare_static, \
                        harness.run_app(get_dir, cache=None, env=on_memcached) as bare_get:
                    references = {CEILING: ceiling.servers[0], LIMIT: limit.servers[0],
                                  BARE_STATIC: bare_static.servers[0], BARE_GET: bare_get.servers[0]}
                    for n in range(options.rounds):
                        rounds.append(one_round(app, references, servers, cookie, wrk,
                                                options.duration,
                                                lambda label: progress(size, f"round {n + 1}/"
                                                                       f"{options.rounds}: {label}"),
                                                start=n))
            finally:
                for server in servers.values():
                    server.stop()
            recovered = [r.pop("recovered_s") for r in rounds]
            first_reads.append({"size": size, **first,
                                "recovery_s": max(r["full caching"] for r in recovered)})
            for label in SHOWN:
                results.append(row_of(size, label, len(page), rounds, CEILING))
    results += tutorial_rows(tutorial_size, options, wrk, workdir, progress)
    return results, first_reads


def row_of(size, label, page_size, rounds, ceiling):
    return {"size": size, "config": label, "page_bytes": page_size, "url": rounds[0][label]["url"],
            **median_of([r[label] for r in rounds]),
            "ratio": statistics.median(r[label]["rps"] / r[ceiling]["rps"] for r in rounds)}


def tutorial_rows(size, options, wrk, workdir, progress):
    """steps/09-sessions at SIZE tasks, paired with a ceiling serving its own page."""
    with harness.run_app(ROOT / "steps" / "09-sessions", database="mariadb", cache="sasl") as app:
        progress(size, "steps/09: inserting tasks")
        seed(app, size)
        page = page_bytes(app.url)
        rounds = []
        ceiling_dir = flask_dir(workdir, "ceiling-steps09", CEILING_APP, page)
        with harness.run_app(ceiling_dir, cache=None) as ceiling:
            for n in range(options.rounds):
                progress(size, f"steps/09 round {n + 1}/{options.rounds}: in turns with its ceiling")
                runs = [(TUTORIAL_CEILING, ceiling.servers[0], ()), (TUTORIAL, app.servers[0], ())]
                rounds.append(measure_turns(wrk, runs, options.duration, start=n + 1))
                say(f"      {rounds[-1][TUTORIAL]['rps']:,.0f} requests/s")
    return [row_of(size, label, len(page), rounds, TUTORIAL_CEILING)
            for label in (TUTORIAL_CEILING, TUTORIAL)]


def one_round(app, references, servers, cookie, wrk, duration, progress, start=0):
    """The references, then each configuration, each visitor of full caching in turns with its
    bare get (WARM_PAIRS), and caching off in turns with full caching's twin (STOPPED) while
    memcached is stopped (caching off never calls it). Apart, what ran between the two of a pair
    (caching off keeps MariaDB busy on memcached's CPU) weighed on one side only. START: the
    round's number."""
    row = {}

    def take(what, runs, measure=measure_turns):
        progress(what)
        row.update(measure(wrk, runs, duration, start=start))
        for label, _, _ in runs:
            together = row[label].get("together_cpu_us")
            say(f"      {label}: {row[label]['rps']:,.0f} requests/s, "
                f"{row[label]['cpu_us']:.0f} us CPU each"
                + (f" ({together:.0f} us two at once)" if together else ""))

    for label, server in references.items():
        if label != BARE_GET:
            take(label, [(label, server, ())])
    app.memcached.flush()
    take("query cache only", [("query cache only", servers["query cache only"], ())])
    app.memcached.flush()
    full = servers["full caching"]
    take("full caching, in turns with the bare get, then at once", [
        (BARE_GET, references[BARE_GET], ()), ("full caching", full, ()),
        (RETURNING, full, (cookie,)), (BARE_GET_COOKIE, references[BARE_GET], (cookie,))],
        measure=warm_pairs)
    app.memcached.stop()
    try:
        take(f"caching off, in turns with {STOPPED}",
             [("caching off", servers["caching off"], ()), (STOPPED, servers[STOPPED], ())])
    finally:
        app.memcached.start()
    for label in ("full caching", "query cache only"):
        row.setdefault("recovered_s", {})[label] = until_cached(app, servers[label].url)
    return row


def warm_pairs(wrk, runs, duration, start=0):
    """RUNS, the warm page's visitors and their bare gets, in turns (the table's figures, and the
    req/s compared turn by turn), then each of WARM_PAIRS at the same moment (the CPU time
    compared): benchreport.warm_figures says why."""
    row = measure_turns(wrk, runs, duration, start=start)
    by_label = {label: (server, headers) for label, server, headers in runs}
    for pair in WARM_PAIRS:
        both = measure_together(wrk, [(label, *by_label[label]) for label in pair], duration,
                                start=start)
        for label in pair:
            row[label]["together_cpu_us"] = both[label]["cpu_us"]
    return row


def until_cached(app, url, timeout=30.0):
    """Wait until URL is answered from memcached again: after memcached restarts, each process
    takes a moment (final/README.md, Scale) before it uses it again. Returns the seconds taken."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        page_bytes(url)  # rebuilds and stores what the restart lost
        with app.counters() as delta:
            page_bytes(url)
        if delta["get_hits"] >= 1 and delta["get_misses"] == 0:
            return time.monotonic() - started
        time.sleep(0.05)
    raise BenchError(f"{url} did not use memcached again within {timeout:.0f}s of its restart")


def warm_only(options, workdir):
    """final/'s warm page, for both visitors, each in turns with its bare get (WARM_PAIRS), the
    order reversed every turn and every round."""
    wrk = Wrk(options.threads, options.connections, workdir, options.warmup)
    with harness.run_app(FINAL, database="mariadb", cache="sasl") as app:
        for size in options.sizes:
            seed(app, size)
            final = app.spawn()
            try:
                cookie = returning_cookies(final.url)
                get_dir = flask_dir(workdir, f"bare-get-{size}", BARE_GET_APP, page_bytes(final.url))
                with harness.run_app(get_dir, cache=None, env=memcached_env(app.memcached)) as bare:
                    # The bare get is also sent the returning visitor's cookie: gunicorn parses it.
                    runs = [(BARE_GET, bare.servers[0], ()), ("full caching", final, ()),
                            (RETURNING, final, (cookie,)),
                            (BARE_GET_COOKIE, bare.servers[0], (cookie,))]  # pairs side by side
                    rounds = [warm_pairs(wrk, runs, options.duration, start=n + 1)
                              for n in range(options.rounds)]
            finally:
                final.stop()
            for n, row in enumerate(rounds, 1):
                print(f"{size:,} tasks, round {n}: " + warm_ratios([row]))
            print(f"{size:,} tasks, median of {options.rounds}: " + warm_ratios(rounds))
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}, {os.cpu_count()} cpus")
    return 0


def warm_ratios(rounds):
    """Each visitor's req/s and CPU time against its bare get over ROUNDS, as the targets judge."""
    rows = {label: median_of([r[label] for r in rounds]) for pair in WARM_PAIRS for label in pair}
    return "; ".join(
        f"{label} {rows[label]['rps']:,.0f} req/s, {rows[label]['cpu_us']:.0f} us CPU: "
        f"{rps:.2f}x req/s, {cpu:.2f}x CPU of {ref}"
        for label, ref in WARM_PAIRS for rps, cpu in [warm_figures(rows[label], rows[ref])])


# --- the command -------------------------------------------------------------------------------

class Parser(argparse.ArgumentParser):
    def error(self, message):
        print(f"bench: {message} (see python -m instruments.bench --help)", file=sys.stderr)
        sys.exit(2)


def sizes_arg(text):
    try:
        sizes = sorted({int(part.replace("_", "")) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sizes takes whole numbers separated by commas, not {text!r}")
    if not sizes or sizes[0] < 1:
        raise argparse.ArgumentTypeError("--sizes needs at least one size of 1 or more")
    return sizes


def positive(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of 1 or more, not {text!r}")
    return value


def parse(argv):
    parser = Parser(prog="python -m instruments.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=sizes_arg, default=[100, 10_000, 100_000],
                        help="list sizes to measure, comma-separated (default 100,10000,100000)")
    parser.add_argument("--duration", type=positive, default=5,
                        help="seconds of load per measurement (default 5)")
    parser.add_argument("--rounds", type=positive, default=5,
                        help="times each measurement is taken, in turn; the median is shown "
                             "(default 5)")
    parser.add_argument("--connections", type=positive, default=8, help="wrk connections (default 8)")
    parser.add_argument("--threads", type=positive, default=1, help="wrk threads (default 1)")
    parser.add_argument("--writes", type=positive, default=15,
                        help="writes timed for the first read after a write (default 15)")
    parser.add_argument("--warmup", type=positive, default=None,
                        help="seconds of load before each measurement (default: 2, or a fifth "
                             "of --duration when longer)")
    parser.add_argument("--only", choices=["warm"],
                        help="warm: only final/'s warm page against the bare get, paired rounds")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="output folder (default build/bench)")
    return parser.parse_args(argv)


def main(argv):
    options = parse(argv[1:])
    say(f"bench: sizes {', '.join(f'{s:,}' for s in options.sizes)}; {options.rounds} rounds of "
        f"{options.duration}s per measurement, wrk -t{options.threads} -c{options.connections}; "
        f"output in {options.out}")
    if WORKER_CPUS:
        say(f"the measured worker runs on CPU {min(WORKER_CPUS)}, everything else on "
            f"{', '.join(map(str, sorted(LOAD_CPUS)))}")
    started = time.monotonic()
    pin(0, LOAD_CPUS)  # what this starts runs there too, until load.py moves a measured worker
    try:
        options.out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="bench-") as workdir, \
                kept_off([services.running("mariadb")]):
            if options.only == "warm":
                return warm_only(options, workdir)
            results, first_reads = run(options, workdir)
    except (BenchError, ServiceError, OSError, subprocess.SubprocessError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    checks = targets(results, first_reads, options.sizes)
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average": os.getloadavg()},
        "settings": {"sizes": options.sizes, "duration_s": options.duration,
                     "rounds": options.rounds,
                     "wrk": f"-t{options.threads} -c{options.connections}",
                     "server": f"gunicorn --workers={harness.EB_WORKERS} --threads={harness.EB_THREADS}",
                     "database": "mariadb", "cache": "sasl memcached",
                     "cpus": {"worker": sorted(WORKER_CPUS), "the rest": sorted(LOAD_CPUS)}
                     if WORKER_CPUS else "one CPU: nothing pinned"},
        "results": results,
        "first_read_after_write": first_reads,
        "targets": checks,
        "seconds": round(time.monotonic() - started, 1),
    }
    (options.out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(results, options.out / "bench.png")
    print(table(results, first_reads, checks))
    print(f"\nwrote {options.out / 'bench.json'} and {options.out / 'bench.png'} "
          f"in {report['seconds']:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
