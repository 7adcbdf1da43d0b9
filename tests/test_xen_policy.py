"""The xen-legacy and xen-v2 policies: each stop rule fires exactly where libxc's test says, the to_skip
peek skips re-dirtied pages only, the rate limiter follows print_stats(), and no write is ever lost."""
import numpy as np
import pytest

from pagesync_model.config import ConfigError
from pagesync_model.kernels.dtypes import PTE_DIRTY, PTE_DTYPE
from pagesync_model.policies import xen
from pagesync_model.sim.engine import Engine

from conftest import small_config

PS = 4096
N = 16384            # 64 MiB of 4 KiB pages: the small machine
TAIL = 256 * 1024    # xen.tail default
IDLE = ("workload.rate=1/s",)                       # no write lands during the whole run
HOT_SMALL = ("workload.kind=uniform", "workload.working_set=4MiB", "workload.rate=200k/s")
HOT_WIDE = ("workload.kind=uniform", "workload.working_set=32MiB", "workload.rate=20k/s",
            "link.bandwidth=100MB/s")


def run(policy, *overrides, backend="auto", variant=None):
    # the rules are checked on whole saves: a steady one would otherwise stop early (test_early_stop.py)
    d = Engine(small_config(f"policy={policy}", "sim.early_stop=false", *overrides), backend=backend,
               variant=variant).run().to_dict()
    assert d["lost_writes"] == 0, d["stale_frames"]
    assert d["downtime_s"] > 0
    return d


def legacy_rule(d, max_iters=29, max_factor=3, min_pages=50, rate_limited=False):
    """Replay xc_domain_save's stop test on the rounds a result reports: (round, rule) of the first hit."""
    sent, skipped = d["sent_per_round"], d["skipped_per_round"]
    total = 0
    for i in range(len(sent) - 1):
        it = i + 1
        total += sent[i]
        last = sent[i - 1] if i else d["memory_pages"]
        if rate_limited and sent[i] > last and d["rate_history_mbit"][i] == 500:
            return it, "rate-max-and-growing"
        if it >= max_iters:
            return it, "max-iters"
        if sent[i] + skipped[i] < min_pages:
            return it, "min-pages"
        if total > d["memory_pages"] * max_factor:
            return it, "max-factor"
    return None


# -- xen-legacy stop rules ------------------------------------------------------------------------

