"""What each stage of the workshop asks of the learner's app: one check per expectation.

One test per expectation in steps/steps.toml, named check_<stage>_<id>; checks/plugin.py runs
them and attaches the manifest's hint to each failure. The fixtures `app` and `listing_app` are
the running app (checks/subject.py), booted once per configuration for the whole run, so every
check leaves the app usable and names its own tasks. Only stage 03 reads files (the deploy
configuration, by the same rules as `make deploy-check`); every other check judges what the app
does, through HTTP and memcached's own counters.
"""
import base64
import os
import re
import secrets
import subprocess
import sys
import zlib
from urllib.parse import urljoin

from rehearsal.bundle import walk_tree
from rehearsal.rules import judge
from runtime.taskpage import new_texts, occurrences, shows, task_id, task_ids, texts


def new_name(label):
    return f"{label} {secrets.token_hex(4)}"


def deltas(delta, *names):
    return ", ".join(f"{n} {delta[n]:+d}" for n in names)


def listed(keys, limit=6):
    shown = ", ".join(sorted(keys)[:limit])
    return (shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")) or "no keys at all"


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

def check_02_migrates(app):
    # The harness ran `flask --app application db upgrade` on the empty database, if it could.
    versions = app.migration_versions()
    assert versions is not None, "the app made no SQLite database in its folder"
    assert versions, ("the database holds no migration revision (no alembic_version row): "
                      "without a migrations/ folder, `flask db upgrade` had nothing to run")


def check_02_add_list_delete(app):
    visitor, name = app.visitor(), new_name("add list delete")
    visitor.add_task(name)
    app.flush()
    page = visitor.get("/").text
    assert shows(page, name), f"after adding {name!r}, the list does not show it"
    task = task_id(page, name)
    assert task, f"the list shows {name!r} but no form posting to /<id>/delete after it"
    visitor.delete_task(task)
    app.flush()
    assert not shows(visitor.get("/").text, name), \
        f"after pressing the delete button of {name!r} (task {task}), it is still listed"


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
    assert not stored, f"an empty name was stored as task {min(stored)}"
    assert new_texts(page, baseline), "after submitting an empty name, the page shows no message"


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
    assert count == 1, f"adding {name!r} answered {how}; the list shows it {count} times"


# ---- 03 the deploy files -----------------------------------------------------------------------
# The one stage judged by reading files: what Elastic Beanstalk reads from the bundle's root, by
# the rules `make deploy-check` applies (rehearsal/rules.py), each finding under the check it
# belongs to.

def deploy_root(app_dir):
    """APP_DIR if it holds .ebextensions/, else the nearest parent that does and deploys APP_DIR."""
    if (app_dir / ".ebextensions").is_dir():
        return app_dir
    for parent in app_dir.parents:
        if (parent / ".ebextensions").is_dir():
            # A parent's config counts only if it names this folder (a Procfile's --chdir, a cd).
            relative = re.escape(app_dir.relative_to(parent).as_posix())
            files = [parent / "Procfile", *sorted((parent / ".ebextensions").glob("*.config"))]
            text = "\n".join(p.read_text(errors="replace") for p in files if p.is_file())
            return parent if re.search(rf"(?<![\w./-]){relative}(?![\w.-])", text) else None
    return None


def deploy_findings(app_dir):
    """The deploy rules' findings on APP_DIR's bundle root, one list per check of stage 03."""
    root = deploy_root(app_dir)
    assert root is not None, \
        f"{app_dir.name}/ has no .ebextensions/ folder (nor does a parent folder that deploys it)"
    judged = judge(root, [f".ebextensions/{f}" for f in walk_tree(root / ".ebextensions")])
    config = [f for found in judged.by_config.values() for f in found]
    commands = [f for f in config if ": container_commands" in f.where]
    return root, judged, {
        "ebextensions": [*judged.unreadable, *(f for f in config if f not in commands),
                         *judged.static_files],
        "migration_command": commands,
        "requirements": judged.requirements,
        "entry_point": judged.entry_point,
    }


def no_findings(findings):
    assert not findings, "; ".join(map(str, findings))


def check_03_ebextensions(app_dir):
    root, judged, findings = deploy_findings(app_dir)
    assert judged.configs or judged.unreadable, f"{root.name}/.ebextensions/ holds no *.config file"
    no_findings(findings["ebextensions"])


def check_03_migration_command(app_dir):
    _, judged, findings = deploy_findings(app_dir)
    no_findings(findings["migration_command"])
    assert any("db upgrade" in str(spec.get("command")) for config in judged.configs
               for spec in (config.data.get("container_commands") or {}).values()
               if isinstance(spec, dict)), "no container_commands entry runs `flask db upgrade`"


def check_03_entry_point(app_dir):
    no_findings(deploy_findings(app_dir)[2]["entry_point"])


def check_03_requirements(app_dir):
    root, _, findings = deploy_findings(app_dir)
    path = root / "requirements.txt"
    assert path.is_file(), f"{root.name}/ has no requirements.txt next to .ebextensions/"
    no_findings(findings["requirements"])
    # A dry run against the packages installed for the workshop: offline, and no build.
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1",
           "PIP_NO_INPUT": "1"}
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-index",
                             "--quiet", "-r", path.name], cwd=root, env=env, capture_output=True,
                            text=True, timeout=120)
    problems = [l.removeprefix("ERROR: ") for l in result.stderr.splitlines() if l.startswith("ERROR")]
    assert result.returncode == 0, "requirements.txt does not resolve: " + (
        "; ".join(problems) or result.stderr.strip()[-300:])


