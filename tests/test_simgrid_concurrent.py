"""SimGrid 3.32's own output for several live migrations at once (experiments/simgrid_agreement/
results_concurrent.json, written by run_concurrent.py with build/migrate_many) against SimGrid's
published cloud-migration example output (its .tesh) and a fluid reference model written from
SimGrid's source (reference_concurrent.py): the committed data must be SimGrid's behaviour, so that the
simulator's several-migration runs can be held to it."""
import json
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


def _fluid_case(c, sharing):
    """The case's migrations through the rollout's fluid model (pagesync_model/rollout/fluid.py), each
    VM a group of its own starting at its offset, over the case's links with ``sharing``."""
    from pagesync_model.rollout import FluidGroup, FluidVm, run_fluid
    names = sorted(c["links"])
    index = {n: i for i, n in enumerate(names)}
    table = {}
    for src, dst, route in c["routes"]:
        table[(src, dst)] = table[(dst, src)] = route
    groups = []
    for v in c["vms"]:
        route = table[(v["src"], v["dst"])]
        lat = sum(c["links"][n][1] for n in route)
        fv = FluidVm(v["name"], v["ram"], 0.0, [index[n] for n in route], 1.0, lat)
        groups.append(FluidGroup([fv], 0, v["offset"] or 0.0))
    run = run_fluid(groups, [c["links"][n][0] for n in names], sharing=sharing,
                    latencies=[c["links"][n][1] for n in names])
    return {o.name: o for o in run.outcomes}


def test_the_fluid_model_with_simgrid_sharing_gives_simgrids_times():
    # every idle case (one to three migrations; same and different destinations, unequal sizes, a late
    # start, disjoint routes) through the fluid migration model with sharing 'simgrid' against
    # SimGrid's own output: total time and downtime within 0.1% (the single runs' tolerance)
    worst, checked = 0.0, 0
    for rec, c in _idle_cases():
        got = _fluid_case(c, "simgrid")
        for v in rec["vms"]:
            o = got[v["name"]]
            assert o.converged
            total = o.end_s - o.start_s
            worst = max(worst, abs(total / v["total_time"] - 1), abs(o.downtime_s / v["downtime"] - 1))
            assert total == pytest.approx(v["total_time"], rel=1e-3), (rec["case"], v["name"])
            assert o.downtime_s == pytest.approx(v["downtime"], rel=1e-3), (rec["case"], v["name"])
            assert o.start_s == (v["offset"] or 0.0)
            checked += 1
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
