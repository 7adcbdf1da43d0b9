"""The qemu policy against hand-computed cases and QEMU 10.0's documented rules.

Facts checked (see pagesync_model/policies/qemu.py for the QEMU functions they come from):
an idle guest migrates in one pass with exactly 3 bitmap syncs (setup, exact, completion), as
measured on real QEMU; zero pages cost 9 bytes and normal pages 4104; the switch-over happens only
when the pages left are below bandwidth x downtime-limit; a guest dirtying faster than the rate
limit never converges and reports its expected downtime; auto-converge steps 20, 30, ... 90, 99.
"""
import pytest

from conftest import BACKENDS
from pagesync_model.config import config_from_dict
from pagesync_model.sim.engine import Engine

VM = {
    "policy": "qemu",
    "memory": {"size": "128MiB", "kernel_size": "8MiB", "zero_fraction": 0.5, "processes": 4},
    "cpus": {"count": 1, "clock": "3GHz", "dirty_update": "1.5us"},
    "workload": {"kind": "uniform", "rate": "4k/s", "working_set": "32MiB"},
    "link": {"bandwidth": "1GB/s", "latency": "20us", "per_copy": "0us"},
    "qemu": {"max_bandwidth": "32MiB/s"},
    "sim": {"quantum": "1ms", "time_limit": "60s"},
}


def run(*overrides, backend="auto"):
    e = Engine(config_from_dict(VM, overrides), backend=backend)
    return e, e.run().to_dict()


def test_idle_guest_one_pass_three_syncs_and_exact_bytes():
    e, d = run("workload.rate=0.001/s")
    m = e.machine.memory
    assert d["converged"] and d["workload_writes"] == 0
    assert d["dirty_sync_count"] == 3               # setup, exact, completion
    zero = int((m.versions == 0).sum())
    assert d["zero_pages"] == zero                  # QEMU's "duplicate"
    assert d["normal_pages"] + d["zero_pages"] == m.n_frames   # every page exactly once
    assert d["bytes_sent"] == d["normal_pages"] * 4104 + zero * 9 + 100 * 1024
    assert d["lost_writes"] == 0
    # The switch-over comes once the pages still unsent from the first round fit in the threshold;
    # they go in the blackout, unthrottled, with the device state.
    bo = d["per_pass"][-1]
    assert 0 < bo["pages_copied"] * 4096 < d["threshold_bytes"]
    assert bo["bytes"] == (bo["pages_copied"] - bo["zero_pages"]) * 4104 + bo["zero_pages"] * 9 + 100 * 1024
    # downtime by hand: stopping the VM (1 ms), the last sync (scan + TLB flush), those bytes at link
    # speed with the latency after the pages and after the device state, the destination's start (1 ms)
    clock = 3e9
    sync = round(m.n_frames * 2 + 2e-6 * clock)
    want = round(1e-3 * clock) + sync + bo["bytes"] / 1e9 * clock + 2 * round(20e-6 * clock) + round(1e-3 * clock)
    assert d["downtime_s"] == pytest.approx(want / clock, abs=5 / clock)
    parts = d["downtime_parts"]
    assert parts["vm_stop"] == pytest.approx(1e-3) and parts["dest_start"] == pytest.approx(1e-3)
    assert parts["last_sync"] == pytest.approx(sync / clock, abs=1 / clock)
    assert parts["device_state"] == pytest.approx((100 * 1024 / 1e9 * clock + round(20e-6 * clock)) / clock,
                                                  abs=2 / clock)
    assert sum(parts.values()) == pytest.approx(d["downtime_s"], abs=1e-12)
    # QEMU's counter stops on the source: without the destination's start
    assert d["qemu_downtime_s"] == pytest.approx(d["downtime_s"] - 1e-3, abs=1e-12)


