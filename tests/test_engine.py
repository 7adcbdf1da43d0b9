"""The engine and the stratus policy, checked against independent truth.

- the version oracle: the correct algorithm never loses a write; the broken variants do;
- a hand-computed idle mirror (every cycle of the timeline worked out from the config);
- the geometric closed form for a sweep that never rewrites a dirty page;
- identical results on both backends, and convergence as the quantum shrinks;
- the SimPy event budget does not grow with CPUs or writes.
"""

import numpy as np
import pytest

from conftest import BACKENDS, small_config
from pagesync_model.sim.engine import Engine


def run(cfg, **kw):
    return Engine(cfg, **kw).run().to_dict()


# ---------------------------------------------------------------- the oracle

@pytest.mark.parametrize("workload", [
    ("workload.kind=uniform",),
    ("workload.kind=hotcold",),
    ("workload.kind=sequential", "workload.stride=3"),
    ("workload.kind=hotcold", "memory.layout=contiguous"),
    ("workload.kind=uniform", "memory.zero_fraction=0.3", "cpus.count=7"),
])
def test_correct_algorithm_never_loses_a_write(backend, workload):
    for seed in (1, 2, 3):
        d = run(small_config(*workload), backend=backend, seed=seed)
        assert d["lost_writes"] == 0, (workload, seed, d["stale_frames"])
        assert d["workload_writes"] > 5_000  # the oracle was actually exercised


def test_forced_blackout_with_merged_ranges_loses_nothing(backend):
    # A threshold of 0 can never be met: the last pass is forced, with far more dirty runs than
    # the 100-range list holds, so ranges merge and over-copy.
    d = run(small_config("stratus.threshold=0", "stratus.passes=2", "workload.kind=uniform"), backend=backend)
    blackout = d["per_pass"][-1]
    assert not d["converged"] and d["stop_reason"] == "last-pass"
    assert d["blackout_ranges"] == 100
    assert blackout["overcopy_pages"] > 0
    assert d["lost_writes"] == 0


def test_no_tlb_flush_loses_writes_through_cached_dirty_entries(backend):
    # A hot set that fits in the TLBs: its entries stay cached "dirty", so after a harvest clears the
    # PTE the CPU writes without setting the bit again. It takes two harvests after the copy of all
    # memory (one to clear with entries cached, one to miss the writes) and a small blackout list.
    base = ("memory.size=256MiB", "workload.working_set=128MiB", "workload.hot_fraction=0.001",
            "workload.hot_share=0.99", "cpus.tlb_entries=1024")
    good = run(small_config(*base), backend=backend)
    bad = run(small_config(*base), backend=backend, variant="no-tlb-flush")
    assert good["passes"] >= 3
    assert good["lost_writes"] == 0
    assert bad["lost_writes"] > 0
    assert good["tlb_flush_refills"] > 0 and bad["tlb_flush_refills"] == 0


def test_copy_before_clear_loses_writes_between_read_and_clear(backend):
    good = run(small_config(), backend=backend)
    bad = run(small_config(), backend=backend, variant="copy-before-clear")
    assert good["lost_writes"] == 0
    assert bad["lost_writes"] > 0
    # the stale frames really are stale: listed ones are a subset of the count
    assert 0 < len(bad["stale_frames"]) <= min(16, bad["lost_writes"])


# ---------------------------------------------------------------- the published algorithm's rules

@pytest.mark.parametrize("passes,threshold", [(0, 64), (3, 64), (5, 10**9), (6, 0)])
def test_threshold_and_pass_rules(passes, threshold):
    d = run(small_config(f"stratus.passes={passes}", f"stratus.threshold={threshold}"))
    pp = d["per_pass"]
    assert pp[0]["kind"] == "full" and pp[0]["pages_copied"] == d["memory_pages"]
    assert pp[-1]["kind"] == "blackout"
    assert all(r["kind"] == "pass" for r in pp[1:-1])
    assert len(pp) <= passes + 2
    # every pass that went on had a count at or above the threshold
    assert all(r["dirty_pages"] >= threshold for r in pp[1:-1])
    last = pp[-1]["dirty_pages"]
    assert d["converged"] == (last < threshold)
    if not d["converged"]:
        assert len(pp) == passes + 2
    # one copy call per maximal run: a pass never makes more calls than pages
    for r in pp[1:-1]:
        assert 0 < r["ranges"] <= r["pages_copied"] == r["dirty_pages"]


