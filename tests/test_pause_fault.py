"""A source that cannot pause in time (a ``pause`` fault, pagesync_model/sim/faults.py): QEMU waits for
its vCPUs without bound (pause_all_vcpus), its downtime counted from before the stop, so the downtime
grows by the wait and the migration completes; no write is lost."""
from pathlib import Path

import pytest

from pagesync_model.config import ConfigError, load_config
from pagesync_model.evacuate import host_from_dict, run_host
from pagesync_model.sim.faults import Fault, hold
from pagesync_model.sim.multi import MigrationSpec, run_batch

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["memory.size=256MiB", "workload.working_set=64MiB", "memory.kernel_size=16MiB", "link.bandwidth=1Gbit/s",
         "qemu.max_bandwidth=10Gbit/s"]
LINK = [("l", 1e9 / 8, 0.0)]


def one(cfg, faults=()):
    return run_batch([MigrationSpec("vm", cfg, ["l"], seed=1)], LINK, faults=faults).runs[0]


def blackout(run):
    return next(p for p in run.result.per_pass if p.kind == "blackout")


def test_hold_by_hand():
    assert hold([(10, 30)], 12) == 18
    assert hold([(10, 30), (0, 40)], 12) == 28
    assert hold([(10, 30)], 30) == 0 and hold([], 5) == 0


def test_the_downtime_grows_by_the_wait_for_the_vcpus():
    cfg = load_config(ROOT / "configs/qemu-default.yaml", SMALL + ["workload.rate=1/s", "cpus.count=1"])
    solo = one(cfg)
    t_stop = blackout(solo).start_s
    assert 0.5 < t_stop < 3.0
    # a vCPU that does not exit from 0 s to 3 s: the stop that begins at t_stop ends at 3 s
    run = one(cfg, [Fault("pause", 0.0, 3.0, vm="vm")])
    s = run.result.summary
    assert run.outcome == "done" and s.converged and s.lost_writes == 0
    assert blackout(run).start_s == t_stop        # pre-copy is the same until the stop
    parts = s.extra["downtime_parts"]
    assert parts["vm_stop_hold"] == pytest.approx(3.0 - t_stop, abs=1e-9)
    # the guest is (nearly) idle: the rest of the stop is the same but for the page or two it wrote
    assert s.downtime_s == pytest.approx(solo.result.summary.downtime_s + 3.0 - t_stop, abs=1e-3)
    # a pause fault that ended before the stop, or on another VM, changes nothing
    for f in (Fault("pause", 0.0, t_stop / 2, vm="vm"), Fault("pause", 0.0, 3.0, vm="other")):
        assert one(cfg, [f]).result.summary.to_dict() == solo.result.summary.to_dict()


def test_the_guest_writes_through_the_wait_and_nothing_is_lost():
    cfg = load_config(ROOT / "configs/qemu-default.yaml", SMALL + ["workload.rate=2k/s"])
    solo = one(cfg)
    t_stop = blackout(solo).start_s
    run = one(cfg, [Fault("pause", 0.0, t_stop + 1.0, vm="vm")])
    s = run.result.summary
    assert run.outcome == "done" and s.lost_writes == 0
    # the guest ran through the 1 s wait: 4 vCPUs x 2k writes/s = 8000 writes inside the blackout (none
    # without the fault), whose pages the last sync found and the last pass copied
    assert blackout(run).writes == 8000 and blackout(solo).writes == 0
    assert blackout(run).dirty_pages > blackout(solo).dirty_pages
    assert blackout(run).pages_copied > blackout(solo).pages_copied
    assert s.extra["downtime_parts"]["vm_stop_hold"] == pytest.approx(1.0, abs=1e-9)


def _host(**extra):
    vms = [{"name": "a", "config": str(ROOT / "configs/qemu-default.yaml"),
            "set": {"memory.size": "256MiB", "workload.working_set": "64MiB", "memory.kernel_size": "16MiB"}},
           {"name": "s", "config": str(ROOT / "configs/stratus.yaml"),
            "set": {"memory.size": "256MiB", "workload.working_set": "64MiB", "memory.kernel_size": "16MiB", "cpus.clock": "2.6GHz"}}]
    return {"host": {"concurrency": 1}, "links": [{"name": "nic", "bandwidth": "1Gbit/s"}], "vms": vms, **extra}


@pytest.mark.parametrize("vm, needle", [("nobody", "faults[0].vm: unknown VM 'nobody'"),
                                        ("s", "faults[0].vm: 's' runs stratus: a pause fault is modelled for qemu")])
def test_bad_pause_faults_are_named(vm, needle):
    with pytest.raises(ConfigError) as err:
        host_from_dict(_host(faults=[{"kind": "pause", "vm": vm, "at": "0s", "duration": "1s"}]))
    assert needle in str(err.value), str(err.value)
