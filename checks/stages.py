"""What each stage of the workshop asks of the learner's app: one check per expectation.

One test per expectation in steps/steps.toml, named check_<stage>_<id>; checks/plugin.py runs
them and attaches the manifest's hint to each failure. Where one expectation can fail in more
than one way, the check says which with `expect(..., reason)`, and the manifest holds the hint
for each reason. The fixtures `app`, `listing_app` and `app_without_memcached` are the running
app (checks/subject.py), booted once per configuration for the whole run, so every check leaves
the app usable and names its own tasks. Only stage 03 reads files (the deploy configuration
of the bundle `eb deploy` would upload, by the same rules as `make deploy-check`); every other
check judges what the app does, through HTTP and memcached's own counters.
"""
import os
import subprocess
import sys
from urllib.parse import urljoin

from checks import probes
from checks.bundled import judge_bundle, no_findings
from checks.probes import deltas, flash_in_session, listed, new_name, next_load, session_key
from checks.stored import pickled_globals, signed_data
from checks.subject import AppProblem, expect
from runtime.taskpage import new_texts, occurrences, shows, task_id, task_ids, texts


# ---- 01 the skeleton ---------------------------------------------------------------------------

def check_01_importable(app):
    # The fixture started gunicorn with application:application; a live server proves the import.
    assert app.app.servers[0].proc.poll() is None, "the app process exited after starting"


def check_01_index(app):
    response = app.visitor().get("/")
    assert response.status_code == 200, f"GET / answered {response.status_code}"


# ---- 02 the database ---------------------------------------------------------------------------
# Stage 04 serves a stale list on purpose, so these checks flush memcached before they look:
# they are about what the database holds.

def check_02_migrates(app, app_dir):
    # The harness ran `flask --app application db upgrade` on the empty database, if it could.
    expect((app_dir / "migrations").is_dir(), "the app folder has no migrations/ folder, so "
           "`flask db upgrade` had nothing to run", "no_migrations")
    versions = app.migration_versions()
    expect(versions is not None, "`flask db upgrade` ran, and the app made no SQLite database in "
           "its folder", "no_sqlite")
    expect(versions, "the database holds no migration revision (no alembic_version row): "
           "migrations/versions/ holds no revision to apply", "no_revision")


def check_02_add_list_delete(app):
    visitor, name = app.visitor(), new_name("add list delete")
    visitor.add_task(name)
    app.flush()
    page = visitor.get("/").text
    expect(shows(page, name), f"after adding {name!r}, the list does not show it", "not_stored")
    task = task_id(page, name)
    expect(task, f"the list shows {name!r} but no form posting to /<id>/delete after it",
           "no_delete_form")
    visitor.delete_task(task)
    app.flush()
    expect(not shows(visitor.get("/").text, name),
           f"after pressing the delete button of {name!r} (task {task}), it is still listed",
           "not_deleted")


def check_02_persists(app):
    name = new_name("persists")
    app.visitor().add_task(name)
    app.restart()
    app.flush()
    assert shows(app.visitor().get("/").text, name), \
        f"{name!r} was added, and after the app restarted it is gone"


def check_02_empty_name(app):
    visitor = app.visitor()
    app.flush()
    before = set(task_ids(visitor.get("/").text))
    page = visitor.add_task("").text
    app.flush()
    baseline = app.visitor().get("/").text
    stored = set(task_ids(baseline)) - before
    expect(not stored, f"an empty name was stored as task {min(stored or [0])}", "stored")
    expect(new_texts(page, baseline), "after submitting an empty name, the page shows no message",
           "no_message")


def check_02_no_double_add(app):
    visitor, name = app.visitor(), new_name("refresh")
    form = visitor.add_form()
    response = visitor.submit(form, {form.texts[0]: name}, follow=False)
    if response.is_redirect:
        target = urljoin(response.url, response.headers["Location"])
        visitor.get(target)
        visitor.get(target)  # the refresh: a browser repeats the GET it was redirected to
        how = "a redirect, then a refresh"
    else:
        visitor.submit(form, {form.texts[0]: name}, follow=False)  # the refresh repeats the POST
        how = f"a {response.status_code} page instead of a redirect, so the refresh posted again"
    app.flush()
    count = occurrences(visitor.get("/").text, name)
    expect(count == 1, f"adding {name!r} answered {how}; the list shows it {count} times",
           None if not response.is_redirect else "stored_twice" if count > 1 else "not_stored")


