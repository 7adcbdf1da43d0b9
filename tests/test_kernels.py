"""The compiled kernels, their numpy twin and the naive reference give identical results.

Every comparison runs one kernel on independent copies of the same inputs in each backend and checks
the return value and every buffer afterwards. The numpy twin also runs with a tiny chunk size so its
chunk-boundary code is exercised by small inputs. Hand-computed cases pin the contract itself.
"""
import ast
import inspect
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest

import reference_kernels as ref
from pagesync_model.kernels import dtypes
from pagesync_model.kernels import numpy_kernels as npk
from pagesync_model.kernels.dtypes import PTE_ACCESSED, PTE_DIRTY, PTE_SOFT_DIRTY, TLB_DIRTY, TLB_VALID

ROOT = Path(__file__).resolve().parents[1]
VD = TLB_VALID | TLB_DIRTY
SEEDS = range(40)

try:
    import pagesync_model._cykernels as _cy
except ImportError as exc:   # reported by test_compiled_backend_is_built
    _cy, _CY_ERROR = None, exc


def test_compiled_backend_is_built():
    """In CI a missing extension is a failure, never a silent skip (the numpy twin would hide it)."""
    if os.environ.get("CI"):
        assert _cy is not None, f"pagesync_model._cykernels failed to import in CI: {_CY_ERROR}"
    else:
        pytest.importorskip("pagesync_model._cykernels")


@pytest.fixture(params=["numpy", "numpy-tiny-chunks", "cython"])
def backend(request, monkeypatch):
    """A backend module to compare against the reference."""
    if request.param == "cython":
        return pytest.importorskip("pagesync_model._cykernels")
    if request.param == "numpy-tiny-chunks":
        monkeypatch.setattr(npk, "CHUNK", 128)
        monkeypatch.setattr(npk, "_WORD_CHUNK", 2)
    return npk


def _copy(args):
    return [a.copy() if isinstance(a, np.ndarray) else a for a in args]


def check(backend, name, *args):
    """Run kernel ``name`` in the reference and in ``backend``; assert identical results; return them."""
    want_args, got_args = _copy(args), _copy(args)
    want = getattr(ref, name)(*want_args)
    got = getattr(backend, name)(*got_args)
    assert got == want, f"{name}: returned {got!r}, reference {want!r}"
    assert type(got) is type(want) or (isinstance(got, int) and isinstance(want, int))
    if isinstance(got, tuple):
        assert all(type(x) is int for x in got)
    for i, (g, w) in enumerate(zip(got_args, want_args)):
        if isinstance(w, np.ndarray):
            assert g.dtype == w.dtype
            np.testing.assert_array_equal(g, w, err_msg=f"{name}: argument {i} differs")
    return got, got_args


# --------------------------------------------------------------------------------------------------
# random inputs

def rand_bitmap(rng, nwords, density=None):
    density = rng.choice([0.0, 0.05, 0.5, 0.95, 1.0]) if density is None else density
    bits = rng.random(nwords * 64) < density
    return np.packbits(bits, bitorder="little").view(np.uint64).copy() if nwords else np.zeros(0, np.uint64)


def rand_pt_layout(rng, n):
    ppt = int(rng.choice([1, 2, 3, 8, 64, 512]))
    region = (n - 1) // ppt + 1
    return int(rng.integers(0, n - region + 1)), ppt


def rand_pte(rng, n, p_dirty):
    pte = rng.integers(0, 1 << 12, n, dtype=np.uint64) & ~np.uint64(PTE_DIRTY)
    pte[rng.random(n) < p_dirty] |= np.uint64(PTE_DIRTY)
    return pte


def rand_versions(rng, n):
    v = rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32)
    v[rng.random(n) < 0.1] = np.iinfo(np.uint32).max   # exercise the 2^32 wrap
    return v


def coprime_mult(rng, modulus):
    while True:
        mult = int(rng.integers(0, min(modulus, 1 << 32)))
        if math.gcd(mult, modulus) == 1:
            return mult


# --------------------------------------------------------------------------------------------------
# harvest

