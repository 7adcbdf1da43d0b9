"""The Machine's run-list verbs against naive references, and the registries a developer extends.

``take_pages`` (the next K dirty pages, the last run cut) and ``interconnect.cut_runs`` (pages
[lo, hi) of a run list) are compared with the obvious frame-by-frame answers on random bitmaps;
the workload-kind registry, the JSON-format registry and the subcommand list with what they drive.
"""
import subprocess
import sys

import numpy as np
import pytest

from conftest import BACKENDS, small_config
from pagesync_model.kernels.dtypes import INDEX_DTYPE
from pagesync_model.sim.engine import Engine
from pagesync_model.memory import run_frames
from pagesync_model.sim.interconnect import cut_runs


def frames_of(starts, lens):
    return [f for s, n in zip(starts.tolist(), lens.tolist()) for f in range(s, s + n)]


def maximal(starts, lens):
    """No two runs touch (a cut keeps runs maximal except at the cut)."""
    ends = starts + lens
    return bool(np.all(starts[1:] > ends[:-1])) and bool(np.all(lens > 0))


@pytest.mark.parametrize("seed", range(30))
def test_cut_runs_is_the_slice_of_the_frame_list(seed):
    rng = np.random.default_rng(seed)
    lens = rng.integers(1, 70, size=rng.integers(1, 12)).astype(INDEX_DTYPE)
    gaps = rng.integers(1, 9, size=len(lens))
    starts = (np.cumsum(gaps) + np.concatenate([[0], np.cumsum(lens)[:-1]])).astype(INDEX_DTYPE)
    every = run_frames(starts, lens).tolist()
    ends = np.cumsum(lens)
    for lo, hi in [(0, len(every)), (0, 1), (len(every) - 1, len(every))] + \
            [tuple(sorted(rng.choice(len(every) + 1, 2, replace=False))) for _ in range(20)]:
        s, ln, split = cut_runs(starts, lens, ends, int(lo), int(hi))
        assert frames_of(s, ln) == every[lo:hi]
        assert split == (lo not in [0, *ends.tolist()])
        assert maximal(s, ln)


