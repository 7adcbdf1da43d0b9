"""The synthetic library: Zipf, strided sweeps, phases, per-CPU groups; identical on both backends;
the config's list-of-sections node (paths, inheritance, round trip)."""
import copy

import numpy as np
import pytest
import yaml

from conftest import BACKENDS, SMALL
from pagesync_model.config import SCHEMA, ConfigError, config_from_dict, load_config, schema_markdown
from pagesync_model.kernels import get_backend
from pagesync_model.memory import Memory
from pagesync_model.sim.engine import Engine
from pagesync_model.workloads import (Phases, RandomWrites, SequentialSweep, ZipfWrites,
                                      merge_cpu_major, zipf_table)

CLOCK = 1e9


def memory(ws_pages=4096, layout="contiguous"):
    return Memory(64 << 20, 4096, 4 << 20, ws_pages, 0, layout, 4, 512)


def cfg_with(workload, *overrides):
    d = copy.deepcopy(SMALL)
    d["workload"] = {"rate": "20k/s", "working_set": "16MiB", **workload}
    return config_from_dict(d, overrides)


def dense_of(m, frames):
    return np.asarray(frames) - m.user_base  # contiguous layout


# -- Zipf ----------------------------------------------------------------------------------------

def test_zipf_table_is_a_partition_of_the_ranks_and_of_the_draws():
    edges, thr = zipf_table(1_000_000, 1.2)
    assert edges[0] == 0 and edges[-1] == 1_000_000 and np.all(np.diff(edges) > 0)
    assert thr[0] == 0 and thr[-1] == 1 << 32 and np.all(np.diff(thr.astype(np.int64)) >= 0)
    assert len(edges) < 5000          # a few thousand bins, whatever the working set


@pytest.mark.parametrize("s", [0.0, 0.8, 1.0, 1.5])
def test_zipf_frequencies_follow_the_law(s):
    m = memory(4096)
    w = ZipfWrites(m, 1, get_backend("numpy"), seed=7, s=s)
    draws = dense_of(m, w.generate(np.array([400_000], dtype=np.int64)).copy())
    assert draws.min() >= 0 and draws.max() < 4096
    p = 1.0 / np.arange(1, 4097) ** s
    p /= p.sum()
    freq = np.bincount(draws, minlength=4096) / len(draws)
    for r in (0, 1, 9, 99):  # within 5 standard errors
        assert abs(freq[r] - p[r]) < 5 * np.sqrt(p[r] / len(draws)) + 1e-4, (s, r)
    top = int(np.ceil(0.01 * 4096))
    assert np.sort(freq)[::-1][:top].sum() == pytest.approx(np.sort(p)[::-1][:top].sum(), abs=0.01)


@pytest.mark.skipif(len(BACKENDS) < 2, reason="the compiled backend is not built")
@pytest.mark.parametrize("make", [
    lambda m, k: ZipfWrites(m, 3, k, seed=1, s=1.1, region=100, span=3000),
    lambda m, k: RandomWrites(m, 3, k, 1, 0.1, 0.9, region=50, span=2000),
    lambda m, k: SequentialSweep(m, 3, k, 7, region=9, span=1001),
])
def test_generators_are_identical_on_both_backends_and_stay_in_their_region(make):
    m = memory(4096, "scattered")
    a, b = make(m, get_backend("numpy")), make(m, get_backend("cython"))
    for counts in ([5, 0, 17], [1000, 3, 250], [0, 0, 0]):
        c = np.array(counts, dtype=np.int64)
        fa, fb = a.generate(c).copy(), b.generate(c).copy()
        assert np.array_equal(fa, fb)
        region = m.dense_to_frames(np.arange(a.region, a.region + a.span, dtype=np.int64))
        assert np.isin(fa, region).all()


def test_quantum_does_not_change_the_targets():
    m = memory()
    seqs = []
    for step in (1e-4, 3.7e-3):
        w = ZipfWrites(m, 2, get_backend("numpy"), seed=3, s=1.0, rate=50_000, clock=CLOCK)
        got, t = [], 0.0
        while t < 0.2:
            counts = np.zeros(2, dtype=np.int64)
            f = w.step(np.full(2, step * CLOCK), counts)
            got.append(f[:counts[0]].copy())
            t += step
        seqs.append(np.concatenate(got))
    k = min(map(len, seqs))
    assert k > 9000 and np.array_equal(seqs[0][:k], seqs[1][:k])


