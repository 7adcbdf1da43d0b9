"""SimGrid 3.32's own output for several live migrations at once (experiments/simgrid_agreement/
results_concurrent.json, written by run_concurrent.py with build/migrate_many) against SimGrid's
published cloud-migration example output (its .tesh) and a fluid reference model written from
SimGrid's source (reference_concurrent.py): the committed data must be SimGrid's behaviour, so that the
simulator's several-migration runs can be held to it."""
import json
import math
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parents[1] / "experiments" / "simgrid_agreement"
DATA = json.loads((HERE / "results_concurrent.json").read_text())["records"]
BY_CASE = {r["case"]: r for r in DATA}

# s4u-cloud-migration.tesh (simgrid 12a63c78, identical at v3.32): "VMx migrated: Fafard->DST in T s"
TESH = {
    ("tesh_1000MB", "VM0"): 132.766,
    ("tesh_100MB", "VM0"): 13.346,
    ("tesh_two_same_dest", "VM0"): 265.454,
    ("tesh_two_same_dest", "VM1"): 265.454,
    ("tesh_two_diff_dest", "VM0"): 265.436,
    ("tesh_two_diff_dest", "VM1"): 216.509,
}


def vm(case, name):
    return next(v for v in BY_CASE[case]["vms"] if v["name"] == name)


@pytest.mark.parametrize("case, name", sorted(TESH))
def test_recorded_runs_print_the_tesh_figures(case, name):
    v = vm(case, name)
    assert v["completed"]
    # the tesh prints %g of the duration: 6 significant digits
    assert f"{v['total_time']:g}" == f"{TESH[(case, name)]:g}"
    assert any(f"{name} migrated: {v['src']}->{v['dst']} in {TESH[(case, name)]:g} s" in line
               for line in BY_CASE[case]["printed"])


def test_two_identical_migrations_share_the_bottleneck_in_half():
    # hand-computed, SimGrid's LV08 rules (SOURCES.md (e)): link 8 (8.158 MB/s) x 0.97, each flow also
    # loading it with 5% crosstraffic; three latency phases of 13.01 x 1976.025 us
    latencies = 3 * 13.01 * 1976.025e-6
    alone = 1e9 / (8.158e6 * 0.97 / 1.05) + latencies
    both = 2e9 / (8.158e6 * 0.97 / 1.05) + latencies
    assert vm("tesh_1000MB", "VM0")["total_time"] == pytest.approx(alone, rel=1e-9)
    assert vm("tesh_two_same_dest", "VM0")["total_time"] == pytest.approx(both, rel=1e-9)
    assert vm("tesh_two_same_dest", "VM1")["total_time"] == vm("tesh_two_same_dest", "VM0")["total_time"]


def test_migrations_sharing_nothing_take_their_single_times():
    # different source and destination hosts, no common link: exactly the lone runs
    assert vm("disjoint_routes", "VM0")["total_time"] == vm("tesh_1000MB", "VM0")["total_time"]
    assert vm("disjoint_routes", "VM2")["total_time"] == vm("single_tremblay_to_jupiter", "VM2")["total_time"]
    assert vm("lan_two_links_busy_i0.0", "VM1")["total_time"] == vm("lan_single_busy_i0.0", "VM0")["total_time"]


def test_every_idle_case_matches_the_reference_model():
    sys.path.insert(0, str(HERE))
    try:
        from reference_concurrent import predict
        import run_concurrent
    finally:
        sys.path.remove(str(HERE))
    cases = {c["name"]: c for c in run_concurrent.cases()}
    checked = 0
    for rec in DATA:
        c = cases[rec["case"]]
        if any(v["intensity"] for v in c["vms"]):
            continue
        ref = predict(c["links"], c["routes"], c["vms"])
        for v in rec["vms"]:
            assert ref[v["name"]]["total_time"] == pytest.approx(v["total_time"], rel=1e-9), (rec["case"], v["name"])
            assert ref[v["name"]]["downtime"] == pytest.approx(v["downtime"], rel=1e-9), (rec["case"], v["name"])
            checked += 1
    assert checked >= 20


