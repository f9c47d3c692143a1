"""The Elastic Beanstalk rehearsal: the committed bundle deploys, and broken bundles are caught.

Broken bundles are copies of the committed one in a temporary folder; the repository is never
touched. Static faults need no replay. The replays share the wheel cache in build/wheels.
"""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from rehearsal import report
from rehearsal.bundle import bundle_from_dir, bundle_from_git
from rehearsal.compare import config_disagreements, flatten, read_config_dir
from rehearsal.readers import Config
from rehearsal.rules import check_config

ROOT = report.ROOT
BROKEN_MIGRATION = '''"""a migration that cannot run"""
from alembic import op

revision = "ffff00000000"
down_revision = "7cdf77d5b325"
branch_labels = None
depends_on = None


def upgrade():
    op.execute("ALTER TABLE no_such_table ADD COLUMN x INT")


def downgrade():
    pass
'''


@pytest.fixture(scope="module")
def committed_bundle(tmp_path_factory):
    """The files `eb deploy` uploads from HEAD, unpacked in a folder."""
    return bundle_from_git(ROOT, "HEAD", tmp_path_factory.mktemp("head")).root


@pytest.fixture
def bundle(committed_bundle, tmp_path):
    """A copy of the committed bundle that a test may break."""
    copy = tmp_path / "app"
    shutil.copytree(committed_bundle, copy, symlinks=True)
    return copy


def rehearse(capsys, *args):
    code = report.main(["deploy", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def edit(path, old, new):
    text = path.read_text()
    assert old in text, f"{path.name} no longer contains {old!r}; update this test"
    path.write_text(text.replace(old, new))


def files_under(folder):
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


# --- The committed bundle ------------------------------------------------------------------

def test_rehearsal_passes_on_the_committed_final(capsys, services_env):
    code, out, err = rehearse(capsys)
    assert code == 0, out + err
    assert "final/application.py" in out and "steps/" not in out
    assert "01_migrate  ok" in out and "02_instance_for_webapp ok" in out
    if os.geteuid() == 0:  # only root can run the app as another user, as the platform does
        assert "everything the commands made is writable for webapp" in out
        assert "(in /var/app/current, as webapp)" in out
    assert "GET /health -> 200, status 'ok'" in out
    assert "nginx would serve /static/style.css from the bundle" in out
    assert "listed on /, deleted, gone from /" in out
    assert "over SASL" in out
    assert "Result: no findings" in out


def test_bundle_holds_only_what_the_running_app_needs(committed_bundle):
    files = files_under(committed_bundle)
    tops = {f.split("/")[0] for f in files}
    assert tops == {".ebextensions", "final", "Procfile", "requirements.txt"}
    assert "final/application.py" in files and "final/migrations/env.py" in files
    assert not [f for f in files if "__pycache__" in f or f.endswith((".pyc", ".sqlite"))]


def test_root_config_carries_the_platform_facts():
    configs = read_config_dir(ROOT)
    assert all(check_config(c) == [] for c in configs)
    flat = flatten(configs)
    for package in ("gcc", "pkgconf-pkg-config", "python3.11-devel", "mariadb-connector-c-devel",
                    "cyrus-sasl-plain"):
        assert ("packages", "yum", package) in flat
    command = flat[("container_commands", "01_migrate", "command")]
    assert command.startswith("source /var/app/venv/*/bin/activate && ") and "db upgrade" in command
    assert flat[("container_commands", "01_migrate", "leader_only")] == "True"
    assert flat[("option_settings", "aws:elasticbeanstalk:environment:process:default",
                 "HealthCheckPath")] == "/health"
    assert flat[("option_settings", "aws:elasticbeanstalk:application",
                 "Application Healthcheck URL")] == "/health"
    assert flat[("option_settings", "aws:elasticbeanstalk:environment:proxy:staticfiles",
                 "/static")] == "final/task_list/static"
    text = "".join(p.read_text() for p in (ROOT / ".ebextensions").glob("*.config"))
    assert "SASL_PATH:" not in text and "x86_64-linux-gnu" not in text
    assert (ROOT / "Procfile").read_text().startswith(
        "web: gunicorn --bind 127.0.0.1:8000 --workers=1 --threads=15 ")


# --- Bundling follows the EB CLI -----------------------------------------------------------

def test_ebignore_keeps_only_the_app(tmp_path):
    shutil.copy(ROOT / ".ebignore", tmp_path / ".ebignore")
    for rel in ("final/application.py", "final/task_list/__pycache__/x.cpython-311.pyc",
                "final/instance/task_list.sqlite", "final/notes.txt~", "steps/01/application.py",
                "tests/test_x.py", ".git/HEAD", ".venv/bin/python", "requirements.txt",
                "requirements-dev.txt", "services.env", "Procfile", ".ebextensions/01.config",
                ".elasticbeanstalk/config.yml", "notebooks/01.ipynb"):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    bundle = bundle_from_dir(tmp_path, tmp_path / "out")
    assert bundle.files == [".ebextensions/01.config", "Procfile", "final/application.py",
                            "requirements.txt"]


def test_without_ebignore_a_git_folder_ships_its_committed_tree(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "application.py").write_text("application = None\n")
    run = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*run, "init", "-q"], check=True)
    subprocess.run([*run, "add", "application.py"], check=True)
    subprocess.run([*run, "commit", "-q", "-m", "one"], check=True)
    (repo / "uncommitted.py").write_text("")
    bundle = bundle_from_dir(repo, tmp_path / "out")
    assert bundle.files == ["application.py"]
    assert "git archive" in bundle.how