# -- sweeps --------------------------------------------------------------------------------------

@pytest.mark.parametrize("stride, span, visited", [(1, 10, 10), (3, 10, 10), (2, 10, 5), (5, 10, 2), (13, 10, 10)])
def test_strided_sweep_wraps_around(stride, span, visited):
    m = memory()
    w = SequentialSweep(m, 1, get_backend("numpy"), stride, span=span)
    got = dense_of(m, w.generate(np.array([3 * span], dtype=np.int64)))
    assert np.array_equal(got, (np.arange(3 * span) * stride) % span)
    assert len(set(got.tolist())) == visited


# -- phases and groups ---------------------------------------------------------------------------

def test_merge_keeps_cpu_major_order():
    parts = [(np.array([1, 2, 3]), np.array([2, 1])), (np.array([7, 8, 9, 10]), np.array([1, 3]))]
    counts = np.zeros(2, dtype=np.int64)
    out = merge_cpu_major(parts, counts, lambda n: np.empty(n, dtype=np.int64))
    assert out.tolist() == [1, 2, 7, 3, 8, 9, 10] and counts.tolist() == [3, 4]


def test_phases_switch_pattern_and_rate_and_repeat():
    m = memory()
    k = get_backend("numpy")
    a = SequentialSweep(m, 1, k, rate=1000, clock=CLOCK, span=100)
    b = SequentialSweep(m, 1, k, rate=4000, clock=CLOCK, region=1000, span=100)
    w = Phases(m, 1, k, [0.01 * CLOCK, 0.02 * CLOCK], [a, b], repeat=True)
    seen = []
    for _ in range(6):  # 5 ms steps: a, a, b, b, b, b
        counts = np.zeros(1, dtype=np.int64)
        seen.append(dense_of(m, w.step(np.array([0.005 * CLOCK]), counts)).copy())
    assert [len(s) for s in seen] == [5, 5, 20, 20, 20, 20]
    assert all(s.max() < 100 for s in seen[:2]) and all(s.min() >= 1000 for s in seen[2:])
    counts = np.zeros(1, dtype=np.int64)
    nxt = dense_of(m, w.step(np.array([0.0125 * CLOCK]), counts))  # 10 ms of a, then 2.5 ms of b
    assert counts[0] == 10 + 10 and (nxt[:10] < 100).all() and (nxt[10:] >= 1000).all()
    stay = Phases(m, 1, k, [0.01 * CLOCK, 0.01 * CLOCK],
                  [SequentialSweep(m, 1, k, rate=1000, clock=CLOCK, span=100),
                   SequentialSweep(m, 1, k, rate=1000, clock=CLOCK, region=500, span=100)], repeat=False)
    stay.step(np.array([0.02 * CLOCK]), counts)
    assert (dense_of(m, stay.step(np.array([0.05 * CLOCK]), counts)) >= 500).all() and counts[0] == 50


def test_groups_from_config_write_their_own_regions(backend):
    cfg = cfg_with({"working_set": "4MiB", "groups": [
        {"cpus": 1, "kind": "sequential", "rate": "10k/s"},
        {"cpus": 2, "kind": "zipf", "working_set": "8MiB"},
        {"cpus": 1, "phases": [{"duration": "5ms", "kind": "uniform"}, {"duration": "5ms", "kind": "hotcold"}]}]})
    e = Engine(cfg, backend=backend)
    m, w = e.machine.memory, e.machine.workload
    assert m.working_set_pages == 1024 + 2048 + 1024
    counts = np.zeros(4, dtype=np.int64)
    frames = w.step(np.full(4, 0.02 * e.machine.clock), counts).copy()
    assert counts.tolist() == [200, 400, 400, 400]
    bounds = np.concatenate([[0], np.cumsum(counts)])
    regions = [(0, 1024), (1024, 3072), (1024, 3072), (3072, 4096)]
    for c, (lo, hi) in enumerate(regions):
        allowed = m.dense_to_frames(np.arange(lo, hi, dtype=np.int64))
        assert np.isin(frames[bounds[c]:bounds[c + 1]], allowed).all(), c


