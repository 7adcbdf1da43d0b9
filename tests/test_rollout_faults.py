"""Faults in a rollout (pagesync-sim rollout CLUSTER.yaml with faults / random_faults): the fluid host
model against hand-computed cases, the retry pass, determinism per seed in-process and on a
LocalCluster, bad input."""
import json
import math
from pathlib import Path

import pytest
import yaml

from pagesync_model.cli import main
from pagesync_model.rollout import FluidGroup, FluidVm, load_cluster, run_fluid, run_rollout
from pagesync_model.rollout.cluster import fault_plan
from pagesync_model.rollout.fluid import FaultPlan, Outage
from pagesync_model.rollout.run import batch_row

ROOT = Path(__file__).resolve().parents[1]
QEMU = str(ROOT / "configs/qemu-default.yaml")
# near-idle guests: 4 vCPUs x one page write a second
QUIET = {"memory.kernel_size": "16MiB", "qemu.max_bandwidth": "10Gbit/s", "qemu.setup": "1ms",
         "memory.zero_fraction": 0, "workload.rate": "1/s", "workload.working_set": "16MiB"}
EFF = 0.941                      # qemu-default's link.efficiency
DIRTY = 4 * 1 * 4096             # bytes/s a quiet guest dirties


def one(memory=1e9, dirty=0.0, route=(0,), latency=0.0, name="a", channels=1, cap=None):
    return FluidVm(name, memory, dirty, list(route), 1.0, latency, 0.3, 30, cap, channels)


# -- the fluid model, hand-computed ------------------------------------------------------------------

def test_a_stall_shifts_the_end_by_its_length():
    # 1 GB at 100 MB/s: 10 s; a 2 s stall at 3 s carries nothing: 12 s
    plain = run_fluid([FluidGroup([one()])], [1e8])
    assert plain.end_s == pytest.approx(10.0, rel=1e-12)
    plan = FaultPlan([Outage("stall", 3.0, 5.0, 0)])
    run = run_fluid([FluidGroup([one()])], [1e8], plan)
    (o,) = run.outcomes
    assert o.converged and o.fault is None
    assert run.end_s == pytest.approx(12.0, rel=1e-12)


def test_a_stalled_guest_keeps_dirtying():
    # 10 MB/s dirtied: round 0 ends at 12 s (with the 2 s stall), round 1 is 10 MB/s x 12 s = 120 MB
    # at 100 MB/s (1.2 s > 0.3 s limit), round 2 is 10 MB/s x 1.2 s = 12 MB (0.12 s): the stop-and-copy
    plan = FaultPlan([Outage("stall", 3.0, 5.0, 0)])
    (o,) = run_fluid([FluidGroup([one(dirty=1e7)])], [1e8], plan).outcomes
    assert o.rounds == 2 and o.converged
    assert o.end_s == pytest.approx(12.0 + 1.2 + 0.12, rel=1e-12)
    assert o.downtime_s == pytest.approx(0.12, rel=1e-12)


def test_a_drop_fails_the_migrations_crossing_it_and_frees_the_link():
    # two guests of 1 GB share a 100 MB/s link (50 MB/s each); b's route also crosses link 1, which
    # drops at 4 s: b fails there with 200 MB sent, a has the link alone from then: 1e9 - 2e8 = 8e8
    # left at 100 MB/s, ends at 12 s
    plan = FaultPlan([Outage("drop", 4.0, 6.0, 1)])
    run = run_fluid([FluidGroup([one(name="a"), one(name="b", route=(0, 1))])], [1e8, 1e9], plan)
    by = {o.name: o for o in run.outcomes}
    assert not by["b"].converged and by["b"].fault == "drop"
    assert by["b"].end_s == pytest.approx(4.0) and by["b"].bytes == pytest.approx(2e8)
    assert by["a"].converged and by["a"].end_s == pytest.approx(12.0, rel=1e-12)


def test_a_reset_fails_its_vm_only_and_a_start_during_it_is_refused():
    # one at a time: a is reset at 2 s (fails), b starts then while a's destination is down and is not
    # hit (its own destination), c is named by a reset in force when it starts: refused at once
    plan = FaultPlan([Outage("reset", 2.0, 30.0, None, "a"), Outage("reset", 0.0, 100.0, None, "c")])
    vms = [one(name="a"), one(name="b"), one(name="c")]
    run = run_fluid([FluidGroup(vms, concurrency=1)], [1e8], plan)
    by = {o.name: o for o in run.outcomes}
    assert by["a"].fault == "reset" and by["a"].end_s == pytest.approx(2.0)
    assert by["b"].converged and by["b"].end_s == pytest.approx(12.0, rel=1e-12)
    assert by["c"].fault == "reset" and by["c"].start_s == by["c"].end_s == pytest.approx(12.0, rel=1e-12)