def test_a_folder_inside_a_repository_ships_its_committed_files(tmp_path):
    app = tmp_path / "repo" / "app"
    app.mkdir(parents=True)
    (app / "application.py").write_text("application = None\n")
    (tmp_path / "repo" / "outside.py").write_text("")
    run = ["git", "-C", str(tmp_path / "repo"), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*run, "init", "-q"], check=True)
    subprocess.run([*run, "add", "-A"], check=True)
    subprocess.run([*run, "commit", "-q", "-m", "one"], check=True)
    (app / "uncommitted.py").write_text("")
    bundle = bundle_from_dir(app, tmp_path / "out")
    assert bundle.files == ["application.py"] and "git archive" in bundle.how


def test_extra_folders_in_the_bundle_are_caught(bundle, capsys):
    (bundle / "steps" / "01-skeleton").mkdir(parents=True)
    (bundle / "steps" / "01-skeleton" / "application.py").write_text("")
    (bundle / "final" / "instance").mkdir()
    (bundle / "final" / "instance" / "task_list.sqlite").write_text("")
    code, out, _ = rehearse(capsys, "--dir", str(bundle), "--static")
    assert code == 1
    assert "bundle: ships steps/ (1 file(s)" in out
    assert "bundle: ships instance/" in out


# --- Static faults: no replay needed ---------------------------------------------------------

def test_unknown_config_key_is_caught(bundle, capsys):
    edit(bundle / ".ebextensions/03-migrate.config", "container_commands:", "container_command:")
    code, out, _ = rehearse(capsys, "--dir", str(bundle), "--static")
    assert code == 1
    assert (".ebextensions/03-migrate.config: container_command: unknown top-level key; "
            "Elastic Beanstalk skips the whole file (did you mean 'container_commands'?)") in out


def test_misspelled_namespace_is_caught(bundle, capsys):
    edit(bundle / ".ebextensions/02-health.config", "aws:elasticbeanstalk:application:",
         "aws:elasticbeanstalk:aplication:")
    code, out, _ = rehearse(capsys, "--dir", str(bundle), "--static")
    assert code == 1
    assert (".ebextensions/02-health.config: option_settings: aws:elasticbeanstalk:aplication: "
            "unknown option namespace (did you mean 'aws:elasticbeanstalk:application'?)") in out


def test_misspelled_option_is_caught(bundle, capsys):
    edit(bundle / ".ebextensions/02-health.config", "HealthCheckPath:", "HealthCheckPth:")
    code, out, _ = rehearse(capsys, "--dir", str(bundle), "--static")
    assert code == 1
    assert "HealthCheckPth: unknown option of aws:elasticbeanstalk:environment:process:default " \
           "(did you mean 'HealthCheckPath'?)" in out


@pytest.mark.parametrize("tool", ["pytest==9.2.0", "playwright==1.65.2", "jupyterlab==4.6.6"])
def test_development_tool_in_requirements_is_caught(bundle, capsys, tool):
    with open(bundle / "requirements.txt", "a") as f:
        f.write(tool + "\n")
    code, out, _ = rehearse(capsys, "--dir", str(bundle), "--static")
    assert code == 1
    assert f"requirements.txt: line 25: {tool.split('==')[0]}: is a development tool" in out