# ---- 04 the query cache ------------------------------------------------------------------------

def check_04_first_load(app):
    app.flush()
    with app.counters() as delta:
        app.visitor().get("/")
    assert delta["get_misses"] >= 1 and delta["cmd_set"] >= 1, \
        f"the first load after a flush added {deltas(delta, 'get_misses', 'cmd_set')}"


def check_04_reload_hits(app):
    app.visitor().get("/")
    with app.counters() as delta:
        app.visitor().get("/")
    assert delta["get_hits"] >= 1 and delta["get_misses"] == 0, \
        f"an immediate reload added {deltas(delta, 'get_hits', 'get_misses')}"


def check_04_stale_list(app, observe):
    visitor, name = app.visitor(), new_name("stale")
    visitor.get("/")
    page = visitor.add_task(name).text
    observe("the list was stale after an add" if not shows(page, name)
            else "the list showed the new task at once")


# ---- 05 invalidation ---------------------------------------------------------------------------

def check_05_fresh_after_add(app):
    visitor, name = app.visitor(), new_name("fresh add")
    visitor.get("/")
    visitor.get("/")  # the list is cached now
    visitor.add_task(name, follow=False)
    assert shows(app.visitor().get("/").text, name), \
        f"the next load after adding {name!r} does not show it"


def check_05_fresh_after_delete(app):
    visitor, name = app.visitor(), new_name("fresh delete")
    visitor.add_task(name)
    app.flush()
    page = visitor.get("/").text  # the list is cached now, with the task in it
    task = task_id(page, name)
    assert task, f"the list does not show {name!r} after a flush"
    visitor.delete_task(task, follow=False)
    assert not shows(app.visitor().get("/").text, name), \
        f"the next load after deleting {name!r} still shows it"


# ---- 06 memoize --------------------------------------------------------------------------------

def memoize_versions(app):
    return {k: app.value(k) for k in app.keys() if k.endswith("_memver")}


def check_06_memoize_keys(listing_app):
    listing_app.flush()
    listing_app.visitor().get("/")
    keys = listing_app.keys()
    assert any(k.endswith("_memver") for k in keys), \
        f"after a load, memcached holds {listed(keys)}; none is a memoize version key (…_memver)"


def check_06_memoize_invalidated(listing_app):
    app, name = listing_app, new_name("memoize")
    visitor = app.visitor()
    visitor.get("/")
    before = memoize_versions(app)
    assert before, "after a load, memcached holds no memoize version key (…_memver) to invalidate"
    visitor.add_task(name, follow=False)
    after = memoize_versions(app)
    assert any(after.get(k) != v for k, v in before.items()), \
        f"after adding a task, {listed(before)} still holds the same version: the memoized query was not invalidated"
    page = visitor.get("/").text
    task = task_id(page, name)
    assert task, f"the next load after adding {name!r} does not show it"
    before = memoize_versions(app)
    visitor.delete_task(task, follow=False)
    after = memoize_versions(app)
    assert any(after.get(k) != v for k, v in before.items()), \
        f"after deleting a task, {listed(before)} still holds the same version: the memoized query was not invalidated"


# ---- 07 fragments ------------------------------------------------------------------------------

