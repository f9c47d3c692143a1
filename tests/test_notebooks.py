"""The notebooks: each runs top to bottom on the project's kernel, and what it saw (its JSON summary
in build/notebooks/) is what the lesson says it shows.

NOTEBOOK_MAX_TASKS is held at 1,000 or less here, so notebook 6 stays quick. Timings are reported
by the notebooks and never asserted on.
"""
import json
import os
import subprocess
import sys

import nbformat
import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "notebooks"))
import nbtools  # noqa: E402

# One worker runs them all (make test's --dist loadfile, or loadgroup): they share build/notebooks/.
pytestmark = pytest.mark.xdist_group("notebooks")
TEST_MAX_TASKS = 1_000
NOTEBOOKS = {path.stem: path for path in nbtools.notebook_paths()}
executed = {}


@pytest.fixture(scope="module", autouse=True)
def small_size_setting(services_env):
    """At most 1,000 tasks, whatever the shell says; the kernel inherits this environment."""
    before = os.environ.get(nbtools.SIZE_SETTING)
    size = TEST_MAX_TASKS
    if before and before.isdigit():
        size = max(10, min(int(before), TEST_MAX_TASKS))
    os.environ[nbtools.SIZE_SETTING] = str(size)
    nbtools.ensure_kernel()
    yield size
    if before is None:
        os.environ.pop(nbtools.SIZE_SETTING, None)
    else:
        os.environ[nbtools.SIZE_SETTING] = before


def summary(stem):
    """Run notebook STEM (once per test session) and return the summary it wrote on this run."""
    if stem not in executed:
        written = nbtools.BUILD / f"{stem}.json"
        written.unlink(missing_ok=True)
        error = nbtools.execute(NOTEBOOKS[stem])
        executed[stem] = (error, json.loads(written.read_text()) if written.exists() else None)
    error, data = executed[stem]
    if error:
        pytest.fail(f"{error} (the executed copy is build/notebooks/{stem}.ipynb)")
    assert data is not None, f"{stem} ran but wrote no build/notebooks/{stem}.json"
    return data


def test_seven_notebooks_in_teaching_order():
    assert [stem[:2] for stem in NOTEBOOKS] == ["01", "02", "03", "04", "05", "06", "07"]