def test_unpinned_requirement_is_caught(bundle, capsys):
    edit(bundle / "requirements.txt", "Flask==3.1.3", "Flask>=3")
    code, out, _ = rehearse(capsys, "--dir", str(bundle), "--static")
    assert code == 1
    assert "requirements.txt: line 7: Flask: is not pinned with ==" in out


@pytest.mark.parametrize("old, new, expected", [
    ("application:application", "application:app",
     "Procfile: web: application:app: final/application.py defines no 'app'"),
    ("--chdir final application:", "--chdir final wsgi:",
     "Procfile: web: wsgi:application: the bundle has no final/wsgi.py"),
    ("--chdir final ", "",
     "Procfile: web: application:application: the bundle has no application.py"),
])
def test_wrong_wsgi_path_is_caught(bundle, capsys, old, new, expected):
    edit(bundle / "Procfile", old, new)
    code, out, _ = rehearse(capsys, "--dir", str(bundle), "--static")
    assert code == 1
    assert expected in out and "502" in out


def test_without_a_procfile_the_default_wsgi_path_must_resolve(bundle, capsys):
    (bundle / "Procfile").unlink()
    code, out, _ = rehearse(capsys, "--dir", str(bundle), "--static")
    assert code == 1
    assert ("the platform's default WSGIPath (`application`, no Procfile): application: "
            "the bundle has no application.py") in out


def test_static_files_must_be_mapped_to_the_app_folder(bundle, capsys):
    (bundle / ".ebextensions/04-static.config").unlink()
    code, out, _ = rehearse(capsys, "--dir", str(bundle), "--static")
    assert code == 1
    assert ("maps no /static, so nginx looks in a top-level static/ folder the bundle lacks and "
            "answers 404 for the app's final/task_list/static/ files") in out


def test_static_mapping_to_a_missing_folder_is_caught(bundle, capsys):
    edit(bundle / ".ebextensions/04-static.config", "final/task_list/static", "task_list/static")
    code, out, _ = rehearse(capsys, "--dir", str(bundle), "--static")
    assert code == 1
    assert ("option_settings: aws:elasticbeanstalk:environment:proxy:staticfiles: /static: "
            "task_list/static: no such folder in the bundle") in out


def test_migrations_must_run_once_inside_the_venv(bundle, capsys):
    config = bundle / ".ebextensions/03-migrate.config"
    edit(config, "    leader_only: true\n", "")
    edit(config, "source /var/app/venv/*/bin/activate && ", "")
    code, out, _ = rehearse(capsys, "--dir", str(bundle), "--static")
    assert code == 1
    assert "container_commands: 01_migrate: runs migrations on every instance; add `leader_only: true`" in out
    assert "container_commands: 01_migrate: command: runs Python tools without the app's virtualenv" in out


@pytest.mark.parametrize("text, expected", [
    ("option_settings:\n  aws:elasticbeanstalk:application:environment:\n    SECRET_KEY: abc\n",
     "04-extra.config: option_settings: aws:elasticbeanstalk:application:environment: "
     "SECRET_KEY: is a secret or a per-environment endpoint: set it with `eb setenv`"),
    ("option_settings:\n  aws:elasticbeanstalk:application:environment:\n"
     "    SASL_PATH: /usr/lib/x86_64-linux-gnu/sasl2\n",
     "SASL_PATH: is a Debian workaround"),
    ("packages:\n  apt:\n    libsasl2-modules: []\n",
     "04-extra.config: packages: apt: is not a package manager Elastic Beanstalk knows"),
    ("packages:\n  yum:\n    libsasl2-modules: []\n",
     "packages: yum: libsasl2-modules: is a Debian package name; Amazon Linux 2023 calls it cyrus-sasl-plain"),
    ("packages:\n  yum:\n    libmariadb-dev: []\n",
     "packages: yum: libmariadb-dev: is a Debian package name; Amazon Linux 2023 calls it "
     "mariadb-connector-c-devel"),
    ("packages:\n  yum:\n    libmemcached-devel: []\n",
     "libmemcached-devel: is not in Amazon Linux 2023"),
    ("container_commands:\n  02_seed:\n    comand: echo hi\n",
     "container_commands: 02_seed: comand: unknown key of a container command (did you mean 'command'?)"),
    ("container_commands:\n  02_seed:\n    command: echo hi\n    leader_only: yes please\n",
     "container_commands: 02_seed: leader_only: must be true or false"),
    ("option_settings:\n  aws:elasticbeanstalk:application:\n\tApplication Healthcheck URL: /\n",
     "04-extra.config: is not valid YAML at line 3"),
])
def test_broken_config_files_are_caught(bundle, capsys, text, expected):
    (bundle / ".ebextensions/04-extra.config").write_text(text)
    code, out, _ = rehearse(capsys, "--dir", str(bundle), "--static")
    assert code == 1
    assert expected in out