# ---- 03 the deploy files -----------------------------------------------------------------------
# The one stage judged by reading files, and the files of the bundle `eb deploy` would upload
# (checks/bundled.py): what Elastic Beanstalk reads from its root, by the rules `make
# deploy-check` applies (rehearsal/rules.py), each finding under the check it belongs to.

def check_03_ebextensions(app_dir):
    def check(view):
        expect(view.judged.configs or view.judged.unreadable,
               f"{view.name}/.ebextensions/ holds no *.config file", "no_ebextensions")
        no_findings(view.findings["ebextensions"])
    judge_bundle(app_dir, check)


def check_03_migration_command(app_dir):
    def check(view):
        no_findings(view.findings["migration_command"])
        expect(any("db upgrade" in str(spec.get("command")) for config in view.judged.configs
                   for spec in (config.data.get("container_commands") or {}).values()
                   if isinstance(spec, dict)), "no container_commands entry runs `flask db upgrade`")
    judge_bundle(app_dir, check)


def check_03_entry_point(app_dir):
    judge_bundle(app_dir, lambda view: no_findings(view.findings["entry_point"]))


def check_03_requirements(app_dir):
    def check(view):
        path = view.root / "requirements.txt"
        expect(path.is_file(), f"{view.name}/ has no requirements.txt next to .ebextensions/", "no_file")
        no_findings(view.findings["requirements"],
                    "missing_requirement" if view.judged.runtime_needs else None)
        # A dry run against the packages installed for the workshop: offline, and no build.
        env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1",
               "PIP_NO_INPUT": "1"}
        result = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-index",
                                 "--quiet", "-r", path.name], cwd=view.root, env=env,
                                capture_output=True, text=True, timeout=120)
        problems = [l.removeprefix("ERROR: ") for l in result.stderr.splitlines() if l.startswith("ERROR")]
        expect(result.returncode == 0, "requirements.txt does not resolve: " + (
            "; ".join(problems) or result.stderr.strip()[-300:]), "unresolvable")
    judge_bundle(app_dir, check)


# ---- 04 the query cache ------------------------------------------------------------------------

def check_04_first_load(app, app_dir):
    app.flush()
    with app.counters() as delta:
        app.visitor().get("/")
    seen = f"the first load after a flush added {deltas(delta, 'cmd_get', 'get_misses', 'cmd_set')}"
    expect(delta["cmd_get"] or delta["cmd_set"], seen, "no_cache_calls")
    expect(delta["cmd_set"], f"{seen}: nothing was stored",
           "set_not_reached" if probes.calls(app_dir, r"\bcache\.set\s*\(") else "no_set")
    expect(delta["get_misses"], f"{seen}: the list was stored, never looked up first",
           "get_not_reached" if probes.calls(app_dir, r"\bcache\.get\s*\(") else "no_get")


def check_04_reload_hits(listing_app, app_dir):
    app = listing_app
    app.visitor().get("/")
    with app.counters() as delta:
        app.visitor().get("/")
    if delta["get_hits"] >= 1 and delta["get_misses"] == 0:
        return
    seen = f"an immediate reload added {deltas(delta, 'get_hits', 'get_misses', 'cmd_set')}"
    expect(delta["cmd_get"], seen,
           "get_not_reached" if probes.calls(app_dir, r"\bcache\.get\s*\(") else "no_get")
    got, stored = probes.cache_keys(app_dir, "get"), probes.cache_keys(app_dir, "set")
    keys = f"; your code looks up {listed(got)} and stores {listed(stored)}" \
        if got and stored and not got & stored else ""
    expect(not delta["cmd_set"], f"{seen}: each load stores the list again, and the next looks it "
           f"up and misses (memcached holds {listed(app.keys())}){keys}", "key_changes")
    expect(False, f"{seen}: the load before it stored nothing to hit",
           "set_not_reached" if probes.calls(app_dir, r"\bcache\.set\s*\(") else "no_set")


# Modules whose objects must never be cached: the ORM's, and the app's own classes.
ORM_MODULES = ("sqlalchemy", "flask_sqlalchemy")


def check_04_plain_values(listing_app, app_dir):
    app = listing_app
    app.flush()
    app.visitor().add_task(new_name("plain"))
    app.flush()
    app.visitor().get("/")
    own = {p.stem for p in app_dir.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()}
    for key in app.keys():
        names = pickled_globals(app.value(key)) or []
        classes = sorted({n for n in names if n.split(".")[0] in own})
        orm = any(n.split(".")[0] in ORM_MODULES for n in names)
        expect(not classes and not orm, f"memcached holds {key!r} as pickled "
               f"{', '.join(classes) or 'SQLAlchemy'} objects"
               + (" with SQLAlchemy's instance state" if orm and classes else "")
               + ", not plain data")


