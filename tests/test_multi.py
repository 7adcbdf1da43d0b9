"""Several migrations on one machine model (sim/multi.py) and the max-min fair link sharing under them
(sim/interconnect.py: max_min_rates, Fabric, SharedInterconnect)."""
import itertools
import random

import pytest

from pagesync_model.config import load_config
from pagesync_model.sim.engine import simulate
from pagesync_model.sim.interconnect import max_min_rates
from pagesync_model.sim.multi import MigrationSpec, run_batch

SMALL = ["memory.size=256MiB", "workload.working_set=64MiB", "memory.kernel_size=16MiB", "link.bandwidth=1Gbit/s"]
GBIT = 1e9 / 8


def qemu(*extra):
    return load_config("configs/qemu-default.yaml", SMALL + ["qemu.max_bandwidth=10Gbit/s", *extra])


def stratus(*extra):
    return load_config("configs/stratus.yaml", SMALL + ["cpus.clock=2.6GHz", *extra])


# -- the solver ------------------------------------------------------------------------------------

def test_max_min_hand_computed():
    # links A = 10, B = 6. f0 on A; f1 on A and B; f2 on B with 2 connections; f3 on B capped at 1.
    # By hand: f3 stops at its cap 1; B's other 5 go to f1 and f2 one share per connection
    # (f1 5/3, f2 10/3); A's rest goes to f0: 10 - 5/3.
    rates = max_min_rates([10.0, 6.0], [[0], [0, 1], [1], [1]], weights=[1, 1, 2, 1], caps=[None, None, None, 1.0])
    assert rates == pytest.approx([10 - 5 / 3, 5 / 3, 10 / 3, 1.0], rel=1e-12)


def _naive_max_min(capacities, routes, weights, caps):
    """Reference: raise the common level t of every unfrozen flow (rate w*t, under its cap) by bisection
    to the largest feasible one, freeze the flows that cannot grow past it (a full link or the cap),
    repeat."""
    n = len(routes)
    rates = [0.0] * n
    live = set(range(n))

    def feasible(r):
        return all(sum(r[f] for f in range(n) if link in routes[f]) <= c * (1 + 1e-12)
                   for link, c in enumerate(capacities))

    fixed = {}
    while live:
        def at(t):
            r = [fixed.get(f, 0.0) for f in range(n)]
            for f in live:
                r[f] = weights[f] * t if caps[f] is None else min(caps[f], weights[f] * t)
            return r
        lo, hi = 0.0, max(capacities) * 2
        for _ in range(200):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if feasible(at(mid)) else (lo, mid)
        rates = at(lo)
        stuck = set()
        for f in live:
            bumped = list(rates)
            bumped[f] += 1e-6 * max(capacities)
            if not feasible(bumped) or (caps[f] is not None and rates[f] >= caps[f] * (1 - 1e-9)):
                stuck.add(f)
        for f in stuck:
            fixed[f] = rates[f]
        live -= stuck
    return rates


@pytest.mark.parametrize("seed", range(12))
def test_max_min_agrees_with_the_naive_reference(seed):
    rng = random.Random(seed)
    n_links = rng.randint(1, 4)
    caps_links = [rng.uniform(1, 20) for _ in range(n_links)]
    n = rng.randint(1, 6)
    routes = [sorted(rng.sample(range(n_links), rng.randint(1, n_links))) for _ in range(n)]
    weights = [rng.choice([1, 1, 2, 4]) for _ in range(n)]
    caps = [rng.choice([None, rng.uniform(0.5, 8)]) for _ in range(n)]
    got = max_min_rates(caps_links, routes, weights, caps)
    want = _naive_max_min(caps_links, routes, weights, caps)
    assert got == pytest.approx(want, rel=1e-6, abs=1e-9)


def test_max_min_is_fair_by_its_definition():
    # every flow is at its cap or crosses a full link on which no flow has more per connection
    caps_links = [10.0, 4.0, 7.0]
    routes = [[0], [0, 1], [1, 2], [2], [0, 2]]
    weights = [1, 2, 1, 3, 1]
    caps = [None, None, 0.5, None, None]
    rates = max_min_rates(caps_links, routes, weights, caps)
    load = [sum(r for r, route in zip(rates, routes) if link in route) for link in range(3)]
    assert all(ld <= c * (1 + 1e-12) for ld, c in zip(load, caps_links))
    for f, route in enumerate(routes):
        if caps[f] is not None and rates[f] == pytest.approx(caps[f]):
            continue
        assert any(load[link] == pytest.approx(caps_links[link]) and
                   all(rates[g] / weights[g] <= rates[f] / weights[f] * (1 + 1e-9)
                       for g, r2 in enumerate(routes) if link in r2) for link in route), f


# -- migrations on shared links --------------------------------------------------------------------

def _same(result, reference):
    a, b = result.to_dict(), reference.to_dict()
    a.pop("simulator", None)
    b.pop("simulator", None)
    return a == b, [k for k in b if a.get(k) != b[k]]


