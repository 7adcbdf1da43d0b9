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


def test_the_fabric_solver_shares_links_as_simgrid_does():
    # pagesync_model.sim.interconnect.max_min_rates (the several-migration fabric's weighted max-min),
    # given SimGrid's LV08 penalties as weights and its crosstraffic folded into the capacities, gives
    # SimGrid's recorded times for every idle concurrent case within 0.1% (the tolerance of the single
    # runs): same-destination halving, latency-weighted sharing, unequal sizes, late starts
    from pagesync_model.sim.interconnect import max_min_rates
    sys.path.insert(0, str(HERE))
    try:
        from reference_concurrent import predict
        import run_concurrent
    finally:
        sys.path.remove(str(HERE))
    cases = {c["name"]: c for c in run_concurrent.cases()}
    worst, checked = 0.0, 0
    for rec in DATA:
        c = cases[rec["case"]]
        if any(v["intensity"] for v in c["vms"]) or len(c["vms"]) < 2:
            continue
        got = predict(c["links"], c["routes"], c["vms"], solver=max_min_rates)
        for v in rec["vms"]:
            worst = max(worst, abs(got[v["name"]]["total_time"] / v["total_time"] - 1))
            assert got[v["name"]]["total_time"] == pytest.approx(v["total_time"], rel=1e-3), (rec["case"], v["name"])
            checked += 1
    assert checked >= 15
    assert worst < 1e-3