@pytest.mark.parametrize("stem", sorted(NOTEBOOKS))
def test_committed_without_outputs(stem):
    nb = nbformat.read(NOTEBOOKS[stem], as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == nbtools.KERNEL
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{stem} has outputs committed"


@pytest.mark.parametrize("stem", sorted(NOTEBOOKS))
def test_notebook_runs_top_to_bottom(stem):
    summary(stem)


def test_memcached_basics_as_shown():
    s = summary("01-memcached")
    assert s["ttl_over_30_days"] == {"ttl:30-days": True, "ttl:31-days": False,
                                     "ttl:31-days-absolute": True}
    assert s["too_big_error"] == "pylibmc.TooBig"
    assert 1_000_000 < s["largest_value_bytes"] < 1024 * 1024
    assert s["key_limit"]["250 × 'k'"] and not s["key_limit"]["251 × 'k'"]
    assert s["sasl_login_ok"] and "AUTHENTICATION FAILURE" in s["sasl_wrong_password"]
    assert s["counters_after_workload"]["get_hits"] == 3 and s["counters_after_workload"]["get_misses"] == 2


def test_stage_04_shows_a_stale_list_and_stage_05_does_not():
    s = summary("02-query-cache")
    assert s["04"]["stale_after_add"] is True
    assert s["05"]["stale_anywhere"] is False
    assert s["05"]["misses_after_writes"] == [1, 1, 1]


def test_delete_memoized_writes_a_new_version():
    s = summary("03-memoize")["stage_06"]
    assert s["version_changed"] and s["old_value_key_still_stored"]
    assert s["warm_reload"] == {"get hits": 2, "get misses": 0, "sets": 0}
    assert s["add_request"]["deletes"] == 0 and s["add_request"]["sets"] == 1
    assert summary("03-memoize")["cached_ignores_arguments"] is True


def test_stage_08_later_reloads_are_exactly_one_hit():
    s = summary("04-fragments-and-views")
    reloads = s["08"]["later_reloads_hits_misses"]
    assert len(reloads) >= 10
    assert all(pair == [1, 0] for pair in reloads), reloads
    assert s["final_warm_load"] == {"get hits": 1, "get misses": 0, "sets": 0}


def test_the_cached_page_hazard_is_shown_then_fixed():
    naive, stage_08, final = summary("04-fragments-and-views")["hazard"]
    assert naive["Ben sees Ana's message"] and naive["Ben's form carries Ana's token"]
    for fixed in (stage_08, final):
        assert fixed["Ana sees her message"] and not fixed["Ben sees Ana's message"]
        assert fixed["Ben's add"] == "accepted"


def test_sessions_live_in_memcached_and_final_survives_an_outage():
    s = summary("05-sessions")
    assert s["session_key_is_prefix_plus_cookie"]
    assert s["session_ttl_s"] > 30 * 24 * 3600  # 31 days, sent as an absolute time
    assert s["after_eviction"]["me_lists"] == [] and s["after_eviction"]["front_page_status"] == 200
    assert set(s["down"]["final"].values()) == {200}
    assert s["restart"]["final"]["failed"] == 0


def test_performance_sweep_stays_within_the_size_setting(small_size_setting):
    s = summary("06-performance")
    assert s["max_tasks"] == small_size_setting
    assert max(s["task_counts"]) <= TEST_MAX_TASKS
    assert {p["layers"] for p in s["points"]} == {"no cache", "query", "query + fragments",
                                                  "query + fragments + view"}
    assert all(p["gets"] == 1 for p in s["points"] if p["layers"] == "query + fragments + view")
    assert s["cliff"]["seen"] and s["cliff"]["first_uncached_page_kb"] > 1000


def test_keys_spread_over_all_three_nodes():
    s = summary("07-scaling-out")
    assert len(s["keys_per_node"]) == 3
    assert all(count > 0 for count in s["keys_per_node"].values()), s["keys_per_node"]


def test_hit_ratio_recovers_after_a_node_stops():
    failover = summary("07-scaling-out")["failover"]
    assert failover["hit_ratio_dip"] < failover["hit_ratio_before"]
    assert failover["hit_ratio_recovered"] >= 0.9 * failover["hit_ratio_before"]


def test_ketama_moves_only_the_missing_nodes_keys():
    s = summary("07-scaling-out")
    assert s["share_moved_when_one_of_three_leaves"]["ketama"] < 0.5
    assert s["share_moved_when_one_of_three_leaves"]["modulo"] > 0.5
    assert s["stale_read_after_invalidation"] and s["ttl_ends_stale_copy"]


@pytest.mark.parametrize("args, env, message", [
    (["99"], {}, "no notebook starts with 99"),
    ([], {nbtools.SIZE_SETTING: "lots"}, "must be a whole number"),
])
def test_runner_refuses_bad_input_in_one_line(args, env, message):
    result = subprocess.run([sys.executable, str(ROOT / "notebooks" / "nbtools.py"), *args],
                            capture_output=True, text=True, env={**os.environ, **env}, timeout=60)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_the_runner_says_each_code_cell_as_it_finishes(tmp_path, capsys):
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# two cells"),
                                         nbformat.v4.new_code_cell("x = 1"),
                                         nbformat.v4.new_code_cell("print(x + 1)")])
    path = tmp_path / "progress-check.ipynb"
    nbformat.write(nb, path)
    nbtools.ensure_kernel()
    assert nbtools.execute(path) is None
    lines = [line for line in capsys.readouterr().out.splitlines() if "progress-check.ipynb" in line]
    assert [line.split(" in ")[0].strip() for line in lines] == [
        "progress-check.ipynb: code cell 1 of 2 (cell 2)", "progress-check.ipynb: code cell 2 of 2 (cell 3)"]