def test_blackout_list_holds_pinned_structures_and_dirty_pages():
    cfg = small_config()
    e = Engine(cfg)
    d = e.run().to_dict()
    m = e.machine.memory
    pinned = m.user_base - m.pt_base
    bo = d["per_pass"][-1]
    assert d["blackout_ranges"] <= cfg.stratus.max_copyrange
    assert bo["pages_copied"] == bo["dirty_pages"] + pinned + bo["overcopy_pages"]


# ---------------------------------------------------------------- hand-computed timeline

def test_idle_machine_timeline_by_hand():
    """Writes so rare none happens: copy all, one empty pass, blackout. Every cycle from the config."""
    cfg = small_config("workload.rate=0.001/s", "cpus.count=2", "memory.processes=4",
                       "tracking.rendezvous=5us", "tracking.pte_scan=2cycles", "tracking.pte_harvest=150cycles",
                       "tracking.tlb_flush=2us", "link.latency=2us", "link.per_copy=1us", "stratus.cutover=1ms")
    e = Engine(cfg)
    d = e.run().to_dict()
    m = e.machine.memory
    clock = 3e9
    ps = 4096
    n = 64 * 2**20 // ps
    assert d["workload_writes"] == 0
    # The initial harvest finds every page dirty except the zero pages (none here).
    kernel = m.user_base * (2 + 150)          # CPU 0 walks the kernel tables, all dirty at boot
    user_per_proc = (n - m.user_base) // 4
    # processes 0 and 2 on CPU 0, 1 and 3 on CPU 1; all of their PTEs dirty at boot
    seg = np.diff(m.segment_bounds)[1:]
    cpu0 = (seg[0] + seg[2]) * 152 + kernel
    cpu1 = (seg[1] + seg[3]) * 152
    assert abs(seg[0] - user_per_proc) <= 1
    first = round(5e-6 * clock + max(cpu0, cpu1) + 2e-6 * clock)
    copy_all = round((1e-6 + n * ps / 1e9) * clock)
    # the empty pass: a harvest that finds nothing dirty: scans only
    clean = round(5e-6 * clock + max((seg[0] + seg[2]) * 2 + m.user_base * 2, (seg[1] + seg[3]) * 2) + 2e-6 * clock)
    pinned = m.user_base - m.pt_base
    blackout_copy = round((1e-6 + pinned * ps / 1e9) * clock)
    latency = round(2e-6 * clock)
    cutover = round(1e-3 * clock)
    total = first + copy_all + clean + blackout_copy + latency + cutover
    assert d["passes"] == 2 and d["converged"]
    assert d["per_pass"][0]["brownout_s"] == pytest.approx(first / clock, abs=1e-12)
    assert d["per_pass"][0]["duration_s"] == pytest.approx((first + copy_all) / clock, abs=1e-12)
    assert d["downtime_s"] == pytest.approx((clean + blackout_copy + latency + cutover) / clock, abs=1e-12)
    assert d["total_time_s"] == pytest.approx(total / clock, abs=1e-12)
    assert d["bytes_sent"] == (n + pinned) * ps
    assert d["lost_writes"] == 0
    assert d["slowdown"] == pytest.approx(first * 2 / (2 * (first + copy_all)), rel=1e-9)


def test_first_copy_costs_once_per_page_the_partner_has_not_had():
    """The partner's first receipt of a page costs ``first_copy`` more (it allocates and faults in its
    copy): the full copy of an idle machine takes n x first_copy longer, the blackout's re-copy of
    pages it already holds nothing more."""
    over = ("workload.rate=0.001/s", "cpus.count=2", "memory.processes=4", "link.per_copy=1us",
            "stratus.cutover=1ms")
    base = run(small_config(*over))
    slow = run(small_config(*over, "link.first_copy=2us"))
    n = 64 * 2**20 // 4096
    assert slow["per_pass"][0]["duration_s"] - base["per_pass"][0]["duration_s"] == pytest.approx(n * 2e-6, abs=1e-9)
    assert slow["downtime_s"] == pytest.approx(base["downtime_s"], abs=1e-12)
    assert slow["per_pass"][-1]["pages_copied"] == base["per_pass"][-1]["pages_copied"] > 0
    assert slow["lost_writes"] == base["lost_writes"] == 0


# ---------------------------------------------------------------- closed form