def test_config_files_that_eb_would_not_read_are_caught(bundle, capsys):
    (bundle / ".ebextensions/04-extra.yaml").write_text("option_settings: {}\n")
    code, out, _ = rehearse(capsys, "--dir", str(bundle), "--static")
    assert code == 1
    assert ".ebextensions/04-extra.yaml: is not read: Elastic Beanstalk reads only .ebextensions/*.config" in out


# --- Faults only a replay finds ----------------------------------------------------------------

def test_missing_requirement_is_caught(bundle, capsys, services_env):
    edit(bundle / "requirements.txt", "pylibmc==1.6.3\n", "")
    code, out, _ = rehearse(capsys, "--dir", str(bundle))
    assert code == 1
    # The static rule, shared with check 03, finds it before the replay installs anything.
    assert ("requirements.txt: installs nothing that provides 'pylibmc', which the app imports on "
            "Elastic Beanstalk (with RDS_* and MEMCACHIER_* set): add pylibmc==1.6.3") in out


def test_container_commands_must_leave_the_app_user_its_folders(bundle, capsys, services_env):
    config = bundle / ".ebextensions/03-migrate.config"
    text = config.read_text()
    config.write_text(text[:text.index("  # Root's commands leave")])
    code, out, _ = rehearse(capsys, "--dir", str(bundle))
    if os.geteuid() != 0:
        assert "ownership   not rehearsed" in out
        return
    assert code == 1
    assert ("container_commands: 01_migrate: leaves final/instance owned by root, and the app "
            "runs as webapp, which cannot write there") in out


def test_migration_that_fails_is_caught(bundle, capsys, services_env):
    (bundle / "final/migrations/versions/ffff00000000_broken.py").write_text(BROKEN_MIGRATION)
    code, out, _ = rehearse(capsys, "--dir", str(bundle))
    assert code == 1
    assert ".ebextensions/03-migrate.config: container_commands: 01_migrate: failed (exit 1)" in out
    assert "no_such_table" in out
    assert "database dropped" in out


# --- Step configs agree with the root --------------------------------------------------------

def test_step_configs_agree_with_the_root():
    root = read_config_dir(ROOT)
    problems = []
    for step in sorted(p.parent for p in (ROOT / "steps").glob("*/.ebextensions")):
        configs = read_config_dir(step)
        problems += [f"{step.name}: {f}" for c in configs for f in check_config(c)]
        problems += [f"{step.name}: {line}" for line in config_disagreements(root, configs)]
    assert problems == []


def test_disagreeing_step_config_is_named():
    root = [Config("root", {"packages": {"yum": {"gcc": []}}, "container_commands": {
        "01_migrate": {"command": "source /var/app/venv/*/bin/activate && cd final && flask db upgrade",
                       "leader_only": True}}})]
    same = [Config("step", {"container_commands": {
        "01_migrate": {"command": "source /var/app/venv/*/bin/activate && flask db upgrade",
                       "leader_only": True}}, "packages": {"yum": {"gcc": [], "make": []}}})]
    differs = [Config("step", {"container_commands": {
        "01_migrate": {"command": "flask db upgrade", "leader_only": False}}})]
    assert config_disagreements(root, same) == []
    assert config_disagreements(root, differs) == [
        "container_commands: 01_migrate: command: root has 'source /var/app/venv/*/bin/activate "
        "&& flask db upgrade', step has 'flask db upgrade'",
        "container_commands: 01_migrate: leader_only: root has 'True', step has 'False'",
    ]


# --- Bad input ---------------------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["--dir", "/no/such/folder"], "deploy: /no/such/folder is not a folder"),
    (["--ref", "no-such-ref"], "deploy: no commit named 'no-such-ref'"),
    (["--bogus"], "deploy: unexpected argument '--bogus'"),
    (["--ref", "HEAD", "--dir", "."], "deploy: give --ref or --dir, not both"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, args, message):
    code, out, err = rehearse(capsys, *args)
    assert code == 2
    assert err.startswith(message) and err.count("\n") == 1
    assert out == ""
