"""Trace replay: a hand-made trace's dirty sets come back exactly, in time, per CPU, looped and scaled."""
import copy

import numpy as np
import pytest
import yaml

from conftest import BACKENDS, SMALL
from pagesync_model.cli import main
from pagesync_model.config import ConfigError, config_from_dict
from pagesync_model.kernels import get_backend
from pagesync_model.sim.engine import Engine
from pagesync_model.trace import Trace, write_trace
from pagesync_model.workloads import TraceReplay, load_trace

MS = 1_000_000


def hand_trace(n=12, seed=3):
    """n intervals of 10 ms writing random subsets of 600 scattered virtual pages."""
    rng = np.random.default_rng(seed)
    universe = np.unique(rng.choice(1 << 20, size=600, replace=False)) + 4096
    sets = [rng.choice(universe, size=int(rng.integers(1, 200)), replace=False) for _ in range(n)]
    sets[0] = universe  # every page appears, so the trace's distinct pages are the universe
    return Trace.from_vpn_sets(sets, (np.arange(n) + 1) * 10 * MS)


@pytest.fixture
def trace_file(tmp_path):
    p = tmp_path / "hand.npz"
    write_trace(p, hand_trace())
    return p


def quiet_config(trace, *overrides, **workload):
    """SMALL with free tracking (a harvest takes no time, writes owe no cycles): the CPUs' running
    time is wall time, so interval k is replayed in exactly [t_k-1, t_k)."""
    d = copy.deepcopy(SMALL)
    d["workload"] = {"kind": "trace", "trace": str(trace), "rate": "1/s", "working_set": "16MiB", **workload}
    d["cpus"].update(count=1, tlb_walk="0cycles", dirty_update="0cycles")
    d["tracking"] = {"rendezvous": "0s", "pte_scan": "0cycles", "pte_harvest": "0cycles", "tlb_flush": "0s"}
    return config_from_dict(d, overrides)


def dirty_sets_at(engine, times_s):
    """Harvest (clear) at each time and return the frames found dirty since the previous harvest."""
    m, found = engine.machine, []
    for t in times_s:
        m.env.run(until=max(m.cycles(t), m.now + 1) if t else 1)
        bm = m.new_bitmap()
        m.sync(bm)  # harvest and flush, as a brownout does: a cached dirty TLB entry would hide the next write
        starts, lens = m.all_runs(bm)
        found.append(set(np.concatenate([np.arange(s, s + n) for s, n in zip(starts, lens)]).tolist())
                     if len(starts) else set())
    return found


@pytest.mark.parametrize("backend", BACKENDS)
def test_replay_of_a_hand_made_trace_yields_exactly_its_dirty_sets(trace_file, backend):
    tr = load_trace(trace_file)
    e = Engine(quiet_config(trace_file), backend=backend)
    m = e.machine.memory
    bounds = [0.0] + list(tr.t_end_ns / 1e9)
    found = dirty_sets_at(e, bounds)[1:]
    for k, got in enumerate(found):
        assert got == set(m.dense_to_frames(tr.interval(k).astype(np.int64)).tolist()), k
    assert e.machine.cpus.writes == len(tr.pages)


def test_loop_time_scale_offset_and_cpus_with_their_own_copies(trace_file):
    tr = load_trace(trace_file)
    n, d = tr.n_intervals, tr.n_distinct
    cfg = quiet_config(trace_file, "cpus.count=2", "workload.time_scale=2", "workload.offset=30ms")
    e = Engine(cfg)
    m = e.machine.memory
    ends = list(0.030 + 2 * np.concatenate([tr.t_end_ns, tr.t_end_ns + tr.t_end_ns[-1]]) / 1e9)
    found = dirty_sets_at(e, [0.0, 0.030] + ends)
    assert found[1] == set()                      # nothing before the offset
    for j, got in enumerate(found[2:]):           # two laps, each CPU on its own copy
        pages = tr.interval(j % n).astype(np.int64)
        want = set(m.dense_to_frames(np.concatenate([pages, pages + d])).tolist())
        assert got == want, j