def test_sequential_sweep_follows_the_geometric_model():
    """A sweep over a working set far larger than a pass sends never rewrites a dirty page, so each
    pass finds exactly the writes of the previous one: D_k = W_rate * T_{k-1}."""
    cfg = small_config("memory.size=256MiB", "workload.working_set=240MiB", "workload.kind=sequential",
                       "workload.rate=10k/s", "cpus.count=2", "memory.layout=contiguous", "stratus.threshold=8",
                       "stratus.passes=8", "sim.quantum=100us")
    d = run(cfg)
    pp = d["per_pass"]
    rate = 2 * 10_000
    for prev, cur in zip(pp[:-1], pp[1:]):
        # writes during the previous pass's copy (its brownout stopped the CPUs)
        running = prev["duration_s"] - prev["brownout_s"]
        assert cur["dirty_pages"] == pytest.approx(rate * running, rel=0.02, abs=3)
        assert cur["dirty_pages"] == prev["writes"] or prev["kind"] == "full"
    ratios = [b["dirty_pages"] / a["dirty_pages"] for a, b in zip(pp[1:-1], pp[2:]) if a["dirty_pages"] > 100]
    # lambda = dirty rate / link rate, per page including the per-call cost of isolated runs
    lam = rate * (4096 / 1e9)
    for r in ratios:
        assert r == pytest.approx(lam, rel=0.1)


# ---------------------------------------------------------------- backends, determinism, quantum

def strip(d):
    d = dict(d)
    d.pop("simulator")
    d.pop("backend")
    return d


@pytest.mark.skipif(len(BACKENDS) < 2, reason="the compiled backend is not built")
@pytest.mark.parametrize("variant", ["correct", "no-tlb-flush", "copy-before-clear"])
def test_backends_give_identical_results(variant):
    cfg = small_config("workload.kind=hotcold", "memory.zero_fraction=0.1")
    a = run(cfg, backend="numpy", variant=variant)
    b = run(cfg, backend="cython", variant=variant)
    assert strip(a) == strip(b)


def test_same_seed_same_result_and_seeds_differ():
    cfg = small_config("workload.kind=uniform")
    assert strip(run(cfg, seed=5)) == strip(run(cfg, seed=5))
    assert strip(run(cfg, seed=5))["per_pass"] != strip(run(cfg, seed=6))["per_pass"]


def test_results_converge_as_the_quantum_shrinks():
    metrics = {}
    for q in ("4ms", "2ms", "1ms", "500us", "250us", "125us"):
        d = run(small_config(f"sim.quantum={q}", "workload.kind=uniform", "stratus.threshold=0",
                             "stratus.passes=4"))
        metrics[q] = np.array([r["dirty_pages"] for r in d["per_pass"]] + [d["downtime_s"] * 1e6])
    ref = metrics["125us"]
    errors = [np.abs(metrics[q] - ref).sum() / ref.sum() for q in ("4ms", "1ms", "250us")]
    assert errors[0] > errors[1] > errors[2] or errors[2] < 0.002
    assert errors[2] < 0.01


def test_event_count_does_not_grow_with_cpus_or_writes():
    """Events per simulated quantum stay bounded (CPU ticks + link pieces + a few per pass), whatever
    the CPU count or the write rate; busier runs last longer, so compare per quantum."""
    def per_quantum(*o):
        r = Engine(small_config(*o)).run()
        d = r.to_dict()
        quanta = d["total_time_s"] / 1e-3
        return (r.simulator["waits"] - 4 * d["passes"]) / quanta, d["workload_writes"]
    base, w0 = per_quantum("cpus.count=2", "workload.rate=5k/s")
    many, w1 = per_quantum("cpus.count=32", "workload.rate=5k/s")
    busy, w2 = per_quantum("cpus.count=2", "workload.rate=400k/s")
    assert w1 > 10 * w0 and w2 > 50 * w0
    assert many <= base * 1.2 and busy <= base * 1.2
    assert base <= 2.5


def test_tracking_slows_the_workload():
    idle = run(small_config("workload.rate=0.001/s"))
    busy = run(small_config("workload.kind=uniform", "workload.rate=200k/s"))
    assert busy["slowdown"] > idle["slowdown"] > 0
    assert busy["dirty_bit_sets"] > 0 and busy["tracking_cycles"] > 0


def test_huge_pages_dirty_whole_two_megabyte_pages():
    """A write dirties its whole page: with 2 MiB pages the same writes make each recopy pass move far
    more bytes than with 4 KiB pages, unless tracking splits them (i.e. 4 KiB pages)."""
    over = ("memory.size=256MiB", "workload.working_set=128MiB", "workload.kind=uniform", "workload.rate=5k/s",
            "stratus.passes=1", "stratus.threshold=0", "memory.block=2MiB", "memory.layout=contiguous")
    small = run(small_config(*over))
    huge = run(small_config(*over, "memory.page_size=2MiB"))
    assert huge["page_size"] == 2 * 2**20 and huge["memory_pages"] == 128
    p_small, p_huge = small["per_pass"][1], huge["per_pass"][1]
    # the dirtied 4 KiB pages fall in at most as many 2 MiB pages, each sent whole
    assert p_huge["dirty_pages"] <= p_small["dirty_pages"]
    assert p_huge["bytes"] > 4 * p_small["bytes"]
    assert small["lost_writes"] == huge["lost_writes"] == 0


