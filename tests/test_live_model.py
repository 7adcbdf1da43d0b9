"""The simulator's side of the live mirror's stop: ``stratus.stop`` (at-once, the published rule, or
after-copy: copy the deciding pass with the CPUs running, then stop, scan and copy what was written
meanwhile) and ``stratus.stop_per_page`` (a blackout cost per page mirrored so far), checked against
hand-computed cases: a sequential writer at a known rate over a link of a known speed, with every
tracking cost zero, so that each pass finds the pages written while the previous one copied.
"""
import pytest

from pagesync_model.config import config_from_dict
from pagesync_model.sim.engine import simulate

RATE = 20_000          # pages/s, the writer's (one CPU)
PAGE_S = 4096 / 400e6  # s per page on a 400 MB/s link
STOP = 50e-6           # the blackout's stop and final scan


def run(stop="at-once", per_page="0s", backend="auto"):
    cfg = {
        "policy": "stratus",
        "memory": {"size": "64MiB", "kernel_size": "0B", "layout": "contiguous", "zero_fraction": 0.0},
        "cpus": {"count": 1, "clock": "1GHz"},
        "workload": {"rate": f"{RATE}/s", "working_set": "48MiB", "kind": "sequential"},
        "tracking": {"rendezvous": "0us", "pte_scan": "0cycles", "pte_harvest": "0cycles", "tlb_flush": "0us",
                     "stop_cpus": False, "stop_scan": f"{STOP * 1e6:g}us"},
        "link": {"bandwidth": "400MB/s", "latency": "0us", "per_copy": "0us"},
        "stratus": {"passes": 4, "threshold": 1000, "cutover": "0us", "tracking_outside": True,
                    "max_copyrange": 100000, "nearby": 0, "stop": stop, "stop_per_page": per_page},
        "sim": {"quantum": "20us"},
    }
    return simulate(config_from_dict(cfg), backend=backend).to_dict()


def counts(d):
    return [(p["kind"], p["dirty_pages"], p["pages_copied"]) for p in d["per_pass"]]


def test_at_once_stops_on_the_deciding_scan():
    d = run()
    kinds = [k for k, _, _ in counts(d)]
    assert kinds == ["full", "pass", "blackout"]
    full, p1, bl = counts(d)
    # each pass finds what the writer wrote while the previous pass copied
    for prev, cur in ((full, p1), (p1, bl)):
        assert cur[1] == pytest.approx(RATE * prev[2] * PAGE_S, rel=0.02, abs=3)
    assert bl[1] < 1000 <= p1[1] and d["converged"]
    # at once: the blackout copies the deciding scan's pages (and the few written during the stop)
    assert bl[2] == pytest.approx(bl[1], abs=3)
    assert d["downtime_s"] == pytest.approx(STOP + bl[2] * PAGE_S, rel=0.01)


def test_after_copy_copies_the_deciding_pass_then_stops():
    a, b = run(), run("after-copy")
    # the same run up to the decision; then the deciding pass is copied with the writer running
    assert counts(b)[:2] == counts(a)[:2]
    kinds = [k for k, _, _ in counts(b)]
    assert kinds == ["full", "pass", "pass", "blackout"]
    deciding, bl = counts(b)[2], counts(b)[3]
    assert deciding[1] == counts(a)[2][1] < 1000 and deciding[2] == deciding[1]
    # the blackout's scan finds what was written during that copy, and copies it
    assert bl[1] == pytest.approx(RATE * deciding[2] * PAGE_S, rel=0.05, abs=3)
    assert bl[2] == pytest.approx(bl[1], abs=3)
    assert b["downtime_s"] == pytest.approx(STOP + bl[2] * PAGE_S, rel=0.01)
    assert b["downtime_s"] < a["downtime_s"] / 3
    assert b["converged"] and b["stop_reason"] == "threshold" and b["lost_writes"] == 0


@pytest.mark.parametrize("stop", ["at-once", "after-copy"])
def test_stop_per_page_is_paid_once_per_page_mirrored(stop):
    a, b = run(stop), run(stop, "100ns")
    assert counts(a) == counts(b)  # spent in the blackout only: the passes are the same
    mirrored = counts(a)[0][2]  # every page the full copy sent
    assert mirrored > 16000
    assert b["downtime_s"] - a["downtime_s"] == pytest.approx(100e-9 * mirrored, rel=1e-3)


def test_after_copy_is_the_same_on_both_backends():
    assert counts(run("after-copy", "20ns", "cython")) == counts(run("after-copy", "20ns", "numpy"))


def test_bad_stop_is_refused():
    from pagesync_model.schema import ConfigError
    with pytest.raises(ConfigError, match="stratus.stop"):
        run("later")
    with pytest.raises(ConfigError, match="stratus.stop_per_page"):
        run("at-once", "-1us")