@pytest.mark.parametrize("backend", ["cython", "numpy"])
def test_migrations_that_share_nothing_give_their_single_runs(backend):
    a, b = qemu(), stratus()
    batch = run_batch([MigrationSpec("a", a, ["l1"]), MigrationSpec("b", b, ["l2"])],
                      [("l1", GBIT), ("l2", GBIT)], backend=backend)
    for run, cfg in zip(batch.runs, (a, b)):
        same, diff = _same(run.result, simulate(cfg, backend=backend))
        assert same, (run.spec.name, diff)
        assert run.start_s == 0 and run.end_s == run.result.summary.total_time_s
    assert batch.drain_s == max(r.end_s for r in batch.runs)


def test_a_migration_started_later_reads_as_its_single_run():
    # one slot: b starts when a ends, on the same link, and is then alone on it
    a, b = qemu(), qemu("sim.seed=7")
    batch = run_batch([MigrationSpec("a", a, ["l"]), MigrationSpec("b", b, ["l"])], [("l", GBIT)],
                      concurrency=1)
    ra, rb = batch.runs
    assert rb.start_s == ra.end_s
    assert _same(rb.result, simulate(b))[0]
    assert batch.drain_s == pytest.approx(ra.end_s + rb.result.summary.total_time_s, rel=1e-12)


def _idle():
    # nearly idle guest (one write a second): what is sent is memory, once
    return qemu("workload.rate=1/s", "cpus.count=1")


def test_two_identical_streams_on_one_link_take_half_each():
    cfg = _idle()
    solo = simulate(cfg).summary
    batch = run_batch([MigrationSpec("a", cfg, ["l"]), MigrationSpec("b", cfg, ["l"])], [("l", GBIT)])
    payload = GBIT * cfg.link.efficiency
    for run in batch.runs:
        s = run.result.summary
        assert s.bytes_sent == pytest.approx(solo.bytes_sent, rel=1e-4)  # a write or two more in a longer run
        # closed form: the link's time doubles (each stream at half the payload rate), the rest stays
        assert s.total_time_s == pytest.approx(solo.total_time_s + solo.bytes_sent / payload, abs=3e-3)
        assert [r for _, r in run.rates][0] == pytest.approx(GBIT / 2, rel=1e-12)
        assert max(r for _, r in run.rates) == pytest.approx(GBIT / 2, rel=1e-12)


def test_caps_are_respected_and_the_rest_goes_to_the_other():
    cfg = _idle()
    cap = GBIT / 5
    batch = run_batch([MigrationSpec("capped", cfg, ["l"], cap=cap), MigrationSpec("free", cfg, ["l"])],
                      [("l", GBIT)])
    capped, free = batch.runs
    assert max(r for _, r in capped.rates) == pytest.approx(cap, rel=1e-12)
    assert free.rates[0][1] == pytest.approx(GBIT - cap, rel=1e-12)
    # once the free one has gone the capped one still stays at its cap
    assert capped.rates[-2][1] == pytest.approx(cap, rel=1e-12) and capped.end_s > free.end_s
    payload = cfg.link.efficiency
    solo = simulate(cfg).summary
    link_s = solo.bytes_sent / (GBIT * payload)
    # within three 1 ms quanta: the few writes of a longer run are sent too
    assert capped.result.summary.total_time_s == pytest.approx(solo.total_time_s + link_s * (GBIT / cap - 1),
                                                               abs=3e-3)


def test_multifd_channels_take_one_share_each():
    cfg = _idle()
    batch = run_batch([MigrationSpec("multifd", cfg, ["l"], channels=3), MigrationSpec("one", cfg, ["l"])],
                      [("l", GBIT)])
    multi, one = batch.runs
    assert multi.rates[0][1] == pytest.approx(0.75 * GBIT, rel=1e-12)
    assert one.rates[0][1] == pytest.approx(0.25 * GBIT, rel=1e-12)
    assert multi.end_s < one.end_s


def test_a_shared_fabric_link_is_the_bottleneck_of_two_nics():
    # two sources with their own 1 Gbit/s NICs into one 1.5 Gbit/s fabric link: 0.75 each
    cfg = _idle()
    links = [("nic-a", GBIT), ("nic-b", GBIT), ("fabric", 1.5 * GBIT)]
    batch = run_batch([MigrationSpec("a", cfg, ["nic-a", "fabric"]), MigrationSpec("b", cfg, ["nic-b", "fabric"])],
                      links)
    for run in batch.runs:
        assert run.rates[0][1] == pytest.approx(0.75 * GBIT, rel=1e-12)


def test_batches_are_deterministic():
    specs = [MigrationSpec(f"vm{i}", qemu(f"sim.seed={i}"), ["l"]) for i in range(3)]
    one = run_batch(specs, [("l", GBIT)], concurrency=2)
    two = run_batch(specs, [("l", GBIT)], concurrency=2)
    for x, y in itertools.zip_longest(one.runs, two.runs):
        assert (x.start_s, x.end_s, x.rates) == (y.start_s, y.end_s, y.rates)
        assert _same(x.result, y.result)[0]


def test_clocks_must_agree():
    with pytest.raises(ValueError, match="cpus.clock"):
        run_batch([MigrationSpec("a", qemu(), ["l"]), MigrationSpec("b", qemu("cpus.clock=3GHz"), ["l"])],
                  [("l", GBIT)])