def test_stop_costs_add_up():
    """Each named cost of the stop adds its own duration to the blackout, by hand: a 20 ms cleanup
    inside the stop (QEMU's dirty-log stop before it moved after completion), two round trips of
    the 20 us link, 5 ms to stop the VM instead of 1 and 3 ms to start it instead of 1; and a cost
    per page the destination receives for the first time: an idle guest's last pages were never sent."""
    _, base = run("workload.rate=0.001/s")
    _, more = run("workload.rate=0.001/s", "qemu.stop_cleanup=20ms", "qemu.handshake_round_trips=2",
                  "qemu.vm_stop=5ms", "qemu.dest_start=3ms")
    assert more["downtime_s"] - base["downtime_s"] == pytest.approx(20e-3 + 4 * 20e-6 + 4e-3 + 2e-3, abs=1e-8)
    assert more["qemu_downtime_s"] - base["qemu_downtime_s"] == pytest.approx(20e-3 + 4 * 20e-6 + 4e-3, abs=1e-8)
    assert more["downtime_parts"]["handshake"] == pytest.approx(4 * 20e-6, abs=1e-8)
    e, touch = run("workload.rate=0.001/s", "qemu.dest_first_touch=10us")
    bo = touch["per_pass"][-1]
    fresh = touch["dest_first_touch_pages"]
    # every non-zero page left for the blackout is one the destination never had (an idle guest's
    # first round had not reached it)
    assert fresh == bo["pages_copied"] - bo["zero_pages"] > 0
    assert touch["downtime_parts"]["dest_first_touch"] == pytest.approx(fresh * 10e-6, abs=1e-8)
    assert touch["downtime_s"] - base["downtime_s"] == pytest.approx(fresh * 10e-6, abs=1e-8)