def check_04_runs_without_memcached(app_without_memcached):
    subject, problem = app_without_memcached
    if problem is not None:  # this expectation's own failure: its hint, with the app's cause
        raise AppProblem(f"without MEMCACHIER_SERVERS (as `make run` starts it), {problem}",
                         problem.output, problem.state, problem.cause)
    response = subject.visitor().get("/")
    expect(response.status_code == 200, f"without MEMCACHIER_SERVERS, GET / answered "
           f"{response.status_code}")


def check_04_stale_list(app, observe):
    visitor, name = app.visitor(), new_name("stale")
    visitor.get("/")
    page = visitor.add_task(name).text
    observe("the list was stale after an add" if not shows(page, name)
            else "the list showed the new task at once")


# ---- 05 invalidation ---------------------------------------------------------------------------

def check_05_fresh_after_add(app, app_dir):
    visitor, name = app.visitor(), new_name("fresh add")
    visitor.get("/")
    visitor.get("/")  # the list is cached now
    visitor.add_task(name, follow=False)
    other = probes.other_key(app_dir)
    next_load(app, app_dir, name, "05", "wrong_key" if other else None, note=other)


def check_05_fresh_after_delete(app, app_dir):
    visitor, name = app.visitor(), new_name("fresh delete")
    visitor.add_task(name)
    app.flush()
    page = visitor.get("/").text  # the list is cached now, with the task in it
    task = task_id(page, name)
    expect(task, f"the list does not show {name!r} after a flush", "not_stored")
    visitor.delete_task(task, follow=False)
    other = probes.other_key(app_dir)
    next_load(app, app_dir, name, "05", "wrong_key" if other else None, shown=False, note=other)


def check_05_invalidated_after_commit(app):
    visitor, name = app.visitor(), new_name("after commit")
    form = visitor.add_form()
    visitor.get("/")
    visitor.get("/")  # cached
    held = probes.held_at_commit(app)
    expect(held is not None, "the app made no SQLite database in its folder (check 02 names why)")
    with held, app.counters() as early:
        if "wal" in held.journal_modes():
            return  # in WAL mode a reader does not hold a commit back: the order cannot be judged
        posting = probes.in_background(
            lambda: visitor.submit(form, {form.texts[0]: name}, follow=False))
        reached = held.wait_for_commit(posting, app.request_timeout)
    posting.result()  # the commit goes on once the read ends; its own failures are raised here
    if not reached:
        app.flush()
        expect(shows(app.visitor().get("/").text, name), f"adding {name!r} stored nothing, nor "
               "did it wait at a commit", "not_stored")
        return  # committed without waiting on the read: nothing to judge the order by
    moved = probes.cache_writes(early)
    expect(not moved, f"while the add of {name!r} waited at its commit (the database held by a "
           f"reader), memcached already counted {', '.join(f'{k} {v:+d}' for k, v in moved.items())}"
           ": the cache was invalidated before the write was committed", "before_commit")


# ---- 06 memoize --------------------------------------------------------------------------------

def memoize_versions(app):
    return {k: app.value(k) for k in app.keys() if k.endswith("_memver")}


def check_06_memoize_keys(listing_app, app_dir):
    listing_app.flush()
    listing_app.visitor().get("/")
    keys = listing_app.keys()
    expect(any(k.endswith("_memver") for k in keys), f"after a load, memcached holds {listed(keys)}; "
           "none is a memoize version key (…_memver)",
           "memoize_unused" if probes.calls(app_dir, r"@\s*cache\.memoize\b") else None)


def check_06_memoize_invalidated(listing_app, app_dir):
    app, name = listing_app, new_name("memoize")
    visitor = app.visitor()
    visitor.get("/")
    before = memoize_versions(app)
    expect(before, "after a load, memcached holds no memoize version key (…_memver) to invalidate",
           "memoize_unused" if probes.calls(app_dir, r"@\s*cache\.memoize\b") else "not_memoized")
    visitor.add_task(name, follow=False)
    after = memoize_versions(app)
    called = probes.calls(app_dir, r"\bdelete_memoized\s*\(")
    expect(any(after.get(k) != v for k, v in before.items()), f"after adding a task, "
           f"{listed(before)} still holds the same version: the memoized query was not invalidated",
           "wrong_target" if called else "add")
    task = task_id(next_load(app, app_dir, name, "06")[0], name)
    before = memoize_versions(app)
    visitor.delete_task(task, follow=False)
    after = memoize_versions(app)
    expect(any(after.get(k) != v for k, v in before.items()), f"after deleting a task, "
           f"{listed(before)} still holds the same version: the memoized query was not invalidated",
           "wrong_target" if called else "delete")