def test_latency_weighted_sharing_favours_the_short_route():
    # LV08 shares a saturated link in inverse proportion to each flow's latency + weight_S/bandwidth
    # penalty: the 3-link route to Bourassa beats the 6-link route to Tremblay on their common link 8
    tremblay, bourassa = vm("tesh_two_diff_dest", "VM0"), vm("tesh_two_diff_dest", "VM1")
    assert bourassa["total_time"] < tremblay["total_time"]
    alone_b = vm("single_to_bourassa", "VM1")["total_time"]
    assert 1.5 * alone_b < bourassa["total_time"] < 2 * alone_b


def _experiment(name):
    """A module of experiments/simgrid_agreement."""
    import importlib
    sys.path.insert(0, str(HERE))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(HERE))


def _cases():
    """{case name: case} as run_concurrent.py defines them."""
    return {c["name"]: c for c in _experiment("run_concurrent").cases()}


def _idle_cases():
    """(SimGrid's record, its case) for every recorded case whose VMs write nothing."""
    cases = _cases()
    for rec in DATA:
        c = cases[rec["case"]]
        if not any(v["intensity"] for v in c["vms"]):
            yield rec, c


def test_the_fabric_solver_shares_links_as_simgrid_does():
    # pagesync_model.sim.interconnect.max_min_rates (the several-migration fabric's weighted max-min),
    # given SimGrid's LV08 penalties as weights and its crosstraffic folded into the capacities, gives
    # SimGrid's recorded times for every idle concurrent case within 0.1% (the tolerance of the single
    # runs): same-destination halving, latency-weighted sharing, unequal sizes, late starts
    from pagesync_model.sim.interconnect import max_min_rates
    predict = _experiment("reference_concurrent").predict
    worst, checked = 0.0, 0
    for rec, c in _idle_cases():
        if len(c["vms"]) < 2:
            continue
        got = predict(c["links"], c["routes"], c["vms"], solver=max_min_rates)
        for v in rec["vms"]:
            worst = max(worst, abs(got[v["name"]]["total_time"] / v["total_time"] - 1))
            assert got[v["name"]]["total_time"] == pytest.approx(v["total_time"], rel=1e-3), (rec["case"], v["name"])
            checked += 1
    assert checked >= 15
    assert worst < 1e-3


def _fluid_case(c, sharing, hosts=None):
    """The case's migrations through the rollout's fluid model (pagesync_model/rollout/fluid.py), each
    VM a group of its own starting at its offset, over the case's links with ``sharing``. A busy VM
    (given a migration speed, as migrate_many.cpp makes it with sg_vm_create_migratable) gets SimGrid's
    rules (`SimgridRule`): it dirties intensity x mig_speed bytes/s per core it gets of its source host,
    its working set 90% of its RAM as that function sets it (from the RAM in whole MiB), its stream
    capped at mig_speed; ``hosts`` maps a VM to another source host name (default: its own)."""
    from pagesync_model.rollout.fluid import FluidGroup, FluidVm, SimgridRule, run_fluid
    names = sorted(c["links"])
    index = {n: i for i, n in enumerate(names)}
    table = {}
    for src, dst, route in c["routes"]:
        table[(src, dst)] = table[(dst, src)] = route
    groups = []
    for v in c["vms"]:
        route = table[(v["src"], v["dst"])]
        lat = sum(c["links"][n][1] for n in route)
        rule, dirty, cap = None, 0.0, None
        if v["mig_speed"] is not None:
            ws = int(int(v["ram"] / 2**20) * 2**20 * 0.9)
            rule = SimgridRule((hosts or {}).get(v["name"], v["src"]), v["dst"], True, ws, 0.03)
            dirty, cap = v["mig_speed"] * v["intensity"], v["mig_speed"]
        fv = FluidVm(v["name"], v["ram"], dirty, [index[n] for n in route], 1.0, lat, cap=cap, simgrid=rule,
                     max_rounds=10_000)
        groups.append(FluidGroup([fv], 0, v["offset"] or 0.0))
    run = run_fluid(groups, [c["links"][n][0] for n in names], sharing=sharing,
                    latencies=[c["links"][n][1] for n in names])
    return {o.name: o for o in run.outcomes}


