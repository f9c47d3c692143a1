"""The rehearsal reads a bundle's files as the platform's own tools do: gunicorn command lines with
gunicorn's option parser, requirements with packaging. Each case is a valid file that a reader of
its own once misread, or a broken one gunicorn or pip would refuse."""
import shutil

import pytest
from packaging.markers import default_environment

from rehearsal import rules
from rehearsal.platform import ENVIRONMENT_NAMESPACE, MARKER_ENVIRONMENT
from rehearsal.readers import Config, read_requirements
from runtime import harness
from conftest import ROOT

APP = "def application(environ, start_response):\n    start_response('200 OK', [])\n    return [b'ok']\n"


def bundle(tmp_path, procfile, files=None):
    """A bundle root with application.py, this Procfile and FILES ({path: text})."""
    (tmp_path / "application.py").write_text(APP)
    (tmp_path / "Procfile").write_text(f"web: {procfile}\n")
    for rel, text in (files or {}).items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    return tmp_path


def environment(**variables):
    """A configuration file that sets these environment properties."""
    return [Config(".ebextensions/env.config", {"option_settings": {ENVIRONMENT_NAMESPACE: variables}})]


def entry(root, configs=()):
    return rules.check_entry_point(root, list(configs))


@pytest.mark.parametrize("command", [
    "gunicorn --bind 127.0.0.1:8000 application:application --worker-connections 1000",
    "gunicorn --log-config x.ini application:application",
    "gunicorn -k gthread --threads=15 --max-requests 500 application:application --timeout 30",
])
def test_gunicorn_options_with_values_never_pass_for_the_app(command, tmp_path):
    found, findings = entry(bundle(tmp_path, command))
    assert findings == []
    assert (found.module, found.name) == ("application", "application")


@pytest.mark.parametrize("command, said", [
    ("gunicorn --bogus application:application", "unrecognized arguments: --bogus"),
    ("gunicorn --workers=many application:application", "invalid int value: 'many'"),
    ("gunicorn --version", "only prints"),
])
def test_what_gunicorn_refuses_is_a_finding(command, said, tmp_path):
    found, findings = entry(bundle(tmp_path, command))
    assert found is None
    assert [f.where for f in findings] == ["Procfile: web"]
    assert "gunicorn would refuse to start" in findings[0].problem and said in findings[0].problem


def test_an_app_named_by_wsgi_app_in_gunicorn_conf_py_is_found(tmp_path):
    root = bundle(tmp_path, "gunicorn --workers=1", {"gunicorn.conf.py": 'wsgi_app = "site:app"\n',
                                                     "site.py": "app = None\n"})
    found, findings = entry(root)
    assert findings == [] and (found.module, found.name) == ("site", "app")


def test_gunicorn_cmd_args_settings_count_and_its_config_file_is_read(tmp_path):
    root = bundle(tmp_path, "gunicorn", {"conf/web.py": 'wsgi_app = "application:application"\n'
                                                        'bind = "0.0.0.0:5000"\n'})
    found, findings = entry(root, environment(GUNICORN_CMD_ARGS="-c conf/web.py --chdir ."))
    assert (found.module, found.name) == ("application", "application")
    assert [f.where for f in findings] == ["Procfile: web: --bind"]
    assert findings[0].problem.startswith("0.0.0.0:5000: nginx forwards to port 8000")


def test_an_app_only_in_gunicorn_cmd_args_is_ignored_as_gunicorn_ignores_it(tmp_path):
    found, findings = entry(bundle(tmp_path, "gunicorn"), environment(GUNICORN_CMD_ARGS="application:application"))
    assert found is None
    assert "gunicorn ignores 'application:application' in GUNICORN_CMD_ARGS" in findings[0].problem


def test_a_missing_config_file_is_a_finding(tmp_path):
    found, findings = entry(bundle(tmp_path, "gunicorn -c nowhere.py application:application"))
    assert found is None and "--config nowhere.py: no such file in the bundle" in findings[0].problem


HASHED = """Flask==3.1.3 \\
    --hash=sha256:0000000000000000000000000000000000000000000000000000000000000000 \\
    --hash=sha256:1111111111111111111111111111111111111111111111111111111111111111
pylibmc==1.6.3 ; python_version < "3.12"  # no wheels for 3.12 yet
pylibmc>=2 ; python_version >= "3.12"
pywin32==311 ; sys_platform == "win32"
"""


def test_hashed_pins_and_markers_are_pinned_requirements():
    rows = read_requirements(HASHED)
    assert [(r.number, r.name, r.installed, r.pinned) for r in rows] == [
        (1, "flask", True, True), (4, "pylibmc", True, True), (5, "pylibmc", False, False),
        (6, "pywin32", False, True)]


def test_requirements_markers_are_judged_for_the_platform_not_this_interpreter():
    assert set(default_environment()) <= set(MARKER_ENVIRONMENT)
    assert (MARKER_ENVIRONMENT["python_version"], MARKER_ENVIRONMENT["sys_platform"]) == ("3.11", "linux")


@pytest.mark.parametrize("line, problem", [
    ("Flask>=3", "is not pinned with =="),
    ("Flask==3.*", "is not pinned with =="),
    ("Flask=3.1.3", "is not a requirement pip can read"),
    ("-r other.txt", "keep every deployed requirement in this one file"),
])
def test_what_is_not_a_pin_is_still_found(line, problem, tmp_path):
    (tmp_path / "requirements.txt").write_text(line + "\n")
    findings = rules.check_requirements(tmp_path)
    assert len(findings) == 1 and problem in findings[0].problem


def test_a_hashed_requirements_file_with_markers_deploys_with_no_findings(tmp_path):
    """The whole rule set, the import of the app with only what the file installs included."""
    step = ROOT / "steps" / "09-sessions"
    root = tmp_path / "app"
    shutil.copytree(step, root, ignore=harness.COPY_IGNORE)
    lines = (root / "requirements.txt").read_text().splitlines()
    hashed = [f"{line} \\\n    --hash=sha256:{'0' * 64}" if "==" in line else line for line in lines]
    text = "\n".join(hashed).replace("pylibmc==1.6.3", 'pylibmc==1.6.3 ; python_version < "3.12"')
    (root / "requirements.txt").write_text(text + "\nnot-on-linux>=1 ; sys_platform == 'win32'\n")
    files = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]
    judged = rules.judge(root, files)
    assert judged.findings == []
    assert judged.entry.module == "application"
