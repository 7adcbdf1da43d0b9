"""The numpy twin of the compiled kernels: same names, signatures, results and in-place effects.

CONTRACT.md beside this file is the specification; the Cython kernels (_ext/kernels.pyx) are the
production backend, and tests hold both (and a naive reference) to identical results. Every kernel is
vectorised: the only Python loops are over bounded chunks of at most ``CHUNK`` = 2**22 elements (so a
268 M-frame memory never needs a full-size temporary), over CPUs, and over runs in build_copy_list,
which is sequential by nature.

Arguments are validated the way the compiled module validates them: exact dtypes, C-contiguous
buffers, matching shapes, in-range indices; violations raise ValueError before anything is modified.
All uint64 arithmetic stays in uint64 (wrapping mod 2**64) through np.uint64 constants: mixing a uint64
array with a Python int can silently promote to float64 on older numpy.
"""
import math
import sys

import numpy as np

from pagesync_model.kernels.dtypes import (
    COPY_LOOP_DONE, COPY_LOOP_FIELDS, COPY_LOOP_HORIZON, COPY_LOOP_PY_TICK, PARTNER_GARBAGE,
    QEMU_TURN_FIELDS, QEMU_TURN_HORIZON, QEMU_TURN_OVER, QEMU_TURN_PY_PIECE, QEMU_TURN_PY_TICK,
    COPY_LOOP_DONE, COPY_LOOP_FIELDS, COPY_LOOP_HORIZON, COPY_LOOP_PY_TICK, PARTNER_GARBAGE, XEN_BATCH_FIELDS,
    INDEX_DTYPE, PTE_ACCESSED, PTE_DIRTY, PTE_DTYPE, PTE_SOFT_DIRTY, SPLITMIX_GAMMA, SPLITMIX_M1, SPLITMIX_M2,
    TLB_DIRTY, TLB_FLAG_DTYPE, TLB_TAG_DTYPE, TLB_VALID, VERSION_DTYPE, WORD_DTYPE,
)

__all__ = [
    "harvest", "apply_writes", "bitmap_set_range", "bitmap_set_frames", "bitmap_popcount",
    "bitmap_extract_runs", "build_copy_list", "deliver_runs", "find_mismatch", "gen_random", "gen_sequential",
]

CHUNK = 1 << 22          # max elements of any temporary
_WORD_CHUNK = CHUNK // 64

_U = np.uint64
_ONES = _U(0xFFFFFFFFFFFFFFFF)
_LOW32 = _U(0xFFFFFFFF)
_DIRTY = _U(PTE_DIRTY)
_DIRTY_ACCESSED = _U(PTE_DIRTY | PTE_ACCESSED)
# harvest turns the dirty bit into the soft-dirty bit with one shift (bit 6 -> bit 11)
_SOFT_SHIFT = _U(PTE_SOFT_DIRTY.bit_length() - PTE_DIRTY.bit_length())
assert PTE_SOFT_DIRTY == PTE_DIRTY << int(_SOFT_SHIFT)
_VALID_DIRTY = TLB_VALID | TLB_DIRTY
_GAMMA, _M1, _M2 = _U(SPLITMIX_GAMMA), _U(SPLITMIX_M1), _U(SPLITMIX_M2)
_S30, _S27, _S31, _S32 = _U(30), _U(27), _U(31), _U(32)
_TWO32 = 1 << 32

if hasattr(np, "bitwise_count"):               # numpy >= 2.0
    def _popcount(words):
        """Total set bits of a uint64 array."""
        return int(np.bitwise_count(words).sum(dtype=np.int64))
else:                                          # pragma: no cover - numpy 1.26
    _BYTE_POP = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)

    def _popcount(words):
        """Total set bits of a uint64 array."""
        return int(_BYTE_POP[np.ascontiguousarray(words).view(np.uint8)].sum())


# --------------------------------------------------------------------------------------------------
# validation (mirrors the compiled module's checks and messages)

def _buf(name, arr, dtype, ndim=1, writable=False):
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(arr).__name__}")
    if arr.dtype != dtype:
        raise ValueError(f"{name} has dtype {arr.dtype}, expected {np.dtype(dtype)}")
    if arr.ndim != ndim:
        raise ValueError(f"{name} has {arr.ndim} dimensions, expected {ndim}")
    if not arr.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    if writable and not arr.flags.writeable:
        raise ValueError(f"{name} is read-only but is written by this kernel")
    return arr


def _check_range(lo, hi, nbits):
    if lo < 0 or hi < lo or hi > nbits:
        raise ValueError(f"need 0 <= lo <= hi <= {nbits} (64 * len(bitmap)), got lo={lo}, hi={hi}")


