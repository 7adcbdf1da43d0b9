"""Block-sparse memory: per-page state only where pages were written, tracked or partly copied.

A 12 TiB guest has 3.2 billion 4 KiB frames: dense per-frame arrays (an 8-byte PTE and a 4-byte version
on each side) would take 50 GB although a workload writes a small part of it. `SparseMemory` keeps the
frames below ``user_base`` (kernel, page tables, module structures: always busy) dense, and cuts user
memory into blocks of ``block_frames`` frames (the scatter unit of the layout, 2 MiB by default). A
block holds per-frame arrays (a row of a pool) only once it is *materialised*: a CPU or a device wrote
it, a harvest cleared part of it, or a copy reached part of it with a different content. Until then
all its frames share one PTE value and one version (``upte``, ``uver``): a harvest of an untouched
dirty block sets its bitmap range and clears it in one step, and a copy of it moves one version.

`SparsePartner` is the partner's copy stored the same way, with one refinement because a copy of all
memory reaches a block in link-sized pieces that need not line up with blocks: an unmaterialised
partner block is a prefix ``[0, plen)`` holding ``pver`` and the rest holding ``uver`` (garbage
until copied), so the pieces of a pass over an untouched block do not materialise it.

Both offer the accessors `Memory` offers (``apply_writes``, ``harvest``, ``touch_module``,
``read_versions``, ``add_versions``, ``receive``, ``count_garbage``, ``write_versions``,
``lost_writes``) with results identical to the dense arrays (held by tests/test_sparse.py). The dirty
bitmaps stay dense: one bit per frame, 1/96 of what a PTE and two versions cost.
"""
import mmap
import sys

import numpy as np

from .kernels.dtypes import (INDEX_DTYPE, PARTNER_GARBAGE, PTE_ACCESSED, PTE_DIRTY, PTE_DTYPE, PTE_PRESENT,
                             PTE_RW, PTE_SOFT_DIRTY, VERSION_DTYPE)

CHUNK = 1 << 22          # elements per numpy temporary
_D = PTE_DTYPE(PTE_DIRTY)
_SOFT = PTE_DTYPE(PTE_SOFT_DIRTY)
_INIT_PTE = PTE_DTYPE(PTE_PRESENT | PTE_RW | PTE_ACCESSED | PTE_DIRTY)
_ZERO_PTE = PTE_DTYPE(PTE_PRESENT | PTE_RW)


def block_frames(page_size, scatter_block):
    """Frames per sparse block: a whole number of the layout's scatter blocks, about 2 MiB."""
    base = max(1, (2 << 20) // int(page_size))
    blk = max(1, int(scatter_block))
    return blk * max(1, base // blk)


def _ranges_to_blocks(starts, ends):
    """Concatenated aranges [starts[i], ends[i])."""
    lens = ends - starts
    keep = lens > 0
    starts, lens = starts[keep], lens[keep]
    if not len(lens):
        return np.empty(0, INDEX_DTYPE)
    total = int(lens.sum())
    offs = np.repeat(starts - np.concatenate(([0], np.cumsum(lens)[:-1])), lens)
    return (offs + np.arange(total, dtype=INDEX_DTYPE)).astype(INDEX_DTYPE)


# Linux's MAP_NORESERVE (Python < 3.12 lacks the constant): address space whose untouched pages cost nothing
_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000 if sys.platform.startswith("linux") else 0)


def _reserve(n, dtype):
    """An array of ``n`` elements whose pages take memory only once written (None when the system
    refuses such a reservation: the pool then grows by copying)."""
    nbytes = int(n) * np.dtype(dtype).itemsize
    if not _NORESERVE or nbytes == 0:
        return None
    try:
        buf = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _NORESERVE)
    except (OSError, ValueError, OverflowError):
        return None
    if hasattr(mmap, "MADV_HUGEPAGE"):   # as numpy does for its large arrays: fewer TLB misses
        try:
            buf.madvise(mmap.MADV_HUGEPAGE)
        except OSError:
            pass
    return np.frombuffer(buf, dtype=dtype)


