"""xen-legacy's CPU-bound sender (``xen.sender_cpu``, read at the rate limiter): the daemon's CPU per
byte on a CPU shared with the guest paces its writes when it is slower than the link and the limit,
and changes nothing when it is faster."""
import pytest

from pagesync_model.config import ConfigError
from pagesync_model.sim.engine import Engine

from conftest import small_config

MIB = 2 ** 20
IDLE = ("workload.rate=1/s",)                # no write lands during the whole run
FAST_LIMIT = ("xen.rate_limit=true", "xen.start_rate=500Mbit/s", "xen.max_rate=500Mbit/s",
              "link.bandwidth=10Gbit/s", "link.latency=0us", "link.per_copy=0us")
BATCH = 4 * MIB                              # xen.batch 1024 pages


def run(*overrides):
    d = Engine(small_config("policy=xen-legacy", "sim.early_stop=false", *IDLE, *FAST_LIMIT, *overrides)).run()
    d = d.to_dict()
    assert d["lost_writes"] == 0
    return d


@pytest.mark.parametrize("cpu_ms, share", [(20, 0.5), (40, 1.0), (10, 0.25)])
def test_cpu_bound_first_round_takes_its_cpu_time(cpu_ms, share):
    # 64 MiB at cpu_ms of CPU per MiB, the daemon getting `share` of the CPU: 64 x cpu_ms / share of CPU,
    # slower than the 500 Mbit/s limit (~1.0 s) and the 10 Gbit/s link; the batches' CPU work runs back to
    # back, each batch's overlapping the link time of the one before, then the last batch's link time
    d = run(f"xen.sender_cpu={cpu_ms}ms", f"xen.sender_cpu_share={share}")
    first = d["per_pass"][0]
    assert first["pages_copied"] * 4096 == 64 * MIB
    assert first["duration_s"] == pytest.approx(64 * cpu_ms / 1000 / share + BATCH * 8 / 10e9, rel=0.005)


def test_a_sender_faster_than_its_limit_adds_only_its_first_batch():
    # 1 ms of CPU per MiB at half the CPU is 500 MiB/s, faster than the 500 Mbit/s bucket: the bucket
    # paces the round as without it, and the only cost is the first batch's CPU work (4 MiB x 1 ms / 0.5),
    # which nothing before it overlaps
    base = run()["per_pass"][0]
    fast = run("xen.sender_cpu=1ms", "xen.sender_cpu_share=0.5")["per_pass"][0]
    assert fast["pages_copied"] == base["pages_copied"] == 16384
    assert fast["duration_s"] - base["duration_s"] == pytest.approx(BATCH / MIB * 0.001 / 0.5, abs=1e-6)


def test_sender_cpu_needs_the_rate_limiter():
    with pytest.raises(ConfigError, match="xen.sender_cpu"):
        small_config("policy=xen-legacy", "xen.sender_cpu=9.6ms")