# ---- 07 fragments ------------------------------------------------------------------------------

def check_07_fragments_reused(app, app_dir):
    visitor, name = app.visitor(), new_name("fragment new")
    for _ in range(3):
        visitor.add_task(new_name("fragment"))
    visitor.get("/")
    before = task_ids(visitor.get("/").text)  # every row rendered once, so cached
    visitor.add_task(name, follow=False)
    with app.counters() as delta:
        page = app.visitor().get("/").text
    if not shows(page, name) and probes.view_layer(app_dir, delta):
        next_load(app, app_dir, name, "07")  # fails, naming the view cache that served the page
    after = task_ids(page)
    kept = len(set(before) & set(after))
    expect(delta["get_hits"] >= kept,
           f"after adding a task, the next load of {kept} rows that were already there added "
           f"{deltas(delta, 'get_hits', 'get_misses')}")


def check_07_reused_id(app, app_dir):
    visitor, old, new = app.visitor(), new_name("old"), new_name("new")
    visitor.add_task(old)
    visitor.get("/")  # the old task's row is cached now
    page = visitor.get("/").text
    old_id = task_id(page, old)
    if not old_id and not repeated(page):
        next_load(app, app_dir, old, "07")  # fails: the list is stale, or the add stored nothing
    expect(old_id, f"the list does not show {old!r} after adding it"
           + (f"; it shows {repeated(page)}" if repeated(page) else ""),
           "key_without_id" if repeated(page) else "not_stored")
    visitor.delete_task(old_id)
    visitor.add_task(new, follow=False)  # the next load is the first since the add
    with app.counters() as delta:
        page = app.visitor().get("/").text
    if not shows(page, new) and probes.view_layer(app_dir, delta):
        next_load(app, app_dir, new, "07")  # fails, naming the view cache that served the page
    new_id = task_id(page, new)
    expect(shows(page, new) and not shows(page, old),
           f"{old!r} (task {old_id}) was deleted and {new!r} added"
           + (f" as task {new_id}" if new_id else "") + f", yet the list shows {old!r}"
           + ("" if shows(page, new) else f" and not {new!r}"),
           "key_without_id" if repeated(page) else
           "fragment_key" if probes.calls(app_dir, r"\bmake_template_fragment_key\s*\(") else None)


def repeated(page):
    """'task N in M rows' when PAGE lists one task's row again and again: every row then came
    from one fragment, cached under a key without the task's id."""
    ids = task_ids(page)
    most = max(set(ids), key=ids.count, default=None)
    return f"task {most} in {ids.count(most)} rows" if most is not None and ids.count(most) > 1 else ""


# ---- 08 the view cache -------------------------------------------------------------------------

def check_08_single_hit(app):
    visitor = app.visitor()
    visitor.get("/")
    visitor.get("/")
    with app.counters() as delta:
        app.visitor().get("/")
    expect(delta["get_hits"] == 1 and delta["get_misses"] == 0,
           f"a warm reload added {deltas(delta, 'get_hits', 'get_misses')}",
           "misses" if delta["get_misses"] else None)


def check_08_post_not_cached(app):
    visitor, name = app.visitor(), new_name("post")
    form = visitor.add_form()
    cached = visitor.get("/")
    response = visitor.submit(form, {form.texts[0]: name}, follow=False)
    app.flush()
    stored = shows(app.visitor().get("/").text, name)
    served = response.status_code == 200 and texts(response.text) == texts(cached.text)
    expect(stored and not served, f"POST / answered {response.status_code}"
           + (" with the cached list page" if served else "")
           + ("" if stored else f", and {name!r} was not stored"), None if served else "not_stored")


