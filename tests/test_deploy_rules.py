"""Check 03 and `make deploy-check` judge a bundle by the same rules, so they never disagree.

Each case breaks one file of a bundle root (a step app's own folder, or the repository root that
deploys final/) and asks both: the rehearsal's static phase and check 03. Their findings on the
configuration files must be the same, and each check that owns a finding must fail with it.
"""
import io
import re
import shutil

import pytest

from checks import bundled, stages
from rehearsal import bundle, report, rules
from rehearsal.bundle import bundle_from_dir, bundle_from_git
from conftest import ROOT
from runtime import DIFF_NAME, LEFTOVERS, LESSON

STEP = ROOT / "steps" / "09-sessions"

# (name, bundle: "step" or "root", file, old text, new text)
CASES = [
    ("dev tool", "step", "requirements.txt", "Werkzeug==", "pytest==9.2.0\nWerkzeug=="),
    ("unpinned", "root", "requirements.txt", "Flask==3.1.3", "Flask>=3"),
    ("listed twice", "step", "requirements.txt", "Werkzeug==", "flask==3.1.3\nWerkzeug=="),
    ("include line", "step", "requirements.txt", "Werkzeug==", "-r other.txt\nWerkzeug=="),
    ("no MySQL driver", "step", "requirements.txt", "mysqlclient==2.3.2\n", ""),
    ("no MySQL driver at the root", "root", "requirements.txt", "mysqlclient==2.3.2\n", ""),
    ("wrong callable", "root", "Procfile", "application:application", "application:app"),
    ("missing module", "root", "Procfile", "--chdir final application:", "--chdir final wsgi:"),
    ("wrong port", "root", "Procfile", "127.0.0.1:8000", "0.0.0.0:5000"),
    ("no web process", "root", "Procfile", "web:", "worker:"),
    ("no Procfile, no application.py", "step", "application.py", None, None),
    ("unknown key", "step", ".ebextensions/03-migrate.config", "container_commands:",
     "container_command:"),
    ("misspelled namespace", "root", ".ebextensions/02-health.config",
     "aws:elasticbeanstalk:application:", "aws:elasticbeanstalk:aplication:"),
    ("apt", "step", ".ebextensions/01-packages.config", "  yum:", "  apt:"),
    ("Debian package", "step", ".ebextensions/01-packages.config", "gcc: []",
     "gcc: []\n    libsasl2-modules: []"),
    ("no leader_only", "step", ".ebextensions/03-migrate.config", "    leader_only: true\n", ""),
    ("no venv", "root", ".ebextensions/03-migrate.config",
     "source /var/app/venv/*/bin/activate && ", ""),
    ("invalid YAML", "step", ".ebextensions/04-static.config", "option_settings:",
     "option_settings:\n\tbad"),
    ("static folder missing", "step", ".ebextensions/04-static.config", "task_list/static",
     "static/files"),
    ("secret in config", "step", ".ebextensions/04-static.config", "option_settings:",
     "option_settings:\n  aws:elasticbeanstalk:application:environment:\n    SECRET_KEY: abc"),
]


@pytest.fixture(scope="module")
def root_bundle(tmp_path_factory):
    """The files `eb deploy` uploads from HEAD: the repository root that deploys final/."""
    return bundle_from_git(ROOT, "HEAD", tmp_path_factory.mktemp("head")).root


def broken_copy(case, root_bundle, tmp_path):
    """A copy of the case's bundle root with its one file broken; the app folder check 03 sees."""
    _, kind, file, old, new = case
    copy = tmp_path / "bundle"
    shutil.copytree(STEP if kind == "step" else root_bundle, copy,
                    ignore=shutil.ignore_patterns(LESSON, DIFF_NAME, *LEFTOVERS))
    path = copy / file
    if old is None:
        path.unlink()
    else:
        text = path.read_text()
        assert old in text, f"{file} no longer holds {old!r}; update this case"
        path.write_text(text.replace(old, new))
    return copy, copy if kind == "step" else copy / "final"


def rehearsal_findings(copy, tmp_path):
    """The static phase's findings on the configuration files (not on the bundle's contents)."""
    built = bundle_from_dir(copy, tmp_path / "out")
    _, _, findings = report.static_checks(built, report.Output(io.StringIO()))
    return sorted(str(f) for f in findings if f.where != "bundle")


def findings(app_dir):
    """Check 03's findings, one list per check, on the bundle `eb deploy` would upload."""
    root, _, _ = bundled.bundle_of(bundled.deploy_root(app_dir))
    return bundled.view_of(root, app_dir.name).findings


def test_check_03_and_the_rehearsal_call_the_same_rule_functions():
    assert bundled.judge is report.rules.judge is rules.judge
    assert bundled.walk_tree is bundle.walk_tree


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_check_03_and_the_rehearsal_give_the_same_findings(case, root_bundle, tmp_path):
    copy, app_dir = broken_copy(case, root_bundle, tmp_path)
    expected = rehearsal_findings(copy, tmp_path)
    assert expected, f"{case[0]}: the rehearsal found nothing, so the case breaks nothing"
    by_check = findings(app_dir)
    assert sorted(str(f) for found in by_check.values() for f in found) == expected
    for check, found in by_check.items():
        if found:
            with pytest.raises(AssertionError, match=re.escape(str(found[0]))):
                getattr(stages, f"check_03_{check}")(app_dir)


@pytest.mark.parametrize("kind", ["step", "root"])
def test_an_unbroken_bundle_has_no_findings_either_way(kind, root_bundle, tmp_path):
    copy, app_dir = broken_copy(("none", kind, "requirements.txt", "==", "=="), root_bundle, tmp_path)
    assert rehearsal_findings(copy, tmp_path) == []
    assert all(found == [] for found in findings(app_dir).values())
