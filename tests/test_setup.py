"""`make setup` says what it is doing: each phase (scripts/phase.sh) prints its name, a line at
least every PHASE_INTERVAL seconds (10 by default) while its command is quiet, and its elapsed
time at the end."""
import os
import re
import subprocess

from conftest import ROOT

PHASE = f". {ROOT}/scripts/phase.sh && phase "
INTERVAL = 3  # seconds between two lines of a quiet phase here (make setup's is 10)


def run_phase(command):
    return subprocess.run(["bash", "-c", PHASE + command], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PHASE_INTERVAL": str(INTERVAL)})


def test_a_quiet_command_gets_a_line_at_least_every_interval_saying_what_it_last_logged():
    result = run_phase("'pip install (a group)' bash -c 'echo Downloading Flask-3.1.3.whl; sleep 10'")
    lines = result.stdout.splitlines()
    assert result.returncode == 0 and lines[0] == "==> pip install (a group)"
    still = [re.fullmatch(r"    still pip install \(a group\) \((\d+) s\): Downloading Flask-3\.1\.3\.whl", line)
             for line in lines[1:-1]]
    assert len(still) >= 2 and all(still), lines
    done = re.fullmatch(r"    pip install \(a group\): done in (\d+) s", lines[-1])
    assert done, lines
    # The phase's own clock: no gap between two lines passes the interval, plus the 1 s it polls
    # and 1 s for a busy machine.
    said = [0, *(int(m.group(1)) for m in still), int(done.group(1))]
    assert said[-1] >= 10 and all(0 <= b - a <= INTERVAL + 2 for a, b in zip(said, said[1:])), said


def test_a_failed_phase_shows_its_last_lines_and_keeps_its_exit_status():
    result = run_phase("'apt-get install (2 packages)' bash -c 'echo E: Unable to locate package nope; exit 100'")
    assert result.returncode == 100
    assert "setup: apt-get install (2 packages) failed (exit 100)" in result.stderr
    assert "E: Unable to locate package nope" in result.stderr