def _fluid_against_simgrid(cases, rounds):
    """Each (SimGrid's record, its case) through the fluid model with sharing 'simgrid': every VM converges,
    starts at its offset, takes SimGrid's total time and downtime within 0.1% (the single runs'
    tolerance) and, with ``rounds``, SimGrid's stage-2 rounds. Returns (worst relative error, VMs)."""
    worst, checked = 0.0, 0
    for rec, c in cases:
        got = _fluid_case(c, "simgrid")
        for v in rec["vms"]:
            o = got[v["name"]]
            assert o.converged
            if rounds:
                assert o.rounds - 1 == v["rounds"], (rec["case"], v["name"])   # o.rounds counts stage 1 too
            total = o.end_s - o.start_s
            worst = max(worst, abs(total / v["total_time"] - 1), abs(o.downtime_s / v["downtime"] - 1))
            assert total == pytest.approx(v["total_time"], rel=1e-3), (rec["case"], v["name"])
            assert o.downtime_s == pytest.approx(v["downtime"], rel=1e-3), (rec["case"], v["name"])
            assert o.start_s == (v["offset"] or 0.0)
            checked += 1
    return worst, checked


def test_the_fluid_model_with_simgrid_sharing_gives_simgrids_times():
    # every idle case (one to three migrations; same and different destinations, unequal sizes, a late
    # start, disjoint routes) through the fluid migration model with sharing 'simgrid' against
    # SimGrid's own output: total time and downtime within 0.1% (the single runs' tolerance)
    worst, checked = _fluid_against_simgrid(_idle_cases(), rounds=False)
    assert checked >= 20 and worst < 1e-3
    # equal sharing misses the cases that latency-weighted sharing decides (216.5 s to Bourassa)
    eq = _fluid_case(_cases()["tesh_two_diff_dest"], "equal")
    assert abs(eq["VM1"].end_s / vm("tesh_two_diff_dest", "VM1")["total_time"] - 1) > 0.05


def test_simgrid_sharing_by_hand():
    # two flows on one 100 MB/s link, routes of penalties p = latency + 20537 / bandwidth: shares in
    # inverse proportion to p of 0.97 x 100 MB/s / 1.05 (crosstraffic); a 10 ms route also bounded by
    # TCP-gamma 4194304 B / (2 x 10 ms) x 0.97
    from pagesync_model.sim.interconnect import shared_rates
    c = 0.97 * 1e8 / 1.05
    p1, p2 = 20537 / 1e8 + 1e-4, 20537 / 1e8 + 20537 / 1e9 + 2e-4
    rates = shared_rates("simgrid", [1e8, 1e9], [[0], [0, 1]], latencies=[1e-4, 1e-4])
    assert rates[0] == pytest.approx(c * (1 / p1) / (1 / p1 + 1 / p2), rel=1e-12)
    assert rates[1] == pytest.approx(c * (1 / p2) / (1 / p1 + 1 / p2), rel=1e-12)
    (lone,) = shared_rates("simgrid", [1e9], [[0]], latencies=[1e-2])
    assert lone == pytest.approx(0.97 * 4194304 / 2e-2, rel=1e-12)
    assert shared_rates("equal", [1e8], [[0], [0]]) == [5e7, 5e7]


def _busy_cases():
    """(SimGrid's record, its case) for every recorded case with a guest that writes (intensity 0.3)."""
    cases = _cases()
    for rec in DATA:
        c = cases[rec["case"]]
        if any(v["intensity"] for v in c["vms"]):
            yield rec, c