def check_07_fragments_reused(app):
    visitor = app.visitor()
    for _ in range(3):
        visitor.add_task(new_name("fragment"))
    visitor.get("/")
    before = task_ids(visitor.get("/").text)  # every row rendered once, so cached
    visitor.add_task(new_name("fragment new"), follow=False)
    with app.counters() as delta:
        after = task_ids(app.visitor().get("/").text)
    kept = len(set(before) & set(after))
    assert delta["get_hits"] >= kept, (
        f"after adding a task, the next load of {kept} rows that were already there added "
        f"{deltas(delta, 'get_hits', 'get_misses')}")


def check_07_reused_id(app):
    visitor, old, new = app.visitor(), new_name("old"), new_name("new")
    page = visitor.add_task(old).text
    visitor.get("/")  # the old task's row is cached now
    old_id = task_id(visitor.get("/").text, old)
    assert old_id, f"the list does not show {old!r} after adding it"
    visitor.delete_task(old_id)
    visitor.add_task(new)
    page = app.visitor().get("/").text
    new_id = task_id(page, new)
    assert shows(page, new) and not shows(page, old), (
        f"{old!r} (task {old_id}) was deleted and {new!r} added"
        + (f" as task {new_id}" if new_id else "") + f", yet the list shows {old!r}"
        + ("" if shows(page, new) else f" and not {new!r}"))


# ---- 08 the view cache -------------------------------------------------------------------------

def check_08_single_hit(app):
    visitor = app.visitor()
    visitor.get("/")
    visitor.get("/")
    with app.counters() as delta:
        app.visitor().get("/")
    assert delta["get_hits"] == 1 and delta["get_misses"] == 0, \
        f"a warm reload added {deltas(delta, 'get_hits', 'get_misses')}"


def check_08_post_not_cached(app):
    visitor, name = app.visitor(), new_name("post")
    form = visitor.add_form()
    cached = visitor.get("/")
    response = visitor.submit(form, {form.texts[0]: name}, follow=False)
    app.flush()
    stored = shows(app.visitor().get("/").text, name)
    served = response.status_code == 200 and texts(response.text) == texts(cached.text)
    assert stored and not served, (
        f"POST / answered {response.status_code}"
        + (" with the cached list page" if served else "")
        + ("" if stored else f", and {name!r} was not stored"))


def check_08_fresh_after_writes(app):
    visitor, name = app.visitor(), new_name("view fresh")
    visitor.get("/")
    visitor.get("/")
    visitor.add_task(name, follow=False)
    page = app.visitor().get("/").text
    assert shows(page, name), f"the next load after adding {name!r} does not show it"
    app.visitor().get("/")  # cached again, with the task
    visitor.delete_task(task_id(page, name), follow=False)
    assert not shows(app.visitor().get("/").text, name), \
        f"the next load after deleting {name!r} still shows it"


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


# ---- 09 sessions -------------------------------------------------------------------------------

def check_09_session_in_memcached(listing_app):
    app = listing_app
    visitor = app.visitor()
    form = visitor.add_form()
    before = set(app.keys())
    # An empty name flashes a message, which waits in the session until the next page.
    visitor.submit(form, {form.texts[0]: ""}, follow=False)
    cookies = {c.name: c.value for c in visitor.http.cookies}
    assert cookies, "submitting an empty name set no cookie, so the message has no session to wait in"
    added = [k for k in set(app.keys()) - before if "session:" in k]
    for name, value in cookies.items():
        for sid in {value, value.split(".")[0]}:
            if any(k.endswith(sid) for k in added):
                return
    cookie = cookies.get("session") or max(cookies.values(), key=len)
    carries = " carries the data itself (Flask's signed cookie:" if signed_data(cookie) else " holds ("
    assert False, (
        f"the session cookie{carries} {len(cookie)} characters, {cookie[:16]}…) and memcached holds "
        + (f"no session: key named after it (new keys: {listed(added)})" if added else "no session: key"))


def signed_data(cookie):
    """True when COOKIE is Flask's own session cookie: signed, base64 JSON, compressed or not."""
    payload = cookie.lstrip(".").split(".")[0]
    try:
        data = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        data = zlib.decompress(data) if cookie.startswith(".") else data
        return data.lstrip().startswith(b"{")
    except (ValueError, zlib.error):
        return False


def check_09_session_shared(listing_app):
    app = listing_app
    second = app.second_process()
    visitor = app.visitor()
    form = visitor.add_form()
    visitor.submit(form, {form.texts[0]: ""}, follow=False)  # the message waits in the session
    page = app.visitor(second).with_cookies_of(visitor).get("/").text
    baseline = app.visitor(second).get("/").text
    assert new_texts(page, baseline), (
        "the message flashed through the first process does not show through the second one, "
        "which shares the memcached")