def test_idle_guest_stops_on_min_pages_after_an_empty_round(backend):
    # Round 1 sends all 16384 pages, which the check after it sees (>= 50); round 2 finds nothing
    # dirty and sends nothing, so the check after round 2 stops; the last round sends no page.
    d = run("xen-legacy", *IDLE, backend=backend)
    assert d["stop_reason"] == "min-pages" and d["converged"]
    assert d["sent_per_round"] == [N, 0, 0]
    assert d["skipped_per_round"] == [0, 0, 0]
    assert [p["kind"] for p in d["per_pass"]] == ["full", "pass", "blackout"]
    assert d["dirty_sync_count"] == 2
    assert d["xen_total_sent"] == d["pages_sent"] == N
    # 8 B PFN entry per page, a 4-byte count per batch of 1024, then the tail
    assert d["batches"] == N // 1024
    assert d["bytes_sent"] == N * (PS + 8) + (N // 1024) * 4 + TAIL
    assert d["per_pass"][2]["bytes"] == TAIL


def test_min_pages_threshold_is_sent_plus_skipped():
    d = run("xen-legacy")
    assert d["stop_reason"] == "min-pages"
    assert legacy_rule(d) == (d["rounds"] - 1, "min-pages")
    live = d["rounds"] - 1
    assert d["sent_per_round"][live - 1] + d["skipped_per_round"][live - 1] < 50
    assert all(s + k >= 50 for s, k in zip(d["sent_per_round"][:live - 1], d["skipped_per_round"][:live - 1]))


def test_hot_set_that_never_shrinks_stops_at_29_iterations(backend):
    # 1024 pages rewritten far faster than a round sends them: every round resends ~1000 pages
    d = run("xen-legacy", *HOT_SMALL, backend=backend)
    assert d["stop_reason"] == "max-iters" and not d["converged"]
    assert d["rounds"] == 30 and d["dirty_sync_count"] == 29     # 29 live rounds + the stop-and-copy
    assert legacy_rule(d) == (29, "max-iters")
    assert d["per_pass"][-1]["kind"] == "blackout"


def test_max_iters_override():
    d = run("xen-legacy", *HOT_SMALL, "xen.max_iters=5")
    assert d["stop_reason"] == "max-iters"
    assert d["rounds"] == 6 and d["dirty_sync_count"] == 5
    assert legacy_rule(d, max_iters=5) == (5, "max-iters")


def test_max_factor_stops_once_three_times_memory_went_out():
    d = run("xen-legacy", *HOT_WIDE)
    assert d["stop_reason"] == "max-factor"
    live = d["rounds"] - 1
    before = sum(d["sent_per_round"][:live - 1])
    assert before <= 3 * N < before + d["sent_per_round"][live - 1]
    assert legacy_rule(d) == (live, "max-factor")
    assert live < 29


def test_rate_stop_only_exists_with_the_limiter():
    off = run("xen-legacy", *HOT_WIDE)
    assert "rate_history_mbit" not in off
    on = run("xen-legacy", "xen.rate_limit=true")
    assert on["stop_reason"] == "rate-max-and-growing" and not on["converged"]
    assert legacy_rule(on, rate_limited=True) == (on["rounds"] - 1, "rate-max-and-growing")


# -- the to_skip peek -------------------------------------------------------------------------------

def test_skipped_pages_are_redirtied_and_none_in_the_last_round(backend):
    d = run("xen-legacy", *HOT_WIDE, backend=backend)
    skips = d["skipped_per_round"]
    assert all(s > 0 for s in skips[:-1])      # a hot set wider than a batch: re-dirtied before its batch
    assert skips[-1] == 0                      # the stop-and-copy peeks nothing
    assert d["skipped_pages"] == sum(skips)
    # a skipped page keeps its dirty mark, so the next CLEAN returns it
    for i, s in enumerate(skips[:-1]):
        assert d["per_pass"][i + 1]["dirty_pages"] >= s
    # a round handles every page of to_send: sent + skipped = the CLEAN's count
    for i in range(1, len(skips)):
        assert d["sent_per_round"][i] + skips[i] == d["per_pass"][i]["dirty_pages"]


def test_peek_skips_exactly_the_pages_dirty_in_both_bitmaps():
    e = Engine(small_config("policy=xen-legacy", *IDLE))
    st = xen.Save(e.machine, xen.LEGACY_BATCH_HEADER)
    m = e.machine.memory
    m.pte &= ~PTE_DTYPE(PTE_DIRTY)                              # log-dirty just enabled: nothing dirty
    e.machine.kernels.bitmap_set_range(st.to_send, 0, 3000)             # to_send = PFNs 0..2999
    redirtied = np.array([5, 64, 700, 1500, 2999, 5000])        # 5000 is dirty but not in to_send
    m.pte[redirtied] |= PTE_DTYPE(PTE_DIRTY)
    starts, lens, nxt, skipped = st.next_batch(0, peek=True)
    sent = np.concatenate([np.arange(s, s + n) for s, n in zip(starts, lens)])
    # the first 1024 pages of to_send that are not re-dirtied: 0..1026 without 5, 64 and 700
    assert len(sent) == 1024 and nxt == 1027
    assert not set(sent) & set(redirtied.tolist())
    assert sent[-1] == 1026 and skipped == 3
    starts, lens, nxt, skipped = st.next_batch(nxt, peek=True)
    assert int(lens.sum()) == 1024 and skipped == 1 and nxt == 2052
    starts, lens, nxt, skipped = st.next_batch(nxt, peek=True)
    assert int(lens.sum()) == 3000 - 2052 - 1 and skipped == 1 and nxt == N
    # the last round does not peek: the re-dirtied pages go too
    starts, lens, nxt, skipped = st.next_batch(0, peek=False)
    assert int(lens.sum()) == 1024 and nxt == 1024 and skipped == 0


# -- the rate limiter --------------------------------------------------------------------------------

class _Clock:
    def __init__(self):
        self.memory = type("M", (), {"page_size": PS})()

    @staticmethod
    def seconds(cycles):
        return cycles / 1e9


def test_rate_limit_sequence_by_hand():
    lim = xen.RateLimiter(_Clock(), 100, 500)
    second = 10**9
    # dirty_Mbps = pages * 4096 // (ms * 125)
    lim.update(2441, second)      # 79 Mbit/s: below the limit, which never goes down
    lim.update(4670, second)      # 153 Mbit/s > 100: 153 + 50
    lim.update(1000, second)      # 32 Mbit/s: stays 203
    lim.update(12208, second)     # 400 Mbit/s: 450
    lim.update(14000, second)     # 458 Mbit/s: 508, capped at 500
    assert lim.dirty_history == [79, 153, 32, 400, 458]
    assert lim.history == [100, 100, 203, 203, 450, 500]
    assert lim.at_max


def test_rate_limiter_in_a_run_follows_print_stats():
    d = run("xen-legacy", "xen.rate_limit=true")
    rates, dirty = d["rate_history_mbit"], d["dirty_rate_history_mbit"]
    assert rates[0] == 100 and rates[-1] == 500
    assert len(rates) == len(dirty) + 1 == d["dirty_sync_count"] + 1
    for r, dm, nxt in zip(rates, dirty, rates[1:]):
        assert nxt == (min(dm + 50, 500) if dm > r else r)
    # round 1 goes out at 100 x 2^20 bit/s: 102400 B per 7812 us slot
    first = d["per_pass"][0]
    expected = first["pages_copied"] * PS / (102400 / 7812e-6)
    assert first["duration_s"] == pytest.approx(expected, rel=0.01)


# -- xen-v2 ----------------------------------------------------------------------------------------

def test_v2_idle_guest(backend):
    d = run("xen-v2", *IDLE, backend=backend)
    assert d["stop_reason"] == "v2-threshold" and d["converged"]
    assert d["sent_per_round"] == [N, 0, 0] and d["dirty_sync_count"] == 2
    assert d["bytes_sent"] == N * (PS + 8) + (N // 1024) * 16 + TAIL


def test_v2_stops_after_five_iterations(backend):
    d = run("xen-v2", *HOT_SMALL, backend=backend)
    assert d["stop_reason"] == "v2-max-iterations" and not d["converged"]
    assert d["rounds"] == 6 and d["dirty_sync_count"] == 5
    assert [p["kind"] for p in d["per_pass"]] == ["full"] + ["pass"] * 4 + ["blackout"]
    assert d["skipped_pages"] == 0
    # no to_skip: every live round sends exactly what the CLEAN before it found
    for p in d["per_pass"][1:]:
        assert p["pages_copied"] == p["dirty_pages"]


def test_v2_below_threshold_is_still_sent_live():
    d = run("xen-v2")
    assert d["stop_reason"] == "v2-threshold"
    live = d["per_pass"][:-1]
    assert live[-1]["dirty_pages"] < 50 and live[-1]["pages_copied"] == live[-1]["dirty_pages"]
    assert all(p["dirty_pages"] >= 50 for p in live[1:-1])
    assert len(live) <= 5


def test_v2_iteration_override():
    d = run("xen-v2", *HOT_SMALL, "xen.v2_max_iterations=2")
    assert d["stop_reason"] == "v2-max-iterations" and d["rounds"] == 3


# -- both ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("policy", ["xen-legacy", "xen-v2"])
def test_backends_agree(policy):
    from conftest import BACKENDS
    results = []
    for b in BACKENDS:
        d = run(policy, *HOT_WIDE, backend=b)
        results.append({k: v for k, v in d.items() if k not in ("backend", "simulator")})
    assert all(r == results[0] for r in results)


@pytest.mark.parametrize("policy", ["xen-legacy", "xen-v2"])
def test_skipping_the_tlb_flush_loses_writes(policy):
    # a working set the 64-entry TLBs hold: writes through stale dirty entries never mark the page again
    d = Engine(small_config(f"policy={policy}", "workload.kind=uniform", "workload.working_set=256KiB",
                            "workload.rate=200k/s"), variant="no-tlb-flush").run().to_dict()
    assert d["lost_writes"] > 0


def test_rate_fields_are_checked():
    with pytest.raises(ConfigError, match="xen.max_rate"):
        small_config("policy=xen-legacy", "xen.start_rate=200Mbit/s", "xen.max_rate=100Mbit/s")
    with pytest.raises(ConfigError, match="xen.start_rate"):
        small_config("policy=xen-legacy", "xen.start_rate=100kbit/s")