@pytest.mark.parametrize("max_bw,measured", [(32, 273.16), (64, 546.33), (128, 1082.14)])
def test_rate_limit_overshoots_to_the_next_stream_flush(max_bw, measured):
    """QEMU counts bytes only when its stream flushes 32 pages (131328 B), so a 100 ms window carries
    (floor(quota / 131328) + 1) flushes: the Mbit/s measured on real QEMU 10.0 at each limit."""
    _, d = run("workload.rate=0.001/s", f"qemu.max_bandwidth={max_bw}MiB/s")
    flush = 32 * 4104
    want = (max_bw * 2**20 * 0.1 // flush + 1) * flush * 8 / 0.1 / 1e6
    one_page = 4104 * 8 / 0.1 / 1e6   # zero pages (9 B) can end a window up to one page late
    assert want == pytest.approx(measured, abs=0.01)
    assert want <= d["mbps_last_period"] <= want + one_page


@pytest.mark.parametrize("backend", BACKENDS)
def test_switchover_only_below_bandwidth_times_downtime_limit(backend):
    e, d = run("workload.rate=6k/s", backend=backend)
    assert d["converged"] and d["lost_writes"] == 0
    blackout = d["per_pass"][-1]
    # the pages left at the deciding sync fit in the threshold; every earlier sync's did not
    assert blackout["dirty_pages"] * 4096 < d["threshold_bytes"]
    assert d["threshold_bytes"] == pytest.approx(
        (d["mbps_last_period"] * 1e6 / 8) * 0.3, rel=1e-9)
    for r in d["per_pass"][1:-1]:
        assert r["kind"] == "pass" and r["pages_copied"] > 0


def test_smaller_downtime_limit_needs_more_passes():
    _, loose = run("workload.rate=7k/s", "qemu.downtime_limit=300ms")
    _, tight = run("workload.rate=7k/s", "qemu.downtime_limit=30ms")
    assert loose["converged"] and tight["converged"]
    assert tight["dirty_sync_count"] > loose["dirty_sync_count"]
    assert tight["per_pass"][-1]["dirty_pages"] < loose["per_pass"][-1]["dirty_pages"]


def test_dirtying_faster_than_the_link_never_converges():
    _, d = run("workload.kind=sequential", "workload.working_set=100MiB", "workload.rate=20k/s",
               "memory.zero_fraction=0.1", "sim.time_limit=20s")
    assert not d["converged"] and d["stop_reason"] == "time-limit"
    assert d["downtime_s"] is None and d["lost_writes"] is None
    assert d["expected_downtime_s"] > 0.3
    assert d["total_time_s"] == pytest.approx(20, abs=0.2)


def test_auto_converge_steps_twenty_to_ninety_nine():
    _, d = run("workload.kind=sequential", "workload.working_set=100MiB", "workload.rate=400k/s",
               "memory.zero_fraction=0.1", "qemu.auto_converge=true", "sim.time_limit=200s")
    steps = [pct for _, pct in d["throttle_pct"]]
    assert steps == [20, 30, 40, 50, 60, 70, 80, 90, 99]
    times = [t for t, _ in d["throttle_pct"]]
    assert all(b - a >= 1.0 for a, b in zip(times, times[1:]))  # a throttle step needs two >= 1 s periods
    assert d["converged"] and d["lost_writes"] == 0
    _, off = run("workload.kind=sequential", "workload.working_set=100MiB", "workload.rate=400k/s",
                 "memory.zero_fraction=0.1", "sim.time_limit=30s")
    assert not off["converged"] and off["throttle_pct"] == []


def test_xbzrle_sends_deltas_for_cached_pages():
    # XBZRLE starts after the first complete round over RAM: it takes a migration of many rounds, here
    # a sweep at 3/4 of the link rate (lambda = 0.75)
    base = ("workload.kind=sequential", "workload.working_set=64MiB", "workload.rate=6k/s",
            "qemu.xbzrle_cache=128MiB", "memory.zero_fraction=0.1")
    _, plain = run(*base)
    _, x = run(*base, "qemu.xbzrle=true", "qemu.xbzrle_cache=64MiB")
    assert x["xbzrle"]["pages"] > 0 and x["lost_writes"] == 0
    assert x["bytes_sent"] < plain["bytes_sent"]
    _, same = run(*base, "qemu.xbzrle=true", "qemu.xbzrle_unchanged=1.0")
    # an unchanged page is skipped before it counts (save_xbzrle_page returns before pages++)
    assert same["xbzrle"]["skipped"] > 0 and same["xbzrle"]["pages"] == 0
    assert same["xbzrle"]["bytes"] == 0 and same["lost_writes"] == 0


@pytest.mark.parametrize("extra", [(), ("workload.kind=hotcold",), ("memory.layout=contiguous",),
                                   ("qemu.auto_converge=true", "workload.rate=30k/s"),
                                   ("qemu.xbzrle=true",)])
def test_no_lost_writes(extra):
    _, d = run(*extra)
    assert d["converged"] and d["lost_writes"] == 0


def test_paced_writer_pays_tracking_from_idle_time_a_cpu_bound_one_from_its_writes():
    """Every sync clears the dirty bits, so the first write to each page after it costs a dirty-bit
    update (20 us here, to make it count). A dirtier paced by the guest clock (QEMU lab: 15999.98 writes/s during migration for 16000
    requested) absorbs that in the time it sleeps anyway; a CPU-bound writer loses exactly the tracking
    cycles it spent: writes = rate x (running time - tracking time)."""
    over = ("workload.rate=16k/s", "cpus.dirty_update=20us", "sim.time_limit=3s",
            "qemu.max_bandwidth=8MiB/s")  # never converges: three full seconds of tracked writing
    e_paced, paced = run(*over, "workload.paced=true")
    e_bound, bound = run(*over)
    assert not paced["converged"] and not bound["converged"]
    secs = e_paced.machine.cpus.running_cycles / e_paced.machine.clock
    assert paced["workload_writes"] == pytest.approx(16000 * secs, abs=2)
    c = e_bound.machine.cpus
    assert c.tracking_cycles > 0.005 * c.running_cycles     # tracking is not negligible here
    expected = 16000 * (c.running_cycles - c.tracking_cycles) / e_bound.machine.clock
    assert bound["workload_writes"] == pytest.approx(expected, rel=2e-3)


def test_paced_writer_keeps_its_rate_until_the_throttle_sleep_exceeds_its_catchup():
    """Measured on QEMU 10 (notes in pagesync_model/policies/qemu.py): a clock-paced guest dirtier
    kept 32000 writes/s from 20% to 90% throttle and collapsed only at 99%, whose 990 ms sleep per
    10 ms slice exceeds its 200 ms catch-up; a CPU-bound writer slows down at once."""
    over = ("workload.kind=sequential", "workload.working_set=100MiB", "workload.rate=12k/s",
            "memory.zero_fraction=0.1", "qemu.auto_converge=true", "sim.time_limit=200s")
    _, paced = run(*over, "workload.paced=true")
    _, bound = run(*over)
    assert [p for _, p in paced["throttle_pct"]] == [20, 30, 40, 50, 60, 70, 80, 90, 99]
    assert len(bound["throttle_pct"]) < len(paced["throttle_pct"])
    assert paced["converged"] and bound["converged"] and paced["lost_writes"] == bound["lost_writes"] == 0
    # sleep per slice: 10 ms x p / (1 - p): 90% -> 90 ms (caught up), 99% -> 990 ms (dropped)
    assert 0.010 * 0.9 / 0.1 <= 0.2 < 0.010 * 0.99 / 0.01