def test_loss_cuts_each_connection_to_the_mathis_bound():
    # 1% loss on a 1 ms route: 1448 B / 2 ms x sqrt(3/2) / sqrt(0.01) = 8.867 MB/s per connection, two
    # channels 17.73 MB/s, under the 100 MB/s link
    bound = 1448 / 2e-3 * math.sqrt(1.5) / 0.1
    plan = FaultPlan([Outage("loss", 0.0, 1e6, 0, None, 0.01)], mss=1448)
    run = run_fluid([FluidGroup([one(memory=1e8, latency=1e-3, channels=2)])], [1e8], plan)
    assert run.end_s == pytest.approx(1e8 / (2 * bound), rel=1e-12)
    # no latency: nothing bounds it (the link's rate)
    run = run_fluid([FluidGroup([one(memory=1e8)])], [1e8], plan)
    assert run.end_s == pytest.approx(1.0, rel=1e-12)


# -- through the cluster ---------------------------------------------------------------------------

ONE_LINK_HOST = {"host": {"platform": "none", "concurrency": 1},
                 "links": [{"name": "nic", "bandwidth": "1Gbit/s"}],
                 "defaults": dict(QUIET), "vms": [{"name": "g", "config": QEMU, "set": {"memory.size": "1GiB"}}]}


def write_cluster(tmp_path, host=ONE_LINK_HOST, faults=(), random_faults=(), shared=(), **rollout):
    (tmp_path / "h.yaml").write_text(yaml.safe_dump(host))
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"rollout": {"host": "h.yaml", **rollout}, "shared": list(shared),
                                    "faults": list(faults), "random_faults": list(random_faults)}))
    return str(path)


def _idle_migration(m, rate):
    wave = m / rate
    return wave + DIRTY * wave / rate   # round 0, then the stop-and-copy of what it dirtied meanwhile


def test_a_drop_is_counted_failed_then_retried_after_the_link_is_back(tmp_path):
    m, rate = 2**30, 1e9 / 8 * EFF
    drop = {"kind": "drop", "link": "nic", "at": "3s", "duration": "2s"}
    c = load_cluster(write_cluster(tmp_path, faults=[drop], hosts=1, retries=1, seeds=1))
    row = batch_row(c, 1, 0)
    assert row["fault_failed"] == 1 and row["retried"] == 1 and row["migrated"] == 1 and row["failed"] == 0
    # failed at 3 s; started again when the link is back at 5 s, alone: its whole migration
    assert row["drain_s"] == pytest.approx(5.0 + _idle_migration(m, rate), rel=1e-9)
    # without retries the VM stays on its host, failed at the drop
    c0 = load_cluster(write_cluster(tmp_path, faults=[drop], hosts=1, retries=0, seeds=1))
    row0 = batch_row(c0, 1, 0)
    assert row0["failed"] == 1 and row0["fault_failed"] == 1 and row0["migrated"] == 0
    assert row0["drain_s"] == pytest.approx(3.0)
    res = run_rollout(c0, scheduler="inprocess", progress=False)
    assert res.distribution["fault_failure"] == {"p_run": 1.0, "p_attempt": 1.0}


def test_a_fault_on_a_shared_link_hits_every_host_of_the_batch(tmp_path):
    host = dict(ONE_LINK_HOST, links=[{"name": "nic", "bandwidth": "1Gbit/s"},
                                      {"name": "fabric", "bandwidth": "100Gbit/s"}])
    stall = {"kind": "stall", "link": "fabric", "at": "1s", "duration": "4s"}
    c = load_cluster(write_cluster(tmp_path, host, faults=[stall], shared=["fabric"], hosts=2, batch=2,
                                   retries=0, seeds=1))
    plan = fault_plan(c, 1, 0, 2)
    assert len(plan.outages) == 1            # one fabric for the batch
    row = batch_row(c, 1, 0)
    assert row["migrated"] == 2 and row["fault_failed"] == 0
    # round 0 takes 4 s longer; the guest dirtied through the stall too
    rate = 1e9 / 8 * EFF
    wave = 2**30 / rate + 4.0
    assert row["drain_s"] == pytest.approx(wave + DIRTY * wave / rate, rel=1e-9)
    # on each host's own NIC: one outage per host
    c2 = load_cluster(write_cluster(tmp_path, host, faults=[dict(stall, link="nic")], shared=["fabric"], hosts=2,
                                    batch=2, retries=0, seeds=1))
    assert len(fault_plan(c2, 1, 0, 2).outages) == 2