def test_scans_that_do_not_stop_the_cpus():
    """tracking.stop_cpus false (a user-space controller scanning /proc/PID/pagemap): no brownouts, the
    CPUs keep writing through every scan, the blackout stops them and scans once more; nothing is lost."""
    stopped = run(small_config("stratus.threshold=200"))
    running = run(small_config("stratus.threshold=200", "tracking.stop_cpus=false",
                               "tracking.rendezvous=2ms"))
    assert running["brownout_s"] == 0 and all(r["brownout_s"] == 0 for r in running["per_pass"])
    assert stopped["brownout_s"] > 0
    assert running["lost_writes"] == 0
    # the scans run with the CPUs writing: the writes during a scan's 2 ms land in the next pass,
    # so each pass finds at least the writes of the scan before it
    assert running["workload_writes"] > stopped["workload_writes"]
    # one scan per record, and the blackout's second scan once the CPUs have stopped
    assert running["dirty_sync_count"] == running["passes"] + 1
    bo = running["per_pass"][-1]
    assert bo["kind"] == "blackout" and bo["pages_copied"] >= bo["dirty_pages"]


def test_stop_scan_is_the_blackout_stop_cost_when_scans_run_concurrently():
    base = ("stratus.threshold=200", "tracking.stop_cpus=false", "tracking.rendezvous=2ms",
            "tracking.pte_scan=0cycles", "tracking.pte_harvest=0cycles", "tracking.tlb_flush=0us")
    a = run(small_config(*base))
    b = run(small_config(*base, "tracking.stop_scan=500us"))
    # everything before the stop is the same; the blackout is 1.5 ms shorter (2 ms harvest -> 0.5 ms)
    assert a["per_pass"][:-1] == b["per_pass"][:-1]
    assert a["downtime_s"] - b["downtime_s"] == pytest.approx(1.5e-3, abs=1e-6)


def _engine_run(*over):
    e = Engine(small_config(*over))
    d = e.run().to_dict()
    lo, hi = e.machine.memory.pinned_range
    return d, hi - lo


def test_a_running_scan_stops_the_cpus_as_soon_as_its_count_calls_for_the_blackout():
    """A user-space controller decides on the count of a scan that ran with the target writing and
    stops it at once: the rest of a pass's fixed work (the copy's preparation, the acknowledgement)
    only comes in passes that go on to copy. The blackout's second scan therefore finds only what was
    written between the two scans, whatever the passes' fixed cost: at 100k writes/s and a 1 us stop,
    a page or two, not the 500 a 5 ms pass overhead would have let in."""
    base = ("stratus.threshold=200", "tracking.stop_cpus=false", "tracking.pte_scan=0cycles",
            "tracking.pte_harvest=0cycles", "tracking.tlb_flush=0us", "tracking.stop_scan=1us",
            "workload.kind=sequential", "workload.rate=100k/s", "workload.working_set=4MiB", "cpus.count=1")
    for overhead in ("100us", "5ms"):
        d, pinned = _engine_run(*base, f"tracking.rendezvous={overhead}")
        bo = d["per_pass"][-1]
        assert bo["kind"] == "blackout" and d["lost_writes"] == 0
        second_scan = bo["pages_copied"] - bo["dirty_pages"] - bo["overcopy_pages"] - pinned
        assert 0 <= second_scan <= 2, (overhead, second_scan)


def test_tracking_outside_the_mirrored_memory_pins_nothing_and_compares_what_is_mirrored():
    """stratus.tracking_outside (a user-space mirror of one process): the blackout copies the pages
    the two scans found and nothing else (no page tables, no module structures), and loses nothing."""
    over = ("stratus.threshold=200", "tracking.stop_cpus=false", "stratus.nearby=0", "stratus.max_copyrange=100000",
            "tracking.stop_scan=1us")
    inside, pinned = _engine_run(*over)
    outside, _ = _engine_run(*over, "stratus.tracking_outside=true")
    bo_in, bo_out = inside["per_pass"][-1], outside["per_pass"][-1]
    assert bo_in["pages_copied"] - bo_in["dirty_pages"] >= pinned > 0
    assert 0 <= bo_out["pages_copied"] - bo_out["dirty_pages"] <= 2
    assert outside["lost_writes"] == inside["lost_writes"] == 0