@pytest.mark.parametrize("backend", BACKENDS)
def test_take_pages_takes_the_first_k_set_pages(backend):
    m = Engine(small_config(), backend=backend).machine
    rng = np.random.default_rng(7)
    n = m.memory.n_frames
    for density, block in ((0.02, 1), (0.3, 1), (0.5, 40)):
        bits = np.repeat(rng.random(n // block + 1) < density, block)[:n]
        for _ in range(12):
            lo, hi = sorted(int(x) for x in rng.integers(0, n + 1, 2))
            k = int(rng.integers(1, 3000))
            bm = m.new_bitmap()
            set_frames = np.flatnonzero(bits)
            np.bitwise_or.at(bm, set_frames >> 6, np.uint64(1) << (set_frames & 63).astype(np.uint64))
            want = [f for f in set_frames.tolist() if lo <= f < hi][:k]
            before = bm.copy()
            s, ln, end = m.take_pages(bm, lo, hi, k, clear=False)
            assert frames_of(s, ln) == want and (bm == before).all()
            assert end == (want[-1] + 1 if len(want) == k else hi)
            s2, ln2, end2 = m.take_pages(bm, lo, hi, k, clear=True)
            assert frames_of(s2, ln2) == want and end2 == end
            left = {int(f) for f in np.flatnonzero(np.unpackbits(bm.view(np.uint8), bitorder="little")[:n])}
            assert left == set(set_frames.tolist()) - set(want)


def test_sync_flushes_the_tlbs_unless_the_variant_skips_it():
    """One place decides the flush: after a sync under the correct variant a write to a cleared page
    sets its dirty bit again; under no-tlb-flush the cached translation hides it."""
    found = {}
    for variant in ("correct", "no-tlb-flush"):
        # 16 pages rewritten ten times per interval, their translations cached in a 64-entry TLB
        m = Engine(small_config("workload.kind=sequential", "workload.working_set=64KiB"),
                   variant=variant).machine
        m.env.run(until=m.cycles(0.002))
        m.sync(m.new_bitmap())
        m.env.run(until=m.cycles(0.004))
        found[variant] = m.sync(m.new_bitmap()).new_bits
    assert found == {"correct": 16, "no-tlb-flush": 0}


def test_workload_kinds_are_the_schema_choices_and_each_builds():
    from pagesync_model.config import SCHEMA
    from pagesync_model.workloads import KINDS, kind_fields
    assert SCHEMA.lookup("workload.kind").choices == list(KINDS)
    members = list(SCHEMA.lookup("workload").members)
    assert members[members.index("working_set") + 1:][:len(kind_fields())] == list(kind_fields())
    for name in KINDS:
        if name != "trace":
            e = Engine(small_config(f"workload.kind={name}"))
            assert type(e.machine.workload) is type(KINDS[name].build(
                small_config(f"workload.kind={name}").workload, e.machine.memory, 4, e.kernels, 1, 3e9, 0,
                e.machine.memory.working_set_pages, 0, ()))


def test_a_field_two_kinds_declare_is_refused():
    from pagesync_model.workloads import HOTCOLD, _registry
    from pagesync_model.workloads.patterns import WorkloadKind
    with pytest.raises(ValueError, match="'hot_share' is already declared by 'hotcold'"):
        _registry(HOTCOLD, WorkloadKind("other", {"hot_share": HOTCOLD.fields["hot_share"]}, None))
    with pytest.raises(ValueError, match="registered twice"):
        _registry(HOTCOLD, HOTCOLD)


def test_help_lists_every_subcommand_with_a_line():
    from pagesync_model.cli import SUBCOMMANDS
    out = subprocess.run([sys.executable, "-m", "pagesync_model", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    listed = out.stdout.split("subcommands", 1)[1].splitlines()[1:]
    names = [line.split()[0] for line in listed if line.strip()]
    assert names == list(SUBCOMMANDS) and {"trace", "sweep", "plan", "live"} <= set(names)
    for name in names:
        sub = subprocess.run([sys.executable, "-m", "pagesync_model", name, "--help"], capture_output=True,
                             text=True)
        assert sub.returncode == 0 and f"pagesync-sim {name}" in sub.stdout


def test_json_formats_are_what_the_cli_offers_and_writes(tmp_path):
    import json

    from pagesync_model.results import JSON_FORMATS
    from pagesync_model.sim.engine import simulate
    res = simulate(small_config())
    texts = {name: write(res) for name, (write, _line) in JSON_FORMATS.items()}
    assert json.loads(texts["pagesync"]) == json.loads(res.to_json())
    assert json.loads(texts["qemu"]) == res.to_qemu()
    out = subprocess.run([sys.executable, "-m", "pagesync_model", "--help"], capture_output=True, text=True).stdout
    for name, (_w, line) in JSON_FORMATS.items():
        assert f"{name} ({line})" in " ".join(out.split())


@pytest.mark.parametrize("layout,block,ws,zeros", [
    ("scattered", 1, 100, 333), ("scattered", 4, 10, 50), ("scattered", 4, 12, 48), ("scattered", 16, 5, 7),
    ("scattered", 16, 0, 160), ("contiguous", 16, 37, 200), ("scattered", 8, 64, 0), ("scattered", 64, 3, 500),
    ("contiguous", 1, 0, 0), ("contiguous", 128, 130, 600)])
def test_zero_pages_cleared_as_the_dense_map_says(layout, block, ws, zeros):
    """The zero pages (dense indices [ws, ws + zeros)) have version 0 and a clean PTE; every other frame
    version 1 and its initial PTE. Frames computed one by one from the dense map's formula."""
    from pagesync_model.kernels.dtypes import PTE_ACCESSED, PTE_DIRTY, PTE_PRESENT, PTE_RW
    from pagesync_model.memory import Memory
    m = Memory(4 << 20, 4096, 64 << 10, ws, zeros, layout, 3, block)
    full = PTE_PRESENT | PTE_RW | PTE_ACCESSED | PTE_DIRTY
    want_v = np.ones(m.n_frames, np.uint32)
    want_p = np.full(m.n_frames, full, np.uint64)
    for i in range(ws, ws + zeros):
        f = m.user_base + ((i // m.block) * m.mult % m.blocks) * m.block + i % m.block
        want_v[f] = 0
        want_p[f] = full & ~(PTE_DIRTY | PTE_ACCESSED)
    np.testing.assert_array_equal(m.versions, want_v)
    np.testing.assert_array_equal(m.pte, want_p)
    assert int((m.versions == 0).sum()) == zeros