def test_no_loop_stops_after_the_last_interval(trace_file):
    tr = load_trace(trace_file)
    e = Engine(quiet_config(trace_file, "workload.loop=false"))
    end = tr.t_end_ns[-1] / 1e9
    found = dirty_sets_at(e, [0.0, end, 2 * end])
    assert found[1] and found[2] == set()


def test_shared_cpus_write_the_same_pages(trace_file):
    tr = load_trace(trace_file)
    e = Engine(quiet_config(trace_file, "cpus.count=3", "workload.shared=true"))
    found = dirty_sets_at(e, [0.0, tr.t_end_ns[0] / 1e9])
    assert found[1] == set(e.machine.memory.dense_to_frames(tr.interval(0).astype(np.int64)).tolist())
    assert e.machine.cpus.writes == 3 * len(tr.interval(0))


def test_the_targets_do_not_depend_on_the_time_step(trace_file):
    tr = load_trace(trace_file)
    e = Engine(quiet_config(trace_file))
    seqs = []
    for step in (0.0007, 0.013):
        w = TraceReplay(e.machine.memory, 2, get_backend("numpy"), tr, 3e9, loop=True)
        out, t = [], 0.0
        while t < 0.25:
            counts = np.zeros(2, dtype=np.int64)
            frames = w.step(np.full(2, step * 3e9), counts)
            out.append(frames[:counts[0]].copy())
            t += step
        seqs.append(np.concatenate(out))
    k = min(map(len, seqs))
    assert k > 2 * len(tr.pages) and np.array_equal(seqs[0][:k], seqs[1][:k])


def test_stratus_mirrors_a_trace_without_losing_writes(trace_file, backend):
    res = Engine(quiet_config(trace_file, "stratus.threshold=20"), backend=backend).run()
    assert res.summary["lost_writes"] == 0 and res.summary["workload_writes"] > 0


# -- config errors -------------------------------------------------------------------------------

def test_working_set_smaller_than_the_trace(trace_file):
    with pytest.raises(ConfigError) as err:
        quiet_config(trace_file, "workload.working_set=1MiB")
    assert err.value.path == "workload.working_set"
    assert "smaller than the 600 distinct pages" in str(err.value)


def test_missing_trace_and_kind_without_file(tmp_path):
    with pytest.raises(ConfigError) as err:
        quiet_config(tmp_path / "nope.npz")
    assert err.value.path == "workload.trace" and "no such file" in str(err.value)
    with pytest.raises(ConfigError) as err:
        quiet_config("")
    assert str(err.value) == "workload.trace: kind 'trace' needs a trace file"


@pytest.mark.parametrize("change, expected", [
    (lambda w, t: w.update(trace=str(t) + ".missing"), "workload.trace: "),
    (lambda w, t: w.update(working_set="1MiB"), "workload.working_set: 1MiB (256 pages) is smaller"),
    (lambda w, t: w.update(groups=[{"cpus": 4, "colour": "red"}]), "workload.groups[0].colour: unknown key"),
    (lambda w, t: w.update(groups=[{"cpus": 2}, {"cpus": 2, "rate": "fast"}]),
     "workload.groups[1].rate: cannot read 'fast' as a rate"),
    (lambda w, t: w.update(kind="trace", trace=str(t.with_name("bad.npz"))), "workload.trace: "),
])
def test_cli_one_line_errors_exit_2(tmp_path, trace_file, capsys, change, expected):
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 truncated")
    d = copy.deepcopy(SMALL)
    d["workload"].update(kind="trace", trace=str(trace_file))
    change(d["workload"], trace_file)
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(d))
    assert main([str(p)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and expected in err, err


# -- experiments/real_traces: the committed results are what a re-run gives ------------------------

def test_real_traces_results_are_reproducible():
    import importlib.util
    import json
    from pathlib import Path
    here = Path(__file__).resolve().parents[1] / "experiments" / "real_traces"
    spec = importlib.util.spec_from_file_location("real_traces_run", here / "run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    committed = json.loads((here / "results.json").read_text())["rows"]
    want = next(r for r in committed if (r["trace"], r["policy"], r["link"]) == ("redis", "stratus", "10Gbit/s"))
    assert mod.run_case("redis", "stratus", "10Gbit/s") == want
    for name in mod.TRACES:
        assert (here / "traces" / f"{name}.npz").stat().st_size < 2_000_000