def test_simgrid_dirties_at_the_guests_share_of_its_host():
    # hand-computed from SimGrid's rule (dp_rate x flops computed, flops at the VM's share of its host):
    # the first stage-2 message is trunc(share x intensity x mig_speed x stage 1's duration)
    for case, share in (("lan_single_busy_i0.3", 1.0), ("lan_two_same_link_busy_i0.3", 0.5),
                        ("lan_two_hosts_one_link_busy_i0.3", 1.0), ("lan_two_links_busy_i0.3", 0.5)):
        for v in BY_CASE[case]["vms"]:
            stage1, first = v["sends"][0], v["sends"][1]
            assert first["stage"] == 2
            expect = share * 0.3 * 125e6 * (first["t"] - stage1["t"])
            assert first["bytes"] == pytest.approx(expect, abs=3), (case, v["name"])


def test_the_fluid_model_with_simgrids_rules_gives_simgrids_busy_cases():
    # the busy cases (intensity 0.3: one VM alone, two on one link from one host or from two hosts,
    # two on separate links from one host) through the fluid model with sharing 'simgrid' and each
    # VM's SimgridRule (dirtying at its share of its host's CPU, stage 2's stop rule) against
    # SimGrid's own output: the same stage-2 rounds, total time and downtime within 0.1%
    worst, checked = _fluid_against_simgrid(_busy_cases(), rounds=True)
    assert checked == 7 and worst < 1e-3
    # without the host's CPU shared (each VM on a host of its own), two VMs of one host on separate
    # links dirty at full rate and need more rounds than SimGrid's 3
    c = _cases()["lan_two_links_busy_i0.3"]
    apart = _fluid_case(c, "simgrid", hosts={"VM0": "a", "VM1": "b"})
    assert apart["VM0"].rounds - 1 == vm("lan_single_busy_i0.3", "VM0")["rounds"] == 5
    assert apart["VM0"].end_s > 1.2 * vm("lan_two_links_busy_i0.3", "VM0")["total_time"]


def test_simgrid_rule_shares_a_hosts_cores_by_hand():
    # two busy VMs on a 2-core host get a core each; three share two cores (2/3 each); the guest's
    # first stage-2 message is what it dirtied during stage 1: share x dirty x stage 1's duration,
    # stage 1 alone on a 100 MB/s link without latency taking 1e9 / (0.97 x 1e8 / 1.05) s
    from pagesync_model.rollout.fluid import FluidGroup, FluidVm, SimgridRule, run_fluid
    rate = 0.97 * 1e8 / 1.05
    for n, cores, share in ((2, 2, 1.0), (3, 2, 2 / 3), (2, 1, 0.5)):
        vms = [FluidVm(f"v{i}", 1e9, 1e7, [i], simgrid=SimgridRule("h", working_set=9e8), max_rounds=1)
               for i in range(n)]
        run = run_fluid([FluidGroup([v]) for v in vms], [1e8] * n, sharing="simgrid", latencies=[0.0] * n,
                        host_cores={"h": cores})
        for o in run.outcomes:
            assert not o.converged   # max_rounds 1: it stops after stage 1, its bytes tell the dirt
            assert o.bytes == pytest.approx(1e9, rel=1e-12)
        # with max_rounds 2 the second message is exactly the stage-1 dirt
        vms = [FluidVm(f"v{i}", 1e9, 1e7, [i], simgrid=SimgridRule("h", working_set=9e8), max_rounds=2)
               for i in range(n)]
        run = run_fluid([FluidGroup([v]) for v in vms], [1e8] * n, sharing="simgrid", latencies=[0.0] * n,
                        host_cores={"h": cores})
        for o in run.outcomes:
            assert o.bytes - 1e9 == pytest.approx(math.floor(share * 1e7 * 1e9 / rate), abs=2), (n, cores)
