"""The ``analytic`` policy: the geometric pre-copy model, checked on cases worked out by hand."""
import pytest

from pagesync_model.config import config_from_dict
from pagesync_model.policies.analytic import geometric_rounds
from pagesync_model.sim.engine import simulate

GIB = 1 << 30
# M = 1 GiB, R = 1 GB/s = 1e9 B/s; one CPU writing 122070.3125 pages/s of 4 KiB dirties
# D = 122070.3125 x 4096 = 5e8 B/s, so lambda = D / R = 0.5 exactly.
BASE = {
    "policy": "analytic",
    "memory": {"size": "1GiB", "kernel_size": "4MiB"},
    "cpus": {"count": 1},
    "workload": {"kind": "sequential", "rate": "122070.3125/s", "working_set": "512MiB"},
    "link": {"bandwidth": "1GB/s", "latency": "10us"},
}


def run(*overrides, base=BASE):
    return simulate(config_from_dict(base, overrides)).to_dict()


def test_lambda_half_at_300ms():
    # Budget R x 300 ms = 3e8 B. Round 0 sends 2^30 B, round 1 2^29 B; round 2 would send
    # 2^28 = 268 435 456 B <= 3e8, so after n = 2 live rounds the stop-and-copy sends it:
    # downtime = 0.268435456 s + 10 us latency; total = (2^30 + 2^29 + 2^28) / 1e9 + 10 us.
    d = run()
    assert d["lambda"] == 0.5 and d["dirty_rate_Bps"] == 5e8
    assert d["converged"] and d["stop_reason"] == "threshold" and d["rounds"] == 2
    assert [p["kind"] for p in d["per_pass"]] == ["full", "pass", "blackout"]
    assert [p["bytes"] for p in d["per_pass"]] == [GIB, GIB // 2, GIB // 4]
    assert [p["pages_copied"] for p in d["per_pass"]] == [262144, 131072, 65536]
    assert d["downtime_s"] == pytest.approx(0.268435456 + 10e-6, rel=1e-12)
    assert d["expected_downtime_s"] is None
    assert d["total_time_s"] == pytest.approx(1.879048192 + 10e-6, rel=1e-12)
    assert [p["start_s"] for p in d["per_pass"]] == pytest.approx([0.0, 1.073741824, 1.610612736])
    assert d["bytes_sent"] == GIB + GIB // 2 + GIB // 4 and d["pages_sent"] == 458752
    assert d["copies_per_page"] == pytest.approx(1.75)
    assert d["dirty_sync_count"] == 2 and d["passes"] == 3
    assert d["lost_writes"] is None and d["model"] == "closed-form"
    assert d["brownout_s"] == 0.0 and d["slowdown"] == 0.0


def test_lambda_half_at_30ms():
    # Budget 3e7 B: 2^30 / 2^5 = 33 554 432 > 3e7 but 2^30 / 2^6 = 16 777 216 <= 3e7: n = 6,
    # downtime 16.777216 ms (+ 10 us).
    d = run("analytic.downtime_limit=30ms")
    assert d["rounds"] == 6 and d["converged"]
    assert d["per_pass"][-1]["bytes"] == GIB >> 6
    assert d["downtime_s"] == pytest.approx(0.016777216 + 10e-6, rel=1e-12)


def test_pages_per_round_follow_m_lambda_i():
    # half the write rate: D = 61035.15625 x 4096 = 2.5e8 B/s, lambda = 0.25; round i sends
    # 2^30 x 0.25^i B = 262144 x 0.25^i pages of 4 KiB
    d = run("cpus.count=1", "workload.rate=61035.15625/s", "analytic.rounds=5")
    assert d["lambda"] == 0.25
    assert d["pages_per_round"] == pytest.approx([262144 * 0.25 ** i for i in range(6)])
    assert [p["dirty_pages"] for p in d["per_pass"]] == [262144, 65536, 16384, 4096, 1024, 256]


def test_max_rounds_forces_the_stop():
    # At 30 ms n would be 6; with max_rounds 4 the stop is forced after round 3: 2^30 / 16 B,
    # 67.108864 ms, not converged, and that is also the expected downtime.
    d = run("analytic.downtime_limit=30ms", "analytic.max_rounds=4")
    assert not d["converged"] and d["stop_reason"] == "max-rounds" and d["rounds"] == 4
    assert d["downtime_s"] == pytest.approx(0.067108864 + 10e-6, rel=1e-12)
    assert d["expected_downtime_s"] == d["downtime_s"]


@pytest.mark.parametrize("rate, lam", [("244140.625/s", 1.0), ("488281.25/s", 2.0)])
def test_lambda_at_least_one_never_converges(rate, lam):
    # Every round re-dirties at least all it sends; no more than M can be dirty, so each round sends
    # M = 2^30 B and the stop-and-copy forced at max_rounds (30) takes 1.073741824 s.
    d = run(f"workload.rate={rate}")
    assert d["lambda"] == lam
    assert not d["converged"] and d["stop_reason"] == "max-rounds" and d["rounds"] == 30
    assert {p["bytes"] for p in d["per_pass"]} == {GIB}
    assert d["downtime_s"] == pytest.approx(1.073741824 + 10e-6, rel=1e-12)
    assert d["passes"] == 31


@pytest.mark.parametrize("n, converged", [(1, False), (2, True), (3, True)])
def test_rounds_override(n, converged):
    # Exactly n live rounds; the stop-and-copy sends 2^30 / 2^n (converged when <= 3e8 B).
    d = run(f"analytic.rounds={n}")
    assert d["rounds"] == n and d["stop_reason"] == "rounds" and d["converged"] is converged
    assert d["per_pass"][-1]["bytes"] == GIB >> n
    assert len(d["per_pass"]) == n + 1


def test_rounds_override_beats_max_rounds():
    assert run("analytic.rounds=8", "analytic.max_rounds=3")["rounds"] == 8


def test_geometric_rounds_alone():
    n, sizes, why = geometric_rounds(1000, 100, 1000, 0.05, 30)   # lambda 0.1, budget 50 B
    assert (n, why) == (2, "threshold") and sizes == pytest.approx([1000, 100, 10])
    with pytest.raises(ValueError):
        geometric_rounds(1000, 100, 0, 0.05, 30)


def test_result_carries_what_reproduces_it():
    d = run()
    assert d["policy"] == "analytic" and d["seed"] == 1 and d["config"]["analytic"]["rounds"] == 0
    assert d["workload_writes"] is None and d["stale_frames"] == []


def test_link_efficiency_slows_every_round():
    # 94.1% payload efficiency: R = 0.941e9 B/s, lambda = 5e8 / 0.941e9
    d = run("link.efficiency=0.941")
    assert d["lambda"] == pytest.approx(5e8 / 0.941e9)
    assert d["per_pass"][0]["duration_s"] == pytest.approx(GIB / 0.941e9)


def test_qemu_view():
    q = simulate(config_from_dict(BASE)).to_qemu()
    assert q["status"] == "completed" and q["downtime"] == 268
    assert q["ram"]["normal"] == 458752 and q["ram"]["duplicate"] == 0 and q["ram"]["dirty-sync-count"] == 2
