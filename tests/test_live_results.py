"""The live mirror against the simulator, from the committed measurements (experiments/live_mirror):
six real targets, each mirrored live 5 times, and each time a separately recorded trace of the same
command replayed by the stratus policy with the costs that live run measured. The quick suite
re-simulates every run from its committed trimmed trace and holds the simulator to the targets:

- the converged verdict right;
- dirty pages per pass within 15% (the median over the runs of each simulated run's error against
  its live run);
- the blackout within 25% (medians over the runs).

Where the verdict is chance (the live runs or the simulated ones disagree: sqlite3's last passes find
a few hundred pages either side of the 256-page threshold) the live runs must be a plausible sample
of the simulated ones (Fisher's exact test on the verdicts, and Mann-Whitney on a pass's counts where
they spread over more than 30% on both sides, at the 5% level).
"""
import functools
import statistics
from pathlib import Path

import pytest

from conftest import load_experiment
from pagesync_model.stats import fisher_exact, mann_whitney

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "experiments" / "live_mirror"
R = load_experiment("live_mirror", "run")

RESULTS = {r["name"]: r for r in R.load_results()}
NAMES = ["writer-5k", "writer-40k", "writer-200k", "python-dict", "sqlite3", "redis"]


@functools.lru_cache(maxsize=None)
def simulated(name):
    r = RESULTS[name]
    return [R.simulate_run(run, r["library"]) for run in r["runs"]]


def live(name):
    return [run["live"] for run in RESULTS[name]["runs"]]


def verdicts_are_chance(name):
    return len({d["converged"] for d in simulated(name)}) > 1


def test_six_targets_five_runs_each_all_verified():
    assert sorted(RESULTS) == sorted(NAMES)
    for name in NAMES:
        assert len(RESULTS[name]["runs"]) == 5
        for d in live(name):
            assert d["verified"] and d["lost_writes"] == 0, name
            assert d["passes"] == len(d["per_pass"]) and d["per_pass"][0]["kind"] == "full"
            assert d["per_pass"][-1]["kind"] == "blackout"
            assert d["converged"] == (d["per_pass"][-1]["dirty_pages"] < R.THRESHOLD)


@pytest.mark.parametrize("name", NAMES)
def test_the_committed_simulations_are_what_the_model_gives(name):
    for run, d in zip(RESULTS[name]["runs"], simulated(name)):
        assert R.dirty(d) == R.dirty(run["sim"])
        assert d["downtime_s"] == pytest.approx(run["sim"]["downtime_s"], rel=1e-9)
        assert d["lost_writes"] == 0


@pytest.mark.parametrize("name", NAMES)
def test_verdict(name):
    k_l = sum(d["converged"] for d in live(name))
    k_s = sum(d["converged"] for d in simulated(name))
    n = len(live(name))
    if verdicts_are_chance(name) or 0 < k_l < n:
        assert fisher_exact(k_l, n - k_l, k_s, n - k_s) >= 0.05, (k_l, k_s)
    else:
        assert k_l == k_s


def _passes(name):
    """(pass number, [(live, simulated) counts of the runs where both reached it], live counts, simulated
    counts) for the passes at least 3 runs reached on both sides."""
    lv, sm = [R.dirty(d) for d in live(name)], [R.dirty(d) for d in simulated(name)]
    out = []
    for k in range(max(map(len, lv + sm))):
        pairs = [(x[k], y[k]) for x, y in zip(lv, sm) if len(x) > k and len(y) > k]
        if len(pairs) >= 3:
            out.append((k + 1, pairs, [x[k] for x in lv if len(x) > k], [y[k] for y in sm if len(y) > k]))
    return out


@pytest.mark.parametrize("name", NAMES)
def test_dirty_pages_per_pass_within_15_percent(name):
    """Each simulated run predicts its live run (same costs, same start; the trace from another run of
    the program): the median of the runs' relative errors within 15% in every pass. Where the verdict
    is chance and a pass's counts spread by more than 30% on both sides, the live counts must be a
    plausible sample of the simulated ones instead."""
    chance = verdicts_are_chance(name) or 0 < sum(d["converged"] for d in live(name)) < len(live(name))
    passes = _passes(name)
    assert passes
    for k, pairs, a, b in passes:
        if chance and max(a) > 1.3 * min(a) and max(b) > 1.3 * min(b):
            assert mann_whitney(a, b) >= 0.05, (name, k, a, b)
            continue
        err = statistics.median((s - v) / v for v, s in pairs)
        assert abs(err) <= 0.15, (name, k, err, pairs)


@pytest.mark.parametrize("name", NAMES)
def test_blackout_within_25_percent(name):
    want = statistics.median(d["downtime_s"] for d in live(name))
    got = statistics.median(d["downtime_s"] for d in simulated(name))
    assert abs(got - want) <= 0.25 * want, (want, got)


def test_readme_table_is_results_md():
    table = (HERE / "results.md").read_text().strip()
    assert table in (HERE / "README.md").read_text()