def check_08_fresh_after_writes(app, app_dir):
    visitor, name = app.visitor(), new_name("view fresh")
    visitor.get("/")
    visitor.get("/")
    visitor.add_task(name, follow=False)
    deletes_view = probes.calls(app_dir, r"""\bcache\.delete\(\s*["']view//""")
    page = next_load(app, app_dir, name, "08", "view_key" if deletes_view else "add")[0]
    app.visitor().get("/")  # cached again, with the task
    visitor.delete_task(task_id(page, name), follow=False)
    next_load(app, app_dir, name, "08", "view_key" if deletes_view else "delete", shown=False)


def check_08_flash_not_shared(app):
    first = app.visitor()
    form = first.add_form()
    app.flush()  # the view is not cached: the page with the message is rendered fresh
    page = first.submit(form, {form.texts[0]: ""}).text
    other = app.visitor().get("/").text
    app.flush()
    message = new_texts(page, app.visitor().get("/").text)
    leaked = [t for t in message if t in texts(other)]
    assert not leaked, f"another visitor's page shows the first visitor's message {leaked[0]!r}"


def check_08_visitors_apart(listing_app):
    app, who = listing_app, ("the first visitor", "the second visitor", "a new visitor")
    first, second, newcomer = visitors = [app.visitor() for _ in who]
    names = {who[0]: new_name("first's own"), who[1]: new_name("second's own")}
    first.add_task(names[who[0]])
    second.add_task(names[who[1]])
    form = first.add_form()
    paths = probes.own_pages(first.page.text, app.app.url)
    first.submit(form, {form.texts[0]: ""}, follow=False)  # a message now waits in its session
    probes.forget_pages(app, visitors)
    seen = []
    for path in paths:  # the first renders each page; the others may then get it from the cache
        seen.append(probes.look(app, who[0], first, path))
        seen += [probes.look(app, who[1], second, path) for _ in range(2)]
        seen.append(probes.look(app, who[2], newcomer, path))
    public, private = {}, {}
    for path in paths:  # each page rendered afresh: for no one in particular, then for the second
        probes.forget_pages(app, visitors)
        public[path] = set(texts(app.visitor().get(path).text))
        probes.forget_pages(app, visitors)
        private[who[1], path] = set(texts(second.get(path).text)) - public[path]
    flashed = seen[0].texts - public["/"] - private[who[1], "/"]
    for s in seen:
        if s.who == who[0]:
            mark = flashed if s is seen[0] else {t for t in s.texts if names[who[0]] in t}
            private[who[0], s.path] = private.get((who[0], s.path), set()) | (mark - public[s.path])
    for s in seen:
        for owner in names:
            leaked = sorted(s.texts & private.get((owner, s.path), set())) if owner != s.who else []
            expect(not leaked, f"{s.who}'s GET {s.path} ({s.how()}) showed {owner}'s "
                   f"{leaked[0] if leaked else ''!r}", "cached_page" if s.from_cache else "shared")
    expect(any(s.from_cache for s in seen if s.path == "/" and s.who != who[0]),
           "no other visitor's load of / was served from the cache, so nothing here was shared "
           "through it", "not_cached")


# ---- 09 sessions -------------------------------------------------------------------------------

def check_09_session_in_memcached(listing_app):
    visitor, cookies, added = flash_in_session(listing_app)
    expect(cookies, "submitting an empty name set no cookie, so the message has no session to wait "
           "in", "no_cookie")
    if session_key(cookies, added):
        return
    cookie = cookies.get("session") or max(cookies.values(), key=len)
    signed = signed_data(cookie)
    carries = "carries the data itself (Flask's signed cookie: " if signed else "holds ("
    expect(False, f"the session cookie {carries}{len(cookie)} characters, {cookie[:16]}…) and "
           "memcached holds " + (f"no session: key named after it (new keys: {listed(added)})"
                                 if added else "no session: key"),
           "signed_cookie" if signed else "stored_elsewhere")


def check_09_session_shared(listing_app):
    app = listing_app
    second = app.second_process()
    visitor, cookies, added = flash_in_session(app)
    page = app.visitor(second).with_cookies_of(visitor).get("/").text
    baseline = app.visitor(second).get("/").text
    expect(new_texts(page, baseline), "the message flashed through the first process does not "
           "show through the second one, which shares the memcached")
    # Both processes share this machine's disk too; instances on Elastic Beanstalk share none.
    # A signed cookie carries the session itself (check_09_session_in_memcached judges that).
    in_cookie = any(signed_data(value) for value in cookies.values())
    expect(in_cookie or session_key(cookies, added), "the second process showed the message, yet "
           "memcached holds no session: key for the cookie: the session sits on this machine's "
           "disk, which a second Elastic Beanstalk instance does not share")
