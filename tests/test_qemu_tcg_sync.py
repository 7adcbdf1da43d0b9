"""The TCG bitmap sync's wait for a throttled vCPU (``qemu.sync_waits_vcpus``).

QEMU 10.0 under TCG ends every bitmap sync with run_on_cpu on each vCPU (system/physmem.c,
tcg_log_global_after_sync), and a vCPU asleep in auto-converge's throttle (system/cpu-throttle.c,
cpu_throttle_thread: a sleep of pct/(1-pct) x 10 ms queued by a timer every 10 ms/(1-pct), which a
kick does not shorten) runs that work only when its sleep ends. The lab's autoconv_high runs show it
as the migration stream standing still for 0.8-0.9 s after each sync at 99% (checked against the
measurements in test_qemu_validation.py). Here the model's waits are checked against a naive
tick-by-tick replay of the throttle timer.
"""
import pytest

from conftest import BACKENDS
from pagesync_model.config import config_from_dict
from pagesync_model.sim.engine import Engine

VM = {
    "policy": "qemu",
    "memory": {"size": "32MiB", "kernel_size": "2MiB", "zero_fraction": 0.1, "processes": 4},
    "cpus": {"count": 1, "clock": "3GHz", "dirty_update": "1.5us"},
    "workload": {"kind": "sequential", "rate": "200k/s", "working_set": "24MiB"},
    "link": {"bandwidth": "1GB/s", "latency": "20us", "per_copy": "0us"},
    "qemu": {"max_bandwidth": "16MiB/s", "auto_converge": True},
    "sim": {"quantum": "1ms", "time_limit": "60s"},
}


def run(*overrides, backend="auto"):
    return Engine(config_from_dict(VM, overrides), backend=backend).run().to_dict()


def naive_wait(t, steps):
    """Seconds a sync at ``t`` waits: replay the throttle timer tick by tick from its first step.
    ``steps`` [(t, pct)]: the percentage in force from each time on. Each tick at time tau starts a
    sleep of 10 ms x p/(1-p) and schedules the next tick 10 ms/(1-p) later (p at tau)."""
    tick, sleep_end = steps[0][0], 0.0
    while tick <= t:
        p = [pct for ts, pct in steps if ts <= tick][-1] / 100
        sleep_end = tick + 0.010 * p / (1 - p)
        tick += 0.010 / (1 - p)
    return max(0.0, sleep_end - t)


def test_each_sync_waits_out_the_sleep_a_naive_timer_replay_gives():
    d = run("qemu.sync_waits_vcpus=true")
    steps = d["throttle_pct"]
    assert [p for _, p in steps][:9] == [20, 30, 40, 50, 60, 70, 80, 90, 99]
    waits = d["sync_vcpu_waits"]
    assert len(waits) >= 10
    for t, w in waits:
        assert w == pytest.approx(naive_wait(t, steps), abs=1e-5), t
    # at 99% the sleep is 990 ms: a sync that lands in it stands still for most of a second
    long = [w for t, w in waits if t > steps[8][0]]
    assert long and max(long) > 0.5 and all(w <= 0.990 + 1e-6 for w in long)
    # below 90% no wait exceeds the sleep of the level in force (90% -> 90 ms)
    assert all(w <= 0.090 + 1e-6 for t, w in waits if t < steps[8][0])
    assert d["lost_writes"] in (0, None)


def test_both_backends_wait_alike():
    a, b = (run("qemu.sync_waits_vcpus=true", "sim.time_limit=9s", backend=k) for k in BACKENDS)
    assert len(a["sync_vcpu_waits"]) >= 3 and a["sync_vcpu_waits"] == b["sync_vcpu_waits"]
    assert a["bytes_sent"] == b["bytes_sent"] and a["total_time_s"] == b["total_time_s"]


def test_the_wait_keeps_a_fast_writer_from_converging_at_99_percent():
    """Hand-computed: at 99% the vCPU runs 10 ms per second and this writer does 200k writes/s, so it
    dirties 2000 pages (8.2 MB) in each run slice, while the threshold is 300 ms x 16 MiB/s = 5.0 MB.
    Without the wait a sync comes every 100 ms window and finds at most one slice's pages, less what
    the window sent: QEMU converges. With it every sync ends at a sleep's end, the next one comes after
    the next slice (~1 s on), and finds a whole slice's 8.2 MB: it never converges."""
    slice_pages = 0.010 * 200e3
    assert slice_pages * 4096 > 0.3 * 16 * 2**20
    off = run()
    on = run("qemu.sync_waits_vcpus=true")
    assert "sync_vcpu_waits" not in off
    assert off["converged"] and off["throttle_pct"][-1][1] == 99
    assert not on["converged"] and on["throttle_pct"][-1][1] == 99
    at99 = [w for t, w in on["sync_vcpu_waits"] if t > on["throttle_pct"][8][0]]
    assert len(at99) >= 5 and min(at99[2:]) > 0.5


def test_an_unthrottled_migration_is_unchanged_by_the_wait():
    base = run("qemu.auto_converge=false", "sim.time_limit=20s")
    unthrottled = run("qemu.sync_waits_vcpus=true", "qemu.auto_converge=false", "sim.time_limit=20s")
    assert unthrottled.pop("sync_vcpu_waits") == []
    for d in (base, unthrottled):
        d.pop("simulator")           # wall-clock timings
        d.pop("config")              # the config echo differs by the field itself
    assert unthrottled == base


def test_qemu_1_6_rules_refuse_the_wait():
    from pagesync_model.schema import ConfigError
    with pytest.raises(ConfigError) as err:
        config_from_dict({**VM, "qemu": {**VM["qemu"], "rules": "1.6", "sync_waits_vcpus": True}})
    assert "qemu.sync_waits_vcpus" in str(err.value)