class _Pool:
    """Per-frame rows of materialised blocks after a dense low region, one array per dtype of ``specs``.

    Rows are handed out in materialisation order. The arrays are reserved for every block as address
    space whose pages the system provides on first write, so only materialised rows take memory and
    nothing is copied as blocks materialise; where that reservation is refused they grow by copying.
    """

    def __init__(self, low, B, nblocks, specs):
        self.low, self.B, self.n_slots, self.cap = int(low), int(B), 0, 0
        self.slot = np.full(nblocks, -1, dtype=INDEX_DTYPE)
        self.specs = specs
        reserved = [_reserve(self.low + nblocks * self.B, dt) for dt in specs]
        if all(r is not None for r in reserved):
            self.arrays, self.cap = reserved, nblocks
        else:
            self.arrays = [np.empty(self.low, dtype=dt) for dt in specs]
        self.rows = [a[self.low:].reshape(self.cap, self.B) for a in self.arrays]

    def grow(self, need):
        if need <= self.cap:
            return
        cap = max(need, self.cap * 2, 16)
        new = []
        for a, dt in zip(self.arrays, self.specs):
            b = np.empty(self.low + cap * self.B, dtype=dt)
            b[:self.low + self.n_slots * self.B] = a[:self.low + self.n_slots * self.B]
            new.append(b)
        self.arrays, self.cap = new, cap
        self.rows = [a[self.low:].reshape(cap, self.B) for a in self.arrays]

    def add(self, blocks):
        """Give ``blocks`` (unique, unmaterialised) rows; returns their slots."""
        k = len(blocks)
        self.grow(self.n_slots + k)
        slots = np.arange(self.n_slots, self.n_slots + k, dtype=INDEX_DTYPE)
        self.slot[blocks] = slots
        self.n_slots += k
        return slots

    def index(self, frames):
        """Buffer positions of ``frames`` (every user frame's block materialised)."""
        u = frames - self.low
        out = frames.copy()
        user = u >= 0
        uu = u[user]
        out[user] = self.low + self.slot[uu // self.B] * self.B + uu % self.B
        return out


class SparseMemory:
    """Mixin state for `Memory` with ``sparse=True``: see the module docstring."""

    def _init_sparse(self):
        self.sparse = True
        ub, B = self.user_base, block_frames(self.page_size, self.block)
        self.B = B
        self.nb = -(-self.user_frames // B)
        self.pool = _Pool(ub, B, self.nb, (PTE_DTYPE, VERSION_DTYPE))
        self.pool.arrays[0][:ub] = _INIT_PTE
        self.pool.arrays[1][:ub] = 1
        self.upte = np.full(self.nb, _INIT_PTE, dtype=PTE_DTYPE)
        self.uver = np.ones(self.nb, dtype=VERSION_DTYPE)
        self._zero_pages()
        # Blocks that a harvest segment boundary cuts are per-frame from the start (few: one per process).
        cuts = self.segment_bounds[1:-1]
        cuts = cuts[(cuts > ub) & ((cuts - ub) % B != 0)]
        self._materialise(np.unique((cuts - ub) // B))

    @property
    def pool_pte(self):
        return self.pool.arrays[0]

    @property
    def pool_ver(self):
        return self.pool.arrays[1]

    def _zero_pages(self):
        """Dense indices [W, W + Z) hold all-zero pages: whole blocks become uniform zero blocks."""
        W, Z, ub = self.working_set_pages, self.zero_pages, self.user_base
        if Z <= 0:
            return
        blk = self.block
        k0, k1 = W // blk, (W + Z - 1) // blk
        ks = np.arange(k0, k1 + 1, dtype=np.uint64)
        first = (ks * np.uint64(self.mult) % np.uint64(self.blocks)).astype(INDEX_DTYPE) * blk  # user-relative
        a = np.full(len(ks), 0, dtype=INDEX_DTYPE)
        c = np.full(len(ks), blk, dtype=INDEX_DTYPE)
        a[0] = W - k0 * blk
        c[-1] = W + Z - k1 * blk
        starts, ends = first + a, first + c
        B = self.B
        fb0, fb1 = -(-starts // B), ends // B
        full = _ranges_to_blocks(fb0, np.maximum(fb0, fb1))
        self.uver[full] = 0
        self.upte[full] = _ZERO_PTE
        # the parts that do not fill a block
        head_end = np.where(fb0 < fb1, fb0 * B, ends)
        tail_start = np.where(fb0 < fb1, fb1 * B, ends)
        frames = np.concatenate([_ranges_to_blocks(starts, head_end), _ranges_to_blocks(tail_start, ends)])
        if len(frames):
            self._materialise(np.unique(frames // B))
            ix = self.pool.index(frames + ub)
            self.pool_ver[ix] = 0
            self.pool_pte[ix] &= ~PTE_DTYPE(PTE_DIRTY | PTE_ACCESSED)

    def _materialise(self, blocks):
        """Give per-frame rows to the unmaterialised ones of ``blocks`` (unique), filled with their state."""
        blocks = blocks[self.pool.slot[blocks] < 0]
        if not len(blocks):
            return
        slots = self.pool.add(blocks)
        self.pool.rows[0][slots] = self.upte[blocks][:, None]
        self.pool.rows[1][slots] = self.uver[blocks][:, None]

    def materialised_blocks(self):
        return self.pool.n_slots

    def _materialise_frames(self, frames):
        u = frames[frames >= self.user_base] - self.user_base
        if len(u):
            b = u // self.B
            need = b[self.pool.slot[b] < 0]
            if len(need):
                self._materialise(np.unique(need))

    # -- the accessors ------------------------------------------------------------------------------
    def apply_writes(self, kernels, frames, cpu_bounds, tlb_tag, tlb_flags, out_counts):
        ix = np.empty(len(frames), dtype=INDEX_DTYPE)
        if kernels.block_index(frames, self.pool.slot, self.user_base, self.B, ix):
            self._materialise(np.unique((frames[ix < 0] - self.user_base) // self.B))
            kernels.block_index(frames, self.pool.slot, self.user_base, self.B, ix)
        kernels.apply_writes_mapped(frames, ix, cpu_bounds, self.pool_pte, self.pool_ver, tlb_tag, tlb_flags,
                                    self.pt_base, self.ptes_per_pt, out_counts)

    def touch_module(self):
        self.pool_ver[self.module_base:self.user_base] += 1

    def read_versions(self, frames):
        frames = np.asarray(frames, dtype=INDEX_DTYPE)
        ub, B = self.user_base, self.B
        out = np.empty(len(frames), dtype=VERSION_DTYPE)
        low = frames < ub
        out[low] = self.pool_ver[frames[low]]
        u = frames[~low] - ub
        b = u // B
        s = self.pool.slot[b]
        v = self.uver[b]
        m = s >= 0
        v[m] = self.pool_ver[ub + s[m] * B + u[m] % B]
        out[~low] = v
        return out

    def add_versions(self, frames, counts):
        """``versions[frames] += counts`` (numpy fancy-index semantics)."""
        self._materialise_frames(frames)
        ix = self.pool.index(np.asarray(frames, dtype=INDEX_DTYPE))
        self.pool_ver[ix] += counts

    def _add_pt(self, pt_pages, counts):
        """versions of page-table pages ``pt_base + pt_pages`` += counts (mod 2**32)."""
        if not len(pt_pages):
            return
        p0 = int(pt_pages.min())
        per = np.bincount(pt_pages - p0, weights=counts).astype(np.uint64)
        self.pool_ver[self.pt_base + p0:self.pt_base + p0 + len(per)] += (per & np.uint64(0xFFFFFFFF)).astype(
            VERSION_DTYPE)

    def harvest(self, kernels, bounds, bitmap, clear, out_dirty):
        """Kernel ``harvest`` over frames in segments ``bounds``; returns the new bitmap bits."""
        bounds = np.asarray(bounds, dtype=INDEX_DTYPE)
        out_dirty[:] = 0
        ub, B, n = self.user_base, self.B, self.n_frames
        lo, hi = int(bounds[0]), int(bounds[-1])
        new_bits = 0
        if lo < ub:   # the dense low region
            lb = np.minimum(bounds, ub)
            words = -(-ub // 64)
            tmp = np.zeros(len(out_dirty), dtype=INDEX_DTYPE)
            new_bits += kernels.harvest(self.pool_pte[:ub], lb, bitmap[:words], self.pool_ver[:ub], self.pt_base,
                                        self.ptes_per_pt, clear, tmp)
            out_dirty += tmp
        ulo = max(lo, ub)
        if hi <= ulo:
            return int(new_bits)
        b0, b1 = (ulo - ub) // B, (hi - 1 - ub) // B + 1
        # blocks a segment boundary cuts, or that a clearing harvest covers in part, become per-frame
        cut = bounds[(bounds > ulo) & (bounds < hi) & ((bounds - ub) % B != 0)]
        need = list((cut - ub) // B)
        if clear:
            if (ulo - ub) % B:
                need.append(b0)
            if (hi - ub) % B and hi != n:
                need.append(b1 - 1)
        if need:
            self._materialise(np.unique(np.array(need, dtype=INDEX_DTYPE)))
        slots = self.pool.slot[b0:b1]
        blocks = np.arange(b0, b1, dtype=INDEX_DTYPE)
        mat = slots >= 0
        ppt = self.ptes_per_pt
        # materialised blocks: per frame
        mb, ms = blocks[mat], slots[mat]
        rows_pte = self.pool.rows[0]
        step = max(1, CHUNK // B)
        col = np.arange(B, dtype=INDEX_DTYPE)
        for x in range(0, len(ms), step):
            s = ms[x:x + step]
            rows = rows_pte[s]
            frames = (ub + mb[x:x + step] * B)[:, None] + col
            d = (rows & _D) != 0
            d &= (frames >= lo) & (frames < hi)
            if not d.any():
                continue
            fd = frames[d]
            seg = np.searchsorted(bounds, fd, side="right") - 1
            out_dirty += np.bincount(seg, minlength=len(out_dirty))[:len(out_dirty)]
            new_bits += kernels.bitmap_set_frames(bitmap, fd)
            if clear:
                rows[d] = (rows[d] & ~_D) | _SOFT
                rows_pte[s] = rows
                pts = fd // ppt
                self._add_pt(pts, np.ones(len(pts)))
        # uniform blocks: one range each
        ubk = blocks[~mat]
        ubk = ubk[(self.upte[ubk] & _D) != 0]
        if len(ubk):
            a = np.maximum(ub + ubk * B, lo)
            c = np.minimum(np.minimum(ub + (ubk + 1) * B, hi), n)
            seg = np.searchsorted(bounds, a, side="right") - 1
            out_dirty += np.bincount(seg, weights=c - a, minlength=len(out_dirty))[:len(out_dirty)].astype(
                INDEX_DTYPE)
            # consecutive blocks make one bitmap range
            brk = np.flatnonzero(a[1:] != c[:-1]) + 1
            rs = a[np.concatenate(([0], brk))]
            re_ = c[np.concatenate((brk - 1, [len(a) - 1]))]
            for s_, e_ in zip(rs.tolist(), re_.tolist()):
                new_bits += kernels.bitmap_set_range(bitmap, s_, e_)
            if clear:
                self.upte[ubk] = (self.upte[ubk] & ~_D) | _SOFT
                p_lo, p_hi = rs // ppt, (re_ - 1) // ppt + 1
                pages = _ranges_to_blocks(p_lo, p_hi)
                rstart = np.repeat(rs, p_hi - p_lo)
                rend = np.repeat(re_, p_hi - p_lo)
                cnt = np.minimum(rend, (pages + 1) * ppt) - np.maximum(rstart, pages * ppt)
                self._add_pt(pages, cnt.astype(np.float64))
        return int(new_bits)

    # -- the partner --------------------------------------------------------------------------------
    def new_partner(self):
        return SparsePartner(self)

    def lost_writes(self, kernels, partner, skip, stale):
        """Frames whose partner copy differs from memory, except [skip[0], skip[1]) (None: none);
        the first ones go into ``stale``; returns the count."""
        return partner.mismatch(kernels, skip, stale)


class SparsePartner:
    """The partner's versions of `SparseMemory` ``memory``'s frames, garbage until copied."""

    def __init__(self, memory):
        self.m = memory
        ub, B, nb = memory.user_base, memory.B, memory.nb
        self.low = np.full(ub, PARTNER_GARBAGE, dtype=VERSION_DTYPE)
        self.pool = _Pool(0, B, nb, (VERSION_DTYPE,))
        self.uver = np.full(nb, PARTNER_GARBAGE, dtype=VERSION_DTYPE)
        self.pver = np.zeros(nb, dtype=VERSION_DTYPE)
        self.plen = np.zeros(nb, dtype=INDEX_DTYPE)
        self.valid = np.full(nb, B, dtype=INDEX_DTYPE)
        if nb:
            self.valid[-1] = memory.user_frames - (nb - 1) * B

    def materialised_blocks(self):
        return self.pool.n_slots

    def _materialise(self, blocks):
        blocks = blocks[self.pool.slot[blocks] < 0]
        if not len(blocks):
            return
        slots = self.pool.add(blocks)
        rows = self.pool.rows[0]
        rows[slots] = self.uver[blocks][:, None]
        col = np.arange(self.pool.B)
        pre = col[None, :] < self.plen[blocks][:, None]
        r = rows[slots]
        r[pre] = np.broadcast_to(self.pver[blocks][:, None], r.shape)[pre]
        rows[slots] = r
        self.plen[blocks] = 0

    def _block_values(self, blocks, slots):
        """(k, B) versions of unmaterialised blocks."""
        B = self.pool.B
        col = np.arange(B)
        return np.where(col[None, :] < self.plen[blocks][:, None], self.pver[blocks][:, None],
                        self.uver[blocks][:, None]).astype(VERSION_DTYPE)

    def read_versions(self, frames):
        frames = np.asarray(frames, dtype=INDEX_DTYPE)
        ub, B = self.m.user_base, self.pool.B
        out = np.empty(len(frames), dtype=VERSION_DTYPE)
        low = frames < ub
        out[low] = self.low[frames[low]]
        u = frames[~low] - ub
        b, r = u // B, u % B
        s = self.pool.slot[b]
        v = np.where(r < self.plen[b], self.pver[b], self.uver[b]).astype(VERSION_DTYPE)
        m = s >= 0
        v[m] = self.pool.arrays[0][s[m] * B + r[m]]
        out[~low] = v
        return out

    def write_versions(self, frames, values):
        """``versions[frames] = values`` (numpy fancy-index semantics)."""
        frames = np.asarray(frames, dtype=INDEX_DTYPE)
        ub, B = self.m.user_base, self.pool.B
        low = frames < ub
        self.low[frames[low]] = values[low]
        u = frames[~low] - ub
        if len(u):
            self._materialise(np.unique(u // B))
            self.pool.arrays[0][self.pool.slot[u // B] * B + u % B] = values[~low]

    def _split(self, starts, lens):
        """The runs' low parts (starts, lens), the user blocks they cover whole, and the user frames of
        the pieces that cover a block in part, as (blocks, a, c) block-relative pieces."""
        m = self.m
        ub, B, uf = m.user_base, self.pool.B, m.user_frames
        starts = np.asarray(starts, dtype=INDEX_DTYPE)
        ends = starts + np.asarray(lens, dtype=INDEX_DTYPE)
        ls, le = starts, np.minimum(ends, ub)
        keep = le > ls
        low = (ls[keep], (le - ls)[keep])
        r0, r1 = np.maximum(starts, ub) - ub, ends - ub
        keep = r1 > r0
        r0, r1 = r0[keep], r1[keep]
        fb0 = -(-r0 // B)
        fb1 = np.where(r1 == uf, self.valid.size, r1 // B)
        has_full = fb0 < fb1
        full = _ranges_to_blocks(fb0[has_full], fb1[has_full])
        # partial pieces: head [r0, fb0*B), tail [fb1*B, r1) of runs with whole blocks; else [r0, r1)
        hs = np.where(has_full, r0, r0)
        he = np.where(has_full, np.minimum(fb0 * B, r1), r1)
        ts = np.where(has_full, np.minimum(fb1 * B, r1), r1)
        pieces_s = np.concatenate([hs, ts])
        pieces_e = np.concatenate([he, np.where(has_full, r1, r1)])
        k = pieces_e > pieces_s
        ps, pe = pieces_s[k], pieces_e[k]
        # a piece may still cross one block boundary (a run shorter than a block over two blocks)
        bs, be = ps // B, (pe - 1) // B
        cross = be > bs
        mid = (bs[cross] + 1) * B
        ps = np.concatenate([ps[~cross], ps[cross], mid])
        pe = np.concatenate([pe[~cross], mid, pe[cross]])
        pb = ps // B
        return low, full, (pb, ps - pb * B, pe - pb * B)

    def receive(self, kernels, memory, starts, lens):
        """Kernel ``deliver_runs`` from ``memory``: copy the runs' versions; returns the zero pages copied."""
        if len(starts) == 1:
            return self._receive_run(kernels, memory, int(starts[0]), int(starts[0]) + int(lens[0]))
        zeros = self._receive_written(kernels, memory, starts, lens)
        if zeros is not None:
            return zeros
        low, full, (pb, pa, pc) = self._split(starts, lens)
        m = memory
        ub, B = m.user_base, self.pool.B
        zeros = 0
        if len(low[0]):
            zeros += kernels.deliver_runs(m.pool_ver[:ub], self.low, low[0], low[1])
        if len(full):
            zeros += self._receive_blocks(m, full)
        # pieces of blocks
        if len(pb):
            smat = m.pool.slot[pb] >= 0
            dmat = self.pool.slot[pb] >= 0
            uniq, cnt = np.unique(pb, return_counts=True)
            once = np.isin(pb, uniq[cnt == 1])
            sv = m.uver[pb]
            fast = once & ~smat & ~dmat
            # an unmaterialised partner block takes a uniform source block's prefix, or its suffix
            # once the prefix has the same content, or nothing when it already holds that content
            plen, pver, uver, valid = self.plen[pb], self.pver[pb], self.uver[pb], self.valid[pb]
            same_all = ((plen == 0) | (pver == sv)) & (uver == sv)
            same_pre = (pc <= plen) & (pver == sv)
            grow = (pa <= plen) & ((plen == 0) | (pver == sv))
            ok = fast & (same_all | same_pre | grow)
            g = ok & ~same_all & ~same_pre
            newlen = np.maximum(plen, pc)
            bg = pb[g]
            self.pver[bg] = sv[g]
            self.plen[bg] = newlen[g]
            whole = g & (newlen >= valid)
            self.uver[pb[whole]] = sv[whole]
            self.plen[pb[whole]] = 0
            zeros += int((pc - pa)[ok & (sv == 0)].sum())
            slow = ~ok
            if slow.any():
                frames = _ranges_to_blocks(ub + pb[slow] * B + pa[slow], ub + pb[slow] * B + pc[slow])
                vals = m.read_versions(frames)
                zeros += int(np.count_nonzero(vals == 0))
                self.write_versions(frames, vals)
        return int(zeros)

    def _receive_written(self, kernels, m, starts, lens):
        """``receive`` frame by frame when every frame of the runs has per-frame state on the source
        (dirty pages of written blocks: the runs of every pass after the first); None otherwise."""
        starts = np.asarray(starts, dtype=INDEX_DTYPE)
        lens = np.asarray(lens, dtype=INDEX_DTYPE)
        if int(lens.sum()) > CHUNK:
            return None
        ub, B = m.user_base, self.pool.B
        frames = _ranges_to_blocks(starts, starts + lens)
        ix = np.empty(len(frames), dtype=INDEX_DTYPE)
        if kernels.block_index(frames, m.pool.slot, ub, B, ix):
            return None
        vals = m.pool_ver[ix]
        low = frames < ub
        self.low[frames[low]] = vals[low]
        uf = frames[~low]
        pix = np.empty(len(uf), dtype=INDEX_DTYPE)
        if kernels.block_index(uf, self.pool.slot, ub, B, pix):
            self._materialise(np.unique((uf[pix < 0] - ub) // B))
            kernels.block_index(uf, self.pool.slot, ub, B, pix)
        self.pool.arrays[0][pix - ub] = vals[~low]
        return int(np.count_nonzero(vals == 0))

    def _receive_blocks(self, m, full):
        """Copy whole blocks ``full``; returns the zero pages copied."""
        B = self.pool.B
        zeros = 0
        src_rows = m.pool.rows[1]
        ss = m.pool.slot[full]
        smat = ss >= 0
        ub_ = full[~smat]
        sv = m.uver[ub_]
        zeros += int(self.valid[ub_][sv == 0].sum())
        ds = self.pool.slot[ub_]
        dm = ds >= 0
        self.uver[ub_[~dm]] = sv[~dm]
        self.plen[ub_[~dm]] = 0
        if dm.any():
            self.pool.rows[0][ds[dm]] = sv[dm][:, None]
        mb = full[smat]
        if len(mb):
            self._materialise(np.unique(mb))
            dst_rows = self.pool.rows[0]
            step = max(1, CHUNK // B)
            for x in range(0, len(mb), step):
                b = mb[x:x + step]
                rows = src_rows[ss[smat][x:x + step]]
                dst_rows[self.pool.slot[b]] = rows
                v = self.valid[b]
                zeros += int(((rows == 0) & (np.arange(B)[None, :] < v[:, None])).sum())
        return zeros

    def _receive_run(self, kernels, m, s, e):
        """``receive`` of the one run [s, e): a piece of a pass over memory."""
        ub, B, nb = m.user_base, self.pool.B, len(self.valid)
        zeros = 0
        if s < ub:
            le = min(e, ub)
            zeros += kernels.deliver_runs(m.pool_ver[:ub], self.low, np.array([s], dtype=INDEX_DTYPE),
                                          np.array([le - s], dtype=INDEX_DTYPE))
            s = le
        if e <= s:
            return int(zeros)
        r0, r1 = s - ub, e - ub
        fb0 = -(-r0 // B)
        fb1 = nb if r1 == m.user_frames else r1 // B
        if fb0 < fb1:
            if r0 < fb0 * B:
                zeros += self._receive_piece(m, fb0 - 1, r0 - (fb0 - 1) * B, B)
            ss, ds = m.pool.slot[fb0:fb1], self.pool.slot[fb0:fb1]
            if ss.max() < 0 and ds.max() < 0:   # untouched on both sides: one version a block
                sv = m.uver[fb0:fb1]
                self.uver[fb0:fb1] = sv
                self.plen[fb0:fb1] = 0
                zeros += int(self.valid[fb0:fb1][sv == 0].sum())
            else:
                zeros += self._receive_blocks(m, np.arange(fb0, fb1, dtype=INDEX_DTYPE))
            if fb1 < nb and fb1 * B < r1:
                zeros += self._receive_piece(m, fb1, 0, r1 - fb1 * B)
        else:
            b = r0 // B
            if (r1 - 1) // B == b:
                zeros += self._receive_piece(m, b, r0 - b * B, r1 - b * B)
            else:
                zeros += self._receive_piece(m, b, r0 - b * B, B)
                zeros += self._receive_piece(m, b + 1, 0, r1 - (b + 1) * B)
        return int(zeros)

    def _receive_piece(self, m, b, a, c):
        """Copy frames [a, c) of block ``b``; returns the zero pages copied."""
        ss, ds = int(m.pool.slot[b]), int(self.pool.slot[b])
        if ss < 0:
            sv = m.uver[b]
            z = (c - a) if sv == 0 else 0
            if ds < 0:
                plen, pver, uver = int(self.plen[b]), self.pver[b], self.uver[b]
                if (plen == 0 or pver == sv) and uver == sv:
                    return z
                if c <= plen and pver == sv:
                    return z
                if a <= plen and (plen == 0 or pver == sv):
                    newlen = max(plen, c)
                    if newlen >= self.valid[b]:
                        self.uver[b], self.plen[b] = sv, 0
                    else:
                        self.pver[b], self.plen[b] = sv, newlen
                    return z
            self._row(b)[a:c] = sv
            return z
        vals = m.pool.rows[1][ss, a:c]
        self._row(b)[a:c] = vals
        return int(np.count_nonzero(vals == 0))

    def _row(self, b):
        """The per-frame row of block ``b``, materialised if it was not."""
        ds = int(self.pool.slot[b])
        if ds >= 0:
            return self.pool.rows[0][ds]
        ds = int(self.pool.add(np.array([b], dtype=INDEX_DTYPE))[0])
        row = self.pool.rows[0][ds]
        row[:] = self.uver[b]
        plen = int(self.plen[b])
        if plen:
            row[:plen] = self.pver[b]
            self.plen[b] = 0
        return row

    def count_garbage(self, starts, lens):
        """How many frames of the runs the partner has never received."""
        low, full, (pb, pa, pc) = self._split(starts, lens)
        ub, B = self.m.user_base, self.pool.B
        G = PARTNER_GARBAGE
        n = 0
        for s, ln in zip(low[0].tolist(), low[1].tolist()):
            n += int(np.count_nonzero(self.low[s:s + ln] == G))
        if len(full):
            ds = self.pool.slot[full]
            dm = ds >= 0
            rows = self.pool.rows[0][ds[dm]]
            v = self.valid[full[dm]]
            n += int(((rows == G) & (np.arange(B)[None, :] < v[:, None])).sum())
            b = full[~dm]
            n += int((self.plen[b] * (self.pver[b] == G) + (self.valid[b] - self.plen[b]) * (self.uver[b] == G)).sum())
        if len(pb):
            frames = _ranges_to_blocks(ub + pb * B + pa, ub + pb * B + pc)
            n += int(np.count_nonzero(self.read_versions(frames) == G))
        return n

    def mismatch(self, kernels, skip, stale):
        """Frames where memory and this copy differ, outside [skip[0], skip[1]) of the low region."""
        m = self.m
        ub, B = m.user_base, self.pool.B
        cap = len(stale)
        found = []
        count = 0
        parts = [(0, ub)] if skip is None else [(0, skip[0]), (skip[1], ub)]
        for a, c in parts:
            if c <= a:
                continue
            out = np.empty(cap, dtype=INDEX_DTYPE)
            k = kernels.find_mismatch(m.pool_ver[a:c], self.low[a:c], out)
            found.extend((out[:min(k, cap)] + a).tolist())
            count += k
        # per block: count, then the first frames from the first blocks that differ
        nb = m.nb
        blocks = np.arange(nb, dtype=INDEX_DTYPE)
        smat, dmat = m.pool.slot >= 0, self.pool.slot >= 0
        per = np.zeros(nb, dtype=INDEX_DTYPE)
        uu = ~smat & ~dmat
        sv = m.uver[uu]
        per[uu] = (self.plen[uu] * (self.pver[uu] != sv) +
                   (self.valid[uu] - self.plen[uu]) * (self.uver[uu] != sv))
        other = blocks[~uu]
        step = max(1, CHUNK // B)
        for x in range(0, len(other), step):
            b = other[x:x + step]
            per[b] = np.count_nonzero(self._diff(b), axis=1)
        count += int(per.sum())
        for b in np.flatnonzero(per).tolist():
            if len(found) >= cap:
                break
            d = np.flatnonzero(self._diff(np.array([b], dtype=INDEX_DTYPE))[0])
            found.extend((ub + b * B + d[:cap - len(found)]).tolist())
        stale[:min(len(found), cap)] = found[:cap]
        return count

    def _diff(self, b):
        """(k, B) bool: frames of blocks ``b`` that differ (frames past the end of memory never do)."""
        m = self.m
        B = self.pool.B
        ss, ds = m.pool.slot[b], self.pool.slot[b]
        src = np.where(ss[:, None] >= 0, m.pool.rows[1][np.maximum(ss, 0)], m.uver[b][:, None])
        dst = np.where(ds[:, None] >= 0, self.pool.rows[0][np.maximum(ds, 0)] if self.pool.cap else 0,
                       self._block_values(b, ds))
        return (src != dst) & (np.arange(B)[None, :] < self.valid[b][:, None])