def _check_pt(n_frames, pt_base, ptes_per_pt):
    if ptes_per_pt < 1:
        raise ValueError(f"ptes_per_pt must be >= 1, got {ptes_per_pt}")
    if n_frames > 0 and (pt_base < 0 or pt_base + (n_frames - 1) // ptes_per_pt >= n_frames):
        raise ValueError(
            f"page-table region [pt_base, pt_base + (n_frames-1)//ptes_per_pt] = [{pt_base}, "
            f"{pt_base + (n_frames - 1) // ptes_per_pt}] must lie inside versions[0:{n_frames}]")


def _check_generator_map(span, mult, modulus, block):
    if span < 0 or span > _TWO32:
        raise ValueError(f"span must be in [0, 2**32], got {span}")
    if block < 1 or block > _TWO32:
        raise ValueError(f"block must be in [1, 2**32], got {block}")
    if modulus < 1 or modulus > _TWO32 or span > modulus * block:
        raise ValueError(f"need span <= modulus * block, modulus in [1, 2**32], got span={span}, "
                         f"modulus={modulus}, block={block}")
    if mult < 0 or mult >= _TWO32:
        raise ValueError(f"mult must be in [0, 2**32), got {mult}")
    g = math.gcd(mult, modulus)
    if g != 1:
        raise ValueError(f"mult={mult} must be coprime with modulus={modulus} (gcd is {g})")


def _check_bounds(name, bounds, limit):
    if len(bounds) and (bounds.min() < 0 or bounds.max() > limit or np.any(np.diff(bounds) < 0)):
        bad = np.flatnonzero((bounds < 0) | (bounds > limit) | np.r_[False, np.diff(bounds) < 0])[0]
        raise ValueError(f"{name} must be non-decreasing within [0, {limit}], {name}[{bad}] = {bounds[bad]}")


def _check_indices(name, idx, limit, offset=0):
    if len(idx) and (idx.min() < 0 or idx.max() >= limit):
        bad = int(np.flatnonzero((idx < 0) | (idx >= limit))[0])
        raise ValueError(f"{name}[{bad + offset}] = {idx[bad]} is outside [0, {limit})")


# --------------------------------------------------------------------------------------------------
# bit helpers

def _pack_bits(flags, offset, nwords):
    """uint64 words whose bits [offset, offset + len(flags)) are ``flags`` (bool), others 0."""
    padded = np.zeros(nwords * 64, dtype=bool)
    padded[offset:offset + len(flags)] = flags
    packed = np.packbits(padded, bitorder="little")
    if sys.byteorder == "little":
        return packed.view(np.uint64)
    return packed.view("<u8").astype(np.uint64)   # pragma: no cover


def _unpack_bits(words):
    """Bool array of the bits of uint64 ``words``, bit 0 of word 0 first."""
    if sys.byteorder != "little":                  # pragma: no cover
        words = words.astype("<u8")
    return np.unpackbits(np.ascontiguousarray(words).view(np.uint8), bitorder="little").view(bool)


def _edge_masks(lo, hi):
    """(first word, last word, mask of bits >= lo in the first, mask of bits < hi in the last); lo < hi."""
    wlo, whi = lo >> 6, (hi - 1) >> 6
    first = _ONES << _U(lo & 63)
    last = _ONES >> _U(63 - ((hi - 1) & 63))
    return wlo, whi, first, last


def _clear_range(bitmap, lo, hi):
    if lo >= hi:
        return
    wlo, whi, first, last = _edge_masks(lo, hi)
    if wlo == whi:
        bitmap[wlo] &= ~(first & last)
        return
    bitmap[wlo] &= ~first
    bitmap[wlo + 1:whi] = 0
    bitmap[whi] &= ~last


# --------------------------------------------------------------------------------------------------
# harvest

def harvest(pte, bounds, bitmap, versions, pt_base, ptes_per_pt, clear, out_dirty):
    """Walk PTE segments, moving hardware dirty bits to the bitmap (and to soft-dirty if ``clear``).

    Buffers: ``pte`` INOUT u64[n_frames]; ``bounds`` IN i64[nseg+1], non-decreasing, segment s is
    frames [bounds[s], bounds[s+1]); ``bitmap`` INOUT u64[ceil(n_frames/64)]; ``versions`` INOUT
    u32[n_frames]; ``out_dirty`` OUT i64[nseg], dirty PTEs per segment.

    Returns the number of bitmap bits that went from 0 to 1.
    Raises ValueError on mismatched lengths, bad bounds or a page-table region outside ``versions``.
    """
    _buf("pte", pte, PTE_DTYPE, writable=True)
    _buf("bounds", bounds, INDEX_DTYPE)
    _buf("bitmap", bitmap, WORD_DTYPE, writable=True)
    _buf("versions", versions, VERSION_DTYPE, writable=True)
    _buf("out_dirty", out_dirty, INDEX_DTYPE, writable=True)
    pt_base, ptes_per_pt = int(pt_base), int(ptes_per_pt)
    n, nseg = len(pte), len(bounds) - 1
    if nseg < 0:
        raise ValueError("bounds must hold at least one element (nseg + 1)")
    if len(out_dirty) != nseg:
        raise ValueError(f"out_dirty has {len(out_dirty)} elements, expected len(bounds) - 1 = {nseg}")
    if len(versions) != n:
        raise ValueError(f"versions has {len(versions)} elements, pte has {n}")
    if len(bitmap) != (n + 63) // 64:
        raise ValueError(f"bitmap has {len(bitmap)} words, expected ceil({n}/64) = {(n + 63) // 64}")
    _check_pt(n, pt_base, ptes_per_pt)
    _check_bounds("bounds", bounds, n)

    out_dirty[:] = 0
    new_bits = 0
    for s in range(nseg):
        a, b = int(bounds[s]), int(bounds[s + 1])
        # chunks aligned to 64 frames so each one maps onto whole bitmap words
        x = a
        while x < b:
            y = min(b, (x & ~63) + CHUNK)
            p = pte[x:y]
            sd = p & _DIRTY
            d = sd != 0
            cnt = int(np.count_nonzero(d))
            if cnt:
                out_dirty[s] += cnt
                wx, wy = x >> 6, ((y - 1) >> 6) + 1
                mask = _pack_bits(d, x - (wx << 6), wy - wx)
                old = bitmap[wx:wy]
                new_bits += _popcount(mask & ~old)
                old |= mask
                if clear:
                    p ^= sd
                    p |= sd << _SOFT_SHIFT
                    pts = (np.flatnonzero(d) + x) // ptes_per_pt
                    first = int(pts[0])
                    per_pt = np.bincount(pts - first)
                    versions[pt_base + first:pt_base + first + len(per_pt)] += per_pt.astype(VERSION_DTYPE)
            x = y
    return new_bits


# --------------------------------------------------------------------------------------------------
# apply_writes

def _add_counts(versions, idx):
    """versions[i] += (occurrences of i in idx), mod 2**32."""
    u, c = np.unique(idx, return_counts=True)
    versions[u] += c.astype(VERSION_DTYPE)


def apply_writes(frames, cpu_bounds, pte, versions, tlb_tag, tlb_flags, pt_base, ptes_per_pt, out_counts):
    """Apply a batch of CPU writes through per-CPU direct-mapped TLBs to the PTEs.

    Buffers: ``frames`` IN i64[nw]; ``cpu_bounds`` IN i64[ncpu+1] (CPU c performs
    frames[cpu_bounds[c]:cpu_bounds[c+1]] in order, CPU 0 first); ``pte``, ``versions`` INOUT;
    ``tlb_tag`` INOUT i64[ncpu, entries]; ``tlb_flags`` INOUT u8[ncpu, entries]; ``out_counts`` OUT
    i64[ncpu, 3] = (walks, dirty_sets, flush_refills) per CPU.

    The sequential semantics are reproduced exactly without a loop over writes. Within a chunk of
    writes (in global order), group them by TLB slot (cpu, frame % entries), keeping their order:
    - a write hits iff the slot's previous write in the chunk was to the same frame (every write
      leaves its slot valid|dirty), or, for the slot's first write, iff the pre-chunk entry is
      (frame, valid|dirty); a first write to an entry with the same tag but not valid is a
      flush refill. Every other write walks.
    - walks never clear PTE bits, so a walk sets the dirty bit iff the PTE was clean before the
      chunk and it is the first walk of that frame in global order.
    - the slot's last write decides its final TLB entry.
    Chunks run one after another, so each sees the state the previous one left.

    Raises ValueError on mismatched shapes, a frame outside [0, n_frames), bad cpu_bounds,
    entries < 1 or a page-table region outside ``versions``.
    """
    _buf("frames", frames, INDEX_DTYPE)
    _buf("cpu_bounds", cpu_bounds, INDEX_DTYPE)
    _buf("pte", pte, PTE_DTYPE, writable=True)
    _buf("versions", versions, VERSION_DTYPE, writable=True)
    _buf("tlb_tag", tlb_tag, TLB_TAG_DTYPE, ndim=2, writable=True)
    _buf("tlb_flags", tlb_flags, TLB_FLAG_DTYPE, ndim=2, writable=True)
    _buf("out_counts", out_counts, INDEX_DTYPE, ndim=2, writable=True)
    pt_base, ptes_per_pt = int(pt_base), int(ptes_per_pt)
    n, nw = len(pte), len(frames)
    ncpu, entries = tlb_tag.shape
    if len(versions) != n:
        raise ValueError(f"versions has {len(versions)} elements, pte has {n}")
    if tlb_flags.shape != tlb_tag.shape:
        raise ValueError(f"tlb_flags has shape {tlb_flags.shape}, tlb_tag has {tlb_tag.shape}")
    if entries < 1:
        raise ValueError("the TLB needs at least one entry per CPU")
    if len(cpu_bounds) != ncpu + 1:
        raise ValueError(f"cpu_bounds has {len(cpu_bounds)} elements, expected ncpu + 1 = {ncpu + 1}")
    if out_counts.shape != (ncpu, 3):
        raise ValueError(f"out_counts has shape {out_counts.shape}, expected ({ncpu}, 3)")
    return _apply_writes(frames, None, cpu_bounds, pte, versions, tlb_tag, tlb_flags, pt_base, ptes_per_pt,
                         out_counts)


def apply_writes_mapped(frames, index, cpu_bounds, pte, versions, tlb_tag, tlb_flags, pt_base, ptes_per_pt,
                        out_counts):
    """``apply_writes`` on memory stored block-sparse: write w is to frame ``frames[w]`` (its TLB slot,
    tag and page-table page) whose PTE and version live at ``pte[index[w]]`` and ``versions[index[w]]``;
    the page-table page of frame f is ``versions[pt_base + f // ptes_per_pt]``. Every write to one frame
    must carry the same index, distinct frames distinct indices.

    Raises ValueError on mismatched shapes, an index outside the buffers, a frame < 0, a page-table
    page outside ``versions``, bad cpu_bounds or entries < 1.
    """
    _buf("index", index, INDEX_DTYPE)
    if len(index) != len(frames):
        raise ValueError(f"index has {len(index)} elements, frames has {len(frames)}")
    return _apply_writes(frames, index, cpu_bounds, pte, versions, tlb_tag, tlb_flags, pt_base, ptes_per_pt,
                         out_counts)


def _apply_writes(frames, index, cpu_bounds, pte, versions, tlb_tag, tlb_flags, pt_base, ptes_per_pt, out_counts):
    """apply_writes with the buffer position of each write's frame in ``index`` (None: the frame)."""
    pt_base, ptes_per_pt = int(pt_base), int(ptes_per_pt)
    n, nw = len(pte), len(frames)
    ncpu, entries = tlb_tag.shape
    if index is None:
        _check_pt(n, pt_base, ptes_per_pt)
    elif ptes_per_pt < 1:
        raise ValueError(f"ptes_per_pt must be >= 1, got {ptes_per_pt}")
    _check_bounds("cpu_bounds", cpu_bounds, nw)
    out_counts[...] = 0
    if ncpu == 0:
        return None
    lo_w, hi_w = int(cpu_bounds[0]), int(cpu_bounds[-1])
    if index is None:
        _check_indices("frames", frames[lo_w:hi_w], n, offset=lo_w)   # frames outside belong to no CPU
    elif hi_w > lo_w:
        fw, iw = frames[lo_w:hi_w], index[lo_w:hi_w]
        bad = (fw < 0) | (iw < 0) | (iw >= n) | (pt_base < 0) | (pt_base + fw // ptes_per_pt >= n)
        if bad.any():
            w = int(np.flatnonzero(bad)[0]) + lo_w
            raise ValueError(f"write {w} (frame {frames[w]}, index {index[w]}) lies outside the {n} "
                             "buffer elements, or its page-table page does")

    tag_flat = tlb_tag.reshape(-1)
    flags_flat = tlb_flags.reshape(-1)
    ent = np.int64(entries)
    # Stable grouping by (value, position) is done by sorting one int64 (value << pos_bits | position):
    # numpy's plain sort is several times faster than a stable argsort and the keys are unique.
    pos_bits = max(1, (CHUNK - 1).bit_length())
    if max(n, ncpu * entries) >= 1 << (63 - pos_bits):
        raise ValueError(f"{max(n, ncpu * entries)} frames or TLB slots are too many for the numpy twin")
    pos_mask = np.int64((1 << pos_bits) - 1)
    shift = np.int64(pos_bits)
    for x in range(lo_w, hi_w, CHUNK):
        y = min(hi_w, x + CHUNK)
        f = frames[x:y]
        fi = f if index is None else index[x:y]
        m = y - x
        pos = np.arange(m, dtype=np.int64)
        cpu = np.searchsorted(cpu_bounds, pos + x, side="right") - 1
        comp = np.sort(((cpu * ent + f % ent) << shift) | pos)
        order = comp & pos_mask
        ks = comp >> shift
        fs = f[order]
        same_slot = np.empty(m, dtype=bool)
        same_slot[0] = False
        np.equal(ks[1:], ks[:-1], out=same_slot[1:])
        hit_s = np.zeros(m, dtype=bool)
        hit_s[1:] = same_slot[1:] & (fs[1:] == fs[:-1])
        firsts = np.flatnonzero(~same_slot)
        tag0 = tag_flat[ks[firsts]]
        fl0 = flags_flat[ks[firsts]]
        tag_match = tag0 == fs[firsts]
        hit_s[firsts] = tag_match & (fl0 == _VALID_DIRTY)
        refill_pos = order[firsts[tag_match & ((fl0 & TLB_VALID) == 0)]]

        walk = np.empty(m, dtype=bool)
        walk[order] = ~hit_s
        walk_idx = np.flatnonzero(walk)
        # only walks of PTEs clean at the start of the chunk can set a dirty bit: the first of each frame
        cw = walk_idx[(pte[fi[walk_idx]] & _DIRTY) == 0]
        wcomp = np.sort((f[cw] << shift) | cw)
        wf = wcomp >> shift
        first = np.empty(len(wf), dtype=bool)
        first[:1] = True
        np.not_equal(wf[1:], wf[:-1], out=first[1:])
        set_frames = wf[first]
        set_writes = wcomp[first] & pos_mask

        out_counts[:, 0] += np.bincount(cpu[walk_idx], minlength=ncpu)
        out_counts[:, 1] += np.bincount(cpu[set_writes], minlength=ncpu)
        out_counts[:, 2] += np.bincount(cpu[refill_pos], minlength=ncpu)

        _add_counts(versions, fi)
        pte[set_frames if index is None else fi[set_writes]] |= _DIRTY_ACCESSED
        _add_counts(versions, pt_base + set_frames // ptes_per_pt)

        last = np.empty(m, dtype=bool)
        last[-1] = True
        np.not_equal(ks[1:], ks[:-1], out=last[:-1])
        tag_flat[ks[last]] = fs[last]
        flags_flat[ks[last]] = _VALID_DIRTY
    return None


def block_index(frames, slots, low, block, out):
    """Where block-sparse memory keeps each frame: ``out[w] = frames[w]`` below ``low``, else
    ``low + slots[b] * block + u % block`` with ``u = frames[w] - low`` and ``b = u // block``, or -1
    when ``slots[b] < 0``. Returns how many are -1.

    Raises ValueError on mismatched lengths, block < 1, or a frame < 0 or beyond the blocks.
    """
    _buf("frames", frames, INDEX_DTYPE)
    _buf("slots", slots, INDEX_DTYPE)
    _buf("out", out, INDEX_DTYPE, writable=True)
    low, block, nw, nb = int(low), int(block), len(frames), len(slots)
    if len(out) != nw:
        raise ValueError(f"out has {len(out)} elements, frames has {nw}")
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    missing = 0
    for x in range(0, nw, CHUNK):
        f = frames[x:x + CHUNK]
        u = f - low
        bad = (f < 0) | (u // block >= nb)
        if bad.any():
            w = int(np.flatnonzero(bad)[0]) + x
            raise ValueError(f"frames[{w}] = {frames[w]} is outside [0, {low} + {nb} * {block})")
        user = u >= 0
        b = np.where(user, u // block, 0)
        s = slots[b]
        o = np.where(user, low + s * block + u % block, f)
        gone = user & (s < 0)
        o[gone] = -1
        out[x:x + CHUNK] = o
        missing += int(np.count_nonzero(gone))
    return missing


# --------------------------------------------------------------------------------------------------
# bitmap kernels

def bitmap_set_range(bitmap, lo, hi):
    """Set bits [lo, hi) of ``bitmap`` (INOUT u64[nwords]); return how many were 0.

    Raises ValueError unless 0 <= lo <= hi <= 64 * nwords.
    """
    _buf("bitmap", bitmap, WORD_DTYPE, writable=True)
    lo, hi = int(lo), int(hi)
    _check_range(lo, hi, len(bitmap) * 64)
    if lo == hi:
        return 0
    wlo, whi, first, last = _edge_masks(lo, hi)
    if wlo == whi:
        m = first & last
        new_bits = _popcount(np.array([m & ~bitmap[wlo]], dtype=np.uint64))
        bitmap[wlo] |= m
        return new_bits
    new_bits = _popcount(np.array([first & ~bitmap[wlo], last & ~bitmap[whi]], dtype=np.uint64))
    bitmap[wlo] |= first
    bitmap[whi] |= last
    for x in range(wlo + 1, whi, _WORD_CHUNK):
        y = min(whi, x + _WORD_CHUNK)
        new_bits += 64 * (y - x) - _popcount(bitmap[x:y])
        bitmap[x:y] = _ONES
    return new_bits


def bitmap_set_frames(bitmap, frames):
    """Set the bits of ``frames`` (IN i64[k], any order, duplicates allowed) in ``bitmap`` (INOUT).

    Returns the number of distinct bits that were 0 before the call.
    Raises ValueError if a frame is outside [0, 64 * nwords).
    """
    _buf("bitmap", bitmap, WORD_DTYPE, writable=True)
    _buf("frames", frames, INDEX_DTYPE)
    _check_indices("frames", frames, len(bitmap) * 64)
    new_bits = 0
    for x in range(0, len(frames), CHUNK):
        u = np.unique(frames[x:x + CHUNK])
        words = u >> 6
        bits = _U(1) << (u & 63).astype(np.uint64)
        uw, starts = np.unique(words, return_index=True)
        masks = np.bitwise_or.reduceat(bits, starts)
        new_bits += _popcount(masks & ~bitmap[uw])
        bitmap[uw] |= masks
    return new_bits


def bitmap_popcount(bitmap, lo, hi):
    """Number of set bits in [lo, hi) of ``bitmap`` (IN u64[nwords]).

    Raises ValueError unless 0 <= lo <= hi <= 64 * nwords.
    """
    _buf("bitmap", bitmap, WORD_DTYPE)
    lo, hi = int(lo), int(hi)
    _check_range(lo, hi, len(bitmap) * 64)
    if lo == hi:
        return 0
    wlo, whi, first, last = _edge_masks(lo, hi)
    if wlo == whi:
        return _popcount(np.array([bitmap[wlo] & first & last], dtype=np.uint64))
    total = _popcount(np.array([bitmap[wlo] & first, bitmap[whi] & last], dtype=np.uint64))
    for x in range(wlo + 1, whi, _WORD_CHUNK):
        total += _popcount(bitmap[x:min(whi, x + _WORD_CHUNK)])
    return total


def bitmap_extract_runs(bitmap, lo, hi, max_pages, clear, out_starts, out_lens):
    """Find maximal runs of set bits in [lo, hi) (cut at lo and hi), optionally test-and-clear them.

    Buffers: ``bitmap`` INOUT u64[nwords] (modified only if ``clear``); ``out_starts``, ``out_lens``
    OUT i64[cap] (entries past ``nruns`` untouched).

    Stops after the run that makes nruns == cap or pages >= max_pages (runs are never split);
    ``next_pos`` is that run's end, or ``hi`` when the scan reached hi.
    Returns (nruns, pages, next_pos).
    Raises ValueError unless 0 <= lo <= hi <= 64 * nwords, max_pages >= 1 and
    len(out_starts) == len(out_lens) >= 1.
    """
    _buf("bitmap", bitmap, WORD_DTYPE, writable=True)
    _buf("out_starts", out_starts, INDEX_DTYPE, writable=True)
    _buf("out_lens", out_lens, INDEX_DTYPE, writable=True)
    lo, hi, max_pages = int(lo), int(hi), int(max_pages)
    _check_range(lo, hi, len(bitmap) * 64)
    cap = len(out_starts)
    if len(out_lens) != cap:
        raise ValueError(f"out_starts has {cap} elements, out_lens has {len(out_lens)}")
    if cap < 1:
        raise ValueError("out_starts/out_lens must hold at least one run (cap >= 1)")
    if max_pages < 1:
        raise ValueError(f"max_pages must be >= 1, got {max_pages}")

    nruns = pages = 0
    pending = -1          # start of a run that reached the end of the previous chunk
    pos = lo
    while pos < hi:
        y = min(hi, (pos & ~63) + CHUNK)
        wx, wy = pos >> 6, ((y - 1) >> 6) + 1
        words = bitmap[wx:wy]
        if pending < 0 and not words.any():
            pos = y
            continue
        bits = _unpack_bits(words)[pos - (wx << 6):y - (wx << 6)]
        # edges of runs: ext[0] says a run is already open, ext[-1] = 1 keeps a run that reaches y
        # open (it ends in a later chunk) unless y == hi, where every run is cut
        ext = np.empty(len(bits) + 2, dtype=np.int8)
        ext[0] = pending >= 0
        ext[1:-1] = bits
        ext[-1] = y < hi
        d = np.diff(ext)
        starts = np.flatnonzero(d[:-1] == 1) + pos
        ends = np.flatnonzero(d == -1) + pos
        if pending >= 0:
            starts = np.concatenate(([pending], starts))
        pending = int(starts[-1]) if len(starts) > len(ends) else -1
        starts = starts[:len(ends)]
        if len(ends):
            lens = ends - starts
            cum_pages = pages + np.cumsum(lens)
            cum_runs = nruns + np.arange(1, len(ends) + 1)
            stop = np.flatnonzero((cum_runs >= cap) | (cum_pages >= max_pages))
            k = int(stop[0]) + 1 if len(stop) else len(ends)
            out_starts[nruns:nruns + k] = starts[:k]
            out_lens[nruns:nruns + k] = lens[:k]
            nruns += k
            pages = int(cum_pages[k - 1])
            if len(stop):
                end = int(ends[k - 1])
                if clear:
                    # every set bit in [pos, end) belongs to an appended run; earlier parts of a run
                    # that started in a previous chunk were cleared with that chunk
                    _clear_range(bitmap, pos, end)
                return nruns, pages, end
        if clear:
            _clear_range(bitmap, pos, y)
        pos = y
    return nruns, pages, hi


def bitmap_take_pages(bitmap, lo, hi, k, clear, out_starts, out_lens):
    """The first ``k`` set pages of [lo, hi) as maximal runs (cut at lo and hi), the last run cut so that
    no more than ``k`` pages are taken; optionally test-and-clear exactly the pages taken.

    Buffers: ``bitmap`` INOUT u64[nwords] (modified only if ``clear``); ``out_starts``, ``out_lens``
    OUT i64[cap] (entries past ``nruns`` untouched).

    Stops when pages == k, nruns == cap or the scan reaches hi. ``end`` is the end of the last run
    taken when pages == k, else ``hi``. Returns (nruns, pages, end).
    Raises ValueError unless 0 <= lo <= hi <= 64 * nwords, k >= 1 and len(out_starts) == len(out_lens) >= 1.
    """
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    _buf("bitmap", bitmap, WORD_DTYPE, writable=True)
    lo, hi = int(lo), int(hi)
    _check_range(lo, hi, len(bitmap) * 64)
    # Look no further than the k-th set page (windows doubling up to CHUNK bits): a run of all
    # memory is not scanned to its end to take a quantum's worth of it.
    lim, x, need, span = hi, lo, k, max(64, min(k, CHUNK))
    while x < hi:
        y = min(hi, x + span)
        c = bitmap_popcount(bitmap, x, y)
        if c >= need:
            wx = x >> 6
            bits = _unpack_bits(bitmap[wx:((y - 1) >> 6) + 1])[x - (wx << 6):y - (wx << 6)]
            lim = x + int(np.flatnonzero(bits)[need - 1]) + 1
            break
        need -= c
        x = y
        span = min(2 * span, CHUNK)
    nruns, pages, _nxt = bitmap_extract_runs(bitmap, lo, lim, k, False, out_starts, out_lens)
    end = hi
    if pages >= k:  # cut the last run so that exactly k pages go
        out_lens[nruns - 1] -= pages - k
        pages = k
        end = int(out_starts[nruns - 1] + out_lens[nruns - 1])
    if clear and nruns:
        # the same runs, now test-and-cleared: [lo, end) holds exactly them
        bitmap_extract_runs(bitmap, lo, end, k, True, out_starts, out_lens)
    return nruns, pages, end


# --------------------------------------------------------------------------------------------------
# build_copy_list

def build_copy_list(run_starts, run_lens, nearby, max_ranges, out_starts, out_ends):
    """Build the Stratus blackout copy list (MAX_COPYRANGE ranges with NEARBY merging).

    Buffers: ``run_starts``, ``run_lens`` IN i64[k], sorted, non-overlapping, lengths >= 1;
    ``out_starts``, ``out_ends`` OUT i64[>= max_ranges] (entries past nranges untouched).
    Returns nranges.
    Raises ValueError on mismatched lengths, unsorted/overlapping/empty runs, nearby < 0,
    max_ranges < 2, or output buffers shorter than max_ranges.
    """
    _buf("run_starts", run_starts, INDEX_DTYPE)
    _buf("run_lens", run_lens, INDEX_DTYPE)
    _buf("out_starts", out_starts, INDEX_DTYPE, writable=True)
    _buf("out_ends", out_ends, INDEX_DTYPE, writable=True)
    nearby, max_ranges = int(nearby), int(max_ranges)
    k = len(run_starts)
    if len(run_lens) != k:
        raise ValueError(f"run_starts has {k} elements, run_lens has {len(run_lens)}")
    if nearby < 0:
        raise ValueError(f"nearby must be >= 0, got {nearby}")
    if max_ranges < 2:
        raise ValueError(f"max_ranges must be >= 2, got {max_ranges}")
    if len(out_starts) < max_ranges or len(out_ends) < max_ranges:
        raise ValueError(f"out_starts/out_ends have {len(out_starts)}/{len(out_ends)} elements, "
                         f"need max_ranges = {max_ranges}")
    if k == 0:
        return 0
    run_ends = run_starts + run_lens
    if run_lens.min() < 1:
        i = int(np.flatnonzero(run_lens < 1)[0])
        raise ValueError(f"run_lens[{i}] = {run_lens[i]} must be >= 1")
    overlap = run_starts[1:] < run_ends[:-1]
    if overlap.any():
        i = int(np.flatnonzero(overlap)[0]) + 1
        raise ValueError(f"runs must be sorted and non-overlapping: run {i} starts at {run_starts[i]}, "
                         f"run {i - 1} ends at {run_ends[i - 1]}")
    # With sorted, non-overlapping runs the newest range always ends where the previous run ended, so
    # whether a run extends it (rule 1) does not depend on the merges: clusters can be formed up front.
    opens = np.empty(k, dtype=bool)
    opens[0] = True
    np.greater(run_starts[1:], run_ends[:-1] - 1 + nearby, out=opens[1:])
    first = np.flatnonzero(opens)
    c_starts = run_starts[first].tolist()
    c_ends = run_ends[np.r_[first[1:] - 1, k - 1]].tolist()

    starts, ends = c_starts[:max_ranges], c_ends[:max_ranges]
    gaps = [starts[i + 1] - ends[i] for i in range(len(starts) - 1)]
    for s, e in zip(c_starts[max_ranges:], c_ends[max_ranges:]):
        # rule 3: merge the closest neighbours (min() returns the leftmost of equal gaps)
        i = gaps.index(min(gaps))
        ends[i] = ends[i + 1]
        del starts[i + 1], ends[i + 1], gaps[i]
        if i < len(gaps):
            gaps[i] = starts[i + 1] - ends[i]
        gaps.append(s - ends[-1])
        starts.append(s)
        ends.append(e)
    n = len(starts)
    out_starts[:n] = starts
    out_ends[:n] = ends
    return n


# --------------------------------------------------------------------------------------------------
# delivery and verification

def _run_pieces(starts, lens):
    """Yield frame-index arrays covering the runs in order, each at most CHUNK long."""
    half = CHUNK // 2
    keep = lens > 0
    starts, lens = starts[keep], lens[keep]
    if not len(starts):
        return
    # cut runs into pieces of at most CHUNK/2 frames, then batch pieces at most CHUNK frames at a time
    npieces = (lens + half - 1) // half
    run_of = np.repeat(np.arange(len(starts)), npieces)
    piece_no = np.arange(len(run_of)) - np.repeat(np.cumsum(npieces) - npieces, npieces)
    p_starts = starts[run_of] + piece_no * half
    p_lens = np.minimum(lens[run_of] - piece_no * half, half)
    p_offset = np.cumsum(p_lens) - p_lens
    batch = p_offset // half
    cuts = np.flatnonzero(np.diff(batch)) + 1
    for b0, b1 in zip(np.r_[0, cuts], np.r_[cuts, len(p_starts)]):
        ps, pl = p_starts[b0:b1], p_lens[b0:b1]
        total = int(pl.sum())
        base = np.repeat(ps - (np.cumsum(pl) - pl), pl)
        yield base + np.arange(total, dtype=np.int64)


def deliver_runs(src, dst, starts, lens):
    """Copy runs of page versions: dst[s:s+l] = src[s:s+l] for each run.

    Buffers: ``src`` IN u32[n]; ``dst`` INOUT u32[n]; ``starts``, ``lens`` IN i64[k].
    Returns how many copied source frames held version 0, counted once per copy.
    Raises ValueError on mismatched lengths or a run outside [0, n).
    """
    _buf("src", src, VERSION_DTYPE)
    _buf("dst", dst, VERSION_DTYPE, writable=True)
    _buf("starts", starts, INDEX_DTYPE)
    _buf("lens", lens, INDEX_DTYPE)
    n, k = len(src), len(starts)
    if len(dst) != n:
        raise ValueError(f"dst has {len(dst)} elements, src has {n}")
    if len(lens) != k:
        raise ValueError(f"starts has {k} elements, lens has {len(lens)}")
    if k:
        bad = (starts < 0) | (lens < 0) | (starts > n - lens)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"run {i} = [{starts[i]}, {starts[i]} + {lens[i]}) is outside [0, {n})")
    zeros = 0
    for idx in _run_pieces(starts, lens):
        v = src[idx]
        dst[idx] = v
        zeros += int(np.count_nonzero(v == 0))
    return zeros


def find_mismatch(a, b, out):
    """Count frames with a[f] != b[f]; write the first min(count, cap) of them, increasing, to ``out``.

    Buffers: ``a``, ``b`` IN u32[n]; ``out`` OUT i64[cap] (entries past the count untouched).
    Returns the number of mismatching frames.
    Raises ValueError if a and b differ in length.
    """
    _buf("a", a, VERSION_DTYPE)
    _buf("b", b, VERSION_DTYPE)
    _buf("out", out, INDEX_DTYPE, writable=True)
    n, cap = len(a), len(out)
    if len(b) != n:
        raise ValueError(f"a has {n} elements, b has {len(b)}")
    count = 0
    for x in range(0, n, CHUNK):
        ne = a[x:x + CHUNK] != b[x:x + CHUNK]
        if count < cap:
            where = np.flatnonzero(ne)
            take = min(len(where), cap - count)
            out[count:count + take] = where[:take] + x
            count += len(where)
        else:
            count += int(np.count_nonzero(ne))
    return count


# --------------------------------------------------------------------------------------------------
# write-target generators

def _splitmix(keys_plus):
    """splitmix64 finaliser of (stream_key + (k+1)*GAMMA), uint64 in, uint64 out, wrapping."""
    z = keys_plus
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


def _check_counts(counts, ncpu, out):
    if len(counts) != ncpu:
        raise ValueError(f"counts has {len(counts)} elements, expected {ncpu}")
    if ncpu and counts.min() < 0:
        c = int(np.flatnonzero(counts < 0)[0])
        raise ValueError(f"counts[{c}] = {counts[c]} must be >= 0")
    total = int(counts.sum())
    if len(out) != total:
        raise ValueError(f"out has {len(out)} elements, expected sum(counts) = {total}")


def _place(idx, umult, umod, ublk, ibase):
    """Frames of working-set indices: blocks of ``block`` frames permuted by ``mult``."""
    if ublk == 1:
        return ((idx * umult) % umod).astype(np.int64) + ibase
    return ((((idx // ublk) * umult) % umod) * ublk + idx % ublk).astype(np.int64) + ibase


def gen_random(stream_keys, counters, counts, hot_span, hot_threshold, span, base, mult, modulus, out, block=1):
    """Counter-based splitmix64 write targets with a hot set, independent of batch sizes.

    Buffers: ``stream_keys`` IN u64[ncpu]; ``counters`` INOUT u64[ncpu] (advanced by counts, mod
    2**64); ``counts`` IN i64[ncpu]; ``out`` OUT i64[sum(counts)], CPU c's targets at offset
    sum(counts[:c]).
    Raises ValueError on mismatched lengths, negative counts, or violated preconditions
    (0 <= hot_span <= span <= modulus <= 2**32, 0 <= hot_threshold <= 2**32, mult < 2**32 coprime
    with modulus).
    """
    _buf("stream_keys", stream_keys, np.uint64)
    _buf("counters", counters, np.uint64, writable=True)
    _buf("counts", counts, INDEX_DTYPE)
    _buf("out", out, INDEX_DTYPE, writable=True)
    hot_span, hot_threshold, span = int(hot_span), int(hot_threshold), int(span)
    base, mult, modulus = int(base), int(mult), int(modulus)
    ncpu = len(stream_keys)
    if len(counters) != ncpu or len(counts) != ncpu:
        raise ValueError(f"stream_keys, counters, counts have {ncpu}, {len(counters)}, {len(counts)} "
                         "elements; they must match")
    _check_counts(counts, ncpu, out)
    if hot_threshold < 0 or hot_threshold > _TWO32:
        raise ValueError(f"hot_threshold must be in [0, 2**32], got {hot_threshold}")
    if hot_span < 0 or hot_span > span:
        raise ValueError(f"need 0 <= hot_span <= span, got hot_span={hot_span}, span={span}")
    block = int(block)
    _check_generator_map(span, mult, modulus, block)
    thr, hspan, cspan = _U(hot_threshold), _U(hot_span), _U(span - hot_span)
    umult, umod, ublk, ibase = _U(mult), _U(modulus), _U(block), np.int64(base)
    pos = 0
    for c in range(ncpu):
        cnt = int(counts[c])
        # z0 = key + (counter + 1) * GAMMA; draw j adds j * GAMMA (all mod 2**64)
        z0 = stream_keys[c:c + 1] + (counters[c:c + 1] + _U(1)) * _GAMMA
        for x in range(0, cnt, CHUNK):
            j = np.arange(x, min(cnt, x + CHUNK), dtype=np.uint64)
            z = _splitmix(z0 + j * _GAMMA)
            hi, lo = z >> _S32, z & _LOW32
            # lo < 2**32 and spans <= 2**32: the products fit in 64 bits
            idx = np.where(hi < thr, (lo * hspan) >> _S32, hspan + ((lo * cspan) >> _S32))
            out[pos:pos + len(j)] = _place(idx, umult, umod, ublk, ibase)
            pos += len(j)
        counters[c:c + 1] += _U(cnt)
    return None


def gen_sequential(cursors, counts, stride, span, base, mult, modulus, out, block=1):
    """Sequential (strided, wrapping) write targets per CPU.

    Buffers: ``cursors`` INOUT i64[ncpu] (left in [0, span)); ``counts`` IN i64[ncpu]; ``out`` OUT
    i64[sum(counts)], CPU c's targets at offset sum(counts[:c]). Target j of CPU c is
    base + (idx * mult) % modulus with idx = (cursors[c] + j * stride) % span (Python modulo).
    Raises ValueError on mismatched lengths, negative counts, span < 1, or violated preconditions
    (span <= modulus <= 2**32, mult < 2**32 coprime with modulus).
    """
    _buf("cursors", cursors, INDEX_DTYPE, writable=True)
    _buf("counts", counts, INDEX_DTYPE)
    _buf("out", out, INDEX_DTYPE, writable=True)
    stride, span, base, mult, modulus = int(stride), int(span), int(base), int(mult), int(modulus)
    ncpu = len(cursors)
    if len(counts) != ncpu:
        raise ValueError(f"cursors has {ncpu} elements, counts has {len(counts)}")
    _check_counts(counts, ncpu, out)
    if span < 1:
        raise ValueError(f"span must be >= 1, got {span}")
    block = int(block)
    _check_generator_map(span, mult, modulus, block)
    step = stride % span                      # Python modulo: 0 <= step < span <= 2**32
    umult, umod, ublk, ibase = _U(mult), _U(modulus), _U(block), np.int64(base)
    pos = 0
    for c in range(ncpu):
        cnt = int(counts[c])
        cur = int(cursors[c]) % span
        for x in range(0, cnt, CHUNK):
            j = np.arange(x, min(cnt, x + CHUNK), dtype=np.uint64)
            # j < 2**22 per chunk start offset handled in Python ints, step and span < 2**32+1
            first = (cur + x * step) % span
            idx = (_U(first) + (j - _U(x)) * _U(step)) % _U(span)
            out[pos:pos + len(j)] = _place(idx, umult, umod, ublk, ibase)
            pos += len(j)
        cursors[c] = (cur + cnt * step) % span
    return None


# --------------------------------------------------------------------------------------------------
# the CPUs' time accounting of one step

def cpu_debt_step(run, debt, paced, out_avail):
    """Pay the CPUs' tracking debt from ``run`` cycles of running time (CONTRACT.md).

    ``debt`` INOUT f64[ncpu], ``out_avail`` OUT f64[ncpu]. Raises ValueError on mismatched lengths.
    """
    _buf("debt", debt, np.float64, writable=True)
    _buf("out_avail", out_avail, np.float64, writable=True)
    if len(out_avail) != len(debt):
        raise ValueError(f"debt has {len(debt)} elements, out_avail has {len(out_avail)}")
    run = float(run)
    avail = run - debt
    debt[:] = np.where(avail < 0, -avail, 0.0)
    if paced:
        avail = np.where(avail < 0, 0.0, run)
    np.maximum(avail, 0.0, out=out_avail)
    return None


def rate_step(run, rate_per_cycle, carry, counts):
    """Writes due in ``run`` cycles at ``rate_per_cycle``, the fractions carried over (CONTRACT.md).

    ``run`` IN f64[ncpu], ``carry`` INOUT f64[ncpu], ``counts`` OUT i64[ncpu]; returns sum(counts).
    """
    _buf("run", run, np.float64)
    _buf("carry", carry, np.float64, writable=True)
    _buf("counts", counts, INDEX_DTYPE, writable=True)
    if len(carry) != len(run) or len(counts) != len(run):
        raise ValueError(f"run has {len(run)} elements, carry {len(carry)}, counts {len(counts)}")
    expected = run * float(rate_per_cycle) + carry
    counts[:] = np.floor(expected).astype(INDEX_DTYPE)
    carry[:] = expected - counts
    return int(counts.sum())


def charge_tracking(step_counts, walk_cycles, dirty_cycles, debt, out_extra):
    """Charge each CPU the cycles tracking cost it in one step (CONTRACT.md).

    ``step_counts`` IN i64[ncpu, 3], ``debt`` INOUT f64[ncpu], ``out_extra`` OUT f64[ncpu]; returns
    (walks, dirty_sets, flush_refills) summed over the CPUs.
    """
    _buf("step_counts", step_counts, INDEX_DTYPE, ndim=2)
    _buf("debt", debt, np.float64, writable=True)
    _buf("out_extra", out_extra, np.float64, writable=True)
    n = len(debt)
    if step_counts.shape != (n, 3) or len(out_extra) != n:
        raise ValueError(f"step_counts must be [{n}, 3] and out_extra [{n}], got {list(step_counts.shape)} "
                         f"and [{len(out_extra)}]")
    out_extra[:] = step_counts[:, 2] * float(walk_cycles) + step_counts[:, 1] * float(dirty_cycles)
    debt += out_extra
    walks, dirty_sets, refills = step_counts.sum(axis=0)
    return int(walks), int(dirty_sets), int(refills)


# --------------------------------------------------------------------------------------------------
# one CPU step of a random-write workload, fused: the compositions of the kernels above (CONTRACT.md)

def cpu_rate_step(run, debt, paced, rate_per_cycle, carry, out_avail, counts):
    """``cpu_debt_step`` then ``rate_step`` on its ``out_avail``; returns the total (CONTRACT.md).

    Raises ValueError on mismatched lengths, before any buffer is changed.
    """
    n = len(debt)
    _buf("debt", debt, np.float64, writable=True)
    _buf("out_avail", out_avail, np.float64, writable=True)
    if len(out_avail) != n or len(carry) != n or len(counts) != n:
        raise ValueError(f"debt has {n} elements, out_avail {len(out_avail)}, carry {len(carry)}, counts {len(counts)}")
    _buf("carry", carry, np.float64, writable=True)
    _buf("counts", counts, INDEX_DTYPE, writable=True)
    cpu_debt_step(run, debt, paced, out_avail)
    return rate_step(out_avail, rate_per_cycle, carry, counts)


def random_write_step(stream_keys, counters, counts, hot_span, hot_threshold, span, base, mult, modulus, block, out,
                      cpu_bounds, pte, versions, tlb_tag, tlb_flags, pt_base, ptes_per_pt, step_counts, walk_cycles,
                      dirty_cycles, debt, out_extra):
    """``gen_random``, ``cpu_bounds = [0, cumsum(counts)]``, ``apply_writes`` and ``charge_tracking`` in one
    call; returns the latter's totals (CONTRACT.md). Every generated frame lies in [base, base + modulus *
    block), which must lie inside [0, n_frames). Raises ValueError before any buffer is changed."""
    _buf("stream_keys", stream_keys, np.uint64)
    _buf("counters", counters, np.uint64, writable=True)
    _buf("counts", counts, INDEX_DTYPE)
    _buf("out", out, INDEX_DTYPE, writable=True)
    _buf("cpu_bounds", cpu_bounds, INDEX_DTYPE, writable=True)
    _buf("pte", pte, PTE_DTYPE, writable=True)
    _buf("versions", versions, VERSION_DTYPE, writable=True)
    _buf("tlb_tag", tlb_tag, TLB_TAG_DTYPE, ndim=2, writable=True)
    _buf("tlb_flags", tlb_flags, TLB_FLAG_DTYPE, ndim=2, writable=True)
    _buf("debt", debt, np.float64, writable=True)
    _buf("out_extra", out_extra, np.float64, writable=True)
    _buf("step_counts", step_counts, INDEX_DTYPE, ndim=2, writable=True)
    ncpu, n = len(stream_keys), len(pte)
    base, modulus, block = int(base), int(modulus), int(block)
    if len(counts) != ncpu:
        raise ValueError(f"stream_keys has {ncpu} elements, counts has {len(counts)}")
    _check_counts(counts, ncpu, out)
    if len(counters) != ncpu:
        raise ValueError(f"stream_keys has {ncpu} elements, counters has {len(counters)}")
    if not 0 <= int(hot_threshold) <= _TWO32:
        raise ValueError(f"hot_threshold must be in [0, 2**32], got {hot_threshold}")
    if not 0 <= int(hot_span) <= int(span):
        raise ValueError(f"need 0 <= hot_span <= span, got hot_span={hot_span}, span={span}")
    _check_generator_map(int(span), int(mult), modulus, block)
    if base < 0 or base + modulus * block > n:
        raise ValueError(f"generated frames [{base}, {base} + {modulus} * {block}) must lie inside [0, {n})")
    if len(versions) != n:
        raise ValueError(f"versions has {len(versions)} elements, pte has {n}")
    if tlb_tag.ndim != 2 or tlb_tag.shape[0] != ncpu or tlb_flags.shape != tlb_tag.shape:
        raise ValueError(f"tlb_tag and tlb_flags must both be [{ncpu}, entries], got {list(tlb_tag.shape)} and "
                         f"{list(tlb_flags.shape)}")
    if tlb_tag.shape[1] < 1:
        raise ValueError("the TLB needs at least one entry per CPU")
    if len(cpu_bounds) != ncpu + 1:
        raise ValueError(f"cpu_bounds has {len(cpu_bounds)} elements, expected ncpu + 1 = {ncpu + 1}")
    if step_counts.shape != (ncpu, 3):
        raise ValueError(f"step_counts has shape {step_counts.shape}, expected ({ncpu}, 3)")
    if len(debt) != ncpu or len(out_extra) != ncpu:
        raise ValueError(f"debt and out_extra must have {ncpu} elements, got {len(debt)} and {len(out_extra)}")
    _check_pt(n, int(pt_base), int(ptes_per_pt))
    gen_random(stream_keys, counters, counts, hot_span, hot_threshold, span, base, mult, modulus, out, block)
    cpu_bounds[0] = 0
    np.cumsum(counts, out=cpu_bounds[1:])
    apply_writes(out, cpu_bounds, pte, versions, tlb_tag, tlb_flags, pt_base, ptes_per_pt, step_counts)
    return charge_tracking(step_counts, walk_cycles, dirty_cycles, debt, out_extra)


# --------------------------------------------------------------------------------------------------
# the copy loop: CPU steps, copy pieces and the link over many quanta (CONTRACT.md), as the per-step
# twins above in a Python loop

# the steps copy_loop, qemu_turn and xen_batches share

class _Named:
    """A kernel's ``state`` array by field name (ints), as the shared steps read and write it."""

    __slots__ = ("a", "F")

    def __init__(self, a, F):
        self.a, self.F = a, F

    def __getitem__(self, name):
        return int(self.a[self.F[name]])

    def __setitem__(self, name, value):
        self.a[self.F[name]] = value


def _cpu_steps(st, s, t_done, fill, tracking, tick_limit, quantum, paced, rate_per_cycle, carry, debt, avail, counts,
               stream_keys, counters, hot_span, hot_threshold, span, base, mult, modulus, block, frames, cpu_bounds,
               pte, versions, tlb_tag, tlb_flags, pt_base, ptes_per_pt, step_counts, walk_cycles, dirty_cycles, extra,
               meter_buf, meter_on, stopped=False):
    """The CPU steps due by ``s`` (Cpus.advance_to's fused path): one a quantum after ``t_done``, then one to s.
    ``st`` holds running_cycles, writes, walks, dirty_sets, flush_refills and next_tick by name. Returns
    (t_done, fill, tracking, left): ``left`` when a step is left to Python (its time in next_tick). With
    ``stopped`` (the CPUs stopped) a step only moves ``t_done``."""
    ncpu = len(stream_keys)
    wcap, mcap = len(frames), (len(meter_buf) if meter_on else 0)
    while t_done < s:
        t = min(t_done + quantum, s)
        dt = t - t_done
        bound = ncpu * (int(float(dt) * rate_per_cycle) + 2)
        if t > tick_limit or bound > wcap or (meter_on and fill + bound > mcap):
            st["next_tick"] = t
            return t_done, fill, tracking, True
        t_done = t
        if stopped:
            continue
        st["running_cycles"] += dt
        total = cpu_rate_step(float(dt), debt, paced, rate_per_cycle, carry, avail, counts)
        if total == 0:
            continue
        walks, dirty_sets, refills = random_write_step(
            stream_keys, counters, counts, hot_span, hot_threshold, span, base, mult, modulus, block, frames[:total],
            cpu_bounds, pte, versions, tlb_tag, tlb_flags, pt_base, ptes_per_pt, step_counts, walk_cycles,
            dirty_cycles, debt, extra)
        if meter_on:
            meter_buf[fill:fill + total] = frames[:total]
            fill += total
        tracking += float(np.add.reduce(extra))
        st["writes"] += total
        st["walks"] += walks
        st["dirty_sets"] += dirty_sets
        st["flush_refills"] += refills
    return t_done, fill, tracking, False


def _read_run(partner, versions, f, e, count_first):
    """Pages [f, e) read into ``partner``: (first copies, counted only with ``count_first``; all-zero pages)."""
    first = int(np.count_nonzero(partner[f:e] == PARTNER_GARBAGE)) if count_first else 0
    v = versions[f:e]
    partner[f:e] = v
    return first, int(np.count_nonzero(v == 0))


def _piece_bytes(link_i, pages, zeros):
    """The bytes of a piece of ``pages`` pages, ``zeros`` of them all-zero, with their headers."""
    ps, header, zpb = int(link_i[0]), int(link_i[1]), int(link_i[2])
    return (pages * ps if zpb < 0 else (pages - zeros) * ps + zeros * zpb) + pages * header


def _link_send(st, s, link_i, link_f, calls, pages, zeros, first, nbytes):
    """Interconnect._send at ``s`` of ``nbytes`` in ``calls`` copy calls; returns busy_until."""
    bandwidth, per_copy, first_copy, clock = (float(x) for x in link_f)
    start = max(s, st["busy_until"])
    cycles = int(round((calls * per_copy + nbytes / bandwidth + first * first_copy) * clock))
    st["busy_until"] = start + cycles
    st["last_arrival"] = st["busy_until"] + int(link_i[3])
    st["bytes_sent"] += nbytes
    st["pages_sent"] += pages
    st["zero_pages_sent"] += zeros
    st["calls"] += calls
    st["busy_cycles"] += cycles
    st["timeouts"] += 1
    return st["busy_until"]


def copy_loop(state, fstate, bitmap, hi, use_bitmap, runs_s, runs_l, link_i, link_f, partner, horizon, tick_limit,
              quantum, chunk, paced, rate_per_cycle, carry, debt, avail, counts, stream_keys, counters, hot_span,
              hot_threshold, span, base, mult, modulus, block, frames, cpu_bounds, pte, versions, tlb_tag, tlb_flags,
              pt_base, ptes_per_pt, step_counts, walk_cycles, dirty_cycles, extra, meter_buf, meter_on,
              stopped=False):
    """A scanner copying runs while the CPUs write, over many quanta; the same effects and ``state`` as the
    compiled kernel (CONTRACT.md, ``copy_loop``). Returns None."""
    _buf("state", state, INDEX_DTYPE, writable=True)
    _buf("fstate", fstate, np.float64, writable=True)
    _buf("partner", partner, VERSION_DTYPE, writable=True)
    _buf("runs_s", runs_s, INDEX_DTYPE, writable=True)
    _buf("runs_l", runs_l, INDEX_DTYPE, writable=True)
    n = len(pte)
    if len(state) != len(COPY_LOOP_FIELDS) or len(fstate) != 1 or len(link_i) != 4 or len(link_f) != 4:
        raise ValueError("state, fstate, link_i, link_f must have 25, 1, 4, 4 elements")
    F = {name: i for i, name in enumerate(COPY_LOOP_FIELDS)}
    if len(runs_s) != len(runs_l) or len(runs_s) < 1 or state[F["nruns"]] > len(runs_s):
        raise ValueError("runs_s and runs_l must have the same length >= 1, at least NRUNS")
    if len(partner) != n or len(versions) != n:
        raise ValueError(f"partner and versions must have {n} elements")
    if use_bitmap and not 0 <= hi <= len(bitmap) * 64:
        raise ValueError(f"hi = {hi} is outside the bitmap")
    if quantum < 1 or chunk < 1:
        raise ValueError("quantum and chunk must be >= 1")
    for c in range(int(state[F["run_i"]]), int(state[F["nruns"]])):
        if runs_l[c] < 1 or runs_s[c] < 0 or runs_s[c] > n - runs_l[c]:
            raise ValueError(f"run {c} is empty or outside [0, {n})")
    first_copy = float(link_f[2])
    st = {name: int(state[i]) for name, i in F.items()}
    s, t_done = st["now"], st["t_done"]
    status = COPY_LOOP_DONE
    tracking = float(fstate[0])
    fill = st["meter_fill"]
    while True:
        if st["nruns"] == 0:
            if not use_bitmap or st["pos"] >= hi:
                status = COPY_LOOP_DONE
                break
            if not st["admit"]:
                if s >= horizon:
                    status = COPY_LOOP_HORIZON
                    break
                st["admit"] = 1
            nr, _pages, nxt = bitmap_extract_runs(bitmap, st["pos"], hi, chunk, True, runs_s, runs_l)
            st["pos"] = nxt
            if nr == 0:
                st["pos"] = hi
                status = COPY_LOOP_DONE
                break
            st["nruns"], st["run_i"], st["run_off"] = nr, 0, 0
        elif not st["admit"]:
            if s >= horizon:
                status = COPY_LOOP_HORIZON
                break
            st["admit"] = 1
        t_done, fill, tracking, left = _cpu_steps(      # the CPU steps due by s
            st, s, t_done, fill, tracking, tick_limit, quantum, paced, rate_per_cycle, carry, debt, avail, counts,
            stream_keys, counters, hot_span, hot_threshold, span, base, mult, modulus, block, frames, cpu_bounds, pte,
            versions, tlb_tag, tlb_flags, pt_base, ptes_per_pt, step_counts, walk_cycles, dirty_cycles, extra,
            meter_buf, meter_on, stopped)
        if left:
            status = COPY_LOOP_PY_TICK
            break
        # one piece of at most chunk pages, read at s (Interconnect.copy's cut and _send's timing)
        i, off = st["run_i"], st["run_off"]
        split = off > 0
        pages = calls = first = zeros = 0
        while pages < chunk and i < st["nruns"]:
            take = min(int(runs_l[i]) - off, chunk - pages)
            f = int(runs_s[i]) + off
            nf, nz = _read_run(partner, versions, f, f + take, first_copy > 0)
            first, zeros = first + nf, zeros + nz
            calls += 1
            pages += take
            off += take
            if off == runs_l[i]:
                i, off = i + 1, 0
        calls -= 1 if split else 0
        st["run_i"], st["run_off"] = i, off
        if i >= st["nruns"]:
            st["nruns"] = 0
        s = _link_send(st, s, link_i, link_f, calls, pages, zeros, first, _piece_bytes(link_i, pages, zeros))
        st["copy_zeros"] += zeros
        st["pieces"] += 1
        st["admit"] = 0
        if st["nruns"] == 0 and not use_bitmap:
            status = COPY_LOOP_DONE
            break
    st["now"], st["t_done"], st["meter_fill"], st["status"] = s, t_done, fill, status
    for name, i in F.items():
        state[i] = st[name]
    fstate[0] = tracking
    return None


def qemu_turn(state, fstate, bitmap, n_pages, cap, runs_s, runs_l, link_i, link_f, partner, horizon, tick_limit, quantum,
              chunk, t0, max_wait, window_bytes, quota, per_page, xbzrle, paced, rate_per_cycle, carry, debt, avail,
              counts, stream_keys, counters, hot_span, hot_threshold, span, base, mult, modulus, block, frames,
              cpu_bounds, pte, versions, tlb_tag, tlb_flags, pt_base, ptes_per_pt, step_counts, walk_cycles,
              dirty_cycles, extra, meter_buf, meter_on, stopped=False):
    """QEMU's ram_save_iterate while the CPUs write, in one call; the same effects and ``state`` as the
    compiled kernel (CONTRACT.md, ``qemu_turn``). Returns None."""
    _buf("state", state, INDEX_DTYPE, writable=True)
    _buf("fstate", fstate, np.float64, writable=True)
    _buf("bitmap", bitmap, WORD_DTYPE, writable=True)
    _buf("partner", partner, VERSION_DTYPE, writable=True)
    _buf("runs_s", runs_s, INDEX_DTYPE, writable=True)
    _buf("runs_l", runs_l, INDEX_DTYPE, writable=True)
    n = len(pte)
    F = {name: i for i, name in enumerate(QEMU_TURN_FIELDS)}
    if len(state) != len(QEMU_TURN_FIELDS) or len(fstate) != 1 or len(link_i) != 4 or len(link_f) != 4:
        raise ValueError("state, fstate, link_i, link_f must have 24, 1, 4, 4 elements")
    if cap < 1 or len(runs_s) != len(runs_l) or len(runs_s) < 2 * cap:
        raise ValueError("runs_s and runs_l must have the same length >= 2 * cap, cap >= 1")
    if not 0 <= state[F["nruns"]] <= len(runs_s):
        raise ValueError("NRUNS must lie in [0, len(runs_s)]")
    if len(partner) != n or len(versions) != n:
        raise ValueError(f"partner and versions must have {n} elements")
    if not 0 <= n_pages <= min(n, len(bitmap) * 64):
        raise ValueError(f"n_pages = {n_pages} is outside the bitmap or the memory")
    if not 0 <= state[F["cursor"]] <= n_pages:
        raise ValueError(f"the cursor {state[F['cursor']]} is outside [0, {n_pages}]")
    if quantum < 1 or chunk < 1 or per_page < 1:
        raise ValueError("quantum, chunk and per_page must be >= 1")
    for c in range(int(state[F["nruns"]])):
        if runs_l[c] < 1 or runs_s[c] < 0 or runs_s[c] > n - runs_l[c]:
            raise ValueError(f"run {c} is empty or outside [0, {n})")
    first_copy = float(link_f[2])
    st = {name: int(state[i]) for name, i in F.items()}
    s, t_done = st["now"], st["t_done"]
    status = QEMU_TURN_OVER
    tracking = float(fstate[0])
    fill = st["meter_fill"]
    while True:
        if st["nruns"] == 0:
            sent = st["bytes_sent"] - window_bytes      # ram_save_iterate's loop condition, at s
            if sent >= quota or st["remaining"] <= 0 or float(s - t0) >= max_wait:
                status = QEMU_TURN_OVER
                break
            if not st["admit"]:
                if s >= horizon:
                    status = QEMU_TURN_HORIZON
                    break
                st["admit"] = 1
            budget = max(1, min(chunk, (quota - sent) // per_page))
            nr = got = 0                                # Migration.next_pages(budget)
            wrapped = False
            cursor = st["cursor"]
            for _ in range(2):
                n1, took, cut = bitmap_take_pages(bitmap, cursor, n_pages, budget - got, True, runs_s[nr:nr + cap],
                                                  runs_l[nr:nr + cap])
                if nr == 0 and cut < n_pages and n1:
                    cursor, nr, got = cut, n1, took
                    break
                if n1:
                    nr, got = nr + n1, got + took
                    cursor = cut if cut < n_pages else 0
                    wrapped = wrapped or cut >= n_pages
                    if got >= budget:
                        break
                else:
                    cursor, wrapped = 0, True
                if got >= budget or st["remaining"] - got <= 0:
                    break
            st["cursor"], st["nruns"] = cursor, nr
            if wrapped:
                st["wrapped"] = 1
            if nr == 0:
                status = QEMU_TURN_OVER
                break
            if xbzrle and wrapped:
                status = QEMU_TURN_PY_PIECE
                break
        t_done, fill, tracking, left = _cpu_steps(      # the CPU steps due by s
            st, s, t_done, fill, tracking, tick_limit, quantum, paced, rate_per_cycle, carry, debt, avail, counts,
            stream_keys, counters, hot_span, hot_threshold, span, base, mult, modulus, block, frames, cpu_bounds, pte,
            versions, tlb_tag, tlb_flags, pt_base, ptes_per_pt, step_counts, walk_cycles, dirty_cycles, extra,
            meter_buf, meter_on, stopped)
        if left:
            status = QEMU_TURN_PY_TICK
            break
        # the piece: every run taken, one copy call each, read at s
        calls = st["nruns"]
        pages = first = zeros = 0
        for i in range(calls):
            f, take = int(runs_s[i]), int(runs_l[i])
            nf, nz = _read_run(partner, versions, f, f + take, first_copy > 0)
            first, zeros, pages = first + nf, zeros + nz, pages + take
        st["nruns"] = 0
        st["remaining"] -= pages
        s = _link_send(st, s, link_i, link_f, calls, pages, zeros, first, _piece_bytes(link_i, pages, zeros))
        st["pieces"] += 1
        st["admit"] = 0
    st["now"], st["t_done"], st["meter_fill"], st["status"] = s, t_done, fill, status
    for name, i in F.items():
        state[i] = st[name]
    fstate[0] = tracking
    return None
def xen_batches(state, fstate, xstate, to_send, to_skip, cand, skipped, batch, header_bytes, peek, runs_s, runs_l,
                link_i, link_f, partner, horizon, tick_limit, quantum, chunk, paced, rate_per_cycle, carry, debt, avail,
                counts, stream_keys, counters, hot_span, hot_threshold, span, base, mult, modulus, block, frames,
                cpu_bounds, pte, versions, tlb_tag, tlb_flags, pt_base, ptes_per_pt, step_counts, walk_cycles,
                dirty_cycles, extra, meter_buf, meter_on, stopped=False):
    """A round of xen batches while the CPUs write; the same effects, ``state`` and ``xstate`` as the compiled
    kernel (CONTRACT.md, ``xen_batches``): the batch's start here (CPU steps, peek, choice, header), its pieces
    ``copy_loop`` over the batch's run list. Returns None."""
    _buf("state", state, INDEX_DTYPE, writable=True)
    _buf("xstate", xstate, INDEX_DTYPE, writable=True)
    _buf("fstate", fstate, np.float64, writable=True)
    for name, bm in (("to_send", to_send), ("to_skip", to_skip), ("cand", cand), ("skipped", skipped)):
        _buf(name, bm, WORD_DTYPE, writable=True)
    n = len(pte)
    n_words = len(to_send)
    if len(state) != len(COPY_LOOP_FIELDS) or len(fstate) != 1 or len(xstate) != len(XEN_BATCH_FIELDS) \
            or len(link_i) != 4 or len(link_f) != 4:
        raise ValueError("state, fstate, xstate, link_i, link_f must have 25, 1, 11, 4, 4 elements")
    if n_words != (n + 63) // 64 or not len(to_skip) == len(cand) == len(skipped) == n_words:
        raise ValueError(f"to_send, to_skip, cand and skipped must have {(n + 63) // 64} words")
    F = {name: i for i, name in enumerate(COPY_LOOP_FIELDS)}
    X = {name: i for i, name in enumerate(XEN_BATCH_FIELDS)}
    if not 0 <= state[F["pos"]] <= n:
        raise ValueError(f"pos = {state[F['pos']]} is outside [0, {n}]")
    if quantum < 1 or chunk < 1 or batch < 1:
        raise ValueError("quantum, chunk and batch must be >= 1")
    if len(runs_s) != len(runs_l) or len(runs_s) < 1 or state[F["nruns"]] > len(runs_s):
        raise ValueError("runs_s and runs_l must have the same length >= 1, at least NRUNS")
    for c in range(int(state[F["run_i"]]), int(state[F["nruns"]])):
        if runs_l[c] < 1 or runs_s[c] < 0 or runs_s[c] > n - runs_l[c]:
            raise ValueError(f"run {c} is empty or outside [0, {n})")
    if len(partner) != n or len(versions) != n:
        raise ValueError(f"partner and versions must have {n} elements")
    ncpu = len(stream_keys)
    if not len(counts) == len(carry) == len(debt) == len(avail) == len(counters) == len(extra) == ncpu \
            or len(cpu_bounds) != ncpu + 1:
        raise ValueError("counts, carry, debt, avail, counters, extra must have ncpu elements, cpu_bounds ncpu + 1")
    if base < 0 or base + modulus * block > n:
        raise ValueError(f"generated frames [{base}, {base} + {modulus} * {block}) must lie inside [0, {n})")
    _check_generator_map(span, mult, modulus, block)
    _check_pt(n, pt_base, ptes_per_pt)
    loop_args = (None, 0, False, runs_s, runs_l, link_i, link_f, partner, horizon, tick_limit, quantum, chunk, paced,
                 rate_per_cycle, carry, debt, avail, counts, stream_keys, counters, hot_span, hot_threshold, span,
                 base, mult, modulus, block, frames, cpu_bounds, pte, versions, tlb_tag, tlb_flags, pt_base,
                 ptes_per_pt, step_counts, walk_cycles, dirty_cycles, extra, meter_buf, meter_on, stopped)
    while True:
        s = int(state[F["now"]])
        if not state[F["admit"]]:
            if s >= horizon:
                state[F["status"]] = COPY_LOOP_HORIZON
                return None
            state[F["admit"]] = 1
        if state[F["nruns"]] and not xstate[X["header_due"]]:
            # the batch's pieces: copy_loop over its run list, to its end or a stop
            pieces = int(state[F["pieces"]])
            copy_loop(state, fstate, np.zeros(1, WORD_DTYPE), *loop_args[1:])
            xstate[X["waits"]] += int(state[F["pieces"]]) - pieces
            if state[F["status"]] != COPY_LOOP_DONE:
                return None
            continue
        if not state[F["nruns"]]:
            # a batch's start: the last batch is done; the CPU steps, the peek and the choice
            if xstate[X["pending"]]:
                xstate[X["sent"]] += xstate[X["pending"]]
                xstate[X["batches"]] += 1
                xstate[X["pending"]] = 0
            pos = int(state[F["pos"]])
            if pos >= n:
                state[F["status"]] = COPY_LOOP_DONE
                return None
            if peek:
                t_done, fill, tracking, left = _cpu_steps(
                    _Named(state, F), s, int(state[F["t_done"]]), int(state[F["meter_fill"]]), float(fstate[0]),
                    *loop_args[9:11], *loop_args[12:])
                state[F["t_done"]], state[F["meter_fill"]], fstate[0] = t_done, fill, tracking
                if left:
                    state[F["status"]] = COPY_LOOP_PY_TICK
                    return None
            if not peek:
                nr, pages, nxt = bitmap_take_pages(to_send, pos, n, batch, False, runs_s, runs_l)
            else:
                nr, pages, nxt = _xb_peek(pos, n, batch, to_send, to_skip, cand, skipped, pte, runs_s, runs_l)
                xstate[X["skipped"]] += bitmap_popcount(skipped, pos, nxt)
            state[F["pos"]] = nxt
            if pages == 0:
                continue
            state[F["nruns"]], state[F["run_i"]], state[F["run_off"]] = nr, 0, 0
            xstate[X["pending"]], xstate[X["header_due"]] = pages, 1
            if xstate[X["slot"]] and _xb_limiter(xstate, X, s, pages * int(link_i[0])):
                state[F["now"]] = max(s, int(xstate[X["last_put"]]))
                state[F["admit"]] = 0
                continue
        xstate[X["header_due"]] = 0
        if header_bytes > 0:     # the batch header (Interconnect.send_bytes)
            state[F["now"]] = _link_send(_Named(state, F), s, link_i, link_f, 0, 0, 0, 0, header_bytes)
            state[F["admit"]] = 0
            xstate[X["waits"]] += 1


def _xb_peek(pos, n, batch, to_send, to_skip, cand, skipped, pte, runs_s, runs_l):
    """xen_batches' peek and choice from ``pos``: windows of PTE dirty bits doubling until one holds a batch;
    returns bitmap_take_pages' (nruns, pages, end) over ``cand``."""
    n_words = len(to_send)
    hi_w = pos >> 6
    width = max(1, -(-2 * batch // 64))
    while True:
        new_hi = min(n_words, hi_w + width)
        f0, f1 = hi_w * 64, min(n, new_hi * 64)
        tk = _pack_bits((pte[f0:f1] & _DIRTY) != 0, 0, new_hi - hi_w)
        ts = to_send[hi_w:new_hi]
        to_skip[hi_w:new_hi] = tk
        cand[hi_w:new_hi] = ts & ~tk
        skipped[hi_w:new_hi] = ts & tk
        hi_w = new_hi
        nr, pages, nxt = bitmap_take_pages(cand, pos, min(n, hi_w * 64), batch, False, runs_s, runs_l)
        if pages >= batch or hi_w == n_words:
            return nr, pages, nxt
        width *= 2


def _xb_limiter(xstate, X, s, nbytes):
    """xen_batches' rate limiter (RateLimiter.write of ``nbytes`` at cycle ``s``); True when it sleeps to
    ``last_put``."""
    xstate[X["budget"]] -= nbytes
    if xstate[X["budget"]] >= 0:
        return False
    if not xstate[X["has_put"]]:
        xstate[X["budget"]] += _BURST_BUDGET
        xstate[X["last_put"]], xstate[X["has_put"]] = s, 1
        return False
    slot = int(xstate[X["slot"]])
    elapsed = (s - int(xstate[X["last_put"]])) // slot
    xstate[X["budget"]] += elapsed * _BURST_BUDGET
    xstate[X["last_put"]] += elapsed * slot
    if xstate[X["budget"]] > 0:
        return False
    more = (-int(xstate[X["budget"]])) // _BURST_BUDGET + 1
    xstate[X["budget"]] += more * _BURST_BUDGET
    xstate[X["last_put"]] += more * slot
    xstate[X["waits"]] += 1
    xstate[X["limiter_waits"]] += 1
    return True


_BURST_BUDGET = 100 * 1024   # bytes granted per burst slot (policies/xen.py BURST_BUDGET, ratewrite)