@pytest.mark.skipif(len(BACKENDS) < 2, reason="the compiled backend is not built")
@pytest.mark.parametrize("workload", [
    {"kind": "zipf", "exponent": 1.3},
    {"kind": "sequential", "stride": 3},
    {"phases": [{"duration": "30ms", "kind": "zipf"}, {"duration": "20ms", "kind": "sequential", "rate": "60k/s"}]},
    {"working_set": "8MiB", "groups": [{"cpus": 3, "kind": "hotcold"}, {"cpus": 1, "kind": "uniform"}]},
])
def test_engine_results_identical_on_both_backends(workload):
    cfg = cfg_with(workload)
    ra, rb = (Engine(cfg, backend=x).run() for x in ("numpy", "cython"))
    assert ra.summary["lost_writes"] == 0 and ra.summary["workload_writes"] > 1000
    a, b = ra.to_dict(), rb.to_dict()
    for d in (a, b):
        d.pop("simulator"), d.pop("backend")
    assert a == b


def test_single_section_builds_the_plain_generator():
    e = Engine(cfg_with({"kind": "hotcold"}))
    assert isinstance(e.machine.workload, RandomWrites) and e.machine.workload.region == 0


# -- config: the list-of-sections node ---------------------------------------------------------

def test_group_items_inherit_the_section_and_round_trip(tmp_path):
    cfg = cfg_with({"kind": "hotcold", "groups": [{"cpus": 3}, {"cpus": 1, "kind": "zipf", "rate": "1k/s"}]})
    g0, g1 = cfg.workload.groups
    assert (g0.kind, g0.rate, g0.working_set, g0.hot_share) == ("hotcold", 20000.0, 16 << 20, 0.9)
    assert (g1.kind, g1.rate, g1.exponent, g1.phases) == ("zipf", 1000.0, 1.0, ())
    d = cfg.to_dict()
    assert d["workload"]["groups"][1]["rate"] == "1k/s" and d["workload"]["groups"][0]["kind"] == "hotcold"
    p = tmp_path / "g.yaml"
    p.write_text(yaml.safe_dump(d))
    again = load_config(p)
    assert again == cfg and again.to_dict() == d and hash(again) == hash(cfg)
    assert cfg_with({"groups": [{"cpus": 4, "rate": "2k/s"}]}) != cfg_with({"groups": [{"cpus": 4}]})


def test_durations_in_items_resolve_cycles():
    cfg = cfg_with({"phases": [{"duration": "3000000cycles"}, {"duration": "2ms"}]}, "cpus.clock=1GHz")
    assert [p.duration for p in cfg.workload.phases] == [pytest.approx(3e-3), pytest.approx(2e-3)]


@pytest.mark.parametrize("workload, path, text", [
    ({"groups": [{"cpus": 2}, {"cpus": 2, "rate": "-1/s"}]}, "workload.groups[1].rate", "must be > 0"),
    ({"groups": [{"cpus": 2}, {"cpus": 2, "colour": 1}]}, "workload.groups[1].colour", "unknown key"),
    ({"groups": [{"cpus": 2}, {"cpu": 2}]}, "workload.groups[1].cpu", "did you mean 'cpus'?"),
    ({"groups": [{"kind": "zipf"}]}, "workload.groups[0].cpus", "required value is missing"),
    ({"groups": [{"cpus": 3}]}, "workload.groups", "the groups have 3 CPUs in all, cpus.count is 4"),
    ({"groups": {"cpus": 4}}, "workload.groups", "expected a list of mappings of cpus, kind"),
    ({"groups": [{"cpus": 4, "phases": [{"kind": "zipf"}]}]}, "workload.groups[0].phases[0].duration",
     "required value is missing"),
    ({"groups": [{"cpus": 2, "working_set": "40MiB"}, {"cpus": 2, "working_set": "40MiB"}]}, "workload.groups",
     "working sets add up to 80MiB"),
    ({"phases": [{"duration": "1s"}], "groups": [{"cpus": 4}]}, "workload.phases", "inside each group"),
    ({"phases": [{"duration": "0s"}]}, "workload.phases[0].duration", "must be > 0"),
])
def test_item_errors_name_their_path(workload, path, text):
    with pytest.raises(ConfigError) as err:
        cfg_with(workload)
    assert err.value.path == path and text in str(err.value), str(err.value)
    assert str(err.value).startswith(path + ": ") and "\n" not in str(err.value)


def test_schema_table_documents_the_items():
    table = schema_markdown()
    assert "| `workload.groups` | list of groups | `[]` |" in table
    assert "| `workload.groups[].cpus` | int in [1, 8192] | **required** |" in table
    assert "| `workload.groups[].phases[].duration` | duration in (0, 100000000s] | **required** |" in table
    assert SCHEMA.lookup("workload.groups").section.members["cpus"].required
