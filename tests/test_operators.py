"""The operator layer over QEMU (Nova, KubeVirt, oVirt) and post-copy.

The rule tables are checked sample by sample against the values worked out from each project's
source (see pagesync_model/policies/operators.py); whole migrations check the actions' effects
with the version oracle.
"""
import pytest

from pagesync_model.config import config_from_dict
from pagesync_model.policies.operators import Monitor
from pagesync_model.sim.engine import Engine
from test_qemu_policy import VM

HEAVY = ("workload.kind=sequential", "workload.working_set=100MiB", "workload.rate=20k/s",
         "memory.zero_fraction=0.1")


def cfg(*overrides):
    return config_from_dict(VM, overrides)


def run(*overrides):
    return Engine(cfg(*overrides)).run().to_dict()


# ------------------------------------------------------------------ the rule tables, by hand

def test_nova_downtime_steps_by_hand():
    # data_gb = max(0.125 GiB, 2) = 2; delay = int(75 * 2) = 150 s; base = 500/10 = 50 ms,
    # offset = (500 - 50)/10 = 45 ms: (0, 50), (150, 95), (300, 140), ... (1500, 500)
    m = Monitor(cfg("operator.kind=nova"), 128 * 2**20)
    assert m.data_gb == 2
    assert [t for t, _ in m.steps] == [150 * i for i in range(11)]
    assert [round(d * 1e3) for _, d in m.steps] == [50, 95, 140, 185, 230, 275, 320, 365, 410, 455, 500]
    seen = []
    downtime = 0.3
    for t in (0.5, 1.0, 150.0, 150.5, 300.5, 1600.0):
        new, action = m.tick(t, 1, 10**9, downtime)
        assert action is None
        if new is not None:
            downtime = new
            seen.append((t, round(new * 1e3)))
    # the step in force is the last with elapsed > t_i (strictly): 150.0 is still step 0
    assert seen == [(0.5, 50), (150.5, 95), (300.5, 140), (1600.0, 500)]


def test_nova_completion_timeout_acts_at_the_next_tick():
    m = Monitor(cfg("operator.kind=nova", "operator.completion_timeout=800s", "operator.on_timeout=pause"),
                8 * 2**30)
    assert m.deadline == 6400                     # int(800 * 8 GiB)
    assert m.tick(6400.0, 5, 1, 0.5)[1] is None   # not yet: elapsed must exceed it
    assert m.tick(6400.5, 5, 1, 0.5)[1] is None   # force-complete is queued...
    assert m.tick(6401.0, 5, 1, 0.5)[1] == "pause:completion-timeout"  # ...and runs a tick later
    abort = Monitor(cfg("operator.kind=nova", "operator.completion_timeout=800s"), 8 * 2**30)
    assert abort.tick(6400.5, 5, 1, 0.5)[1] == "abort:completion-timeout"


def test_kubevirt_deadline_uses_decimal_gigabytes_rounded_up():
    m = Monitor(cfg("operator.kind=kubevirt", "operator.completion_timeout=150s"), 4 * 2**30)
    assert m.data_gb == 5 and m.deadline == 750   # 4 GiB = 4.29e9 B -> 5 GB


def test_kubevirt_progress_means_remaining_fell_since_the_previous_sample():
    m = Monitor(cfg("operator.kind=kubevirt", "operator.progress_timeout=2.2s"), 2**30)
    remaining = [100, 90, 95, 95, 95, 95, 95, 95, 80]
    actions = [m.tick(0.4 * i, 1, r, 0.3)[1] for i, r in enumerate(remaining)]
    # progress at samples 0 and 1 (t = 0.4); no progress from t = 0.8 on; > 2 s later aborts
    assert actions[:7] == [None] * 7
    assert actions[7] == "abort:progress-timeout"   # t = 2.8: 2.4 s (> 2.2 s) since the last progress


def test_ovirt_minimal_downtime_schedule_per_iteration():
    m = Monitor(cfg("operator.kind=ovirt"), 2**30)
    assert m.initial_downtime() == pytest.approx(0.1)
    out = []
    for i, sync_count in enumerate([3, 3, 4, 5, 6, 7, 8, 9, 10, 11]):
        new, action = m.tick(10.0 * i, sync_count, 1, 0.1)
        out.append(action or (round(new * 1e3) if new else None))
    # n = iterations since the first sample (3): the head item runs when its limit < n
    assert out == [None, None, None, 150, 200, 300, 400, None, 500, "abort:convergence-schedule"]


# ------------------------------------------------------------------ whole migrations

def test_ovirt_raises_downtime_each_sample_then_aborts():
    d = run(*HEAVY, "operator.kind=ovirt", "operator.monitor_period=10s", "sim.time_limit=300s")
    assert [ms for _, ms in d["downtime_limit_history"]] == [150, 200, 300, 400, 500]
    times = [t for t, _ in d["downtime_limit_history"]]
    assert all(b - a == pytest.approx(10, abs=0.01) for a, b in zip(times, times[1:]))
    assert d["stop_reason"] == "aborted (convergence-schedule)" and not d["converged"]
    assert d["downtime_s"] is None


def test_nova_abort_at_the_completion_timeout():
    # 128 MiB guest: data_gb = 2; 5 s per GiB -> abort after 10 s
    d = run(*HEAVY, "operator.kind=nova", "operator.completion_timeout=5s", "sim.time_limit=60s")
    assert d["stop_reason"] == "aborted (completion-timeout)"
    assert d["total_time_s"] == pytest.approx(10.0, abs=0.6)
    assert [ms for _, ms in d["downtime_limit_history"]][0] == 50


def test_pause_completes_with_downtime_from_the_pause():
    d = run(*HEAVY, "operator.kind=nova", "operator.completion_timeout=5s", "operator.on_timeout=pause",
            "sim.time_limit=60s")
    assert d["converged"] and d["lost_writes"] == 0
    # the guest stopped at the tick after the deadline (10.5 s); downtime runs from there
    assert d["total_time_s"] - d["downtime_s"] == pytest.approx(10.5, abs=0.6)


def test_postcopy_finishes_the_migration_with_remote_faults():
    d = run(*HEAVY, "operator.kind=kubevirt", "operator.completion_timeout=5s", "operator.on_timeout=postcopy",
            "sim.time_limit=60s")
    assert d["stop_reason"] == "postcopy (completion-timeout)" and d["converged"]
    assert d["lost_writes"] == 0                 # the destination got every page
    assert d["postcopy_faults"] > 0 and d["postcopy_s"] > 0
    assert d["downtime_s"] < 0.05                # only the switch: device state, not the memory
    assert d["precopy_bytes"] + d["downtime_bytes"] + d["postcopy_bytes"] == d["bytes_sent"]
    assert d["per_pass"][-1]["kind"] == "postcopy"


def test_postcopy_faults_are_pages_still_missing_at_the_switch():
    d = run(*HEAVY, "operator.kind=kubevirt", "operator.completion_timeout=5s", "operator.on_timeout=postcopy",
            "sim.time_limit=60s")
    post = d["per_pass"][-1]
    # each page missing at the switch crosses once, requested (a fault) or pushed
    assert 0 < d["postcopy_faults"] <= post["pages_copied"]
    assert post["bytes"] == d["postcopy_bytes"]
    assert post["bytes"] == (post["pages_copied"] - post["zero_pages"]) * 4104 + post["zero_pages"] * 9
