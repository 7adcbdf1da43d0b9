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


def one(cfg, faults=(), **options):
    return run_batch([MigrationSpec("vm", cfg, ["l"], seed=1)], LINK, faults=faults, **options).runs[0]


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


def test_bad_pause_faults_are_named():
    with pytest.raises(ConfigError) as err:
        host_from_dict(_host(faults=[{"kind": "pause", "vm": "nobody", "at": "0s", "duration": "1s"}]))
    assert "faults[0].vm: unknown VM 'nobody'" in str(err.value), str(err.value)
    host = _host(faults=[{"kind": "pause", "vm": "a", "at": "0s", "duration": "1s"}])
    host["vms"][0]["set"]["qemu.rules"] = "'1.6'"   # a set: value is read as YAML
    with pytest.raises(ConfigError) as err:
        host_from_dict(host)
    assert "faults[0].vm: 'a' runs qemu (rules 1.6): a pause fault is modelled for qemu (rules current), " \
           "xen-legacy, xen-v2, stratus only" in str(err.value), str(err.value)
    # a stratus VM's pause is modelled (its resync starts over)
    assert host_from_dict(_host(faults=[{"kind": "pause", "vm": "s", "at": "0s", "duration": "1s"}])).faults


# --- xen: libxl waits SUSPEND_TIMEOUT_S (60 s) for the guest to suspend, then the migration fails ---

XEN = ["memory.size=64MiB", "workload.working_set=16MiB", "memory.kernel_size=8MiB", "link.bandwidth=1Gbit/s"]


def _xen():
    return load_config(ROOT / "configs/xen-2005.yaml", XEN)


def test_xen_suspend_waits_for_the_guest_within_libxls_bound():
    from pagesync_model.policies.xen import SUSPEND_TIMEOUT_S
    assert SUSPEND_TIMEOUT_S == 60.0   # libxl_dom_suspend.c: 60*1000 ms
    cfg = _xen()
    solo = one(cfg)
    t_stop = blackout(solo).start_s
    assert solo.result.summary.converged is not None and blackout(solo).writes == 0
    # the guest cannot suspend until 1 s after the request: it runs and writes meanwhile (1 vCPU x
    # workload.rate writes/s for 1 s), its downtime counted from the request; nothing is lost
    run = one(cfg, [Fault("pause", 0.0, t_stop + 1.0, vm="vm")])
    s = run.result.summary
    assert run.outcome == "done" and run.attempts == 1 and s.lost_writes == 0
    assert blackout(run).start_s == t_stop
    # every write that dirties a clean page costs the vCPU cpus.dirty_update: at most rate x 1 s
    # writes, at least rate x (1 s less that cost for each page the blackout found dirty)
    b = blackout(run)
    rate = cfg.cpus.count * cfg.workload.rate
    assert rate * (1.0 - b.dirty_pages * cfg.cpus.dirty_update) <= b.writes <= rate * 1.0
    assert s.downtime_s > solo.result.summary.downtime_s + 1.0
    assert s.total_time_s > solo.result.summary.total_time_s + 1.0


def test_xen_migration_fails_when_the_guest_does_not_suspend_in_60_s_and_is_retried():
    cfg = _xen()
    solo = one(cfg)
    t_stop = blackout(solo).start_s
    fault = Fault("pause", 0.0, t_stop + 61.0, vm="vm")
    run = one(cfg, [fault])
    s = run.result.summary
    # the request at t_stop, libxl gives up 60 s later: failed, the guest still on the source
    assert run.outcome == "failed" and s.downtime_s is None
    assert run.end_s == pytest.approx(t_stop + 60.0, abs=1e-9)
    assert "did not suspend" in s.stop_reason
    # one retry: once the guest can stop again and retry_delay later, from scratch: its single run
    run = one(cfg, [fault], retries=1, retry_delay=2.0)
    assert run.outcome == "done" and run.attempts == 2
    assert run.last_start_s == pytest.approx(t_stop + 61.0 + 2.0, abs=1e-9)
    assert run.result.summary.to_dict() == solo.result.summary.to_dict()
    assert run.result.summary.lost_writes == 0


# --- stratus: a resync whose CPUs cannot stop starts over once they can ---

def test_stratus_resync_starts_over_after_the_pause():
    cfg = load_config(ROOT / "configs/stratus.yaml", SMALL[:3] + ["link.bandwidth=1Gbit/s"])
    solo = one(cfg)
    t_stop = blackout(solo).start_s
    assert t_stop > 1.0
    # from 1 s to t_stop + 1 s the CPUs cannot rendezvous: the stop at t_stop fails the resync, which
    # starts again at the fault's end (retries 0: the stratus resync always starts over) and is then
    # its single run, the oracle intact
    run = one(cfg, [Fault("pause", 1.0, t_stop, vm="vm")])
    assert run.outcome == "done" and run.attempts == 2
    assert run.last_start_s == pytest.approx(1.0 + t_stop, abs=1e-9)
    assert run.end_s == pytest.approx(1.0 + t_stop + solo.result.summary.total_time_s, abs=1e-9)
    assert run.result.summary.to_dict() == solo.result.summary.to_dict()
    assert run.result.summary.lost_writes == 0
    # a pause that ends before the resync's first stop of its CPUs changes nothing
    late = one(cfg, [Fault("pause", 0.5, 0.5, vm="vm")])
    assert late.attempts == 1 and late.result.summary.to_dict() == solo.result.summary.to_dict()
