"""The qemu policy against real QEMU 10.0 migrations measured on this machine (experiments/qemu_validation).

CI does not run QEMU: this reads the committed measurements (runs/*.json), re-simulates one run of each
configuration fed with what that run achieved (compare.config_for), and holds the simulator to the
targets: the converged verdict of every run; total time and transferred bytes within 10% of the
measured median; dirty-sync-count within 2 of it; the pre-copy rate QEMU measured.

Configurations whose own repeats disagree (mixed verdicts, or total times spreading more than 30%)
sit on the convergence edge (dirty rate ~ link rate, threshold ~ one window): their convergence is a
first-passage event with no stable median, so only the majority verdict is checked there. Targets the
model does not meet yet are marked xfail(strict) with the reason, so they show in every run and the
marker fails the day they are met.
"""
import functools
import statistics
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parents[1] / "experiments" / "qemu_validation"
sys.path.insert(0, str(HERE))
import compare as C  # noqa: E402

sys.path.remove(str(HERE))

RUNS = C.load_runs()
GROUPS = C.by_config([{"config": r["config"], "run": r} for r in RUNS])
CALIB = (C.nonzero_other_pages(RUNS), C.loopback_rate(RUNS))
KNOWN_MISSES = {
    ("seq_near", "dirty_sync_count"): "30 syncs predicted vs 35 measured: the late 100 ms-sync phase is shorter",
    ("rand_near_ws320", "dirty_sync_count"): "32 syncs predicted vs 39: the passes drift ~1% shorter each",
    ("rand_near_ws320", "total_s"): "21.3 s predicted vs 23.7 s (-10.2%): the same drift, compounded",
}


def measured(name):
    return [C.measured(x["run"]) for x in GROUPS[name]]


def is_edge(name):
    m = measured(name)
    verdicts = {x["converged"] for x in m}
    times = [x["total_s"] for x in m]
    return len(verdicts) > 1 or max(times) / min(times) > 1.3


@functools.lru_cache(maxsize=None)
def predicted(name):
    runs = sorted(GROUPS[name], key=lambda x: x["run"]["final"]["total-time"])
    return C.predicted(C.config_for(runs[len(runs) // 2]["run"], *CALIB))


def test_the_measurements_cover_the_matrix():
    assert len(RUNS) >= 50
    names = set(GROUPS)
    for needed in ("idle", "rand_low", "rand_near", "rand_high", "seq_near", "autoconv_high", "idle_ws320",
                   "rand_near_ws320", "rand_near_dt100", "rand_high_dt1000"):
        assert needed in names and len(GROUPS[needed]) >= 3


@pytest.mark.parametrize("name", sorted(GROUPS))
def test_verdict(name):
    p = predicted(name)
    m = measured(name)
    majority = sum(x["converged"] for x in m) * 2 > len(m)
    assert p["converged"] == majority
    if not is_edge(name):
        assert all(x["converged"] == p["converged"] for x in m)
    assert p["lost_writes"] in (0, None)


def _target(name, key, tol):
    if is_edge(name):
        pytest.skip(f"{name} is on the convergence edge: only the verdict is meaningful")
    m = measured(name)
    if not m[0]["converged"] and key == "total_s":
        pytest.skip("not converged: the total time is the time limit")
    want = statistics.median(x[key] for x in m)
    got = predicted(name)[key]
    met = abs(got - want) <= tol if isinstance(tol, int) else abs(got - want) <= tol * abs(want)
    if (name, key) in KNOWN_MISSES:
        # strict: a known miss that is now met fails, so the list cannot go stale
        assert not met, f"{name} {key}: now within target ({got} vs {want}); remove it from KNOWN_MISSES"
        pytest.xfail(KNOWN_MISSES[(name, key)])
    assert met, (name, key, got, want)


@pytest.mark.parametrize("name", sorted(GROUPS))
def test_total_time_within_ten_percent(name):
    _target(name, "total_s", 0.10)


@pytest.mark.parametrize("name", sorted(GROUPS))
def test_transferred_within_ten_percent(name):
    _target(name, "transferred_mib", 0.10)


@pytest.mark.parametrize("name", sorted(GROUPS))
def test_dirty_sync_count_within_two(name):
    _target(name, "dirty_sync_count", 2)


@pytest.mark.parametrize("name", ["idle", "idle_bw32", "idle_bw128", "rand_near"])
def test_precopy_rate_is_the_one_measured(name):
    m = statistics.median(x["mbps"] for x in measured(name))
    assert predicted(name)["mbps"] == pytest.approx(m, abs=4104 * 8 / 0.1 / 1e6)


def test_no_tlb_flush_is_the_qemu_7_2_bug():
    """QEMU 7.2 under TCG cleared dirty bits without resetting the TLB's not-dirty state: guests
    crashed after switch-over. The no-tlb-flush variant loses the guest kernel's pages even on an idle
    guest, and the dirtier's too under load; the correct algorithm loses nothing."""
    from pagesync_model.config import config_from_dict
    from pagesync_model.sim.engine import simulate
    for name in ("idle", "rand_near"):
        cfg = config_from_dict(C.config_for(GROUPS[name][0]["run"], *CALIB))
        assert simulate(cfg).to_dict()["lost_writes"] == 0
        assert simulate(cfg, variant="no-tlb-flush").to_dict()["lost_writes"] > 0
