# cython: language_level=3
"""Hot loops of pagesync-sim: PTE harvest, TLB-aware write application, dirty bitmap, copy lists.

Compiled by setup.py into ``pagesync_model._cykernels``. The specification is
pagesync_model/kernels/CONTRACT.md; the numpy twin (pagesync_model/kernels/numpy_kernels.py) and the
naive reference (tests/reference_kernels.py) must give identical results, and the tests hold all
three to that. Dtypes and PTE/TLB bits come from kernels.pxd, which mirrors kernels/dtypes.py.

Conventions: the caller allocates every buffer (C-contiguous, exact dtype). IN buffers are ``const``
memoryviews (read-only arrays are accepted), OUT buffers are overwritten, INOUT buffers are updated in
place. Arguments are validated (shapes, ranges that would otherwise index out of bounds) before any
buffer is modified, then the loop runs without the GIL. Integers returned are Python ints.
Bounds checking is off unless built with PAGESYNC_DEBUG=1, so the validation here is what keeps a bad
argument from corrupting memory.
"""
from libc.math cimport floor, rint
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t

# The module is built as pagesync_model._cykernels, so Cython does not pair it with kernels.pxd by
# file name; the declarations are cimported explicitly (setup.py puts _ext on the include path). The
# .pxd holds only ctypedefs, enums and C macros, so this adds no runtime import.
from kernels cimport (
    PTE_ACCESSED, PTE_DIRTY, PTE_SOFT_DIRTY, SPLITMIX_GAMMA, SPLITMIX_M1, SPLITMIX_M2, TLB_DIRTY,
    TLB_VALID, ctz64, index_t, popcount64, prefetch_w, pte_t, tlb_flag_t, tlb_tag_t, version_t, word_t,
)

cdef uint64_t ALL_ONES = 0xFFFFFFFFFFFFFFFF
cdef uint64_t LOW32 = 0xFFFFFFFF
cdef uint64_t TWO32 = 0x100000000


# --------------------------------------------------------------------------------------------------
# validation helpers (Python level, run before the nogil loops)

cdef inline void _check_range(int64_t lo, int64_t hi, int64_t nbits) except *:
    if lo < 0 or hi < lo or hi > nbits:
        raise ValueError(
            f"need 0 <= lo <= hi <= {nbits} (64 * len(bitmap)), got lo={lo}, hi={hi}")


cdef inline int64_t _check_run_buffers(int64_t n_starts, int64_t n_lens) except -1:
    """The capacity of a pair of run buffers (out_starts, out_lens): equal lengths, at least one run."""
    if n_lens != n_starts:
        raise ValueError(f"out_starts has {n_starts} elements, out_lens has {n_lens}")
    if n_starts < 1:
        raise ValueError("out_starts/out_lens must hold at least one run (cap >= 1)")
    return n_starts