def _random_cluster(tmp_path, **rollout):
    host = dict(ONE_LINK_HOST, vms=[{"name": "g", "config": QEMU, "count": 3, "set": {"memory.size": "1GiB"}}])
    flaps = {"kind": "drop", "link": "nic", "mtbf": "20s", "duration": "1s", "seed": 5}
    return load_cluster(write_cluster(tmp_path, host, random_faults=[flaps], **{"hosts": 4, "batch": 2, "seeds": 6,
                                                                                 "retries": 2, **rollout}))


def test_random_faults_are_drawn_per_seed_batch_and_host_and_repeat(tmp_path):
    c = _random_cluster(tmp_path)
    a, b = fault_plan(c, 1, 0, 2), fault_plan(c, 1, 0, 2)
    a.cover(500.0), b.cover(500.0)
    assert a.outages == b.outages and a.outages
    # each host's NIC its own draw; another seed or batch another draw
    assert {o.link for o in a.outages} == {0, 1}
    first = lambda p, link: next(o.start for o in p.outages if o.link == link)   # noqa: E731
    assert first(a, 0) != first(a, 1)
    other = fault_plan(c, 2, 0, 2)
    other.cover(500.0)
    assert first(other, 0) != first(a, 0)
    later = fault_plan(c, 1, 1, 2)
    later.cover(500.0)
    assert first(later, 0) != first(a, 0)


def test_the_monte_carlo_is_the_same_in_process_and_on_a_local_cluster(tmp_path):
    c = _random_cluster(tmp_path)
    here = run_rollout(c, scheduler="inprocess", progress=False)
    again = run_rollout(c, scheduler="inprocess", progress=False)
    there = run_rollout(c, scheduler="local", workers=2, progress=False)
    table = lambda r: json.dumps(r.to_dict(), sort_keys=True)   # noqa: E731
    assert table(here) == table(again) == table(there)
    ff = here.distribution["fault_failure"]
    # a drop every ~20 s on each NIC against ~28 s of migrations per host: most runs meet one
    assert 0 < ff["p_run"] <= 1 and 0 < ff["p_attempt"] < 1
    assert sum(r["fault_failed"] for r in here.runs) == round(ff["p_attempt"] * sum(r["vms"] + r["retried"]
                                                                                      for r in here.runs))
    assert len({r["duration_s"] for r in here.runs}) > 1


@pytest.mark.parametrize("faults, random_faults, message", [
    ([{"kind": "drop", "link": "wan", "at": "1s", "duration": "1s"}], [], "faults[0].link: unknown link 'wan'"),
    ([{"kind": "reset", "vm": "nobody", "at": "1s", "duration": "1s"}], [], "faults[0].vm: unknown VM 'nobody'"),
    ([{"kind": "loss", "link": "nic", "at": "1s", "duration": "1s"}], [], "faults[0].loss"),
    ([{"kind": "flap", "link": "nic", "at": "1s", "duration": "1s"}], [], "faults[0].kind"),
    ([{"kind": "pause", "vm": "g", "at": "1s", "duration": "1s"}], [], "faults[0].kind: a pause fault needs"),
    ([], [{"kind": "drop", "link": "wan", "mtbf": "1h", "duration": "1s"}], "random_faults[0].link"),
    ([], [{"kind": "drop", "link": "nic", "mtbf": "0s", "duration": "1s"}], "random_faults[0].mtbf"),
])
def test_bad_faults_are_one_line_exit_2(tmp_path, capsys, faults, random_faults, message):
    path = write_cluster(tmp_path, faults=faults, random_faults=random_faults, hosts=1)
    assert main(["rollout", path, "--scheduler", "inprocess", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "c.yaml" in err and "\n" not in err and "Traceback" not in err


def test_cli_prints_the_fault_figures(tmp_path, capsys):
    drop = {"kind": "drop", "link": "nic", "at": "3s", "duration": "2s"}
    path = write_cluster(tmp_path, faults=[drop], hosts=1, retries=1, seeds=1)
    assert main(["rollout", path, "--scheduler", "inprocess", "--json", str(tmp_path / "r.json")]) == 0
    text = capsys.readouterr().out
    assert "failed by a fault" in text and "in 100.0% of the runs" in text
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["runs"][0]["fault_failed"] == 1 and doc["distribution"]["fault_failure"]["p_run"] == 1.0
