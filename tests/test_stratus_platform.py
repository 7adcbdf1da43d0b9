"""stratus.setup (a fixed cost per resync, in the blackout) and stratus.brownout: false (all memory
copied with the CPUs stopped), held to hand-computed times."""
import pytest

from pagesync_model.config import config_from_dict
from pagesync_model.sim.engine import simulate

BASE = {"policy": "stratus", "memory": {"size": "256MiB", "kernel_size": "16MiB"}, "cpus": {"count": 2},
        "workload": {"rate": "20000/s", "working_set": "64MiB"},
        "link": {"bandwidth": "1GiB/s", "latency": "0us", "per_copy": "0us"},
        "tracking": {"rendezvous": "0us", "pte_scan": "0cycles", "pte_harvest": "0cycles", "tlb_flush": "0us"},
        "stratus": {"cutover": "0s"}}


def run(*over, backend="auto"):
    return simulate(config_from_dict(BASE, list(over)), backend=backend).to_dict()


@pytest.mark.parametrize("backend", ["cython", "numpy"])
def test_no_brownout_is_one_stopped_copy_of_all_memory(backend):
    d = run("stratus.brownout=false", "stratus.setup=0.5s", "stratus.cutover=3ms", backend=backend)
    # by hand: 0.5 s + 256 MiB at 1 GiB/s (0.25 s) + 3 ms, harvest costs zeroed above
    assert d["downtime_s"] == pytest.approx(0.5 + 0.25 + 0.003, abs=1e-7)  # time runs in whole cycles
    assert d["total_time_s"] == pytest.approx(d["downtime_s"], rel=1e-9)
    assert d["brownouts"] == 0 and d["passes"] == 1 and d["stop_reason"] == "no-brownout"
    assert d["pages_sent"] == 256 * 256 and d["lost_writes"] == 0


def test_setup_adds_to_the_blackout_and_nothing_else():
    plain, slow = run(), run("stratus.setup=40ms")
    assert slow["downtime_s"] - plain["downtime_s"] == pytest.approx(0.040, abs=2e-6)
    assert slow["passes"] == plain["passes"] and slow["lost_writes"] == plain["lost_writes"] == 0


def test_no_brownout_does_not_depend_on_the_page_size():
    small, large = run("stratus.brownout=false"), run("stratus.brownout=false", "memory.page_size=2MiB")
    assert small["downtime_s"] == pytest.approx(large["downtime_s"], rel=1e-6)