cdef inline void _check_pt(int64_t n_frames, int64_t pt_base, int64_t ptes_per_pt) except *:
    if ptes_per_pt < 1:
        raise ValueError(f"ptes_per_pt must be >= 1, got {ptes_per_pt}")
    if n_frames > 0 and (pt_base < 0 or pt_base + (n_frames - 1) // ptes_per_pt >= n_frames):
        raise ValueError(
            f"page-table region [pt_base, pt_base + (n_frames-1)//ptes_per_pt] = [{pt_base}, "
            f"{pt_base + (n_frames - 1) // ptes_per_pt}] must lie inside versions[0:{n_frames}]")


cdef void _check_counts(const index_t[::1] counts, index_t[::1] out) except *:
    """Generators: every count >= 0 and ``out`` holds exactly their sum."""
    cdef int64_t c, total = 0
    for c in range(counts.shape[0]):
        if counts[c] < 0:
            raise ValueError(f"counts[{c}] = {counts[c]} must be >= 0")
        total += counts[c]
    if out.shape[0] != total:
        raise ValueError(f"out has {out.shape[0]} elements, expected sum(counts) = {total}")


cdef inline void _check_generator_map(int64_t span, int64_t mult, int64_t modulus, int64_t block) except *:
    if span < 0 or span > <int64_t>TWO32:
        raise ValueError(f"span must be in [0, 2**32], got {span}")
    if block < 1 or block > <int64_t>TWO32:
        raise ValueError(f"block must be in [1, 2**32], got {block}")
    if modulus < 1 or modulus > <int64_t>TWO32 or span > modulus * block:
        raise ValueError(f"need span <= modulus * block, modulus in [1, 2**32], got span={span}, "
                         f"modulus={modulus}, block={block}")
    if mult < 0 or mult >= <int64_t>TWO32:
        raise ValueError(f"mult must be in [0, 2**32), got {mult}")
    cdef int64_t a = mult, b = modulus, t
    while b:
        t = a % b
        a = b
        b = t
    if a != 1:
        raise ValueError(f"mult={mult} must be coprime with modulus={modulus} (gcd is {a})")


# --------------------------------------------------------------------------------------------------
# bitmap helpers (nogil)

cdef inline uint64_t _mask_from(int64_t bit) noexcept nogil:
    # bits [bit & 63, 64) of one word
    return ALL_ONES << (bit & 63)


cdef inline uint64_t _mask_upto(int64_t bit) noexcept nogil:
    # bits [0, (bit & 63) + 1) of one word
    return ALL_ONES >> (63 - (bit & 63))


cdef inline void _clear_bits(uint64_t* words, int64_t lo, int64_t hi) noexcept nogil:
    # clear bits [lo, hi), lo < hi
    cdef int64_t wlo = lo >> 6, whi = (hi - 1) >> 6, w
    if wlo == whi:
        words[wlo] &= ~(_mask_from(lo) & _mask_upto(hi - 1))
        return
    words[wlo] &= ~_mask_from(lo)
    for w in range(wlo + 1, whi):
        words[w] = 0
    words[whi] &= ~_mask_upto(hi - 1)


# --------------------------------------------------------------------------------------------------
# harvest

cdef inline int64_t _harvest_one(pte_t* pte, uint64_t* bitmap, version_t* versions, int64_t f,
                                 int64_t pt_base, int64_t ptes_per_pt, int64_t pt_shift, bint clear) noexcept nogil:
    # the PTE of frame f is dirty: record it; returns 1 if its bitmap bit was 0. ``pt_shift`` is
    # log2(ptes_per_pt) when that is a power of two (the page-table page by a shift, not a division), else -1
    cdef uint64_t bit = (<uint64_t>1) << (f & 63)
    cdef int64_t was_clear = (bitmap[f >> 6] & bit) == 0
    bitmap[f >> 6] |= bit
    if clear:
        pte[f] = (pte[f] & ~(<pte_t>PTE_DIRTY)) | (<pte_t>PTE_SOFT_DIRTY)
        if pt_shift >= 0:
            versions[pt_base + (f >> pt_shift)] += 1
        else:
            versions[pt_base + f // ptes_per_pt] += 1
    return was_clear


def harvest(pte_t[::1] pte, const index_t[::1] bounds, word_t[::1] bitmap, version_t[::1] versions,
            int64_t pt_base, int64_t ptes_per_pt, bint clear, index_t[::1] out_dirty):
    """Walk PTE segments, moving hardware dirty bits to the bitmap (and to soft-dirty if ``clear``).

    Buffers: ``pte`` INOUT u64[n_frames]; ``bounds`` IN i64[nseg+1], non-decreasing, segment s is
    frames [bounds[s], bounds[s+1]); ``bitmap`` INOUT u64[ceil(n_frames/64)]; ``versions`` INOUT
    u32[n_frames] (the page-table page of each cleared PTE gets a new version); ``out_dirty`` OUT
    i64[nseg], dirty PTEs seen per segment.

    Parameters: ``pt_base`` first frame of the page-table pages, ``ptes_per_pt`` PTEs per page-table
    page, ``clear`` False for a read-only peek.

    Returns the number of bitmap bits that went from 0 to 1.
    Raises ValueError on mismatched lengths, bounds outside [0, n_frames] or decreasing, a page-table
    region that does not fit in ``versions``.
    """
    cdef int64_t n = pte.shape[0], nseg = bounds.shape[0] - 1
    if nseg < 0:
        raise ValueError("bounds must hold at least one element (nseg + 1)")
    if out_dirty.shape[0] != nseg:
        raise ValueError(f"out_dirty has {out_dirty.shape[0]} elements, expected len(bounds) - 1 = {nseg}")
    if versions.shape[0] != n:
        raise ValueError(f"versions has {versions.shape[0]} elements, pte has {n}")
    if bitmap.shape[0] != (n + 63) // 64:
        raise ValueError(f"bitmap has {bitmap.shape[0]} words, expected ceil({n}/64) = {(n + 63) // 64}")
    _check_pt(n, pt_base, ptes_per_pt)
    cdef int64_t s
    for s in range(nseg + 1):
        if bounds[s] < 0 or bounds[s] > n or (s > 0 and bounds[s] < bounds[s - 1]):
            raise ValueError(f"bounds must be non-decreasing within [0, {n}], bounds[{s}] = {bounds[s]}")
    if n == 0:
        out_dirty[:] = 0
        return 0

    cdef pte_t* p = &pte[0]
    cdef uint64_t* bm = &bitmap[0]
    cdef version_t* ver = &versions[0]
    cdef int64_t f, g, end, cnt, new_bits = 0
    cdef uint64_t acc, dirty = PTE_DIRTY
    cdef int64_t pt_shift = -1
    if ptes_per_pt & (ptes_per_pt - 1) == 0:
        pt_shift = 0
        while (<int64_t>1 << pt_shift) < ptes_per_pt:
            pt_shift += 1
    with nogil:
        for s in range(nseg):
            f = bounds[s]
            end = bounds[s + 1]
            cnt = 0
            # Most PTEs are clean: OR eight of them and test the dirty bit once. This streams the
            # array at close to memory bandwidth; only a group with a dirty PTE is looked at one by one.
            while f + 8 <= end:
                acc = p[f] | p[f + 1] | p[f + 2] | p[f + 3] | p[f + 4] | p[f + 5] | p[f + 6] | p[f + 7]
                if acc & dirty:
                    for g in range(f, f + 8):
                        if p[g] & dirty:
                            cnt += 1
                            new_bits += _harvest_one(p, bm, ver, g, pt_base, ptes_per_pt, pt_shift, clear)
                f += 8
            while f < end:
                if p[f] & dirty:
                    cnt += 1
                    new_bits += _harvest_one(p, bm, ver, f, pt_base, ptes_per_pt, pt_shift, clear)
                f += 1
            out_dirty[s] = cnt
    return new_bits


# --------------------------------------------------------------------------------------------------
# apply_writes

cdef enum:
    PREFETCH = 16  # writes ahead whose PTE and version are prefetched

cdef void _write_loop(const index_t[::1] frames, const index_t* index, const index_t[::1] cpu_bounds,
                      pte_t[::1] pte, version_t[::1] versions, tlb_tag_t[:, ::1] tlb_tag,
                      tlb_flag_t[:, ::1] tlb_flags, int64_t pt_base, int64_t ptes_per_pt,
                      index_t[:, ::1] out_counts) noexcept nogil:
    """The loop of ``apply_writes`` and ``apply_writes_mapped`` (arguments checked by them): write w is to
    frame ``frames[w]``, whose PTE and version are at ``index[w]`` (at the frame itself when ``index`` is
    NULL: dense memory)."""
    cdef int64_t c, w, f, ix, slot, walks, dirty_sets, refills, ahead, hi, pf
    cdef int64_t ncpu = tlb_tag.shape[0], entries = tlb_tag.shape[1]
    cdef tlb_flag_t valid_dirty = TLB_VALID | TLB_DIRTY
    cdef pte_t dirty = PTE_DIRTY, set_bits = PTE_DIRTY | PTE_ACCESSED
    for c in range(ncpu):
        walks = 0
        dirty_sets = 0
        refills = 0
        hi = cpu_bounds[c + 1]
        # The frames are scattered over memory: each write's version and PTE are a cache miss. Asking for
        # them PREFETCH writes ahead lets the misses overlap; the order of the writes is unchanged.
        for ahead in range(cpu_bounds[c], min(hi, cpu_bounds[c] + PREFETCH)):
            pf = index[ahead] if index != NULL else frames[ahead]
            prefetch_w(&versions[pf])
            prefetch_w(&pte[pf])
        for w in range(cpu_bounds[c], hi):
            ahead = w + PREFETCH
            if ahead < hi:
                pf = index[ahead] if index != NULL else frames[ahead]
                prefetch_w(&versions[pf])
                prefetch_w(&pte[pf])
            f = frames[w]
            ix = index[w] if index != NULL else f
            versions[ix] += 1
            slot = f % entries
            if tlb_tag[c, slot] == f:
                if tlb_flags[c, slot] == valid_dirty:
                    continue
                if not (tlb_flags[c, slot] & TLB_VALID):
                    refills += 1
            walks += 1
            if not (pte[ix] & dirty):
                pte[ix] |= set_bits
                versions[pt_base + f // ptes_per_pt] += 1
                dirty_sets += 1
            tlb_tag[c, slot] = f
            tlb_flags[c, slot] = valid_dirty
        out_counts[c, 0] = walks
        out_counts[c, 1] = dirty_sets
        out_counts[c, 2] = refills


def apply_writes(const index_t[::1] frames, const index_t[::1] cpu_bounds, pte_t[::1] pte,
                 version_t[::1] versions, tlb_tag_t[:, ::1] tlb_tag, tlb_flag_t[:, ::1] tlb_flags,
                 int64_t pt_base, int64_t ptes_per_pt, index_t[:, ::1] out_counts):
    """Apply a batch of CPU writes through per-CPU direct-mapped TLBs to the PTEs.

    Buffers: ``frames`` IN i64[nw], the written frames; ``cpu_bounds`` IN i64[ncpu+1], non-decreasing
    within [0, nw], CPU c performs frames[cpu_bounds[c]:cpu_bounds[c+1]] in order, CPU 0 first;
    ``pte`` INOUT u64[n_frames]; ``versions`` INOUT u32[n_frames]; ``tlb_tag`` INOUT i64[ncpu, entries];
    ``tlb_flags`` INOUT u8[ncpu, entries]; ``out_counts`` OUT i64[ncpu, 3] = (walks, dirty_sets,
    flush_refills) per CPU.

    A write hitting a TLB entry that is valid and dirty for its frame does not touch the PTE (the
    hardware fact that makes a flush mandatory after clearing dirty bits). Otherwise the CPU walks the
    page table, sets PTE dirty|accessed if the PTE was clean (a new version of its page-table page),
    and caches the entry valid|dirty.

    Raises ValueError on mismatched shapes, a frame outside [0, n_frames), bad cpu_bounds, entries < 1,
    or a page-table region that does not fit in ``versions``.
    """
    cdef int64_t n = pte.shape[0], nw = frames.shape[0]
    cdef int64_t ncpu = tlb_tag.shape[0], entries = tlb_tag.shape[1]
    if versions.shape[0] != n:
        raise ValueError(f"versions has {versions.shape[0]} elements, pte has {n}")
    if tlb_flags.shape[0] != ncpu or tlb_flags.shape[1] != entries:
        raise ValueError(f"tlb_flags has shape ({tlb_flags.shape[0]}, {tlb_flags.shape[1]}), "
                         f"tlb_tag has ({ncpu}, {entries})")
    if entries < 1:
        raise ValueError("the TLB needs at least one entry per CPU")
    if cpu_bounds.shape[0] != ncpu + 1:
        raise ValueError(f"cpu_bounds has {cpu_bounds.shape[0]} elements, expected ncpu + 1 = {ncpu + 1}")
    if out_counts.shape[0] != ncpu or out_counts.shape[1] != 3:
        raise ValueError(f"out_counts has shape ({out_counts.shape[0]}, {out_counts.shape[1]}), "
                         f"expected ({ncpu}, 3)")
    _check_pt(n, pt_base, ptes_per_pt)
    cdef int64_t c, w, lo_w, hi_w, bad = -1
    for c in range(ncpu + 1):
        if cpu_bounds[c] < 0 or cpu_bounds[c] > nw or (c > 0 and cpu_bounds[c] < cpu_bounds[c - 1]):
            raise ValueError(
                f"cpu_bounds must be non-decreasing within [0, {nw}], cpu_bounds[{c}] = {cpu_bounds[c]}")
    if ncpu > 0:
        lo_w = cpu_bounds[0]
        hi_w = cpu_bounds[ncpu]
        with nogil:
            for w in range(lo_w, hi_w):
                if frames[w] < 0 or frames[w] >= n:
                    bad = w
                    break
        if bad >= 0:
            raise ValueError(f"frames[{bad}] = {frames[bad]} is outside [0, {n})")
    out_counts[:, :] = 0

    with nogil:
        _write_loop(frames, NULL, cpu_bounds, pte, versions, tlb_tag, tlb_flags, pt_base, ptes_per_pt, out_counts)


def apply_writes_mapped(const index_t[::1] frames, const index_t[::1] index, const index_t[::1] cpu_bounds,
                        pte_t[::1] pte, version_t[::1] versions, tlb_tag_t[:, ::1] tlb_tag,
                        tlb_flag_t[:, ::1] tlb_flags, int64_t pt_base, int64_t ptes_per_pt,
                        index_t[:, ::1] out_counts):
    """``apply_writes`` on memory stored block-sparse: write w is to frame ``frames[w]`` (its TLB slot,
    tag and page-table page) whose PTE and version live at ``pte[index[w]]`` and ``versions[index[w]]``;
    the page-table page of frame f is ``versions[pt_base + f // ptes_per_pt]`` as in ``apply_writes``.
    Every write to one frame must carry the same index, distinct frames distinct indices.

    Raises ValueError on mismatched shapes, an index outside the buffers, a frame < 0, a page-table
    page outside ``versions``, bad cpu_bounds or entries < 1.
    """
    cdef int64_t n = pte.shape[0], nw = frames.shape[0]
    cdef int64_t ncpu = tlb_tag.shape[0], entries = tlb_tag.shape[1]
    if versions.shape[0] != n:
        raise ValueError(f"versions has {versions.shape[0]} elements, pte has {n}")
    if index.shape[0] != nw:
        raise ValueError(f"index has {index.shape[0]} elements, frames has {nw}")
    if tlb_flags.shape[0] != ncpu or tlb_flags.shape[1] != entries:
        raise ValueError(f"tlb_flags has shape ({tlb_flags.shape[0]}, {tlb_flags.shape[1]}), "
                         f"tlb_tag has ({ncpu}, {entries})")
    if entries < 1:
        raise ValueError("the TLB needs at least one entry per CPU")
    if ptes_per_pt < 1:
        raise ValueError(f"ptes_per_pt must be >= 1, got {ptes_per_pt}")
    if cpu_bounds.shape[0] != ncpu + 1:
        raise ValueError(f"cpu_bounds has {cpu_bounds.shape[0]} elements, expected ncpu + 1 = {ncpu + 1}")
    if out_counts.shape[0] != ncpu or out_counts.shape[1] != 3:
        raise ValueError(f"out_counts has shape ({out_counts.shape[0]}, {out_counts.shape[1]}), "
                         f"expected ({ncpu}, 3)")
    cdef int64_t c, w, lo_w, hi_w, bad = -1
    for c in range(ncpu + 1):
        if cpu_bounds[c] < 0 or cpu_bounds[c] > nw or (c > 0 and cpu_bounds[c] < cpu_bounds[c - 1]):
            raise ValueError(
                f"cpu_bounds must be non-decreasing within [0, {nw}], cpu_bounds[{c}] = {cpu_bounds[c]}")
    if ncpu > 0:
        lo_w = cpu_bounds[0]
        hi_w = cpu_bounds[ncpu]
        with nogil:
            for w in range(lo_w, hi_w):
                if frames[w] < 0 or index[w] < 0 or index[w] >= n or pt_base < 0 \
                        or pt_base + frames[w] // ptes_per_pt >= n:
                    bad = w
                    break
        if bad >= 0:
            raise ValueError(f"write {bad} (frame {frames[bad]}, index {index[bad]}) lies outside the {n} "
                             "buffer elements, or its page-table page does")
    out_counts[:, :] = 0

    with nogil:
        _write_loop(frames, &index[0] if nw > 0 else NULL, cpu_bounds, pte, versions, tlb_tag, tlb_flags, pt_base,
                    ptes_per_pt, out_counts)


def block_index(const index_t[::1] frames, const index_t[::1] slots, int64_t low, int64_t block,
                index_t[::1] out):
    """Where block-sparse memory keeps each frame: ``out[w] = frames[w]`` below ``low``, else
    ``low + slots[b] * block + u % block`` with ``u = frames[w] - low`` and ``b = u // block``, or -1
    when ``slots[b] < 0`` (the block has no per-frame state yet). Returns how many are -1.

    Raises ValueError on mismatched lengths, block < 1, or a frame < 0 or beyond the blocks.
    """
    cdef int64_t nw = frames.shape[0], nb = slots.shape[0], w, f, u, b, s, missing = 0, bad = -1
    if out.shape[0] != nw:
        raise ValueError(f"out has {out.shape[0]} elements, frames has {nw}")
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    with nogil:
        for w in range(nw):
            f = frames[w]
            if f < 0:
                bad = w
                break
            if f < low:
                out[w] = f
                continue
            u = f - low
            b = u // block
            if b >= nb:
                bad = w
                break
            s = slots[b]
            if s < 0:
                out[w] = -1
                missing += 1
            else:
                out[w] = low + s * block + u % block
    if bad >= 0:
        raise ValueError(f"frames[{bad}] = {frames[bad]} is outside [0, {low} + {nb} * {block})")
    return missing


# --------------------------------------------------------------------------------------------------
# bitmap kernels

def bitmap_set_range(word_t[::1] bitmap, int64_t lo, int64_t hi):
    """Set bits [lo, hi) of ``bitmap`` (INOUT u64[nwords]); return how many were 0.

    Raises ValueError unless 0 <= lo <= hi <= 64 * nwords.
    """
    _check_range(lo, hi, bitmap.shape[0] * 64)
    if lo == hi:
        return 0
    cdef uint64_t* bm = &bitmap[0]
    cdef int64_t wlo = lo >> 6, whi = (hi - 1) >> 6, w, new_bits = 0
    cdef uint64_t m
    with nogil:
        if wlo == whi:
            m = _mask_from(lo) & _mask_upto(hi - 1)
            new_bits = popcount64(m & ~bm[wlo])
            bm[wlo] |= m
        else:
            m = _mask_from(lo)
            new_bits = popcount64(m & ~bm[wlo])
            bm[wlo] |= m
            for w in range(wlo + 1, whi):
                if bm[w] != ALL_ONES:
                    new_bits += 64 - popcount64(bm[w])
                    bm[w] = ALL_ONES
            m = _mask_upto(hi - 1)
            new_bits += popcount64(m & ~bm[whi])
            bm[whi] |= m
    return new_bits


def bitmap_set_frames(word_t[::1] bitmap, const index_t[::1] frames):
    """Set the bits of ``frames`` (IN i64[k], any order, duplicates allowed) in ``bitmap`` (INOUT).

    Returns the number of distinct bits that were 0 before the call.
    Raises ValueError if a frame is outside [0, 64 * nwords).
    """
    cdef int64_t k = frames.shape[0], nbits = bitmap.shape[0] * 64, i, f, bad = -1, new_bits = 0
    cdef uint64_t bit
    with nogil:
        for i in range(k):
            if frames[i] < 0 or frames[i] >= nbits:
                bad = i
                break
    if bad >= 0:
        raise ValueError(f"frames[{bad}] = {frames[bad]} is outside [0, {nbits})")
    if k == 0:
        return 0
    cdef uint64_t* bm = &bitmap[0]
    with nogil:
        for i in range(k):
            f = frames[i]
            bit = (<uint64_t>1) << (f & 63)
            if not (bm[f >> 6] & bit):
                new_bits += 1
                bm[f >> 6] |= bit
    return new_bits


def bitmap_popcount(const word_t[::1] bitmap, int64_t lo, int64_t hi):
    """Number of set bits in [lo, hi) of ``bitmap`` (IN u64[nwords]).

    Raises ValueError unless 0 <= lo <= hi <= 64 * nwords.
    """
    _check_range(lo, hi, bitmap.shape[0] * 64)
    if lo == hi:
        return 0
    cdef const uint64_t* bm = &bitmap[0]
    cdef int64_t wlo = lo >> 6, whi = (hi - 1) >> 6, w, total = 0
    with nogil:
        if wlo == whi:
            total = popcount64(bm[wlo] & _mask_from(lo) & _mask_upto(hi - 1))
        else:
            total = popcount64(bm[wlo] & _mask_from(lo))
            for w in range(wlo + 1, whi):
                if bm[w]:
                    total += popcount64(bm[w])
            total += popcount64(bm[whi] & _mask_upto(hi - 1))
    return total


def bitmap_extract_runs(word_t[::1] bitmap, int64_t lo, int64_t hi, int64_t max_pages, bint clear,
                        index_t[::1] out_starts, index_t[::1] out_lens):
    """Find maximal runs of set bits in [lo, hi) (cut at lo and hi), optionally test-and-clear them.

    Buffers: ``bitmap`` INOUT u64[nwords] (only modified if ``clear``); ``out_starts``, ``out_lens``
    OUT i64[cap], the runs in increasing order (entries past ``nruns`` are left untouched).

    Stops after the run that makes nruns == cap or pages >= max_pages (a run is never split);
    ``next_pos`` is then that run's end, or ``hi`` when the scan reached hi. Calling again from
    ``next_pos`` continues the scan exactly where it stopped.

    Returns (nruns, pages, next_pos).
    Raises ValueError unless 0 <= lo <= hi <= 64 * nwords, max_pages >= 1 and
    len(out_starts) == len(out_lens) >= 1.
    """
    _check_range(lo, hi, bitmap.shape[0] * 64)
    cdef int64_t cap = _check_run_buffers(out_starts.shape[0], out_lens.shape[0])
    if max_pages < 1:
        raise ValueError(f"max_pages must be >= 1, got {max_pages}")
    if lo == hi:
        return 0, 0, hi
    cdef int64_t nruns, pages = 0, next_pos = hi
    with nogil:
        nruns = _extract_loop(&bitmap[0], lo, hi, max_pages, clear, out_starts, out_lens, &pages, &next_pos)
    return nruns, pages, next_pos


cdef int64_t _extract_loop(uint64_t* bm, int64_t lo, int64_t hi, int64_t max_pages, bint clear, index_t[::1] out_starts,
                           index_t[::1] out_lens, int64_t* out_pages, int64_t* out_next) noexcept nogil:
    """The loop of ``bitmap_extract_runs`` (arguments checked by it, lo < hi) and ``copy_loop``: returns nruns,
    sets ``out_pages`` and ``out_next``."""
    cdef int64_t cap = out_starts.shape[0]
    cdef int64_t pos = lo, w, start, end, nruns = 0, pages = 0, next_pos = hi
    cdef int64_t wend = ((hi - 1) >> 6) + 1   # one past the last word that holds bits below hi
    cdef uint64_t m
    if True:
        while pos < hi:
            # next set bit >= pos, skipping zero words
            w = pos >> 6
            m = bm[w] & _mask_from(pos)
            while m == 0:
                w += 1
                if w >= wend:
                    break
                m = bm[w]
            if m == 0:
                break
            start = (w << 6) + ctz64(m)
            if start >= hi:
                break
            # next clear bit > start, skipping full words
            m = ~bm[w] & _mask_from(start)
            while m == 0:
                w += 1
                if w >= wend:
                    break
                m = ~bm[w]
            if m == 0:
                end = hi
            else:
                end = (w << 6) + ctz64(m)
                if end > hi:
                    end = hi
            if clear:
                _clear_bits(bm, start, end)
            out_starts[nruns] = start
            out_lens[nruns] = end - start
            nruns += 1
            pages += end - start
            pos = end
            if nruns == cap or pages >= max_pages:
                next_pos = end
                break
    out_pages[0] = pages
    out_next[0] = next_pos
    return nruns


cdef int64_t _take_loop(uint64_t* bm, int64_t lo, int64_t hi, int64_t k, bint clear, int64_t cap,
                        index_t* out_starts, index_t* out_lens, int64_t* out_pages, int64_t* out_end) noexcept nogil:
    """``bitmap_take_pages``' loop (k >= 1, cap >= 1): returns nruns, sets ``out_pages`` and ``out_end``."""
    cdef int64_t pos = lo, w, start, end, lim, wlim, nruns = 0, pages = 0, last_end = hi
    cdef int64_t wend
    cdef uint64_t m
    if lo < hi:
        wend = ((hi - 1) >> 6) + 1
        while pos < hi:
            w = pos >> 6
            m = bm[w] & _mask_from(pos)
            while m == 0:
                w += 1
                if w >= wend:
                    break
                m = bm[w]
            if m == 0:
                break
            start = (w << 6) + ctz64(m)
            if start >= hi:
                break
            # next clear bit > start, looking no further than the k-th page (a run of all memory
            # is not scanned to its end to take a quantum's worth of it)
            lim = start + (k - pages)
            if lim > hi:
                lim = hi
            wlim = ((lim - 1) >> 6) + 1
            m = ~bm[w] & _mask_from(start)
            while m == 0:
                w += 1
                if w >= wlim:
                    break
                m = ~bm[w]
            if m == 0:
                end = lim
            else:
                end = (w << 6) + ctz64(m)
                if end > lim:
                    end = lim
            if clear:
                _clear_bits(bm, start, end)
            out_starts[nruns] = start
            out_lens[nruns] = end - start
            nruns += 1
            pages += end - start
            pos = end
            if pages >= k:
                last_end = end
                break
            if nruns == cap:
                break
    out_pages[0] = pages
    out_end[0] = last_end
    return nruns


def bitmap_take_pages(word_t[::1] bitmap, int64_t lo, int64_t hi, int64_t k, bint clear,
                      index_t[::1] out_starts, index_t[::1] out_lens):
    """The first ``k`` set pages of [lo, hi) as maximal runs (cut at lo and hi), the last run cut so that
    no more than ``k`` pages are taken; optionally test-and-clear exactly the pages taken.

    Buffers: ``bitmap`` INOUT u64[nwords] (only modified if ``clear``); ``out_starts``, ``out_lens``
    OUT i64[cap] (entries past ``nruns`` are left untouched).

    Stops when pages == k, nruns == cap or the scan reaches hi. ``end`` is the end of the last run
    taken when pages == k, else ``hi`` (also when the scan stopped at cap runs).

    Returns (nruns, pages, end).
    Raises ValueError unless 0 <= lo <= hi <= 64 * nwords, k >= 1 and len(out_starts) == len(out_lens) >= 1.
    """
    _check_range(lo, hi, bitmap.shape[0] * 64)
    cdef int64_t cap = _check_run_buffers(out_starts.shape[0], out_lens.shape[0])
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if lo == hi:
        return 0, 0, hi
    cdef int64_t nruns, pages, last_end
    with nogil:
        nruns = _take_loop(&bitmap[0], lo, hi, k, clear, cap, &out_starts[0], &out_lens[0], &pages, &last_end)
    return nruns, pages, last_end


# --------------------------------------------------------------------------------------------------
# build_copy_list

def build_copy_list(const index_t[::1] run_starts, const index_t[::1] run_lens, int64_t nearby,
                    int64_t max_ranges, index_t[::1] out_starts, index_t[::1] out_ends):
    """Build the Stratus blackout copy list (MAX_COPYRANGE ranges with NEARBY merging).

    Buffers: ``run_starts``, ``run_lens`` IN i64[k], runs sorted by start, non-overlapping, each of
    length >= 1; ``out_starts``, ``out_ends`` OUT i64[>= max_ranges], half-open ranges (entries past
    ``nranges`` are left untouched).

    A run whose first frame is within ``nearby`` frames of the last frame of the newest range extends
    it; otherwise it starts a new range; when ``max_ranges`` ranges exist, the two ranges with the
    smallest gap (ties: leftmost) are merged first (over-copy).

    Returns nranges.
    Raises ValueError on mismatched lengths, unsorted/overlapping/empty runs, nearby < 0,
    max_ranges < 2, or output buffers shorter than max_ranges.
    """
    cdef int64_t k = run_starts.shape[0], i, j, n = 0, s, l, best, gap, best_gap
    if run_lens.shape[0] != k:
        raise ValueError(f"run_starts has {k} elements, run_lens has {run_lens.shape[0]}")
    if nearby < 0:
        raise ValueError(f"nearby must be >= 0, got {nearby}")
    if max_ranges < 2:
        raise ValueError(f"max_ranges must be >= 2, got {max_ranges}")
    if out_starts.shape[0] < max_ranges or out_ends.shape[0] < max_ranges:
        raise ValueError(f"out_starts/out_ends have {out_starts.shape[0]}/{out_ends.shape[0]} elements, "
                         f"need max_ranges = {max_ranges}")
    for i in range(k):
        if run_lens[i] < 1:
            raise ValueError(f"run_lens[{i}] = {run_lens[i]} must be >= 1")
        if i > 0 and run_starts[i] < run_starts[i - 1] + run_lens[i - 1]:
            raise ValueError(f"runs must be sorted and non-overlapping: run {i} starts at {run_starts[i]}, "
                             f"run {i - 1} ends at {run_starts[i - 1] + run_lens[i - 1]}")
    with nogil:
        for i in range(k):
            s = run_starts[i]
            l = run_lens[i]
            if n > 0 and s <= out_ends[n - 1] - 1 + nearby:
                if s + l > out_ends[n - 1]:
                    out_ends[n - 1] = s + l
                continue
            if n == max_ranges:
                best = 0
                best_gap = out_starts[1] - out_ends[0]
                for j in range(1, n - 1):
                    gap = out_starts[j + 1] - out_ends[j]
                    if gap < best_gap:
                        best_gap = gap
                        best = j
                out_ends[best] = out_ends[best + 1]
                for j in range(best + 1, n - 1):
                    out_starts[j] = out_starts[j + 1]
                    out_ends[j] = out_ends[j + 1]
                n -= 1
            out_starts[n] = s
            out_ends[n] = s + l
            n += 1
    return n


# --------------------------------------------------------------------------------------------------
# delivery and verification

def deliver_runs(const version_t[::1] src, version_t[::1] dst, const index_t[::1] starts,
                 const index_t[::1] lens):
    """Copy runs of page versions: dst[s:s+l] = src[s:s+l] for each run.

    Buffers: ``src`` IN u32[n]; ``dst`` INOUT u32[n]; ``starts``, ``lens`` IN i64[k].
    Returns how many copied source frames held version 0 (all-zero pages), counted once per copy.
    Raises ValueError on mismatched lengths or a run outside [0, n).
    """
    cdef int64_t n = src.shape[0], k = starts.shape[0], i, f, s, e, zeros = 0
    if dst.shape[0] != n:
        raise ValueError(f"dst has {dst.shape[0]} elements, src has {n}")
    if lens.shape[0] != k:
        raise ValueError(f"starts has {k} elements, lens has {lens.shape[0]}")
    for i in range(k):
        if starts[i] < 0 or lens[i] < 0 or starts[i] > n - lens[i]:
            raise ValueError(f"run {i} = [{starts[i]}, {starts[i]} + {lens[i]}) is outside [0, {n})")
    with nogil:
        for i in range(k):
            s = starts[i]
            e = s + lens[i]
            for f in range(s, e):
                dst[f] = src[f]
                zeros += src[f] == 0
    return zeros


def find_mismatch(const version_t[::1] a, const version_t[::1] b, index_t[::1] out):
    """Count frames with a[f] != b[f]; write the first min(count, cap) of them, increasing, to ``out``.

    Buffers: ``a``, ``b`` IN u32[n]; ``out`` OUT i64[cap] (cap may be 0; entries past the count are
    left untouched).
    Returns the number of mismatching frames.
    Raises ValueError if a and b differ in length.
    """
    cdef int64_t n = a.shape[0], cap = out.shape[0], f, count = 0
    if b.shape[0] != n:
        raise ValueError(f"a has {n} elements, b has {b.shape[0]}")
    with nogil:
        for f in range(n):
            if a[f] != b[f]:
                if count < cap:
                    out[count] = f
                count += 1
    return count


# --------------------------------------------------------------------------------------------------
# write-target generators

cdef inline uint64_t _splitmix(uint64_t key, uint64_t k) noexcept nogil:
    cdef uint64_t z = key + (k + 1) * SPLITMIX_GAMMA
    z = (z ^ (z >> 30)) * SPLITMIX_M1
    z = (z ^ (z >> 27)) * SPLITMIX_M2
    return z ^ (z >> 31)


cdef void _check_gen_random(int64_t ncpu, uint64_t[::1] counters, const index_t[::1] counts, index_t[::1] out,
                            int64_t hot_span, int64_t hot_threshold, int64_t span, int64_t mult, int64_t modulus,
                            int64_t block) except *:
    """gen_random's preconditions (see its docstring), shared with random_write_step."""
    if counters.shape[0] != ncpu or counts.shape[0] != ncpu:
        raise ValueError(f"stream_keys, counters, counts have {ncpu}, {counters.shape[0]}, "
                         f"{counts.shape[0]} elements; they must match")
    _check_counts(counts, out)
    if hot_threshold < 0 or hot_threshold > <int64_t>TWO32:
        raise ValueError(f"hot_threshold must be in [0, 2**32], got {hot_threshold}")
    if hot_span < 0 or hot_span > span:
        raise ValueError(f"need 0 <= hot_span <= span, got hot_span={hot_span}, span={span}")
    _check_generator_map(span, mult, modulus, block)


def gen_random(const uint64_t[::1] stream_keys, uint64_t[::1] counters, const index_t[::1] counts,
               int64_t hot_span, int64_t hot_threshold, int64_t span, int64_t base, int64_t mult,
               int64_t modulus, index_t[::1] out, int64_t block=1):
    """Counter-based splitmix64 write targets with a hot set, independent of batch sizes.

    Buffers: ``stream_keys`` IN u64[ncpu]; ``counters`` INOUT u64[ncpu] (advanced by counts, mod
    2^64); ``counts`` IN i64[ncpu]; ``out`` OUT i64[sum(counts)], CPU c's targets at offset
    sum(counts[:c]).

    Draw k of CPU c hashes (stream_keys[c], counters[c] + k); the high 32 bits pick hot
    (hi < hot_threshold) or cold, the low 32 bits pick the working-set index by multiply-shift; the
    target is base + ((idx // block) * mult % modulus) * block + idx % block (blocks of ``block``
    frames keep their contiguity; block = 1 scatters single frames).

    Raises ValueError on mismatched lengths, negative counts, or preconditions violated:
    0 <= hot_span <= span <= modulus * block, modulus <= 2**32, 0 <= hot_threshold <= 2**32,
    mult < 2**32 coprime with modulus.
    """
    cdef int64_t ncpu = stream_keys.shape[0]
    _check_gen_random(ncpu, counters, counts, out, hot_span, hot_threshold, span, mult, modulus, block)
    with nogil:
        _gen_random_loop(stream_keys, counters, counts, hot_span, hot_threshold, span, base, mult, modulus, out,
                         block)
    return None


cdef void _gen_random_loop(const uint64_t[::1] stream_keys, uint64_t[::1] counters, const index_t[::1] counts,
                           int64_t hot_span, int64_t hot_threshold, int64_t span, int64_t base, int64_t mult,
                           int64_t modulus, index_t[::1] out, int64_t block) noexcept nogil:
    """The loop of ``gen_random`` and ``random_write_step`` (arguments checked by them)."""
    cdef int64_t ncpu = stream_keys.shape[0], c, j, cnt, pos = 0
    cdef uint64_t z, hi, lo, idx, key, k0, ublk = <uint64_t>block
    cdef uint64_t thr = <uint64_t>hot_threshold, hspan = <uint64_t>hot_span
    cdef uint64_t cspan = <uint64_t>(span - hot_span), umult = <uint64_t>mult, umod = <uint64_t>modulus
    # A power-of-two block (the default 2 MiB of 4 KiB pages) divides by a shift and a mask: the same
    # values as / and %, without two 64-bit divisions per write.
    cdef bint pow2 = (ublk & (ublk - 1)) == 0
    cdef int shift = ctz64(ublk) if pow2 else 0
    cdef uint64_t low_mask = ublk - 1
    for c in range(ncpu):
        key = stream_keys[c]
        k0 = counters[c]
        cnt = counts[c]
        for j in range(cnt):
            z = _splitmix(key, k0 + <uint64_t>j)
            hi = z >> 32
            lo = z & LOW32
            # lo < 2^32 and spans <= 2^32, so the products fit in 64 bits
            if hi < thr:
                idx = (lo * hspan) >> 32
            else:
                idx = hspan + ((lo * cspan) >> 32)
            if pow2:
                out[pos] = base + <int64_t>((((idx >> shift) * umult % umod) << shift) + (idx & low_mask))
            else:
                out[pos] = base + <int64_t>(((idx / ublk) * umult % umod) * ublk + idx % ublk)
            pos += 1
        counters[c] = k0 + <uint64_t>cnt


def gen_sequential(index_t[::1] cursors, const index_t[::1] counts, int64_t stride, int64_t span,
                   int64_t base, int64_t mult, int64_t modulus, index_t[::1] out, int64_t block=1):
    """Sequential (strided, wrapping) write targets per CPU.

    Buffers: ``cursors`` INOUT i64[ncpu] (left in [0, span)); ``counts`` IN i64[ncpu]; ``out`` OUT
    i64[sum(counts)], CPU c's targets at offset sum(counts[:c]).

    Target j of CPU c is base + (idx * mult) % modulus with idx = (cursors[c] + j * stride) % span,
    taken with Python's (non-negative) modulo, so negative strides walk backwards.

    Raises ValueError on mismatched lengths, negative counts, span < 1, or preconditions violated:
    span <= modulus * block, modulus <= 2**32, mult < 2**32 coprime with modulus.
    """
    cdef int64_t ncpu = cursors.shape[0], c, j, cnt, pos = 0
    if counts.shape[0] != ncpu:
        raise ValueError(f"cursors has {ncpu} elements, counts has {counts.shape[0]}")
    _check_counts(counts, out)
    if span < 1:
        raise ValueError(f"span must be >= 1, got {span}")
    _check_generator_map(span, mult, modulus, block)
    # Python-style modulo, done before the loop: everything below stays in [0, span) < 2^32
    cdef int64_t step = stride % span
    if step < 0:
        step += span
    cdef int64_t idx
    cdef uint64_t umult = <uint64_t>mult, umod = <uint64_t>modulus, ublk = <uint64_t>block, uidx
    with nogil:
        for c in range(ncpu):
            idx = cursors[c] % span
            if idx < 0:
                idx += span
            cnt = counts[c]
            for j in range(cnt):
                uidx = <uint64_t>idx
                out[pos] = base + <int64_t>(((uidx / ublk) * umult % umod) * ublk + uidx % ublk)
                pos += 1
                idx += step
                if idx >= span:
                    idx -= span
            cursors[c] = idx
    return None


# --------------------------------------------------------------------------------------------------
# the CPUs' time accounting of one step (built with -ffp-contract=off: a*b + c rounds twice, as in numpy)

def cpu_debt_step(double run, double[::1] debt, bint paced, double[::1] out_avail):
    """Pay the CPUs' tracking debt from ``run`` cycles of running time.

    Buffers: ``debt`` INOUT f64[ncpu], ``out_avail`` OUT f64[ncpu]. For each CPU c: ``a = run - debt[c]``;
    ``debt[c] = -a`` if a < 0 else 0; with ``paced``: ``a = 0`` if a < 0 else ``run``; ``out_avail[c] =
    max(a, 0)``. Raises ValueError on mismatched lengths.
    """
    cdef Py_ssize_t n = debt.shape[0], c
    if out_avail.shape[0] != n:
        raise ValueError(f"debt has {n} elements, out_avail has {out_avail.shape[0]}")
    _debt_loop(run, debt, paced, out_avail)
    return None


cdef void _debt_loop(double run, double[::1] debt, bint paced, double[::1] out_avail) noexcept nogil:
    cdef Py_ssize_t c
    cdef double a
    for c in range(debt.shape[0]):
        a = run - debt[c]
        debt[c] = -a if a < 0 else 0.0
        if paced:
            a = 0.0 if a < 0 else run
        out_avail[c] = a if a > 0.0 else (0.0 if a < 0.0 else a)


def rate_step(const double[::1] run, double rate_per_cycle, double[::1] carry, index_t[::1] counts):
    """Writes due in ``run`` cycles at ``rate_per_cycle``, the fractions carried over.

    Buffers: ``run`` IN f64[ncpu], ``carry`` INOUT f64[ncpu], ``counts`` OUT i64[ncpu]. For each CPU c:
    ``e = run[c] * rate_per_cycle + carry[c]`` (two roundings); ``counts[c] = floor(e)``;
    ``carry[c] = e - counts[c]``. Returns the sum of ``counts``. Raises ValueError on mismatched lengths.
    """
    cdef Py_ssize_t n = run.shape[0], c
    if carry.shape[0] != n or counts.shape[0] != n:
        raise ValueError(f"run has {n} elements, carry {carry.shape[0]}, counts {counts.shape[0]}")
    return _rate_loop(run, rate_per_cycle, carry, counts)


cdef int64_t _rate_loop(const double[::1] run, double rate_per_cycle, double[::1] carry,
                        index_t[::1] counts) noexcept nogil:
    cdef Py_ssize_t c
    cdef double e, p
    cdef int64_t total = 0, k
    for c in range(run.shape[0]):
        p = run[c] * rate_per_cycle
        e = p + carry[c]
        k = <int64_t>floor(e)
        counts[c] = k
        carry[c] = e - <double>k
        total += k
    return total


def charge_tracking(const index_t[:, ::1] step_counts, double walk_cycles, double dirty_cycles, double[::1] debt,
                    double[::1] out_extra):
    """Charge each CPU the cycles tracking cost it in one step.

    Buffers: ``step_counts`` IN i64[ncpu, 3] (walks, dirty_sets, flush_refills: apply_writes'
    ``out_counts``), ``debt`` INOUT f64[ncpu], ``out_extra`` OUT f64[ncpu]. For each CPU c:
    ``out_extra[c] = refills * walk_cycles + dirty_sets * dirty_cycles`` (each product rounded, then
    the sum); ``debt[c] += out_extra[c]``. Returns (walks, dirty_sets, flush_refills) summed over the CPUs.
    Raises ValueError on mismatched shapes.
    """
    cdef Py_ssize_t n = debt.shape[0], c
    if step_counts.shape[0] != n or step_counts.shape[1] != 3 or out_extra.shape[0] != n:
        raise ValueError(f"step_counts must be [{n}, 3] and out_extra [{n}], got [{step_counts.shape[0]}, {step_counts.shape[1]}] "
                         f"and [{out_extra.shape[0]}]")
    cdef int64_t[3] totals
    _charge_loop(step_counts, walk_cycles, dirty_cycles, debt, out_extra, totals)
    return totals[0], totals[1], totals[2]


cdef void _charge_loop(const index_t[:, ::1] step_counts, double walk_cycles, double dirty_cycles, double[::1] debt,
                       double[::1] out_extra, int64_t* totals) noexcept nogil:
    cdef Py_ssize_t c
    cdef int64_t walks = 0, dirty_sets = 0, refills = 0
    cdef double a, b
    for c in range(debt.shape[0]):
        walks += step_counts[c, 0]
        dirty_sets += step_counts[c, 1]
        refills += step_counts[c, 2]
        a = <double>step_counts[c, 2] * walk_cycles
        b = <double>step_counts[c, 1] * dirty_cycles
        out_extra[c] = a + b
        debt[c] += out_extra[c]
    totals[0] = walks
    totals[1] = dirty_sets
    totals[2] = refills


# --------------------------------------------------------------------------------------------------
# one CPU step of a random-write workload, fused (the compositions above in one call each)

def cpu_rate_step(double run, double[::1] debt, bint paced, double rate_per_cycle, double[::1] carry,
                  double[::1] out_avail, index_t[::1] counts):
    """``cpu_debt_step(run, debt, paced, out_avail)`` then ``rate_step(out_avail, rate_per_cycle, carry,
    counts)``; returns the latter's total.

    Buffers: ``debt`` INOUT f64[ncpu], ``carry`` INOUT f64[ncpu], ``out_avail`` OUT f64[ncpu], ``counts``
    OUT i64[ncpu]. Raises ValueError on mismatched lengths (before any buffer is changed).
    """
    cdef Py_ssize_t n = debt.shape[0]
    if out_avail.shape[0] != n or carry.shape[0] != n or counts.shape[0] != n:
        raise ValueError(f"debt has {n} elements, out_avail {out_avail.shape[0]}, carry {carry.shape[0]}, "
                         f"counts {counts.shape[0]}")
    cdef int64_t total
    with nogil:
        _debt_loop(run, debt, paced, out_avail)
        total = _rate_loop(out_avail, rate_per_cycle, carry, counts)
    return total


def random_write_step(const uint64_t[::1] stream_keys, uint64_t[::1] counters, const index_t[::1] counts,
                      int64_t hot_span, int64_t hot_threshold, int64_t span, int64_t base, int64_t mult,
                      int64_t modulus, int64_t block, index_t[::1] out, index_t[::1] cpu_bounds, pte_t[::1] pte,
                      version_t[::1] versions, tlb_tag_t[:, ::1] tlb_tag, tlb_flag_t[:, ::1] tlb_flags,
                      int64_t pt_base, int64_t ptes_per_pt, index_t[:, ::1] step_counts, double walk_cycles,
                      double dirty_cycles, double[::1] debt, double[::1] out_extra):
    """``gen_random(stream_keys, counters, counts, hot_span, hot_threshold, span, base, mult, modulus, out,
    block)``, then ``cpu_bounds = [0, cumsum(counts)]``, ``apply_writes(out, cpu_bounds, pte, versions,
    tlb_tag, tlb_flags, pt_base, ptes_per_pt, step_counts)`` and ``charge_tracking(step_counts, walk_cycles,
    dirty_cycles, debt, out_extra)``, whose return value it returns.

    Buffers as in those kernels; ``cpu_bounds`` OUT i64[ncpu+1]. Every generated frame lies in
    [base, base + modulus * block), which must lie inside [0, n_frames): checked once instead of per write.
    Raises ValueError, before any buffer is changed, on what those kernels refuse.
    """
    cdef int64_t ncpu = stream_keys.shape[0], n = pte.shape[0], c
    _check_gen_random(ncpu, counters, counts, out, hot_span, hot_threshold, span, mult, modulus, block)
    if base < 0 or base + modulus * block > n:
        raise ValueError(f"generated frames [{base}, {base} + {modulus} * {block}) must lie inside [0, {n})")
    if versions.shape[0] != n:
        raise ValueError(f"versions has {versions.shape[0]} elements, pte has {n}")
    if tlb_tag.shape[0] != ncpu or tlb_flags.shape[0] != ncpu or tlb_flags.shape[1] != tlb_tag.shape[1]:
        raise ValueError(f"tlb_tag and tlb_flags must both be [{ncpu}, entries], got "
                         f"[{tlb_tag.shape[0]}, {tlb_tag.shape[1]}] and [{tlb_flags.shape[0]}, {tlb_flags.shape[1]}]")
    if tlb_tag.shape[1] < 1:
        raise ValueError("the TLB needs at least one entry per CPU")
    if cpu_bounds.shape[0] != ncpu + 1:
        raise ValueError(f"cpu_bounds has {cpu_bounds.shape[0]} elements, expected ncpu + 1 = {ncpu + 1}")
    if step_counts.shape[0] != ncpu or step_counts.shape[1] != 3:
        raise ValueError(f"step_counts has shape ({step_counts.shape[0]}, {step_counts.shape[1]}), "
                         f"expected ({ncpu}, 3)")
    if debt.shape[0] != ncpu or out_extra.shape[0] != ncpu:
        raise ValueError(f"debt and out_extra must have {ncpu} elements, got {debt.shape[0]} and {out_extra.shape[0]}")
    _check_pt(n, pt_base, ptes_per_pt)
    cdef int64_t[3] totals
    step_counts[:, :] = 0
    with nogil:
        _gen_random_loop(stream_keys, counters, counts, hot_span, hot_threshold, span, base, mult, modulus, out,
                         block)
        cpu_bounds[0] = 0
        for c in range(ncpu):
            cpu_bounds[c + 1] = cpu_bounds[c] + counts[c]
        _write_loop(out, NULL, cpu_bounds, pte, versions, tlb_tag, tlb_flags, pt_base, ptes_per_pt, step_counts)
        _charge_loop(step_counts, walk_cycles, dirty_cycles, debt, out_extra, totals)
    return totals[0], totals[1], totals[2]


# --------------------------------------------------------------------------------------------------
# the copy loop: CPU steps, the scanner's copy pieces and the link over many quanta in one call

# indices of copy_loop's ``state`` (pagesync_model/kernels/dtypes.py mirrors them: COPY_LOOP_STATE)
cdef enum:
    CL_NOW = 0          # the scanner's time: in, now; out, when it next wakes
    CL_T_DONE = 1       # Cpus.t_done
    CL_BUSY = 2         # link.busy_until
    CL_ARRIVAL = 3      # link.last_arrival
    CL_POS = 4          # the bitmap position of the next extraction
    CL_RUN_I = 5        # the run of the current list the next piece starts in
    CL_RUN_OFF = 6      # and its offset in that run
    CL_NRUNS = 7        # runs in the current list (0: none)
    CL_BYTES = 8        # link.bytes_sent
    CL_PAGES = 9        # link.pages_sent
    CL_ZERO_SENT = 10   # link.zero_pages_sent
    CL_CALLS = 11       # link.calls
    CL_BUSY_CYCLES = 12 # link.busy_cycles
    CL_TIMEOUTS = 13    # link.timeouts
    CL_RUNNING = 14     # Cpus.running_cycles
    CL_WRITES = 15      # Cpus.writes
    CL_WALKS = 16       # Cpus.walks
    CL_DIRTY_SETS = 17  # Cpus.dirty_sets
    CL_REFILLS = 18     # Cpus.flush_refills
    CL_METER_FILL = 19  # the dirty-rate meter's buffer fill
    CL_COPY_ZEROS = 20  # all-zero pages of the copy so far
    CL_PIECES = 21      # pieces sent by this call
    CL_ADMIT = 22       # 1: the piece at CL_NOW may go (the scanner is at that instant)
    CL_STATUS = 23      # out: 0 done, 1 horizon reached, 2 a CPU step for Python at CL_NEXT_TICK
    CL_NEXT_TICK = 24
    CL_SIZE = 25

cdef enum:
    CL_DONE = 0
    CL_HORIZON = 1
    CL_PY_TICK = 2

cdef uint32_t GARBAGE = 0xFFFFFFFF


cdef double _pairwise_sum(const double* a, int64_t n) noexcept nogil:
    """numpy's pairwise summation of a contiguous float64 array (``np.add.reduce``), bit for bit."""
    cdef int64_t i, j, n2
    cdef double res
    cdef double r[8]
    if n < 8:
        res = 0.0
        for i in range(n):
            res += a[i]
        return res
    if n <= 128:
        for j in range(8):
            r[j] = a[j]
        i = 8
        while i < n - (n % 8):
            for j in range(8):
                r[j] += a[i + j]
            i += 8
        res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
        while i < n:
            res += a[i]
            i += 1
        return res
    n2 = n // 2
    n2 -= n2 % 8
    return _pairwise_sum(a, n2) + _pairwise_sum(a + n2, n - n2)


# the blocks copy_loop, qemu_turn and xen_batches share

cdef struct Link:
    # Interconnect's parameters: link_i, link_f of the loops
    int64_t ps, header, zpb, latency
    double bandwidth, per_copy, first_copy, clock


cdef inline Link _link_of(const index_t[::1] link_i, const double[::1] link_f) noexcept nogil:
    cdef Link L
    L.ps, L.header, L.zpb, L.latency = link_i[0], link_i[1], link_i[2], link_i[3]
    L.bandwidth, L.per_copy, L.first_copy, L.clock = link_f[0], link_f[1], link_f[2], link_f[3]
    return L


cdef void _check_cpu_steps(int64_t n, const index_t[::1] counts, const double[::1] carry, const double[::1] debt,
                           const double[::1] avail, const uint64_t[::1] stream_keys, const uint64_t[::1] counters,
                           const double[::1] extra, const index_t[::1] cpu_bounds, int64_t hot_span,
                           int64_t hot_threshold, int64_t span, int64_t base, int64_t mult, int64_t modulus,
                           int64_t block, const tlb_tag_t[:, ::1] tlb_tag, const tlb_flag_t[:, ::1] tlb_flags,
                           const index_t[:, ::1] step_counts, int64_t pt_base, int64_t ptes_per_pt) except *:
    # the arguments of _cpu_steps (copy_loop, qemu_turn, xen_batches)
    cdef int64_t ncpu = stream_keys.shape[0]
    if ncpu != counts.shape[0] or carry.shape[0] != ncpu or debt.shape[0] != ncpu or avail.shape[0] != ncpu:
        raise ValueError("counts, carry, debt, avail must have ncpu elements")
    if counters.shape[0] != ncpu or extra.shape[0] != ncpu or cpu_bounds.shape[0] != ncpu + 1:
        raise ValueError("counters, extra must have ncpu elements, cpu_bounds ncpu + 1")
    if hot_threshold < 0 or hot_threshold > <int64_t>TWO32:
        raise ValueError(f"hot_threshold must be in [0, 2**32], got {hot_threshold}")
    if hot_span < 0 or hot_span > span:
        raise ValueError(f"need 0 <= hot_span <= span, got hot_span={hot_span}, span={span}")
    _check_generator_map(span, mult, modulus, block)
    if base < 0 or base + modulus * block > n:
        raise ValueError(f"generated frames [{base}, {base} + {modulus} * {block}) must lie inside [0, {n})")
    if tlb_tag.shape[0] != ncpu or tlb_flags.shape[0] != ncpu or tlb_flags.shape[1] != tlb_tag.shape[1] \
            or tlb_tag.shape[1] < 1:
        raise ValueError("tlb_tag and tlb_flags must both be [ncpu, entries >= 1]")
    if step_counts.shape[0] != ncpu or step_counts.shape[1] != 3:
        raise ValueError(f"step_counts must be ({ncpu}, 3)")
    _check_pt(n, pt_base, ptes_per_pt)


cdef inline bint _cpu_steps(int64_t s, int64_t quantum, int64_t tick_limit, int64_t* t_done, int64_t* fill,
                            double* tracking, index_t* cpu_n, index_t* next_tick, bint paced, double rate_per_cycle,
                            double[::1] carry, double[::1] debt, double[::1] avail, index_t[::1] counts,
                            const uint64_t[::1] stream_keys, uint64_t[::1] counters, int64_t hot_span,
                            int64_t hot_threshold, int64_t span, int64_t base, int64_t mult, int64_t modulus,
                            int64_t block, index_t[::1] frames, index_t[::1] cpu_bounds, pte_t[::1] pte,
                            version_t[::1] versions, tlb_tag_t[:, ::1] tlb_tag, tlb_flag_t[:, ::1] tlb_flags,
                            int64_t pt_base, int64_t ptes_per_pt, index_t[:, ::1] step_counts, double walk_cycles,
                            double dirty_cycles, double[::1] extra, index_t[::1] meter_buf,
                            bint meter_on, bint stopped) noexcept nogil:
    """The CPU steps due by s: one a quantum after the last (``t_done``), then one to s, each as
    ``cpu_rate_step`` + ``random_write_step`` (+ the meter's copy of the frames into ``meter_buf`` at
    ``fill``). ``cpu_n[0:5]`` are Cpus.running_cycles, writes, walks, dirty_sets, flush_refills. Returns
    True before a step after ``tick_limit`` or one whose writes might not fit ``frames`` or the meter's
    buffer (its time in ``next_tick``: Python applies it). With ``stopped`` (the CPUs stopped: a rendezvous,
    a blackout) a step only moves ``t_done``, as Cpus.advance_to does."""
    cdef int64_t ncpu = stream_keys.shape[0], wcap = frames.shape[0], mcap = meter_buf.shape[0] if meter_on else 0
    cdef int64_t td = t_done[0], t, dt, bound, total, c, k
    cdef int64_t[3] totals
    cdef bint py = False
    while td < s:
        t = td + quantum
        if t > s:
            t = s
        dt = t - td
        bound = ncpu * (<int64_t>(<double>dt * rate_per_cycle) + 2)
        if t > tick_limit or bound > wcap or (meter_on and fill[0] + bound > mcap):
            next_tick[0] = t
            py = True
            break
        td = t
        if stopped:
            continue
        cpu_n[0] += dt
        _debt_loop(<double>dt, debt, paced, avail)
        total = _rate_loop(avail, rate_per_cycle, carry, counts)
        if total == 0:
            continue
        _gen_random_loop(stream_keys, counters, counts, hot_span, hot_threshold, span, base, mult, modulus, frames,
                         block)
        cpu_bounds[0] = 0
        for c in range(ncpu):
            cpu_bounds[c + 1] = cpu_bounds[c] + counts[c]
        _write_loop(frames, NULL, cpu_bounds, pte, versions, tlb_tag, tlb_flags, pt_base, ptes_per_pt, step_counts)
        _charge_loop(step_counts, walk_cycles, dirty_cycles, debt, extra, totals)
        if meter_on:
            for k in range(total):
                meter_buf[fill[0] + k] = frames[k]
            fill[0] += total
        tracking[0] = tracking[0] + (0.0 + _pairwise_sum(&extra[0], ncpu))
        cpu_n[1] += total
        cpu_n[2] += totals[0]
        cpu_n[3] += totals[1]
        cpu_n[4] += totals[2]
    t_done[0] = td
    return py


cdef inline void _read_run(version_t* partner, const version_t* versions, int64_t f, int64_t e, bint count_first,
                           int64_t* first, int64_t* zeros) noexcept nogil:
    """Pages [f, e) read into ``partner``: adds the pages ``partner`` had never received (GARBAGE; counted
    only with ``count_first``) to ``first`` and the all-zero pages to ``zeros``."""
    cdef int64_t k
    if count_first:
        for k in range(f, e):
            first[0] += partner[k] == GARBAGE
    for k in range(f, e):
        partner[k] = versions[k]
        zeros[0] += versions[k] == 0


cdef inline int64_t _link_send(const Link* L, int64_t s, index_t* busy, index_t* sent, int64_t calls, int64_t pages,
                               int64_t zeros, int64_t first, int64_t nbytes) noexcept nogil:
    """Interconnect._send at s of ``nbytes`` (``pages`` pages, ``zeros`` of them all-zero, ``first`` first
    copies) in ``calls`` copy calls: ``busy[0:2]`` are link.busy_until, last_arrival, ``sent[0:6]``
    link.bytes_sent, pages_sent, zero_pages_sent, calls, busy_cycles, timeouts. Returns busy_until."""
    cdef int64_t start = s if s > busy[0] else busy[0]
    cdef int64_t cycles = <int64_t>rint((<double>calls * L.per_copy + <double>nbytes / L.bandwidth
                                         + <double>first * L.first_copy) * L.clock)
    busy[0] = start + cycles
    busy[1] = busy[0] + L.latency
    sent[0] += nbytes
    sent[1] += pages
    sent[2] += zeros
    sent[3] += calls
    sent[4] += cycles
    sent[5] += 1
    return busy[0]


cdef inline int64_t _piece_bytes(const Link* L, int64_t pages, int64_t zeros) noexcept nogil:
    # the bytes of a piece of pages (zero pages at zpb bytes unless zpb < 0), with their headers
    cdef int64_t nbytes
    if L.zpb < 0:
        nbytes = pages * L.ps
    else:
        nbytes = (pages - zeros) * L.ps + zeros * L.zpb
    return nbytes + pages * L.header


cdef inline int64_t _chunk_piece(index_t[::1] state, int64_t s, const index_t[::1] runs_s, const index_t[::1] runs_l,
                                 int64_t chunk, version_t* partner, const version_t* versions,
                                 const Link* L) noexcept nogil:
    """copy_loop's piece: at most ``chunk`` pages of ``runs_s/runs_l[RUN_I:NRUNS]`` from RUN_OFF, read into
    ``partner`` at s and sent (``state`` is copy_loop's). Returns the link's busy_until."""
    cdef int64_t i = state[CL_RUN_I], off = state[CL_RUN_OFF], pages = 0, calls = 0, first = 0, zeros = 0
    cdef int64_t take, f
    cdef bint split = off > 0
    while pages < chunk and i < state[CL_NRUNS]:
        take = runs_l[i] - off
        if take > chunk - pages:
            take = chunk - pages
        f = runs_s[i] + off
        _read_run(partner, versions, f, f + take, L.first_copy > 0, &first, &zeros)
        calls += 1
        pages += take
        off += take
        if off == runs_l[i]:
            i += 1
            off = 0
    if split:
        calls -= 1
    state[CL_RUN_I] = i
    state[CL_RUN_OFF] = off
    if i >= state[CL_NRUNS]:
        state[CL_NRUNS] = 0
    s = _link_send(L, s, &state[CL_BUSY], &state[CL_BYTES], calls, pages, zeros, first, _piece_bytes(L, pages, zeros))
    state[CL_COPY_ZEROS] += zeros
    state[CL_PIECES] += 1
    state[CL_ADMIT] = 0
    return s



def copy_loop(index_t[::1] state, double[::1] fstate, word_t[::1] bitmap, int64_t hi, bint use_bitmap,
              index_t[::1] runs_s, index_t[::1] runs_l, const index_t[::1] link_i, const double[::1] link_f,
              version_t[::1] partner, int64_t horizon, int64_t tick_limit, int64_t quantum, int64_t chunk,
              bint paced, double rate_per_cycle, double[::1] carry, double[::1] debt, double[::1] avail,
              index_t[::1] counts, const uint64_t[::1] stream_keys, uint64_t[::1] counters, int64_t hot_span,
              int64_t hot_threshold, int64_t span, int64_t base, int64_t mult, int64_t modulus, int64_t block,
              index_t[::1] frames, index_t[::1] cpu_bounds, pte_t[::1] pte, version_t[::1] versions,
              tlb_tag_t[:, ::1] tlb_tag, tlb_flag_t[:, ::1] tlb_flags, int64_t pt_base, int64_t ptes_per_pt,
              index_t[:, ::1] step_counts, double walk_cycles, double dirty_cycles, double[::1] extra,
              index_t[::1] meter_buf, bint meter_on, bint stopped=False):
    """A scanner copying runs while the CPUs write, over many quanta (CONTRACT.md, ``copy_loop``).

    Runs the pieces of the current run list ``runs_s/runs_l[RUN_I:NRUNS]`` (from RUN_OFF) and, with
    ``use_bitmap``, of the next runs test-and-cleared from ``bitmap`` [POS, hi) ``chunk`` pages at a time;
    before each piece the CPU steps due by then (one per ``quantum`` after T_DONE, then one to the piece's
    start) as ``cpu_rate_step`` + ``random_write_step`` (+ the meter's copy of the frames); each piece is
    ``chunk`` pages at most, read into ``partner`` and timed as ``Interconnect._send``. Stops before a piece
    that starts at or after ``horizon`` (unless ADMIT), before a CPU step after ``tick_limit`` or one whose
    writes might not fit ``frames`` or the meter's buffer (STATUS 2: Python applies it), or when all is
    sent (STATUS 0). ``fstate[0]`` is the tracking cycles. Returns None.
    """
    cdef int64_t ncpu = stream_keys.shape[0], n = pte.shape[0], c
    if state.shape[0] != CL_SIZE or fstate.shape[0] != 1 or link_i.shape[0] != 4 or link_f.shape[0] != 4:
        raise ValueError("state, fstate, link_i, link_f must have 25, 1, 4, 4 elements")
    if runs_s.shape[0] != runs_l.shape[0] or runs_s.shape[0] < 1 or state[CL_NRUNS] > runs_s.shape[0]:
        raise ValueError("runs_s and runs_l must have the same length >= 1, at least NRUNS")
    if partner.shape[0] != n or versions.shape[0] != n:
        raise ValueError(f"partner and versions must have {n} elements")
    if use_bitmap and (hi < 0 or hi > bitmap.shape[0] * 64):
        raise ValueError(f"hi = {hi} is outside the bitmap")
    if quantum < 1 or chunk < 1:
        raise ValueError("quantum and chunk must be >= 1")
    for c in range(state[CL_RUN_I], state[CL_NRUNS]):
        if runs_l[c] < 1 or runs_s[c] < 0 or runs_s[c] > n - runs_l[c]:
            raise ValueError(f"run {c} is empty or outside [0, {n})")
    _check_cpu_steps(n, counts, carry, debt, avail, stream_keys, counters, extra, cpu_bounds, hot_span, hot_threshold,
                     span, base, mult, modulus, block, tlb_tag, tlb_flags, step_counts, pt_base, ptes_per_pt)
    cdef Link L = _link_of(link_i, link_f)
    cdef int64_t s = state[CL_NOW], t_done = state[CL_T_DONE]
    cdef int64_t nr, npages, nxt
    cdef int64_t fill = state[CL_METER_FILL], status = CL_DONE
    cdef double tracking = fstate[0]
    with nogil:
        while True:
            if state[CL_NRUNS] == 0:
                if not use_bitmap or state[CL_POS] >= hi:
                    status = CL_DONE
                    break
                if not state[CL_ADMIT]:
                    if s >= horizon:
                        status = CL_HORIZON
                        break
                    state[CL_ADMIT] = 1
                nr = _extract_loop(&bitmap[0], state[CL_POS], hi, chunk, True, runs_s, runs_l, &npages, &nxt)
                state[CL_POS] = nxt
                if nr == 0:
                    state[CL_POS] = hi
                    status = CL_DONE
                    break
                state[CL_NRUNS] = nr
                state[CL_RUN_I] = 0
                state[CL_RUN_OFF] = 0
            elif not state[CL_ADMIT]:
                if s >= horizon:
                    status = CL_HORIZON
                    break
                state[CL_ADMIT] = 1
            # the CPU steps due by s
            if _cpu_steps(s, quantum, tick_limit, &t_done, &fill, &tracking, &state[CL_RUNNING], &state[CL_NEXT_TICK],
                          paced, rate_per_cycle, carry, debt, avail, counts, stream_keys, counters, hot_span,
                          hot_threshold, span, base, mult, modulus, block, frames, cpu_bounds, pte, versions, tlb_tag,
                          tlb_flags, pt_base, ptes_per_pt, step_counts, walk_cycles, dirty_cycles, extra, meter_buf,
                          meter_on, stopped):
                status = CL_PY_TICK
                break
            # one piece of at most chunk pages, read at s
            s = _chunk_piece(state, s, runs_s, runs_l, chunk, &partner[0], &versions[0], &L)
            if state[CL_NRUNS] == 0 and not use_bitmap:
                status = CL_DONE
                break
    state[CL_NOW] = s
    state[CL_T_DONE] = t_done
    state[CL_METER_FILL] = fill
    state[CL_STATUS] = status
    fstate[0] = tracking
    return None


# --------------------------------------------------------------------------------------------------
# QEMU's migration-thread turn: ram_save_iterate's pieces against the window quota, with the CPUs' steps

# indices of qemu_turn's ``state`` (pagesync_model/kernels/dtypes.py mirrors them: QEMU_TURN_FIELDS)
cdef enum:
    QT_NOW = 0          # the thread's time: in, now; out, when it next wakes
    QT_T_DONE = 1       # Cpus.t_done
    QT_BUSY = 2         # link.busy_until
    QT_ARRIVAL = 3      # link.last_arrival
    QT_BYTES = 4        # link.bytes_sent
    QT_PAGES = 5        # link.pages_sent
    QT_ZERO_SENT = 6    # link.zero_pages_sent
    QT_CALLS = 7        # link.calls
    QT_BUSY_CYCLES = 8  # link.busy_cycles
    QT_TIMEOUTS = 9     # link.timeouts
    QT_RUNNING = 10     # Cpus.running_cycles
    QT_WRITES = 11      # Cpus.writes
    QT_WALKS = 12       # Cpus.walks
    QT_DIRTY_SETS = 13  # Cpus.dirty_sets
    QT_REFILLS = 14     # Cpus.flush_refills
    QT_METER_FILL = 15  # the dirty-rate meter's buffer fill
    QT_PIECES = 16      # pieces sent by this call
    QT_ADMIT = 17       # 1: the piece at QT_NOW may go (the thread is at that instant)
    QT_STATUS = 18      # out: 0 turn over, 1 horizon reached, 2 a CPU step for Python, 3 a piece for Python
    QT_NEXT_TICK = 19
    QT_CURSOR = 20      # the migration bitmap's scan position (RAMState's last page)
    QT_REMAINING = 21   # migration_dirty_pages
    QT_NRUNS = 22       # runs of a piece taken and not sent yet (in runs_s/runs_l)
    QT_WRAPPED = 23     # set to 1 when a take reached the end of RAM (XBZRLE starts)
    QT_SIZE = 24

cdef enum:
    QT_TURN_OVER = 0
    QT_HORIZON = 1
    QT_PY_TICK = 2
    QT_PY_PIECE = 3


def qemu_turn(index_t[::1] state, double[::1] fstate, word_t[::1] bitmap, int64_t n_pages, int64_t cap,
              index_t[::1] runs_s, index_t[::1] runs_l, const index_t[::1] link_i, const double[::1] link_f,
              version_t[::1] partner, int64_t horizon, int64_t tick_limit, int64_t quantum, int64_t chunk, int64_t t0,
              double max_wait, int64_t window_bytes, int64_t quota, int64_t per_page, bint xbzrle,
              bint paced, double rate_per_cycle, double[::1] carry, double[::1] debt, double[::1] avail,
              index_t[::1] counts, const uint64_t[::1] stream_keys, uint64_t[::1] counters, int64_t hot_span,
              int64_t hot_threshold, int64_t span, int64_t base, int64_t mult, int64_t modulus, int64_t block,
              index_t[::1] frames, index_t[::1] cpu_bounds, pte_t[::1] pte, version_t[::1] versions,
              tlb_tag_t[:, ::1] tlb_tag, tlb_flag_t[:, ::1] tlb_flags, int64_t pt_base, int64_t ptes_per_pt,
              index_t[:, ::1] step_counts, double walk_cycles, double dirty_cycles, double[::1] extra,
              index_t[::1] meter_buf, bint meter_on, bint stopped=False):
    """QEMU's ram_save_iterate while the CPUs write, in one call (CONTRACT.md, ``qemu_turn``).

    Until the turn is over (the window's ``quota`` used: bytes_sent - ``window_bytes`` >= quota, nothing
    remaining, ``max_wait`` cycles since ``t0``, or a take that found nothing): take the next
    ``max(1, min(chunk, left // per_page))`` pages of ``bitmap`` from the cursor as Migration.next_pages
    does (wrapping around RAM once), apply the CPU steps due by then (as ``copy_loop``), read the piece into
    ``partner`` and time it on the link. Stops before a take at or after ``horizon`` (unless ADMIT), before a
    CPU step it leaves to Python (STATUS 2), and with ``xbzrle`` after a take that wrapped (STATUS 3: the
    piece is left in ``runs_s/runs_l[:NRUNS]`` for Python to send). ``fstate[0]`` is the tracking cycles.
    Returns None.
    """
    cdef int64_t ncpu = stream_keys.shape[0], n = pte.shape[0], c
    if state.shape[0] != QT_SIZE or fstate.shape[0] != 1 or link_i.shape[0] != 4 or link_f.shape[0] != 4:
        raise ValueError("state, fstate, link_i, link_f must have 24, 1, 4, 4 elements")
    if cap < 1 or runs_s.shape[0] != runs_l.shape[0] or runs_s.shape[0] < 2 * cap:
        raise ValueError("runs_s and runs_l must have the same length >= 2 * cap, cap >= 1")
    if state[QT_NRUNS] < 0 or state[QT_NRUNS] > runs_s.shape[0]:
        raise ValueError("NRUNS must lie in [0, len(runs_s)]")
    if partner.shape[0] != n or versions.shape[0] != n:
        raise ValueError(f"partner and versions must have {n} elements")
    if n_pages < 0 or n_pages > n or n_pages > bitmap.shape[0] * 64:
        raise ValueError(f"n_pages = {n_pages} is outside the bitmap or the memory")
    if state[QT_CURSOR] < 0 or state[QT_CURSOR] > n_pages:
        raise ValueError(f"the cursor {state[QT_CURSOR]} is outside [0, {n_pages}]")
    if quantum < 1 or chunk < 1 or per_page < 1:
        raise ValueError("quantum, chunk and per_page must be >= 1")
    for c in range(state[QT_NRUNS]):
        if runs_l[c] < 1 or runs_s[c] < 0 or runs_s[c] > n - runs_l[c]:
            raise ValueError(f"run {c} is empty or outside [0, {n})")
    _check_cpu_steps(n, counts, carry, debt, avail, stream_keys, counters, extra, cpu_bounds, hot_span, hot_threshold,
                     span, base, mult, modulus, block, tlb_tag, tlb_flags, step_counts, pt_base, ptes_per_pt)
    cdef Link L = _link_of(link_i, link_f)
    cdef int64_t s = state[QT_NOW], t_done = state[QT_T_DONE], i
    cdef int64_t calls, first, zeros, pages, nr, n1, budget, got, it, cursor, sent
    cdef int64_t fill = state[QT_METER_FILL], status = QT_TURN_OVER
    cdef int64_t[2] took
    cdef double tracking = fstate[0]
    cdef bint wrapped
    cdef uint64_t* bm = &bitmap[0]
    with nogil:
        while True:
            if state[QT_NRUNS] == 0:
                # ram_save_iterate's loop condition, at s
                sent = state[QT_BYTES] - window_bytes
                if sent >= quota or state[QT_REMAINING] <= 0 or <double>(s - t0) >= max_wait:
                    status = QT_TURN_OVER
                    break
                if not state[QT_ADMIT]:
                    if s >= horizon:
                        status = QT_HORIZON
                        break
                    state[QT_ADMIT] = 1
                budget = (quota - sent) // per_page
                if budget > chunk:
                    budget = chunk
                if budget < 1:
                    budget = 1
                # Migration.next_pages(budget): from the cursor, wrapping around RAM once
                nr = 0
                got = 0
                wrapped = False
                cursor = state[QT_CURSOR]
                for it in range(2):
                    n1 = _take_loop(bm, cursor, n_pages, budget - got, True, cap, &runs_s[nr], &runs_l[nr], &took[0],
                                    &took[1])
                    if nr == 0 and took[1] < n_pages and n1 > 0:
                        cursor = took[1]
                        nr = n1
                        got = took[0]
                        break
                    if n1 > 0:
                        nr += n1
                        got += took[0]
                        if took[1] < n_pages:
                            cursor = took[1]
                        else:
                            cursor = 0
                            wrapped = True
                        if got >= budget:
                            break
                    else:
                        cursor = 0
                        wrapped = True
                    if got >= budget or state[QT_REMAINING] - got <= 0:
                        break
                state[QT_CURSOR] = cursor
                if wrapped:
                    state[QT_WRAPPED] = 1
                state[QT_NRUNS] = nr
                if nr == 0:
                    status = QT_TURN_OVER
                    break
                if xbzrle and wrapped:
                    status = QT_PY_PIECE
                    break
            # the CPU steps due by s
            if _cpu_steps(s, quantum, tick_limit, &t_done, &fill, &tracking, &state[QT_RUNNING], &state[QT_NEXT_TICK],
                          paced, rate_per_cycle, carry, debt, avail, counts, stream_keys, counters, hot_span,
                          hot_threshold, span, base, mult, modulus, block, frames, cpu_bounds, pte, versions, tlb_tag,
                          tlb_flags, pt_base, ptes_per_pt, step_counts, walk_cycles, dirty_cycles, extra, meter_buf,
                          meter_on, stopped):
                status = QT_PY_TICK
                break
            # the piece: every run taken, one copy call each, read at s (Interconnect.copy of one piece)
            pages = 0
            first = 0
            zeros = 0
            calls = state[QT_NRUNS]
            for i in range(calls):
                _read_run(&partner[0], &versions[0], runs_s[i], runs_s[i] + runs_l[i], L.first_copy > 0, &first,
                          &zeros)
                pages += runs_l[i]
            state[QT_NRUNS] = 0
            state[QT_REMAINING] -= pages
            s = _link_send(&L, s, &state[QT_BUSY], &state[QT_BYTES], calls, pages, zeros, first,
                           _piece_bytes(&L, pages, zeros))
            state[QT_PIECES] += 1
            state[QT_ADMIT] = 0
    state[QT_NOW] = s
    state[QT_T_DONE] = t_done
    state[QT_METER_FILL] = fill
    state[QT_STATUS] = status
    fstate[0] = tracking
    return None


# --------------------------------------------------------------------------------------------------
# xen batches: a round of xc_domain_save()'s batches (peek, choose, header, pieces) in one call

# indices of xen_batches' ``xstate`` (pagesync_model/kernels/dtypes.py mirrors them: XEN_BATCH_FIELDS)
cdef enum:
    XB_PENDING = 0      # pages of the batch whose pieces are under way (counted once its last piece is done)
    XB_SENT = 1         # pages of the batches done by this call's round so far
    XB_SKIPPED = 2      # to_send pages passed over as re-dirtied (the peek's to_skip)
    XB_BATCHES = 3      # batches done
    XB_WAITS = 4        # wake points passed (the limiter's sleep, the header's and each piece's end)
    XB_HEADER_DUE = 5   # 1: the current batch's header is still to be sent (after the limiter's sleep)
    XB_SLOT = 6         # the rate limiter's burst slot in cycles (0: no limiter)
    XB_BUDGET = 7       # its byte budget
    XB_LAST_PUT = 8     # the cycle of its last grant
    XB_HAS_PUT = 9      # 0 until its first overdraw started the clock
    XB_LIMITER_WAITS = 10  # its sleeps (Machine.wait calls)
    XB_SIZE = 11

cdef enum:
    BURST_BUDGET = 102400  # bytes granted per burst slot (policies/xen.py, ratewrite)


cdef inline int64_t _floordiv(int64_t a, int64_t b) noexcept nogil:
    # Python's a // b for b > 0
    cdef int64_t q = a // b
    if (a % b) < 0:
        q -= 1
    return q


def xen_batches(index_t[::1] state, double[::1] fstate, index_t[::1] xstate, word_t[::1] to_send,
                word_t[::1] to_skip, word_t[::1] cand, word_t[::1] skipped, int64_t batch, int64_t header_bytes,
                bint peek, index_t[::1] runs_s, index_t[::1] runs_l, const index_t[::1] link_i,
                const double[::1] link_f, version_t[::1] partner, int64_t horizon, int64_t tick_limit,
                int64_t quantum, int64_t chunk, bint paced, double rate_per_cycle, double[::1] carry,
                double[::1] debt, double[::1] avail, index_t[::1] counts, const uint64_t[::1] stream_keys,
                uint64_t[::1] counters, int64_t hot_span, int64_t hot_threshold, int64_t span, int64_t base,
                int64_t mult, int64_t modulus, int64_t block, index_t[::1] frames, index_t[::1] cpu_bounds,
                pte_t[::1] pte, version_t[::1] versions, tlb_tag_t[:, ::1] tlb_tag, tlb_flag_t[:, ::1] tlb_flags,
                int64_t pt_base, int64_t ptes_per_pt, index_t[:, ::1] step_counts, double walk_cycles,
                double dirty_cycles, double[::1] extra, index_t[::1] meter_buf, bint meter_on,
                bint stopped=False):
    """A round of xen batches while the CPUs write, many batches in one call (CONTRACT.md, ``xen_batches``).

    From PFN POS: at each batch's start the CPU steps due by then (with ``peek``), the to_skip peek of the
    PTEs' dirty bits in a window that doubles until it holds a batch, the batch (the first ``batch`` pages
    of to_send & ~to_skip, or of to_send without ``peek``), its header timed on the link, then its pieces
    as ``copy_loop``'s (CPU steps due by each piece's start, ``chunk`` pages read into ``partner``). Stops
    at a wake point at or after ``horizon`` (unless ADMIT), before a CPU step for Python (STATUS 2), or when
    the round is over (STATUS 0). ``state`` is copy_loop's, ``xstate`` XB_*. Returns None.
    """
    cdef int64_t ncpu = stream_keys.shape[0], n = pte.shape[0], c
    cdef int64_t n_words = to_send.shape[0]
    if state.shape[0] != CL_SIZE or fstate.shape[0] != 1 or xstate.shape[0] != XB_SIZE or link_i.shape[0] != 4 \
            or link_f.shape[0] != 4:
        raise ValueError("state, fstate, xstate, link_i, link_f must have 25, 1, 11, 4, 4 elements")
    if xstate[XB_SLOT] < 0:
        raise ValueError("the rate limiter's slot must be >= 0")
    if n_words != (n + 63) // 64 or to_skip.shape[0] != n_words or cand.shape[0] != n_words \
            or skipped.shape[0] != n_words:
        raise ValueError(f"to_send, to_skip, cand and skipped must have {(n + 63) // 64} words")
    if runs_s.shape[0] != runs_l.shape[0] or runs_s.shape[0] < 1 or state[CL_NRUNS] > runs_s.shape[0]:
        raise ValueError("runs_s and runs_l must have the same length >= 1, at least NRUNS")
    if partner.shape[0] != n or versions.shape[0] != n:
        raise ValueError(f"partner and versions must have {n} elements")
    if state[CL_POS] < 0 or state[CL_POS] > n:
        raise ValueError(f"pos = {state[CL_POS]} is outside [0, {n}]")
    if quantum < 1 or chunk < 1 or batch < 1:
        raise ValueError("quantum, chunk and batch must be >= 1")
    for c in range(state[CL_RUN_I], state[CL_NRUNS]):
        if runs_l[c] < 1 or runs_s[c] < 0 or runs_s[c] > n - runs_l[c]:
            raise ValueError(f"run {c} is empty or outside [0, {n})")
    _check_cpu_steps(n, counts, carry, debt, avail, stream_keys, counters, extra, cpu_bounds, hot_span, hot_threshold,
                     span, base, mult, modulus, block, tlb_tag, tlb_flags, step_counts, pt_base, ptes_per_pt)
    cdef Link L = _link_of(link_i, link_f)
    cdef int64_t s = state[CL_NOW], t_done = state[CL_T_DONE]
    cdef int64_t k, f, nr, npages, nxt, pos
    cdef int64_t lo_w, hi_w, new_hi, width, w, f0, f1, lim
    cdef int64_t fill = state[CL_METER_FILL], status = CL_DONE
    cdef double tracking = fstate[0]
    cdef uint64_t tk, ts
    cdef uint64_t* bm_send = &to_send[0]
    cdef uint64_t* bm_cand = &cand[0]
    cdef bint steps
    with nogil:
        while True:
            if not state[CL_ADMIT]:
                if s >= horizon:
                    status = CL_HORIZON
                    break
                state[CL_ADMIT] = 1
            if state[CL_NRUNS] == 0:
                # a batch's start: the last batch is done
                if xstate[XB_PENDING]:
                    xstate[XB_SENT] += xstate[XB_PENDING]
                    xstate[XB_BATCHES] += 1
                    xstate[XB_PENDING] = 0
                if state[CL_POS] >= n:
                    status = CL_DONE
                    break
                steps = peek
            else:
                steps = not xstate[XB_HEADER_DUE]
            # the CPU steps due by s
            if steps and _cpu_steps(s, quantum, tick_limit, &t_done, &fill, &tracking, &state[CL_RUNNING], &state[CL_NEXT_TICK],
                          paced, rate_per_cycle, carry, debt, avail, counts, stream_keys, counters, hot_span,
                          hot_threshold, span, base, mult, modulus, block, frames, cpu_bounds, pte, versions, tlb_tag,
                          tlb_flags, pt_base, ptes_per_pt, step_counts, walk_cycles, dirty_cycles, extra, meter_buf,
                          meter_on, stopped):
                status = CL_PY_TICK
                break
            if state[CL_NRUNS] == 0:
                # choose the batch (Save.next_batch)
                pos = state[CL_POS]
                if not peek:
                    nr = _take_loop(bm_send, pos, n, batch, False, runs_s.shape[0], &runs_s[0], &runs_l[0], &npages,
                                    &nxt)
                else:
                    lo_w = pos >> 6
                    hi_w = lo_w
                    width = (2 * batch + 63) // 64
                    if width < 1:
                        width = 1
                    while True:
                        new_hi = hi_w + width
                        if new_hi > n_words:
                            new_hi = n_words
                        for w in range(hi_w, new_hi):
                            f0 = w << 6
                            f1 = f0 + 64
                            if f1 > n:
                                f1 = n
                            tk = 0
                            for f in range(f0, f1):
                                if pte[f] & PTE_DIRTY:
                                    tk |= (<uint64_t>1) << (f - f0)
                            ts = to_send[w]
                            to_skip[w] = tk
                            cand[w] = ts & ~tk
                            skipped[w] = ts & tk
                        hi_w = new_hi
                        lim = hi_w << 6
                        if lim > n:
                            lim = n
                        if pos < lim:
                            nr = _take_loop(bm_cand, pos, lim, batch, False, runs_s.shape[0], &runs_s[0], &runs_l[0],
                                            &npages, &nxt)
                        else:
                            nr, npages, nxt = 0, 0, lim
                        if npages >= batch or hi_w == n_words:
                            break
                        width *= 2
                    # the pages of to_send & to_skip in [pos, nxt)
                    if pos < nxt:
                        lo_w = pos >> 6
                        hi_w = (nxt - 1) >> 6
                        if lo_w == hi_w:
                            xstate[XB_SKIPPED] += popcount64(skipped[lo_w] & _mask_from(pos) & _mask_upto(nxt - 1))
                        else:
                            xstate[XB_SKIPPED] += popcount64(skipped[lo_w] & _mask_from(pos))
                            for w in range(lo_w + 1, hi_w):
                                xstate[XB_SKIPPED] += popcount64(skipped[w])
                            xstate[XB_SKIPPED] += popcount64(skipped[hi_w] & _mask_upto(nxt - 1))
                state[CL_POS] = nxt
                if npages == 0:
                    continue
                state[CL_NRUNS] = nr
                state[CL_RUN_I] = 0
                state[CL_RUN_OFF] = 0
                xstate[XB_PENDING] = npages
                xstate[XB_HEADER_DUE] = 1
                if xstate[XB_SLOT] > 0:
                    # the rate limiter (RateLimiter.write of the batch's page bytes)
                    xstate[XB_BUDGET] -= npages * L.ps
                    if xstate[XB_BUDGET] < 0:
                        if not xstate[XB_HAS_PUT]:
                            xstate[XB_BUDGET] += BURST_BUDGET
                            xstate[XB_LAST_PUT] = s
                            xstate[XB_HAS_PUT] = 1
                        else:
                            k = _floordiv(s - xstate[XB_LAST_PUT], xstate[XB_SLOT])
                            xstate[XB_BUDGET] += k * BURST_BUDGET
                            xstate[XB_LAST_PUT] += k * xstate[XB_SLOT]
                            if xstate[XB_BUDGET] <= 0:
                                k = _floordiv(-xstate[XB_BUDGET], BURST_BUDGET) + 1
                                xstate[XB_BUDGET] += k * BURST_BUDGET
                                xstate[XB_LAST_PUT] += k * xstate[XB_SLOT]
                                if xstate[XB_LAST_PUT] > s:
                                    s = xstate[XB_LAST_PUT]
                                state[CL_ADMIT] = 0
                                xstate[XB_WAITS] += 1
                                xstate[XB_LIMITER_WAITS] += 1
                                continue
            if xstate[XB_HEADER_DUE]:
                # the batch header (Interconnect.send_bytes), then the pieces
                xstate[XB_HEADER_DUE] = 0
                if header_bytes > 0:
                    s = _link_send(&L, s, &state[CL_BUSY], &state[CL_BYTES], 0, 0, 0, 0, header_bytes)
                    state[CL_ADMIT] = 0
                    xstate[XB_WAITS] += 1
                continue
            # one piece of at most chunk pages, read at s
            s = _chunk_piece(state, s, runs_s, runs_l, chunk, &partner[0], &versions[0], &L)
            xstate[XB_WAITS] += 1
    state[CL_NOW] = s
    state[CL_T_DONE] = t_done
    state[CL_METER_FILL] = fill
    state[CL_STATUS] = status
    fstate[0] = tracking
    return None
