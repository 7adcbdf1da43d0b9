"""qemu.rules "1.6" (QEMU 1.6, commit 7ca1dfad) held to hand-computed cases, and its config checks."""
import pytest

from pagesync_model.config import ConfigError, config_from_dict
from pagesync_model.sim.engine import simulate

IDLE = {"policy": "qemu", "memory": {"size": "64MiB", "kernel_size": "4MiB"}, "cpus": {"count": 2},
        "workload": {"rate": "1/s", "working_set": "4KiB"},
        "link": {"bandwidth": "1GB/s", "latency": "0us", "per_copy": "0us"},
        "qemu": {"rules": "1.6", "max_bandwidth": "32MiB/s", "downtime_limit": "30ms",
                 "vm_stop": "1ms", "dest_start": "1ms", "stop_cleanup": "0us", "handshake_round_trips": 0}}
BUSY = {**IDLE, "workload": {"kind": "sequential", "rate": "2000/s", "working_set": "16MiB"},
        "link": {"bandwidth": "10MB/s", "latency": "0us", "per_copy": "0us"},
        "qemu": {"rules": "1.6", "max_bandwidth": "1GiB/s", "downtime_limit": "30ms", "auto_converge": True},
        "sim": {"time_limit": "25s"}}


@pytest.mark.parametrize("backend", ["cython", "numpy"])
def test_rate_limit_is_a_tenth_of_max_bandwidth_per_100ms(backend):
    d = simulate(config_from_dict(IDLE), backend=backend).to_dict()
    # by hand: a window may carry 32 MiB / 10 = 3,355,443 bytes and is exceeded by the page that takes
    # it past that: 818 pages of 8 + 4096 bytes. 16,384 non-zero pages: 20 full windows (2.0 s) leave
    # 24 pages, under max_size (~33.5 kB/ms x 30 ms), so the VM stops at 2.0 s after the 1 ms setup
    per_window = 3355443 // 4104 + 1
    assert per_window == 818
    windows = 16384 // per_window
    assert d["converged"]
    assert d["total_time_s"] - d["downtime_s"] == pytest.approx(0.001 + windows * 0.1, abs=2e-3)
    # the rest at 1 GB/s: 24 pages, the 100 KiB of device state, the 1 ms vm_stop and 1 ms dest_start
    rest = (16384 - windows * per_window) * 4104 + 102400
    assert d["downtime_s"] == pytest.approx(0.002 + rest / 1e9, abs=1e-4)


def test_current_rules_differ_on_the_same_guest():
    # QEMU 10 counts a window in 32-page flushes: the same guest and limit take another time
    a = simulate(config_from_dict(IDLE)).to_dict()["total_time_s"]
    b = simulate(config_from_dict(IDLE, ["qemu.rules=current"])).to_dict()["total_time_s"]
    assert abs(a - b) > 0.05


def test_auto_converge_sleeps_30ms_every_41ms_of_sending():
    on = simulate(config_from_dict(BUSY)).to_dict()
    off = simulate(config_from_dict(BUSY, ["qemu.auto_converge=false"])).to_dict()
    # 2 x 2000 sequential writes/s (16 MB/s of new dirt) against a 10 MB/s link: no convergence without
    # the throttle, which comes on only after six qualifying 1 s periods
    assert not off["converged"] and off["stop_reason"] == "time-limit" and off["throttle_on_s"] is None
    assert on["converged"] and on["throttle_on_s"] > 6
    stop = on["total_time_s"] - on["downtime_s"]
    # the thread sends almost all the time once the throttle is on: one 30 ms sleep per 41 ms (the
    # check is "more than 40" whole ms)
    assert on["throttle_sleeps"] == pytest.approx((stop - on["throttle_on_s"]) / 0.041, abs=3)
    # every vCPU loses exactly the slept time: writes = rate x CPUs x (running time - sleeps x 30 ms)
    expected = 2 * 2000 * (stop - on["throttle_sleeps"] * 0.030)
    assert on["workload_writes"] == pytest.approx(expected, rel=5e-3)
    assert on["lost_writes"] == 0


@pytest.mark.parametrize("over, path", [
    (["qemu.xbzrle=true"], "qemu.xbzrle"),
    (["qemu.throttle_initial=30"], "qemu.throttle_initial"),
    (["qemu.throttle_trigger=80"], "qemu.throttle_trigger"),
    (["operator.kind=nova"], "operator.kind"),
    (["qemu.rules=1.5"], "qemu.rules"),
])
def test_what_1_6_does_not_have_is_refused(over, path):
    with pytest.raises(ConfigError) as err:
        config_from_dict(IDLE, over)
    assert err.value.path == path, str(err.value)


def test_zero_page_test_costs_the_thread_its_time_per_zero_page():
    # half of the 16,384 pages are zero; with no binding rate limit the thread tests each zero page it
    # sends for qemu.zero_page_test, sending nothing meanwhile: the first pass takes 8,192 x 10 us longer,
    # plus one sync (16,384 pages x 2 cycles at 3 GHz + the 2 us TLB flush) for each extra sync the slower
    # pass runs; the stop (nothing left to send) is unchanged
    guest = {**IDLE, "memory": {**IDLE["memory"], "zero_fraction": 0.5},
             "qemu": {**IDLE["qemu"], "max_bandwidth": "10GiB/s"}}
    free = simulate(config_from_dict(guest)).to_dict()
    paid = simulate(config_from_dict(guest, ["qemu.zero_page_test=10us"])).to_dict()
    assert free["zero_pages"] == paid["zero_pages"] == 8192
    syncs = paid["dirty_sync_count"] - free["dirty_sync_count"]
    assert 0 <= syncs <= 1
    expected = 8192 * 10e-6 + syncs * (16384 * 2 / 3e9 + 2e-6)
    assert paid["per_pass"][0]["duration_s"] - free["per_pass"][0]["duration_s"] == pytest.approx(expected, abs=1e-7)
    assert paid["downtime_s"] == free["downtime_s"]


def test_zero_page_test_is_refused_under_the_current_rules():
    with pytest.raises(ConfigError) as err:
        config_from_dict(IDLE, ["qemu.rules=current", "qemu.zero_page_test=1us"])
    assert err.value.path == "qemu.zero_page_test"
