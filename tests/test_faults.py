"""Faults on the way of many migrations (pagesync_model/sim/faults.py, sim/multi.py): stalls, drops,
loss, destination resets, retries, post-copy recovery, and the oracle through them."""
import math
from pathlib import Path

import pytest

from pagesync_model.config import load_config
from pagesync_model.evacuate import host_from_dict, run_host
from pagesync_model.sim.engine import simulate
from pagesync_model.sim.faults import Fault, RandomFaults, mathis_rate, scheduled
from pagesync_model.sim.multi import MigrationSpec, run_batch

SMALL = ["memory.size=256MiB", "workload.working_set=64MiB", "memory.kernel_size=16MiB", "link.bandwidth=1Gbit/s"]
GBIT = 1e9 / 8
LINK = [("l", GBIT, 0.0)]


def qemu(*extra):
    return load_config("configs/qemu-default.yaml", SMALL + ["qemu.max_bandwidth=10Gbit/s", *extra])


def idle():
    return qemu("workload.rate=1/s", "cpus.count=1")


def postcopy_vm():
    # nova's monitor switches to post-copy at its completion timeout (1 s here): the post-copy pass
    # runs from about 1.12 s to 2.78 s
    return load_config("configs/nova-default.yaml", SMALL + [
        "workload.working_set=128MiB", "qemu.max_bandwidth=10Gbit/s", "workload.kind=uniform", "workload.rate=100k/s",
        "operator.completion_timeout=500ms", "operator.on_timeout=postcopy", "operator.monitor_period=100ms"])


def one(cfg, faults=(), **kw):
    return run_batch([MigrationSpec("vm", cfg, ["l"], seed=1)], LINK, faults=faults, **kw).runs[0]


def test_a_stall_delays_an_idle_migration_by_its_length():
    cfg = idle()
    solo = simulate(cfg, seed=1).summary
    run = one(cfg, [Fault("stall", 0.5, 1.0, link="l")])
    s = run.result.summary
    assert run.outcome == "done" and run.attempts == 1 and s.lost_writes == 0
    # the link carried nothing for 1 s and the guest is (nearly) idle: the same migration 1 s later
    assert s.total_time_s == pytest.approx(solo.total_time_s + 1.0, abs=3e-3)
    assert [0.5, 0.0] in [[pytest.approx(t), r] for t, r in run.rates]


def test_loss_cuts_each_connection_to_the_mathis_bound():
    # RTT = 2 x (100 us + 50 us) = 300 us; p = 1 - (1 - 0.01)(1 - 0.02) = 0.0298
    ten = 10 * GBIT
    links = [("a", ten, 100e-6), ("b", ten, 50e-6)]
    faults = [Fault("loss", 0.0, 100.0, link="a", loss=0.01), Fault("loss", 0.0, 100.0, link="b", loss=0.02)]
    by_hand = 1448 / 300e-6 * math.sqrt(1.5) / math.sqrt(0.0298)    # 34.2 MB/s per connection
    assert mathis_rate(0.0298, 300e-6, 1448) == pytest.approx(by_hand, rel=1e-12)
    cfg = qemu("link.bandwidth=10Gbit/s")
    batch = run_batch([MigrationSpec("one", cfg, ["a", "b"], seed=1),
                       MigrationSpec("two", cfg, ["a", "b"], channels=2, seed=2)], links, faults=faults)
    one_, two = batch.runs
    assert one_.rates[0][1] == pytest.approx(by_hand, rel=1e-9)
    assert two.rates[0][1] == pytest.approx(2 * by_hand, rel=1e-9)


def test_a_drop_in_precopy_fails_it_and_the_source_keeps_running():
    run = one(qemu(), [Fault("drop", 0.3, 1.0, link="l")])
    s = run.result.summary
    assert run.outcome == "failed" and run.attempts == 1
    assert s.stop_reason == "failed (link l dropped)" and s.downtime_s is None and not s.converged
    assert run.end_s == pytest.approx(0.3, abs=1e-9)


def test_a_retry_after_a_drop_is_a_fresh_single_run():
    cfg = qemu()
    run = one(cfg, [Fault("drop", 0.3, 1.0, link="l")], retries=1, retry_delay=0.5)
    assert run.outcome == "done" and run.attempts == 2
    assert run.last_start_s == pytest.approx(1.8, abs=1e-9)      # link back at 1.3 s, then 0.5 s
    single = simulate(cfg, seed=1)
    a, b = run.result.to_dict(), single.to_dict()
    a.pop("simulator")
    b.pop("simulator")
    assert a == b and run.result.summary.lost_writes == 0
    assert run.end_s == pytest.approx(1.8 + single.summary.total_time_s, abs=1e-9)


def test_a_stratus_resync_starts_over_whatever_the_retries():
    cfg = load_config("configs/stratus.yaml", SMALL + ["cpus.clock=2.6GHz"])
    run = one(cfg, [Fault("drop", 0.2, 0.4, link="l")], retries=0)
    assert run.attempts == 2 and run.outcome == "done" and run.last_start_s == pytest.approx(0.6, abs=1e-9)
    assert run.result.summary.converged and run.result.summary.lost_writes == 0