def harvest_args(rng, n, clear, p_dirty=None):
    p_dirty = rng.choice([0.0, 0.01, 0.3, 1.0]) if p_dirty is None else p_dirty
    pte = rand_pte(rng, n, p_dirty)
    nseg = int(rng.integers(0, 5))
    bounds = np.sort(rng.integers(0, n + 1, nseg + 1)).astype(np.int64)
    pt_base, ppt = rand_pt_layout(rng, n)
    return (pte, bounds, rand_bitmap(rng, (n + 63) // 64), rand_versions(rng, n), pt_base, ppt, clear,
            np.full(nseg, -7, np.int64))


@pytest.mark.parametrize("seed", SEEDS)
def test_harvest_random(backend, seed):
    rng = np.random.default_rng(seed)
    for clear in (False, True):
        check(backend, "harvest", *harvest_args(rng, int(rng.integers(1, 1500)), clear))


@pytest.mark.parametrize("n", [1, 7, 8, 9, 63, 64, 65, 127, 128, 129, 300])
def test_harvest_edges(backend, n):
    rng = np.random.default_rng(n)
    for p_dirty in (0.0, 1.0, 0.5):
        for clear in (False, True):
            pte, _, bitmap, versions, pt_base, ppt, _, _ = harvest_args(rng, n, clear, p_dirty)
            for bounds in ([0, n], [0, 0, n, n], [0, 1, n], [0, min(64, n), n], [n // 3, n // 2]):
                b = np.array(bounds, np.int64)
                check(backend, "harvest", pte, b, bitmap, versions, pt_base, ppt, clear,
                      np.zeros(len(b) - 1, np.int64))


def test_harvest_by_hand(backend):
    # frames 0..4, dirty PTEs at 0, 2 (also soft-dirty already) and 4; segments [0,2) and [2,5);
    # page-table pages at 2 + f // 2. Bitmap bit 2 already set, so only frames 0 and 4 are new bits.
    D, S = PTE_DIRTY, PTE_SOFT_DIRTY
    pte = np.array([D | 1, 1, D | S, 0, D], np.uint64)
    bitmap = np.array([0b100], np.uint64)
    versions = np.zeros(5, np.uint32)
    out = np.zeros(2, np.int64)
    assert backend.harvest(pte, np.array([0, 2, 5], np.int64), bitmap, versions, 2, 2, True, out) == 2
    assert out.tolist() == [1, 2]
    assert bitmap.tolist() == [0b10101]
    assert pte.tolist() == [S | 1, 1, S, 0, S]
    assert versions.tolist() == [0, 0, 1, 1, 1]          # pt pages 2 (frame 0), 3 (frame 2), 4 (frame 4)
    # a peek sees nothing now: the dirty bits moved to soft-dirty
    assert backend.harvest(pte, np.array([0, 5], np.int64), bitmap, versions, 2, 2, False, out[:1]) == 0
    assert out[0] == 0


# --------------------------------------------------------------------------------------------------
# apply_writes

def writes_args(rng, n, ncpu, entries, nw, hot):
    frames = rng.integers(0, hot, nw).astype(np.int64)
    cuts = np.sort(rng.integers(0, nw + 1, ncpu - 1)) if ncpu > 1 else np.zeros(0, np.int64)
    cpu_bounds = np.concatenate(([0], cuts, [nw])).astype(np.int64)
    if rng.random() < 0.3 and ncpu:            # writes outside [cpu_bounds[0], cpu_bounds[-1]] belong to nobody
        cpu_bounds[0] = min(cpu_bounds[0] + 1, cpu_bounds[1] if ncpu > 1 else nw)
    pte = rand_pte(rng, n, rng.choice([0.0, 0.3, 0.9]))
    tlb_tag = rng.integers(-1, hot, (ncpu, entries)).astype(np.int64)
    tlb_flags = rng.integers(0, 4, (ncpu, entries)).astype(np.uint8)
    tlb_flags[rng.random((ncpu, entries)) < 0.1] = 0xFF    # odd flag values: only == VALID|DIRTY is a hit
    pt_base, ppt = rand_pt_layout(rng, n)
    return (frames, cpu_bounds, pte, rand_versions(rng, n), tlb_tag, tlb_flags, pt_base, ppt,
            np.full((ncpu, 3), -1, np.int64))


@pytest.mark.parametrize("seed", SEEDS)
def test_apply_writes_random(backend, seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 2000))
    ncpu = int(rng.integers(1, 5))
    entries = int(rng.choice([1, 2, 3, 16, 64]))
    hot = int(rng.choice([1, 3, min(n, 40), n]))     # a small hot set gives duplicates and conflicts
    hot = max(1, min(hot, n))
    check(backend, "apply_writes", *writes_args(rng, n, ncpu, entries, int(rng.integers(0, 600)), hot))


def test_apply_writes_sequence_of_batches(backend):
    # TLB and PTE state carried from batch to batch, with flushes and harvests in between
    rng = np.random.default_rng(7)
    n, ncpu, entries = 200, 3, 8
    frames, cb, pte, versions, tag, flags, pt_base, ppt, out = writes_args(rng, n, ncpu, entries, 300, 60)
    state_ref = [pte.copy(), versions.copy(), tag.copy(), flags.copy()]
    state_bk = [pte.copy(), versions.copy(), tag.copy(), flags.copy()]
    for batch in range(6):
        frames = rng.integers(0, 60, 300).astype(np.int64)
        for mod, (p, v, t, f) in ((ref, state_ref), (backend, state_bk)):
            o = np.zeros((ncpu, 3), np.int64)
            mod.apply_writes(frames, cb, p, v, t, f, pt_base, ppt, o)
            if batch % 2:
                f[:, :] &= ~np.uint8(TLB_VALID)      # full flush: tags kept, entries invalid
                ob = np.zeros(1, np.int64)
                mod.harvest(p, np.array([0, n], np.int64), np.zeros((n + 63) // 64, np.uint64), v, pt_base, ppt,
                            True, ob)
        for a, b in zip(state_ref, state_bk):
            np.testing.assert_array_equal(a, b)


def test_apply_writes_same_frame_many_cpus(backend):
    rng = np.random.default_rng(3)
    n, ncpu = 64, 4
    frames = np.array([5, 5, 9, 5, 1, 5, 5, 13, 5, 9], np.int64)     # 5, 9, 13, 1 share slot 1
    cb = np.array([0, 3, 3, 7, 10], np.int64)                        # CPU 1 writes nothing
    tag = np.array([[-1, 5, -1, -1], [0, 5, 2, 3], [-1, 9, -1, -1], [-1, 13, 5, -1]], np.int64)
    flags = np.array([[0, 0, 0, 0], [3, 3, 3, 3], [0, 1, 0, 0], [0, 3, 3, 0]], np.uint8)
    for pte0 in (np.zeros(n, np.uint64), np.full(n, PTE_DIRTY, np.uint64)):
        check(backend, "apply_writes", frames, cb, pte0, rand_versions(rng, n), tag, flags, 60, 16,
              np.zeros((ncpu, 3), np.int64))


def test_apply_writes_by_hand(backend):
    # 2 CPUs, 2 TLB entries each, 8 frames, page-table pages 6 + f // 4.
    # CPU 0 writes 3, 1, 1; CPU 1 writes 1.  PTE 3 is already dirty, PTE 1 clean.
    # CPU 0 slot 1 holds frame 3 flushed (tag kept, flags 0); CPU 1 slot 1 holds frame 1 valid+dirty.
    #   CPU0 f=3: tag 3 but not valid -> walk, flush refill; PTE already dirty; slot1 = (3, VD)
    #   CPU0 f=1: tag 3 != 1 -> walk; PTE clean -> set D|A, version of pt page 6 +1; slot1 = (1, VD)
    #   CPU0 f=1: hit.  CPU1 f=1: hit on its own (stale) dirty entry, no walk.
    frames = np.array([3, 1, 1, 1], np.int64)
    cpu_bounds = np.array([0, 3, 4], np.int64)
    pte = np.zeros(8, np.uint64)
    pte[3] = PTE_DIRTY
    versions = np.zeros(8, np.uint32)
    tag = np.array([[-1, 3], [-1, 1]], np.int64)
    flags = np.array([[0, 0], [0, VD]], np.uint8)
    out = np.zeros((2, 3), np.int64)
    assert backend.apply_writes(frames, cpu_bounds, pte, versions, tag, flags, 6, 4, out) is None
    assert out.tolist() == [[2, 1, 1], [0, 0, 0]]
    assert versions.tolist() == [0, 3, 0, 1, 0, 0, 1, 0]
    assert pte.tolist() == [0, PTE_DIRTY | PTE_ACCESSED, 0, PTE_DIRTY, 0, 0, 0, 0]
    assert tag.tolist() == [[-1, 1], [-1, 1]]
    assert flags.tolist() == [[0, VD], [0, VD]]
    # The hardware fact: a stale dirty TLB entry lets a write through without setting the PTE bit.
    pte[:] = 0
    backend.apply_writes(np.array([1], np.int64), np.array([0, 0, 1], np.int64), pte, versions, tag, flags, 6, 4, out)
    assert pte[1] == 0 and out.tolist() == [[0, 0, 0], [0, 0, 0]] and versions[1] == 4


# --------------------------------------------------------------------------------------------------
# bitmap kernels

EDGE_FRAMES = [1, 63, 64, 65, 127, 128, 129]


def edge_points(nbits):
    pts = {0, 1, 62, 63, 64, 65, 127, 128, 129, nbits - 1, nbits}
    return sorted(p for p in pts if 0 <= p <= nbits)


@pytest.mark.parametrize("n", EDGE_FRAMES)
def test_bitmap_range_kernels_edges(backend, n):
    rng = np.random.default_rng(n)
    nwords = (n + 63) // 64
    for density in (0.0, 1.0, 0.5):
        bitmap = rand_bitmap(rng, nwords, density)
        pts = edge_points(64 * nwords)
        for lo in pts:
            for hi in pts:
                if lo <= hi:
                    check(backend, "bitmap_popcount", bitmap, lo, hi)
                    check(backend, "bitmap_set_range", bitmap, lo, hi)


@pytest.mark.parametrize("seed", SEEDS)
def test_bitmap_kernels_random(backend, seed):
    rng = np.random.default_rng(seed)
    nwords = int(rng.integers(1, 12))
    nbits = 64 * nwords
    bitmap = rand_bitmap(rng, nwords)
    for _ in range(5):
        lo, hi = sorted(int(x) for x in rng.integers(0, nbits + 1, 2))
        check(backend, "bitmap_popcount", bitmap, lo, hi)
        check(backend, "bitmap_set_range", bitmap, lo, hi)
        frames = rng.integers(0, nbits, int(rng.integers(0, 100))).astype(np.int64)
        check(backend, "bitmap_set_frames", bitmap, frames)
        cap = int(rng.integers(1, 8))
        check(backend, "bitmap_extract_runs", rand_bitmap(rng, nwords), lo, hi, int(rng.integers(1, 200)),
              bool(rng.integers(0, 2)), np.full(cap, -1, np.int64), np.full(cap, -1, np.int64))


@pytest.mark.parametrize("n", EDGE_FRAMES + [1000])
def test_bitmap_set_frames_edges(backend, n):
    rng = np.random.default_rng(n)
    nwords = (n + 63) // 64
    for density in (0.0, 1.0, 0.3):
        bitmap = rand_bitmap(rng, nwords, density)
        check(backend, "bitmap_set_frames", bitmap, np.zeros(0, np.int64))
        check(backend, "bitmap_set_frames", bitmap, np.array([0, 0, 64 * nwords - 1, 0], np.int64))
        check(backend, "bitmap_set_frames", bitmap, rng.integers(0, 64 * nwords, 3 * n).astype(np.int64))


def test_bitmap_by_hand(backend):
    # set_range [1, 66) over bits {1, 3}: 65 bits, 2 already set -> 63 new; word 1 gets bits 0 and 1
    bm = np.array([0b1010, 0], np.uint64)
    assert backend.bitmap_set_range(bm, 1, 66) == 63
    assert bm.tolist() == [(1 << 64) - 2, 0b11]
    # set_frames {3, 3, 5, 70} over bit {3}: distinct new bits are 5 and 70
    bm = np.array([0b1000, 0], np.uint64)
    assert backend.bitmap_set_frames(bm, np.array([3, 3, 5, 70], np.int64)) == 2
    assert bm.tolist() == [0b101000, 1 << 6]
    # popcount [4, 65) of (0xFF, 1): bits 4..7 and 64
    assert backend.bitmap_popcount(np.array([0xFF, 1], np.uint64), 4, 65) == 5
    # runs of 0b1110110 (bits 1,2,4,5,6) in [2, 6): [2,3) (cut at lo) and [4,6) (cut at hi)
    bm = np.array([0b1110110], np.uint64)
    starts, lens = np.zeros(4, np.int64), np.zeros(4, np.int64)
    assert backend.bitmap_extract_runs(bm, 2, 6, 10, True, starts, lens) == (2, 3, 6)
    assert starts[:2].tolist() == [2, 4] and lens[:2].tolist() == [1, 2]
    assert bm.tolist() == [0b1000010]                    # bits 1 and 6 were outside [lo, hi)
    bm = np.array([0b1110110], np.uint64)
    assert backend.bitmap_extract_runs(bm, 2, 6, 10, True, starts[:1], lens[:1]) == (1, 1, 3)   # cap = 1
    assert bm.tolist() == [0b1110010]                    # only the run [2,3) was cleared
    # max_pages 2 over bits {1, 4, 5, 6}: [1,2) gives 1 page, [4,7) is not split and gives 4; stop at 7
    assert backend.bitmap_extract_runs(bm, 0, 64, 2, False, starts, lens) == (2, 4, 7)
    assert bm.tolist() == [0b1110010]


def _runs_resumed(mod, bitmap, lo, hi, max_pages, cap, clear):
    starts, lens, pos = [], [], lo
    while True:
        s, l = np.zeros(cap, np.int64), np.zeros(cap, np.int64)
        nruns, pages, pos = mod.bitmap_extract_runs(bitmap, pos, hi, max_pages, clear, s, l)
        assert nruns <= cap and sum(l[:nruns]) == pages
        assert nruns == 0 or pages < max_pages or pages - l[nruns - 1] < max_pages   # runs never split
        starts += s[:nruns].tolist()
        lens += l[:nruns].tolist()
        if pos == hi:
            return starts, lens
        assert nruns == cap or pages >= max_pages


@pytest.mark.parametrize("seed", range(20))
def test_extract_runs_resumption(backend, seed):
    """Resumed bounded calls concatenate to one unbounded call (and clear the same bits)."""
    rng = np.random.default_rng(seed)
    nwords = int(rng.integers(1, 8))
    bitmap = rand_bitmap(rng, nwords, rng.choice([0.1, 0.5, 0.9, 1.0]))
    lo, hi = sorted(int(x) for x in rng.integers(0, 64 * nwords + 1, 2))
    for clear in (False, True):
        whole = bitmap.copy()
        s, l = np.zeros(64 * nwords + 1, np.int64), np.zeros(64 * nwords + 1, np.int64)
        nruns, pages, pos = ref.bitmap_extract_runs(whole, lo, hi, 1 << 40, clear, s, l)
        assert pos == hi
        for max_pages, cap in ((1, 1), (1, 5), (3, 2), (1 << 40, 1), (7, 3)):
            part = bitmap.copy()
            assert _runs_resumed(backend, part, lo, hi, max_pages, cap, clear) == (s[:nruns].tolist(),
                                                                                  l[:nruns].tolist())
            np.testing.assert_array_equal(part, whole)


def test_extract_runs_long_runs_across_chunks(backend):
    # runs longer than the tiny numpy chunk, starting and ending off word boundaries
    bitmap = np.zeros(40, np.uint64)
    ref.bitmap_set_range(bitmap, 3, 700)
    ref.bitmap_set_range(bitmap, 701, 702)
    ref.bitmap_set_range(bitmap, 1000, 2500)
    for lo, hi in ((0, 2560), (5, 2400), (700, 1001), (702, 1000)):
        for cap, max_pages in ((1, 1), (2, 698), (8, 1 << 30)):
            check(backend, "bitmap_extract_runs", bitmap, lo, hi, max_pages, True, np.zeros(cap, np.int64),
                  np.zeros(cap, np.int64))


@pytest.mark.parametrize("seed", range(30))
def test_take_pages_random(backend, seed):
    rng = np.random.default_rng(1000 + seed)
    nwords = int(rng.integers(1, 10))
    for _ in range(6):
        bitmap = rand_bitmap(rng, nwords, rng.choice([0.05, 0.5, 0.95, 1.0]))
        lo, hi = sorted(int(x) for x in rng.integers(0, 64 * nwords + 1, 2))
        cap = int(rng.integers(1, 9))
        check(backend, "bitmap_take_pages", bitmap, lo, hi, int(rng.integers(1, 300)), bool(rng.integers(0, 2)),
              np.full(cap, -1, np.int64), np.full(cap, -1, np.int64))


def test_take_pages_by_hand(backend):
    # bits {1, 2, 4, 5, 6}: k = 4 from 0 takes [1,3) and [4,6), the run [4,7) cut; the next take starts at 6
    bm = np.array([0b1110110], np.uint64)
    starts, lens = np.zeros(4, np.int64), np.zeros(4, np.int64)
    assert backend.bitmap_take_pages(bm, 0, 64, 4, True, starts, lens) == (2, 4, 6)
    assert starts[:2].tolist() == [1, 4] and lens[:2].tolist() == [2, 2]
    assert bm.tolist() == [0b1000000]                    # only the pages taken were cleared
    # fewer than k set: all of them, end = hi
    assert backend.bitmap_take_pages(bm, 0, 50, 10, False, starts, lens) == (1, 1, 50)
    # cap 1 stops before k pages: end = hi (the next take starts past the remaining runs)
    bm = np.array([0b1110110], np.uint64)
    assert backend.bitmap_take_pages(bm, 0, 64, 4, True, starts[:1], lens[:1]) == (1, 2, 64)
    assert bm.tolist() == [0b1110000]


def test_take_pages_is_extract_cut_extract(backend):
    """The take is what Machine.take_pages did before it had a kernel: extract without clearing,
    cut the run list at k pages, extract again with clearing up to the cut (the old code path)."""
    rng = np.random.default_rng(7)
    for _ in range(200):
        nwords = int(rng.integers(1, 6))
        bitmap = rand_bitmap(rng, nwords, rng.choice([0.1, 0.5, 0.9]))
        lo, hi = sorted(int(x) for x in rng.integers(0, 64 * nwords + 1, 2))
        k, cap = int(rng.integers(1, 100)), int(rng.integers(1, 6))
        old_bm, new_bm = bitmap.copy(), bitmap.copy()
        s, ln = np.zeros(cap, np.int64), np.zeros(cap, np.int64)
        n, pages, _ = ref.bitmap_extract_runs(old_bm, lo, hi, k, False, s, ln)
        s, ln = s[:n].copy(), ln[:n].copy()
        end = hi
        if pages >= k:
            ln[-1] -= pages - k
            end = int(s[-1] + ln[-1])
        if n:
            s2, l2 = np.zeros(cap, np.int64), np.zeros(cap, np.int64)
            n2, _, _ = ref.bitmap_extract_runs(old_bm, lo, end, k, True, s2, l2)
            assert (s2[:n2].tolist(), l2[:n2].tolist()) == (s.tolist(), ln.tolist())
        gs, gl = np.zeros(cap, np.int64), np.zeros(cap, np.int64)
        gn, gpages, gend = backend.bitmap_take_pages(new_bm, lo, hi, k, True, gs, gl)
        assert (gs[:gn].tolist(), gl[:gn].tolist(), gend) == (s.tolist(), ln.tolist(), end)
        np.testing.assert_array_equal(new_bm, old_bm)


# --------------------------------------------------------------------------------------------------
# build_copy_list

def runs_args(rng, k, max_gap=12, max_len=5):
    lens = rng.integers(1, max_len + 1, k).astype(np.int64)
    gaps = rng.integers(0, max_gap + 1, k)
    starts = (np.cumsum(gaps) + np.cumsum(lens) - lens).astype(np.int64)
    return starts, lens


@pytest.mark.parametrize("seed", SEEDS)
def test_build_copy_list_random(backend, seed):
    rng = np.random.default_rng(seed)
    max_ranges = int(rng.integers(2, 10))
    k = int(rng.choice([0, 1, max_ranges - 1, max_ranges, max_ranges + 1, 60]))
    starts, lens = runs_args(rng, k, max_gap=int(rng.choice([1, 8, 30])))
    nearby = int(rng.choice([0, 1, 6, 20]))
    check(backend, "build_copy_list", starts, lens, nearby, max_ranges,
          np.full(max_ranges + int(rng.integers(0, 3)), -1, np.int64), np.full(max_ranges + 2, -1, np.int64))


@pytest.mark.parametrize("k", [0, 3, 4, 5, 12])
@pytest.mark.parametrize("nearby", [0, 1, 6])
def test_build_copy_list_counts_and_ties(backend, k, nearby):
    # equal gaps everywhere: every merge is a tie, resolved to the leftmost pair
    starts = np.arange(k, dtype=np.int64) * 10
    lens = np.full(k, 2, np.int64)
    check(backend, "build_copy_list", starts, lens, nearby, 4, np.zeros(4, np.int64), np.zeros(4, np.int64))
    # adjacent runs: merged only when nearby >= 1 (a frame within nearby of the range's last frame)
    starts = np.arange(k, dtype=np.int64) * 2
    lens = np.full(k, 2, np.int64)
    n, (_, _, _, _, s, e) = check(backend, "build_copy_list", starts, lens, nearby, 4, np.zeros(4, np.int64),
                                  np.zeros(4, np.int64))
    if k and nearby >= 1:
        assert n == 1 and (s[0], e[0]) == (0, 2 * k)


def test_build_copy_list_by_hand(backend):
    # runs (0,2) (10,1) (14,1) (30,2) (40,1), NEARBY 6, 2 ranges:
    #   [0,2); [10,11) (10 > 2-1+6); 14 <= 11-1+6 extends to [10,15);
    #   30 > 20 and the list is full: merge [0,2)+[10,15) -> [0,15), append [30,32);
    #   40 > 37: merge -> [0,32), append [40,41).  Over-copy 33 - 7 = 26 frames.
    out_s, out_e = np.zeros(2, np.int64), np.zeros(2, np.int64)
    n = backend.build_copy_list(np.array([0, 10, 14, 30, 40], np.int64), np.array([2, 1, 1, 2, 1], np.int64),
                                6, 2, out_s, out_e)
    assert n == 2 and out_s.tolist() == [0, 40] and out_e.tolist() == [32, 41]
    assert int((out_e - out_s).sum()) - 7 == 26


# --------------------------------------------------------------------------------------------------
# deliver_runs, find_mismatch

@pytest.mark.parametrize("seed", SEEDS)
def test_deliver_and_mismatch_random(backend, seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 1500))
    src = rng.integers(0, 3, n).astype(np.uint32)
    dst = rng.integers(0, 3, n).astype(np.uint32)
    k = int(rng.integers(0, 12))
    starts = rng.integers(0, n, k).astype(np.int64)
    lens = rng.integers(0, n - starts + 1).astype(np.int64) if k else np.zeros(0, np.int64)
    check(backend, "deliver_runs", src, dst, starts, lens)         # overlapping runs allowed
    for cap in (0, 1, 5, n):
        check(backend, "find_mismatch", src, dst, np.full(cap, -1, np.int64))


def test_deliver_and_mismatch_by_hand(backend):
    src, dst = np.array([0, 5, 0, 7], np.uint32), np.array([9, 9, 9, 9], np.uint32)
    assert backend.deliver_runs(src, dst, np.array([0, 2], np.int64), np.array([2, 2], np.int64)) == 2
    assert dst.tolist() == [0, 5, 0, 7]
    # overlapping runs copy (and count) a frame twice: [1,3) then [1,2) -> src[2] is the only zero
    assert backend.deliver_runs(src, dst, np.array([1, 1], np.int64), np.array([2, 1], np.int64)) == 1
    out = np.full(1, -1, np.int64)
    assert backend.find_mismatch(np.array([1, 2, 3, 4], np.uint32), np.array([1, 0, 3, 0], np.uint32), out) == 2
    assert out.tolist() == [1]


# --------------------------------------------------------------------------------------------------
# generators

def gen_random_params(rng):
    span = int(rng.choice([1, 10, 1000, 1 << 20, 1 << 32]))
    modulus = int(min(1 << 32, span + rng.choice([0, 0, 7, 1 << 20])))
    hot_span = int(rng.choice([0, span // 10, span]))
    hot_threshold = int(rng.choice([0, 1 << 31, 1 << 32, int(rng.integers(0, 1 << 32))]))
    return hot_span, hot_threshold, span, int(rng.integers(0, 1 << 20)), coprime_mult(rng, modulus), modulus


@pytest.mark.parametrize("seed", SEEDS)
def test_gen_random_random(backend, seed):
    rng = np.random.default_rng(seed)
    ncpu = int(rng.integers(0, 5))
    keys = rng.integers(0, 1 << 64, ncpu, dtype=np.uint64)
    counters = rng.integers(0, 1 << 64, ncpu, dtype=np.uint64)
    counters[: ncpu // 2] = np.uint64((1 << 64) - 3)          # wraps mod 2^64 mid-batch
    counts = rng.integers(0, 300, ncpu).astype(np.int64)
    check(backend, "gen_random", keys, counters, counts, *gen_random_params(rng),
          np.zeros(int(counts.sum()), np.int64))


@pytest.mark.parametrize("seed", range(10))
def test_generators_batch_independent(backend, seed):
    """Two calls of n and m draws equal one call of n + m (counter and cursor continuity)."""
    rng = np.random.default_rng(seed)
    ncpu = 3
    n, m = rng.integers(0, 200, ncpu).astype(np.int64), rng.integers(0, 200, ncpu).astype(np.int64)
    params = gen_random_params(rng)
    keys = rng.integers(0, 1 << 64, ncpu, dtype=np.uint64)
    c_split, c_whole = np.array([5, (1 << 64) - 100, 0], np.uint64), np.array([5, (1 << 64) - 100, 0], np.uint64)
    o1, o2, ow = np.zeros(n.sum(), np.int64), np.zeros(m.sum(), np.int64), np.zeros((n + m).sum(), np.int64)
    backend.gen_random(keys, c_split, n, *params, o1)
    backend.gen_random(keys, c_split, m, *params, o2)
    backend.gen_random(keys, c_whole, n + m, *params, ow)
    np.testing.assert_array_equal(c_split, c_whole)
    split = np.split(o1, np.cumsum(n)[:-1]), np.split(o2, np.cumsum(m)[:-1])
    np.testing.assert_array_equal(np.concatenate([np.concatenate([a, b]) for a, b in zip(*split)]), ow)

    span = int(rng.integers(1, 5000))
    modulus = span + int(rng.integers(0, 100))
    stride = int(rng.choice([1, 7, span - 1, -3, span + 2]))
    args = (stride, span, 100, coprime_mult(rng, modulus), modulus)
    cur_split, cur_whole = np.array([0, span - 1, 3], np.int64), np.array([0, span - 1, 3], np.int64)
    backend.gen_sequential(cur_split, n, *args, o1)
    backend.gen_sequential(cur_split, m, *args, o2)
    backend.gen_sequential(cur_whole, n + m, *args, ow)
    np.testing.assert_array_equal(cur_split, cur_whole)
    split = np.split(o1, np.cumsum(n)[:-1]), np.split(o2, np.cumsum(m)[:-1])
    np.testing.assert_array_equal(np.concatenate([np.concatenate([a, b]) for a, b in zip(*split)]), ow)


@pytest.mark.parametrize("hot_threshold", [0, 1 << 32])
def test_gen_random_hot_threshold_extremes(backend, hot_threshold):
    rng = np.random.default_rng(hot_threshold % 97)
    keys = rng.integers(0, 1 << 64, 2, dtype=np.uint64)
    counts = np.array([500, 300], np.int64)
    hot_span, span = 100, 10_000
    out = np.zeros(800, np.int64)
    _, (_, _, _, _, _, _, _, _, _, out) = check(backend, "gen_random", keys, np.zeros(2, np.uint64), counts,
                                                hot_span, hot_threshold, span, 0, 1, span, out)
    if hot_threshold == 0:
        assert out.min() >= hot_span                  # every draw is cold
    else:
        assert out.max() < hot_span                   # every draw is hot


@pytest.mark.parametrize("seed", range(15))
def test_gen_sequential_random(backend, seed):
    rng = np.random.default_rng(seed)
    ncpu = int(rng.integers(0, 4))
    span = int(rng.choice([1, 2, 64, 1 << 20, 1 << 32]))
    modulus = int(min(1 << 32, span + rng.choice([0, 11])))
    counts = rng.integers(0, 300, ncpu).astype(np.int64)
    cursors = rng.integers(-span, 2 * span, ncpu).astype(np.int64)
    stride = int(rng.choice([0, 1, 3, span, -1, int(rng.integers(-(1 << 40), 1 << 40))]))
    check(backend, "gen_sequential", cursors, counts, stride, span, int(rng.integers(0, 1000)),
          coprime_mult(rng, modulus), modulus, np.zeros(int(counts.sum()), np.int64))


@pytest.mark.parametrize("seed", range(12))
def test_generators_with_blocks(backend, seed):
    """Blocks of ``block`` frames are permuted whole: identical in every backend, one-to-one over
    the span, and consecutive indices inside a block land in consecutive frames."""
    rng = np.random.default_rng(seed)
    block = int(rng.choice([2, 7, 512]))
    modulus = int(rng.integers(1, 300))
    span = int(rng.integers(1, modulus * block + 1))
    mult = coprime_mult(rng, modulus)
    counts = np.array([span, int(rng.integers(0, 200))], np.int64)
    base = int(rng.integers(0, 1000))
    check(backend, "gen_sequential", np.array([0, 5], np.int64), counts, 1, span, base, mult, modulus,
          np.zeros(int(counts.sum()), np.int64), block)
    hot_span = int(rng.integers(0, span + 1))
    check(backend, "gen_random", rng.integers(0, 1 << 64, 2, dtype=np.uint64), np.zeros(2, np.uint64), counts,
          hot_span, int(rng.integers(0, 1 << 32)) if hot_span else 0, span, base, mult, modulus,
          np.zeros(int(counts.sum()), np.int64), block)
    out = np.zeros(span, np.int64)
    backend.gen_sequential(np.zeros(1, np.int64), np.array([span], np.int64), 1, span, base, mult, modulus, out,
                           block)
    assert len(np.unique(out)) == span
    assert out.min() >= base and out.max() < base + modulus * block
    inside = (np.arange(span - 1) % block) != block - 1
    assert (np.diff(out)[inside] == 1).all()


def test_generators_by_hand_with_blocks(backend):
    # block 4, 5 blocks, mult 3: index 6 is block 1 offset 2 -> block 3 -> frame 100 + 12 + 2
    out = np.zeros(3, np.int64)
    backend.gen_sequential(np.array([5], np.int64), np.array([3], np.int64), 1, 20, 100, 3, 5, out, 4)
    assert out.tolist() == [100 + 12 + 1, 100 + 12 + 2, 100 + 12 + 3]


def test_generators_by_hand(backend):
    # splitmix64 with key 0, counter 0 is the first output of Vigna's splitmix64 seeded with 0:
    # 0xE220A8397B1DCDAF, so hi = 0xE220A839, lo = 0x7B1DCDAF.
    out = np.zeros(1, np.int64)
    ctr = np.zeros(1, np.uint64)
    backend.gen_random(np.zeros(1, np.uint64), ctr, np.ones(1, np.int64), 0, 0, 1 << 32, 0, 1, 1 << 32, out)
    assert out[0] == 0x7B1DCDAF and ctr[0] == 1
    # span 10, uniform: idx = (0x7B1DCDAF * 10) >> 32 = 4; mapped through mult 3 mod 11 plus base 100
    backend.gen_random(np.zeros(1, np.uint64), np.zeros(1, np.uint64), np.ones(1, np.int64), 0, 0, 10, 100, 3, 11,
                       out)
    assert out[0] == 100 + 12 % 11
    # hot: hi = 0xE220A839 < threshold 0xE220A83A -> idx = (lo * 4) >> 32 = 1
    backend.gen_random(np.zeros(1, np.uint64), np.zeros(1, np.uint64), np.ones(1, np.int64), 4, 0xE220A83A, 10, 0,
                       1, 10, out)
    assert out[0] == 1
    # sequential: cursor 8, stride 3, span 10 -> idx 8, 1, 4, 7 -> (3 * idx) % 11 = 2, 3, 1, 10
    cur, out = np.array([8], np.int64), np.zeros(4, np.int64)
    backend.gen_sequential(cur, np.array([4], np.int64), 3, 10, 100, 3, 11, out)
    assert out.tolist() == [102, 103, 101, 110] and cur.tolist() == [0]


# --------------------------------------------------------------------------------------------------
# argument validation: both backends refuse the same bad calls, before touching any buffer

def _bad_calls():
    u64, i64, u32 = (lambda *s: np.zeros(s, np.uint64)), (lambda *s: np.zeros(s, np.int64)), \
        (lambda *s: np.zeros(s, np.uint32))
    return {
        "harvest out_dirty length": ("harvest", (u64(10), np.array([0, 10], np.int64), u64(1), u32(10), 0, 4, True, i64(2))),
        "harvest versions length": ("harvest", (u64(10), np.array([0, 10], np.int64), u64(1), u32(9), 0, 4, True, i64(1))),
        "harvest bitmap length": ("harvest", (u64(10), np.array([0, 10], np.int64), u64(2), u32(10), 0, 4, True, i64(1))),
        "harvest bounds beyond": ("harvest", (u64(10), np.array([0, 11], np.int64), u64(1), u32(10), 0, 4, True, i64(1))),
        "harvest bounds decrease": ("harvest", (u64(10), np.array([5, 4], np.int64), u64(1), u32(10), 0, 4, True, i64(1))),
        "harvest pt region": ("harvest", (u64(10), np.array([0, 10], np.int64), u64(1), u32(10), 8, 4, True, i64(1))),
        "apply out_counts": ("apply_writes", (i64(3), np.array([0, 3], np.int64), u64(10), u32(10), i64(1, 4),
                                              np.zeros((1, 4), np.uint8), 0, 4, i64(2, 3))),
        "apply flags shape": ("apply_writes", (i64(3), np.array([0, 3], np.int64), u64(10), u32(10), i64(1, 4),
                                               np.zeros((1, 3), np.uint8), 0, 4, i64(1, 3))),
        "apply frame range": ("apply_writes", (np.array([10], np.int64), np.array([0, 1], np.int64), u64(10),
                                               u32(10), i64(1, 4), np.zeros((1, 4), np.uint8), 0, 4, i64(1, 3))),
        "apply cpu_bounds": ("apply_writes", (i64(3), np.array([0, 4], np.int64), u64(10), u32(10), i64(1, 4),
                                              np.zeros((1, 4), np.uint8), 0, 4, i64(1, 3))),
        "set_range hi": ("bitmap_set_range", (u64(1), 0, 65)),
        "set_range lo > hi": ("bitmap_set_range", (u64(1), 5, 4)),
        "set_frames range": ("bitmap_set_frames", (u64(1), np.array([64], np.int64))),
        "popcount hi": ("bitmap_popcount", (u64(1), 0, 65)),
        "extract cap 0": ("bitmap_extract_runs", (u64(1), 0, 64, 1, True, i64(0), i64(0))),
        "extract lens": ("bitmap_extract_runs", (u64(1), 0, 64, 1, True, i64(2), i64(1))),
        "extract max_pages": ("bitmap_extract_runs", (u64(1), 0, 64, 0, True, i64(1), i64(1))),
        "take cap 0": ("bitmap_take_pages", (u64(1), 0, 64, 1, True, i64(0), i64(0))),
        "take lens": ("bitmap_take_pages", (u64(1), 0, 64, 1, True, i64(2), i64(1))),
        "take k": ("bitmap_take_pages", (u64(1), 0, 64, 0, True, i64(1), i64(1))),
        "take hi": ("bitmap_take_pages", (u64(1), 0, 65, 1, True, i64(1), i64(1))),
        "copy list lengths": ("build_copy_list", (i64(2), i64(1), 6, 4, i64(4), i64(4))),
        "copy list out": ("build_copy_list", (i64(1), np.ones(1, np.int64), 6, 4, i64(3), i64(4))),
        "copy list overlap": ("build_copy_list", (np.array([0, 1], np.int64), np.array([2, 1], np.int64), 6, 4,
                                                  i64(4), i64(4))),
        "copy list max_ranges": ("build_copy_list", (i64(1), np.ones(1, np.int64), 6, 1, i64(4), i64(4))),
        "deliver lengths": ("deliver_runs", (u32(4), u32(5), i64(1), i64(1))),
        "deliver range": ("deliver_runs", (u32(4), u32(4), np.array([3], np.int64), np.array([2], np.int64))),
        "mismatch lengths": ("find_mismatch", (u32(4), u32(5), i64(1))),
        "gen_random out": ("gen_random", (u64(2), u64(2), np.ones(2, np.int64), 0, 0, 10, 0, 1, 10, i64(3))),
        "gen_random coprime": ("gen_random", (u64(1), u64(1), np.ones(1, np.int64), 0, 0, 10, 0, 5, 10, i64(1))),
        "gen_random hot_span": ("gen_random", (u64(1), u64(1), np.ones(1, np.int64), 11, 0, 10, 0, 1, 10, i64(1))),
        "gen_random threshold": ("gen_random", (u64(1), u64(1), np.ones(1, np.int64), 0, (1 << 32) + 1, 10, 0, 1, 10,
                                                i64(1))),
        "gen_sequential counts": ("gen_sequential", (i64(2), i64(3), 1, 10, 0, 1, 10, i64(0))),
        "gen_sequential span": ("gen_sequential", (i64(1), np.ones(1, np.int64), 1, 11, 0, 1, 10, i64(1))),
    }


@pytest.mark.parametrize("case", sorted(_bad_calls()))
def test_bad_arguments_raise_value_error(backend, case):
    name, args = _bad_calls()[case]
    before = _copy(args)
    with pytest.raises(ValueError):
        getattr(backend, name)(*args)
    for a, b in zip(args, before):
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, b)


def test_wrong_dtype_raises_value_error(backend):
    with pytest.raises(ValueError):
        backend.bitmap_popcount(np.zeros(1, np.int64), 0, 64)


# --------------------------------------------------------------------------------------------------
# the .pxd mirrors dtypes.py

def _eval_int(expr):
    def ev(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.LShift, ast.BitOr)):
            a, b = ev(node.left), ev(node.right)
            return a << b if isinstance(node.op, ast.LShift) else a | b
        raise ValueError(f"unexpected constant expression {expr!r}")
    return ev(ast.parse(expr, mode="eval").body)


def test_pxd_matches_dtypes():
    text = (ROOT / "_ext" / "kernels.pxd").read_text()
    consts = {m[1]: _eval_int(m[2]) for m in re.finditer(r"^\s+((?:PTE|TLB)_\w+)\s*=\s*([^#\n]+?)\s*$", text, re.M)}
    expected = {k: getattr(dtypes, k) for k in dir(dtypes) if re.fullmatch(r"(PTE|TLB)_[A-Z_]+", k)
                and isinstance(getattr(dtypes, k), int)}
    assert consts == expected
    macros = {m[1]: int(m[2], 16) for m in re.finditer(r"#define PAGESYNC_(SPLITMIX_\w+) (0x[0-9A-Fa-f]+)ULL", text)}
    assert macros == {k: getattr(dtypes, k) for k in ("SPLITMIX_GAMMA", "SPLITMIX_M1", "SPLITMIX_M2")}
    ctypes = {name: ctype for ctype, name in re.findall(r"^ctypedef (\w+) (\w+)", text, re.M)}
    c_to_np = {"uint64_t": np.uint64, "uint32_t": np.uint32, "int64_t": np.int64, "uint8_t": np.uint8}
    for ctype_name, py_name in (("pte_t", "PTE_DTYPE"), ("word_t", "WORD_DTYPE"), ("version_t", "VERSION_DTYPE"),
                                ("index_t", "INDEX_DTYPE"), ("tlb_tag_t", "TLB_TAG_DTYPE"),
                                ("tlb_flag_t", "TLB_FLAG_DTYPE")):
        assert np.dtype(c_to_np[ctypes[ctype_name]]) == np.dtype(getattr(dtypes, py_name)), ctype_name


def test_stub_lists_every_kernel():
    from pagesync_model.kernels import KERNEL_NAMES
    stub = (ROOT / "pagesync_model" / "_cykernels.pyi").read_text()
    for name in KERNEL_NAMES:
        assert re.search(rf"^def {name}\(", stub, re.M), name
        assert hasattr(npk, name) and hasattr(ref, name)


# --------------------------------------------------------------------------------------------------
# the CPUs' time accounting of one step

def _floats(rng, n, scale):
    x = rng.random(n) * scale
    x[rng.random(n) < 0.2] = 0.0
    return x


@pytest.mark.parametrize("seed", range(20))
def test_cpu_accounting_random(backend, seed):
    rng = np.random.default_rng(2000 + seed)
    n = int(rng.integers(1, 70))
    for _ in range(5):
        run = float(rng.choice([0.0, 1.0, rng.random() * 3e6]))
        check(backend, "cpu_debt_step", run, _floats(rng, n, 4e6), bool(rng.integers(0, 2)), np.full(n, -1.0))
        check(backend, "rate_step", _floats(rng, n, 3e6), float(rng.random() * 1e-3), rng.random(n),
              np.full(n, -1, np.int64))
        check(backend, "charge_tracking", rng.integers(0, 5000, (n, 3)).astype(np.int64), float(rng.random() * 100),
              float(rng.random() * 5000), _floats(rng, n, 1e5), np.full(n, -1.0))


def test_cpu_accounting_by_hand(backend):
    # run 100: CPU 0 owes 30 (pays it, 70 left), CPU 1 owes 150 (keeps 50 of debt, runs 0)
    debt, avail = np.array([30.0, 150.0]), np.zeros(2)
    backend.cpu_debt_step(100.0, debt, False, avail)
    assert debt.tolist() == [0.0, 50.0] and avail.tolist() == [70.0, 0.0]
    # paced: CPU 0 writes for all 100 cycles (its debt came out of idle time), CPU 1 still writes nothing
    debt = np.array([30.0, 150.0])
    backend.cpu_debt_step(100.0, debt, True, avail)
    assert debt.tolist() == [0.0, 50.0] and avail.tolist() == [100.0, 0.0]
    # 1000 cycles at 0.0025 writes/cycle with 0.75 carried: 3.25 -> 3 writes, 0.25 carried
    carry, counts = np.array([0.75, 0.0]), np.zeros(2, np.int64)
    assert backend.rate_step(np.array([1000.0, 200.0]), 0.0025, carry, counts) == 3
    assert counts.tolist() == [3, 0] and carry.tolist() == [0.25, 0.5]
    # 2 refills at 30 cycles and 1 dirty-bit set at 100 cycles: 160 more cycles of debt
    debt, extra = np.array([5.0]), np.zeros(1)
    assert backend.charge_tracking(np.array([[4, 1, 2]], np.int64), 30.0, 100.0, debt, extra) == (4, 1, 2)
    assert extra.tolist() == [160.0] and debt.tolist() == [165.0]


def test_rate_step_rounds_like_numpy(backend):
    """The product and the sum round separately (a fused multiply-add would differ in the last bit)."""
    rng = np.random.default_rng(3)
    run, carry = rng.random(4096) * 1e6, rng.random(4096)
    rate = 1 / 3.0
    expected = run * rate + carry
    counts = np.zeros(4096, np.int64)
    got_carry = carry.copy()
    backend.rate_step(run, rate, got_carry, counts)
    np.testing.assert_array_equal(counts, np.floor(expected).astype(np.int64))
    np.testing.assert_array_equal(got_carry, expected - counts)


@pytest.mark.parametrize("case", ["debt", "rate", "charge"])
def test_cpu_accounting_bad_shapes(backend, case):
    with pytest.raises(ValueError):
        if case == "debt":
            backend.cpu_debt_step(1.0, np.zeros(2), False, np.zeros(3))
        elif case == "rate":
            backend.rate_step(np.zeros(2), 1.0, np.zeros(2), np.zeros(1, np.int64))
        else:
            backend.charge_tracking(np.zeros((2, 2), np.int64), 1.0, 1.0, np.zeros(2), np.zeros(2))


# --------------------------------------------------------------------------------------------------
# the fused CPU step (cpu_rate_step, random_write_step): the separate kernels composed

def fused_step_args(rng):
    """A random-write step on a small dense memory: the generator's frames land in [base, base + modulus *
    block), inside the memory, as Cpus.advance_to calls it."""
    ncpu = int(rng.integers(1, 6))
    entries = int(rng.choice([1, 3, 16, 64]))
    block = int(rng.choice([1, 1, 4]))
    modulus = int(rng.choice([1, 5, 50, 300]))
    span = int(rng.integers(1, modulus * block + 1))
    hot_span = int(rng.choice([0, span // 10, span]))
    hot_threshold = int(rng.choice([0, 1 << 31, 1 << 32]))
    pt_base, ppt = 0, int(rng.choice([8, 512]))
    # past the page-table pages [0, (n - 1) // ppt]: base * (ppt - 1) > modulus * block + 2 >= n - 1 - base
    base = int(rng.integers(0, 40)) + (modulus * block + 2) // (ppt - 1) + 1
    n = base + modulus * block + int(rng.integers(0, 3))
    assert (n - 1) // ppt < base
    keys = rng.integers(0, 1 << 64, ncpu, dtype=np.uint64)
    counters = rng.integers(0, 1 << 64, ncpu, dtype=np.uint64)
    counts = rng.integers(0, 200, ncpu).astype(np.int64)
    pte = rand_pte(rng, n, rng.choice([0.0, 0.3, 0.9]))
    tlb_tag = rng.integers(-1, n, (ncpu, entries)).astype(np.int64)
    tlb_flags = rng.integers(0, 4, (ncpu, entries)).astype(np.uint8)
    return (keys, counters, counts, hot_span, hot_threshold, span, base, coprime_mult(rng, modulus), modulus, block,
            np.zeros(int(counts.sum()), np.int64), np.full(ncpu + 1, -1, np.int64), pte, rand_versions(rng, n),
            tlb_tag, tlb_flags, pt_base, ppt, np.full((ncpu, 3), -1, np.int64), float(rng.random() * 100),
            float(rng.random() * 5000), _floats(rng, ncpu, 1e5), np.full(ncpu, -1.0))


@pytest.mark.parametrize("seed", range(20))
def test_fused_cpu_step_random(backend, seed):
    rng = np.random.default_rng(4000 + seed)
    n = int(rng.integers(1, 70))
    for _ in range(3):
        run = float(rng.choice([0.0, 1.0, rng.random() * 3e6]))
        check(backend, "cpu_rate_step", run, _floats(rng, n, 4e6), bool(rng.integers(0, 2)),
              float(rng.random() * 1e-3), rng.random(n), np.full(n, -1.0), np.full(n, -1, np.int64))
    check(backend, "random_write_step", *fused_step_args(rng))


def test_fused_cpu_step_is_the_separate_kernels(backend):
    """Several steps in a row through the fused kernels leave every buffer as the separate kernels do."""
    rng = np.random.default_rng(77)
    args = fused_step_args(rng)
    (keys, counters, _, hot_span, hot_threshold, span, base, mult, modulus, block, _, bounds, pte, versions,
     tag, flags, pt_base, ppt, step_counts, walk, dirty, debt, extra) = args
    ncpu = len(keys)
    a = [x.copy() if isinstance(x, np.ndarray) else x for x in (counters, pte, versions, tag, flags, debt)]
    b = [x.copy() if isinstance(x, np.ndarray) else x for x in (counters, pte, versions, tag, flags, debt)]
    carry_a, carry_b = rng.random(ncpu), None
    carry_b = carry_a.copy()
    for step in range(6):
        run = float(rng.random() * 2e5)
        rate = 1e-3
        # fused
        avail, counts = np.zeros(ncpu), np.zeros(ncpu, np.int64)
        total = backend.cpu_rate_step(run, a[5], False, rate, carry_a, avail, counts)
        out_a = np.zeros(total, np.int64)
        got = backend.random_write_step(keys, a[0], counts, hot_span, hot_threshold, span, base, mult, modulus,
                                        block, out_a, np.zeros(ncpu + 1, np.int64), a[1], a[2], a[3], a[4], pt_base,
                                        ppt, np.zeros((ncpu, 3), np.int64), walk, dirty, a[5], np.zeros(ncpu))
        # separate
        avail_b, counts_b = np.zeros(ncpu), np.zeros(ncpu, np.int64)
        backend.cpu_debt_step(run, b[5], False, avail_b)
        assert backend.rate_step(avail_b, rate, carry_b, counts_b) == total
        out_b = np.zeros(total, np.int64)
        backend.gen_random(keys, b[0], counts_b, hot_span, hot_threshold, span, base, mult, modulus, out_b, block)
        cb = np.concatenate(([0], np.cumsum(counts_b))).astype(np.int64)
        sc = np.zeros((ncpu, 3), np.int64)
        backend.apply_writes(out_b, cb, b[1], b[2], b[3], b[4], pt_base, ppt, sc)
        want = backend.charge_tracking(sc, walk, dirty, b[5], np.zeros(ncpu))
        assert got == want
        np.testing.assert_array_equal(out_a, out_b)
        np.testing.assert_array_equal(carry_a, carry_b)
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("case", ["frames-outside", "lengths", "tlb-shape", "counts-sum", "negative-base"])
def test_random_write_step_refuses_before_changing_anything(backend, case):
    rng = np.random.default_rng(5)
    args = list(fused_step_args(rng))
    n = len(args[12])
    if case == "frames-outside":
        args[6] = n - args[8] * args[9] + 1          # base + modulus * block > n_frames
    elif case == "lengths":
        args[21] = np.zeros(len(args[0]) + 1)        # debt
    elif case == "tlb-shape":
        args[15] = np.zeros((len(args[0]), args[14].shape[1] + 1), np.uint8)
    elif case == "counts-sum":
        args[10] = np.zeros(len(args[10]) + 1, np.int64)
    else:
        args[6] = -1
    before = _copy(args)
    with pytest.raises(ValueError):
        backend.random_write_step(*args)
    for x, y in zip(args, before):
        if isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y)


def test_cpu_rate_step_refuses_bad_lengths(backend):
    debt = np.array([5.0, 0.0])
    with pytest.raises(ValueError):
        backend.cpu_rate_step(10.0, debt, False, 0.1, np.zeros(3), np.zeros(2), np.zeros(2, np.int64))
    assert debt.tolist() == [5.0, 0.0]


# --------------------------------------------------------------------------------------------------
# the copy loop: CPU steps, copy pieces and link timing over many quanta in one call

def copy_loop_args(rng):
    """A scanner's copy on a small dense memory as Machine.copy_bitmap_runs or Machine.copy starts it, with
    a random-write workload, a horizon, a meter window's end and a meter buffer that may stop it early."""
    (keys, counters, _counts, hot_span, hot_threshold, span, base, mult, modulus, block, _out, cpu_bounds, pte,
     versions, tlb_tag, tlb_flags, pt_base, ppt, step_counts, walk_cycles, dirty_cycles, debt,
     extra) = fused_step_args(rng)
    n, ncpu = len(pte), len(keys)
    quantum = int(rng.choice([1, 5000, 40000, 200000]))
    rate = float(rng.choice([0.0, rng.random() * 60 / quantum]))
    frames = np.full(max(0, ncpu * (int(float(quantum) * rate) + 2) + int(rng.choice([-3, 0, 10]))), -1, np.int64)
    chunk = int(rng.choice([1, 7, 64, 1000]))
    use_bitmap = bool(rng.integers(0, 2))
    nwords = (n + 63) // 64
    bitmap = rand_bitmap(rng, nwords)
    state = np.zeros(25, np.int64)
    now = int(rng.integers(0, 10**6))
    state[0], state[1] = now, now - int(rng.integers(0, quantum))
    state[2] = now + int(rng.choice([-1000, 0, 5000]))                 # busy_until
    for i in (8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18):
        state[i] = int(rng.integers(0, 1000))
    state[22] = 1                                                      # admitted: the scanner is at now
    runs_s, runs_l = np.full(64, -1, np.int64), np.full(64, -1, np.int64)
    if use_bitmap:
        state[4] = int(rng.integers(0, n))
    else:
        cuts = np.sort(rng.choice(np.arange(n + 1), size=2 * int(rng.integers(1, 6)), replace=False))
        k = len(cuts) // 2
        runs_s[:k], runs_l[:k] = cuts[0::2], cuts[1::2] - cuts[0::2]
        state[7] = k
    partner = rand_versions(rng, n)
    partner[rng.random(n) < 0.5] = np.iinfo(np.uint32).max
    link_i = np.array([4096, int(rng.choice([0, 8])), int(rng.choice([-1, 9])), int(rng.integers(0, 9000))], np.int64)
    link_f = np.array([float(rng.choice([1.25e9, 3e8])), float(rng.choice([0.0, 2e-6])),
                       float(rng.choice([0.0, 3e-7])), 2.0e9])
    horizon = now + int(rng.choice([0, 10**4, 10**6, 1 << 62]))
    tick_limit = now + int(rng.choice([0, 10**5, 1 << 61]))
    meter_on = bool(rng.integers(0, 2))
    meter_buf = np.full(int(rng.choice([0, 50, 5000])), -1, np.int64)
    state[19] = int(rng.integers(0, len(meter_buf) + 1)) if meter_on else 0
    return (state, np.array([float(rng.random() * 1e6)]), bitmap, n, use_bitmap, runs_s, runs_l, link_i, link_f,
            partner, horizon, tick_limit, quantum, chunk, bool(rng.integers(0, 2)), rate, rng.random(ncpu), debt,
            np.full(ncpu, -1.0), np.full(ncpu, -1, np.int64), keys, counters, hot_span, hot_threshold, span, base,
            mult, modulus, block, frames, cpu_bounds, pte, versions, tlb_tag, tlb_flags, pt_base, ppt, step_counts,
            walk_cycles, dirty_cycles, extra, meter_buf, meter_on)


@pytest.mark.parametrize("seed", range(40))
def test_copy_loop_random(backend, seed):
    rng = np.random.default_rng(7000 + seed)
    _, args = check(backend, "copy_loop", *copy_loop_args(rng))
    state = args[0]
    assert state[23] in (0, 1, 2)


def test_copy_loop_by_hand(backend):
    # one run of 10 pages, chunk 4: pieces of 4, 4, 2 pages (1, 0, 0 copy calls); a 4096-byte page at
    # 4096e3 B/s and 1e6 Hz takes 1000 cycles, a call 500 more; no CPU writes (rate 0), quantum 1000
    args = list(copy_loop_args(np.random.default_rng(1)))
    n = len(args[31])
    args[0] = state = np.zeros(25, np.int64)
    state[7], state[22], state[0], state[1], state[2] = 1, 1, 100, 100, 0
    args[5], args[6] = np.array([3], np.int64), np.array([10], np.int64)
    args[2], args[3], args[4] = np.zeros((n + 63) // 64, np.uint64), n, False
    args[7] = np.array([4096, 0, -1, 7], np.int64)
    args[8] = np.array([4096e3, 500e-6, 0.0, 1e6])
    args[10], args[11], args[12], args[13], args[15] = 1 << 62, 1 << 62, 1000, 4, 0.0
    args[29], args[42] = np.zeros(1000, np.int64), False
    for mod in (ref, backend):
        st = state.copy()
        a = list(args)
        a[0] = st
        a[9] = args[9].copy()
        mod.copy_loop(*a)
        # 100 + 4500 = 4600, + 4000 = 8600, + 2000 = 10600; ticks every 1000 cycles up to each start
        assert st[0] == 10600 and st[2] == 10600 and st[3] == 10607
        assert st[9] == 10 and st[11] == 1 and st[13] == 3 and st[21] == 3 and st[23] == 0
        assert st[1] == 8600 and st[14] == 8500          # CPUs stepped up to the last piece's start
        np.testing.assert_array_equal(a[9][3:13], args[32][3:13])


# --------------------------------------------------------------------------------------------------
# QEMU's migration-thread turn: ram_save_iterate's pieces against the window quota, with the CPUs' steps

def qemu_turn_args(rng):
    """A turn of QEMU's migration thread on a small dense memory as fused.qemu_iterate starts it (or resumes
    it after a CPU step it left to Python, a piece already taken), with a random-write workload and a small
    take cap; one thing, drawn at random, may end it early (the window's quota, the 50 ms bound, a horizon,
    the meter's window or buffers, XBZRLE's wrap, nothing remaining), else the bitmap or a long bound does."""
    a = list(copy_loop_args(rng))
    n, link_i, quantum = a[3], a[7], a[12]
    end = str(rng.choice(["none", "none", "quota", "max_wait", "horizon", "tick", "buffers", "xbzrle", "remaining"]))
    bitmap = rand_bitmap(rng, len(a[2]), density=float(rng.choice([0.05, 0.5, 0.95, 1.0])))
    cap = int(rng.choice([1, 2, 3, 64]))
    runs_s = np.full(2 * cap + int(rng.choice([0, 5])), -1, np.int64)
    runs_l = np.full(len(runs_s), -1, np.int64)
    state = np.zeros(24, np.int64)
    old = a[0]
    # now, t_done, busy_until, last_arrival, then the link's and the CPUs' counters, the meter's fill
    state[0:4] = old[0:4]
    state[4:15] = old[8:19]
    state[17] = 1                                                      # admitted: the thread is at now
    state[20] = int(rng.integers(0, n))                                # the cursor
    pop = sum((int(bitmap[f >> 6]) >> (f & 63)) & 1 for f in range(n))
    state[21] = int(rng.choice([0, max(0, pop - 3)])) if end == "remaining" else pop   # migration_dirty_pages
    if rng.random() < 0.25:                                            # a piece taken before a CPU step for Python
        k = int(rng.integers(1, min(cap, 4) + 1))
        runs_s[:k] = np.sort(rng.choice(np.arange(0, n - 3, 4), size=k, replace=False))   # apart, as taken
        runs_l[:k] = rng.integers(1, 4, k)
        state[22] = k
    per_page = int(link_i[1]) + 4096
    chunk = int(rng.choice([1, 3, 7, 64]))
    page_cycles = per_page / float(a[8][0]) * float(a[8][3])
    quota = int(rng.choice([1, 3 * per_page, 40 * per_page])) if end == "quota" else 10**9
    window = int(state[4]) - int(rng.integers(0, per_page))
    t0 = int(state[0]) - int(rng.choice([0, 0, 5000]))
    # the naive reference steps the CPUs one quantum at a time: a long turn only at coarse quanta
    long_turn = 200.0 if quantum >= 5000 else 1.0
    max_wait = float(rng.choice([1.0, 3.0, 12.0]) if end == "max_wait" else long_turn) * page_cycles * min(chunk, 7)
    if quantum == 1:  # a CPU step per cycle: only the first piece
        t0, max_wait = int(state[0]), 1.0
    horizon = int(state[0]) + int(rng.choice([0, 10**5, 10**6]) if end == "horizon" else 1 << 62)
    tick_limit = int(state[0]) + int(rng.choice([0, 10**6]) if end == "tick" else 1 << 61)
    frames, meter_buf, meter_on = a[29], a[41], a[42]
    if end != "buffers":
        frames = np.full(8 * len(a[20]) * (int(float(quantum) * a[15]) + 2), -1, np.int64)
        meter_buf = np.full(max(len(meter_buf), 10**5), -1, np.int64)
    state[15] = int(rng.integers(0, len(meter_buf) // 2 + 1)) if meter_on else 0
    return (state, a[1], bitmap, n, cap, runs_s, runs_l, link_i, a[8], a[9], horizon, tick_limit, quantum, chunk, t0,
            max_wait, window, quota, per_page, end == "xbzrle" or bool(rng.integers(0, 4) == 0), *a[14:29], frames,
            *a[30:41], meter_buf, meter_on)


@pytest.mark.parametrize("seed", range(40))
def test_qemu_turn_random(backend, seed):
    rng = np.random.default_rng(9100 + seed)
    _, args = check(backend, "qemu_turn", *qemu_turn_args(rng))
    assert args[0][18] in (0, 1, 2, 3)


def _qemu_hand_args(**kw):
    # frames 2-5 and 10-12 dirty (7 pages), cursor at 4, chunk 3; a 4096-byte page at 4096e3 B/s and 1e6 Hz
    # takes 1000 cycles, a copy call 500 more; no CPU writes (rate 0), quantum 1000, the thread at 100
    args = list(qemu_turn_args(np.random.default_rng(1)))
    n = len(args[37])
    args[0] = state = np.zeros(24, np.int64)
    state[0], state[1], state[17], state[20], state[21] = 100, 100, 1, 4, 7
    bitmap = np.zeros((n + 63) // 64, np.uint64)
    bitmap[0] = np.uint64(sum(1 << f for f in (2, 3, 4, 5, 10, 11, 12)))
    args[2], args[3], args[4] = bitmap, n, 64
    args[5], args[6] = np.zeros(128, np.int64), np.zeros(128, np.int64)
    args[7] = np.array([4096, 0, -1, 7], np.int64)
    args[8] = np.array([4096e3, 500e-6, 0.0, 1e6])
    args[10], args[11], args[12], args[13] = 1 << 62, 1 << 62, 1000, 3
    args[14], args[15], args[16], args[17], args[18], args[19] = 100, 1e9, 0, 10**9, 4096, False
    args[21] = 0.0
    args[35], args[48] = np.zeros(1000, np.int64), False
    for key, value in kw.items():
        args[{"max_wait": 15, "quota": 17, "xbzrle": 19}[key]] = value
    return args


@pytest.mark.parametrize("case", ["bitmap", "quota", "max_wait", "xbzrle"])
def test_qemu_turn_by_hand(backend, case):
    # next_pages(3) from 4: frames 4-5 and 10 (2 runs, cursor 11); then 11-12 to the end of RAM, wrap, 2 (2 runs,
    # cursor 3); then 3 to the end, wrap, and nothing remains (1 run, cursor 0). Pieces of 2 x 500 + 3000,
    # 2 x 500 + 3000 and 500 + 1000 cycles end at 4100, 8100 and 9600.
    kw = {"bitmap": {}, "quota": {"quota": 5 * 4096}, "max_wait": {"max_wait": 4000.0},
          "xbzrle": {"xbzrle": True}}[case]
    args = _qemu_hand_args(**kw)
    for mod in (ref, backend):
        a = list(args)
        a[0], a[2], a[5], a[6], a[9] = args[0].copy(), args[2].copy(), args[5].copy(), args[6].copy(), args[9].copy()
        mod.qemu_turn(*a)
        st = a[0]
        if case == "bitmap":  # the bitmap empties: 3 pieces, 7 pages, 5 copy calls
            assert (st[0], st[2], st[3], st[5], st[7], st[16], st[18]) == (9600, 9600, 9607, 7, 5, 3, 0)
            assert (st[20], st[21], st[23], int(a[2][0])) == (0, 0, 1, 0)
            assert st[1] == 8100 and st[10] == 8000   # the CPUs stepped up to the last piece's start
            np.testing.assert_array_equal(a[9][[2, 3, 4, 5, 10, 11, 12]], args[38][[2, 3, 4, 5, 10, 11, 12]])
        elif case == "quota":  # 3 pages (12288 bytes), then (20480 - 12288) // 4096 = 2 pages (11-12, 500 + 2000
            # cycles, no wrap): the quota is used
            assert (st[0], st[4], st[5], st[16], st[18], st[20], st[21], st[23]) == (6600, 20480, 5, 2, 0, 13, 2, 0)
            assert a[5][0] == 11 and a[6][0] == 2
        elif case == "max_wait":  # 4100 - 100 cycles >= 4000: the turn is over after one piece
            assert (st[0], st[5], st[16], st[18], st[20], st[21], st[23]) == (4100, 3, 1, 0, 11, 4, 0)
        else:  # the second take wraps: its piece (11-12, 2) is left for Python to send through XBZRLE
            assert (st[0], st[5], st[16], st[18], st[20], st[21], st[22], st[23]) == (4100, 3, 1, 3, 3, 4, 2, 1)
            assert list(a[5][:2]) == [11, 2] and list(a[6][:2]) == [2, 1]
            assert st[1] == 100   # no CPU step for a piece Python sends


def test_qemu_turn_fields_match_the_compiled_enum():
    text = (ROOT / "_ext" / "kernels.pyx").read_text()
    text = "\n" + text[text.index("    QT_NOW = 0"):text.index("    QT_SIZE")] + text[text.index("    QT_SIZE"):][:20]
    enum = dict((name, int(v)) for name, v in re.findall(r"\n    QT_([A-Z_]+) = (\d+)", text))
    names = [k for k, _ in sorted(((k, v) for k, v in enum.items() if k != "SIZE"), key=lambda kv: kv[1])]
    assert enum["SIZE"] == len(dtypes.QEMU_TURN_FIELDS) == len(names)
    renamed = {"BYTES": "bytes_sent", "PAGES": "pages_sent", "ZERO_SENT": "zero_pages_sent", "BUSY": "busy_until",
               "ARRIVAL": "last_arrival", "RUNNING": "running_cycles", "REFILLS": "flush_refills"}
    assert [renamed.get(k, k.lower()) for k in names] == list(dtypes.QEMU_TURN_FIELDS)


def test_qemu_turn_refuses_bad_buffers(backend):
    args = _qemu_hand_args()
    state = args[0].copy()
    bad = list(args)
    bad[0] = state
    bad[5], bad[6] = np.zeros(100, np.int64), np.zeros(100, np.int64)   # fewer than 2 x cap = 128 runs
    with pytest.raises(ValueError):
        backend.qemu_turn(*bad)
    bad = list(args)
    bad[0] = state
    state[20] = bad[3] + 1                                              # a cursor past the memory
    with pytest.raises(ValueError):
        backend.qemu_turn(*bad)

# xen batches: a round of xc_domain_save()'s batches (peek, choice, header, pieces) in one call

def xen_batches_args(rng):
    """A xen round on a small dense memory as fused.xen_batches starts it (at a batch's start, or with a batch's
    pieces under way), with copy_loop_args' workload, link, horizon and meter limits."""
    a = list(copy_loop_args(rng))
    state, n, runs_s, runs_l, pte = a[0], a[3], a[5], a[6], a[31]
    nwords = (n + 63) // 64
    to_send = rand_bitmap(rng, nwords)
    if n % 64:
        to_send[-1] &= np.uint64((1 << (n % 64)) - 1)
    pte[rng.random(n) < float(rng.choice([0.0, 0.2, 0.8]))] |= np.uint64(PTE_DIRTY)
    xstate = np.zeros(11, np.int64)
    if a[4]:                                  # copy_loop's bitmap case: a batch's start at a random PFN
        state[4], state[7] = int(rng.integers(0, n + 1)), 0
    else:                                     # its run list: a batch under way (its header sent or not yet)
        end = int(runs_s[state[7] - 1] + runs_l[state[7] - 1])
        state[4] = int(rng.integers(end, n + 1))
        xstate[0], xstate[5] = int(runs_l[:state[7]].sum()), int(rng.integers(0, 2))
    # the rate limiter: off, or a slot of 1 cycle to 0.5 ms, a budget, a last grant (or none yet)
    xstate[6] = int(rng.choice([0, 1, 5000, 10**6]))
    xstate[7] = int(rng.integers(-300000, 300000))
    xstate[8] = int(state[0]) - int(rng.integers(0, 3 * 10**6))
    xstate[9] = int(rng.integers(0, 2))
    a[10] = int(state[0]) + int(rng.choice([0, 10**6, 10**8, 1 << 62]))       # horizon
    a[11] = int(state[0]) + int(rng.choice([10**5, 10**7, 1 << 61]))           # tick limit (a meter window's end)
    if a[12] == 1:                            # a CPU step every cycle: a horizon keeps the round short
        a[10] = min(a[10], int(state[0]) + 20000)
    garbage = [rng.integers(0, 1 << 64, nwords, dtype=np.uint64) for _ in range(3)]
    batch = int(rng.choice([1, 3, 16, 64, 300, 5000]))
    return (state, a[1], xstate, to_send, *garbage, batch, int(rng.choice([0, 4, 16])), bool(rng.integers(0, 2)),
            *a[5:])


@pytest.mark.parametrize("seed", range(40))
def test_xen_batches_random(backend, seed):
    rng = np.random.default_rng(9000 + seed)
    _, args = check(backend, "xen_batches", *xen_batches_args(rng))
    assert args[0][23] in (0, 1, 2)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("name", ["copy_loop", "qemu_turn", "xen_batches"])
def test_loops_with_the_cpus_stopped(backend, name, seed):
    # Stopped CPUs (a rendezvous, a blackout): each CPU step only moves t_done, as Cpus.advance_to does; the
    # pieces go on. The reference against the backend, and against the same call's effects by hand: no
    # write, no running time, the memory's PTEs and versions as they were.
    make = {"copy_loop": copy_loop_args, "qemu_turn": qemu_turn_args, "xen_batches": xen_batches_args}[name]
    args = list(make(np.random.default_rng(9500 + seed)))
    params = list(inspect.signature(getattr(npk, name)).parameters)
    fields = dtypes.QEMU_TURN_FIELDS if name == "qemu_turn" else dtypes.COPY_LOOP_FIELDS
    st0 = args[0].copy()
    pte0, versions0 = args[params.index("pte")].copy(), args[params.index("versions")].copy()
    _, got = check(backend, name, *args, True)
    st = got[0]
    for field in ("running_cycles", "writes", "walks", "dirty_sets", "flush_refills", "meter_fill"):
        assert st[fields.index(field)] == st0[fields.index(field)], field
    np.testing.assert_array_equal(got[params.index("pte")], pte0)
    np.testing.assert_array_equal(got[params.index("versions")], versions0)
    assert st[fields.index("t_done")] >= st0[fields.index("t_done")]


def test_xen_batches_by_hand(backend):
    # to_send = pages 10-19 and 30; PTEs 12 and 13 dirty (re-dirtied: the peek skips them); batch 4, chunk 2:
    # batches {10, 11, 14, 15} (2 skipped), {16..19}, {30}. A page takes 1000 cycles (4096 B at 4096e3 B/s,
    # 1e6 Hz), a copy call 500 more, the 4-byte header rint(0.98) = 1; no CPU writes (rate 0).
    rng = np.random.default_rng(3)
    args = list(xen_batches_args(rng))
    while len(args[36]) < 64:
        args = list(xen_batches_args(rng))
    pte, n = args[36], len(args[36])
    pte[:] = 0
    pte[[12, 13]] = PTE_DIRTY
    nwords = (n + 63) // 64
    to_send = np.zeros(nwords, np.uint64)
    to_send[0] = np.uint64(((1 << 10) - 1) << 10 | 1 << 30)
    args[0] = state = np.zeros(25, np.int64)
    state[0], state[1], state[22] = 100, 100, 1
    args[2], args[3] = np.zeros(11, np.int64), to_send
    args[4:7] = [np.zeros(nwords, np.uint64) for _ in range(3)]
    args[7], args[8], args[9] = 4, 4, True
    args[12] = np.array([4096, 0, -1, 7], np.int64)
    args[13] = np.array([4096e3, 500e-6, 0.0, 1e6])
    args[15], args[16], args[17], args[18], args[20] = 1 << 62, 1 << 62, 1000, 2, 0.0
    args[34], args[47] = np.zeros(1000, np.int64), False
    for mod in (ref, backend):
        a = _copy(args)
        mod.xen_batches(*a)
        st, xs = a[0], a[2]
        # 100 +1 (header) +2500 +2500 = 5101; +1 +2500 +2000 (split: no call) = 9602; +1 +1500 = 11103
        assert st[0] == 11103 and st[2] == 11103 and st[3] == 11110 and st[23] == 0
        assert st[9] == 9 and st[11] == 4 and st[13] == 8 and st[8] == 9 * 4096 + 3 * 4
        assert xs.tolist() == [0, 9, 2, 3, 8] + [0] * 6   # pending, sent, skipped, batches, waits; no limiter
        assert st[4] == n and st[1] == 9603               # CPUs stepped up to the last piece's start
        assert a[5][0] == to_send[0] & ~np.uint64(1 << 12 | 1 << 13)  # cand: the word peeked last
        np.testing.assert_array_equal(a[14][[10, 11, 14, 15, 16, 17, 18, 19, 30]], args[37][[10, 11, 14, 15, 16, 17, 18, 19, 30]])
        assert (a[14][[12, 13]] == args[14][[12, 13]]).all()   # the skipped pages were not copied