def test_a_drop_in_postcopy_loses_the_guest_without_recovery():
    run = one(postcopy_vm(), [Fault("drop", 1.8, 0.5, link="l")])
    s = run.result.summary
    assert run.outcome == "lost" and s.stop_reason.startswith("lost (link l dropped in post-copy")
    assert not s.converged and s.downtime_s is None and s.lost_writes is None


def test_postcopy_recover_waits_for_the_link_and_completes():
    cfg = postcopy_vm()
    solo = simulate(cfg, seed=1).summary
    run = one(cfg, [Fault("drop", 1.8, 0.5, link="l")], postcopy_recover=True)
    s = run.result.summary
    assert run.outcome == "done" and s.stop_reason.startswith("postcopy") and s.lost_writes == 0
    # the post-copy pass waited out the outage (its page requests were stuck behind it)
    assert s.total_time_s == pytest.approx(solo.total_time_s + 0.5, abs=0.05)


def test_a_destination_reset_in_postcopy_loses_the_guest_and_in_precopy_is_retried():
    lost = one(postcopy_vm(), [Fault("reset", 1.8, 0.5, vm="vm")], postcopy_recover=True)
    assert lost.outcome == "lost" and "destination of vm reset" in lost.result.summary.stop_reason
    retried = one(qemu(), [Fault("reset", 0.3, 1.0, vm="vm")], retries=1)
    assert retried.attempts == 2 and retried.outcome == "done" and retried.last_start_s == pytest.approx(1.3)
    assert retried.result.summary.lost_writes == 0


def test_a_fault_elsewhere_changes_nothing():
    cfg = qemu()
    batch = run_batch([MigrationSpec("vm", cfg, ["l"], seed=1)], [("l", GBIT, 0.0), ("m", GBIT, 0.0)],
                      faults=[Fault("drop", 0.3, 1.0, link="m"), Fault("reset", 0.2, 1.0, vm="other")])
    a, b = batch.runs[0].result.to_dict(), simulate(cfg, seed=1).to_dict()
    a.pop("simulator")
    b.pop("simulator")
    assert a == b


def test_random_faults_are_seeded_and_have_their_mean_time_between_failures():
    rf = RandomFaults("drop", "l", mtbf=10.0, duration=1.0, seed=3)
    assert scheduled(rf, 500) == scheduled(rf, 500)
    other = scheduled(RandomFaults("drop", "l", mtbf=10.0, duration=1.0, seed=4), 500)
    assert other != scheduled(rf, 500)
    many = scheduled(RandomFaults("stall", "l", mtbf=10.0, duration=1.0, seed=1), 1e5)
    gaps = [b.at - (a.at + a.duration) for a, b in zip(many, many[1:])]
    assert sum(gaps) / len(gaps) == pytest.approx(10.0, rel=0.05)   # ~9000 draws: 1% standard error
    assert all(g >= 0 for g in gaps)


QEMU = str(Path(__file__).resolve().parents[1] / "configs/qemu-default.yaml")


def _host(**extra):
    vms = [{"name": "a", "config": QEMU, "set": {"memory.size": "256MiB", "workload.working_set": "64MiB",
                                                 "memory.kernel_size": "16MiB"}}]
    return {"host": {"retries": 1}, "links": [{"name": "nic", "bandwidth": "1Gbit/s"}], "vms": vms, **extra}


def test_host_faults_and_fault_seed():
    r = run_host(host_from_dict(_host(faults=[{"kind": "drop", "at": "300ms", "duration": "1s", "link": "nic"}])))
    assert r.vms[0].attempts == 2 and r.vms[0].verdict == "migrated" and r.migrated == 1
    assert [f["edge"] for f in r.faults] == ["start", "end"]
    h = host_from_dict(_host(random_faults=[{"kind": "stall", "link": "nic", "mtbf": "500ms", "duration": "100ms"}]))
    x, y, z = run_host(h), run_host(h), run_host(h, fault_seed=7)
    assert x.faults == y.faults and x.drain_s == y.drain_s and z.faults != x.faults
    assert x.faults and x.vms[0].verdict == "migrated"


@pytest.mark.parametrize("fault, needle", [
    ({"faults": [{"kind": "drop", "at": "1s", "duration": "1s", "link": "wan"}]}, "faults[0].link: unknown link 'wan'"),
    ({"faults": [{"kind": "reset", "at": "1s", "duration": "1s"}]}, "faults[0].vm: unknown VM"),
    ({"faults": [{"kind": "loss", "at": "1s", "duration": "1s", "link": "nic"}]}, "faults[0].loss"),
    ({"faults": [{"kind": "flap", "at": "1s", "duration": "1s", "link": "nic"}]}, "faults[0].kind: unknown choice"),
    ({"random_faults": [{"kind": "drop", "link": "nic", "duration": "1s"}]}, "random_faults[0].mtbf: required"),
    ({"random_faults": [{"kind": "reset", "link": "nic", "mtbf": "1s", "duration": "1s"}]}, "unknown choice"),
])
def test_bad_faults_are_named(fault, needle):
    from pagesync_model.config import ConfigError
    data = _host(**fault)
    with pytest.raises(ConfigError) as err:
        host_from_dict(data)
    assert needle in str(err.value), str(err.value)
