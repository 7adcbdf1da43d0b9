"""Physical memory of the source machine: frames, their PTEs, the dirty bitmap and page contents.

Layout (frame numbers, low to high)::

    [0, kernel)            kernel image and data, mapped by the kernel page tables
    [pt_base, +n_pt)       page-table pages: one per ptes_per_pt frames (512 for 4 KiB pages)
    [module_base, +n_mod)  the pagesync module's own structures: the dirty bitmap and its stack
    [user_base, n_frames)  user memory, split evenly among `processes` page-table trees

Every frame is mapped by exactly one PTE (``pte[f]`` is the PTE mapping frame f), so a harvest
walk over a page-table tree is a walk over a contiguous range of this array. Page-table pages and
module structures change without any dirty bit recording it (the page walker writes A/D bits
through physical addresses, and the module writes its bitmap while harvesting); that is why the
Stratus blackout list always contains them.

Contents are versions (``VERSION_DTYPE``): 0 means an all-zero page, every write adds one. The
working set is the user pages with dense indices [0, W); the zero pages are dense [W, W + Z).
In a contiguous layout dense index i lives in frame ``user_base + i``. In a scattered one, user
memory is cut into blocks of ``block`` frames (2 MiB by default: the buddy allocator's and
transparent huge pages' unit) and the blocks are permuted by a large multiplier coprime with their
number: a working set is spread over all of user memory, as anonymous memory is after a long
uptime, while each block stays physically contiguous.
"""
import math
from dataclasses import dataclass

import numpy as np

from .kernels.dtypes import (INDEX_DTYPE, PARTNER_GARBAGE, PTE_ACCESSED, PTE_DIRTY, PTE_DTYPE, PTE_PRESENT, PTE_RW,
                             VERSION_DTYPE, WORD_DTYPE)
from .units import format_bytes

GOLDEN = (math.sqrt(5) - 1) / 2
CHUNK = 1 << 22
PTE_BYTES = 8                   # an x86-64 page-table entry
MODULE_STACK_BYTES = 16 * 1024  # the pagesync module's stack


@dataclass(frozen=True)
class MemoryRegions:
    """How physical memory divides up, in bytes, every region a whole number of pages."""

    frames: int
    kernel_bytes: int
    page_table_bytes: int
    bitmap_bytes: int
    module_stack_bytes: int
    user_bytes: int

    def describe(self) -> str:
        module = self.bitmap_bytes + self.module_stack_bytes
        return (f"{format_bytes(self.kernel_bytes)} kernel, {format_bytes(self.page_table_bytes)} "
                f"page tables and {format_bytes(module)} dirty bitmap and module stack")


def _round_up(n: int, unit: int) -> int:
    return -(-n // unit) * unit


def memory_regions(size: int, page_size: int, kernel_size: int) -> MemoryRegions:
    """Split ``size`` bytes of memory with ``page_size`` pages into the kernel (``kernel_size``), one
    8-byte PTE per frame, the dirty bitmap (one bit per frame, in 64-bit words) and the module's
    stack, each rounded up to whole pages, and what is left for user pages (<= 0 when nothing is).
    `Memory` lays out its frames from these sizes and the config's checks refuse what does not fit,
    so the two cannot disagree."""
    frames = size // page_size
    page_tables = _round_up(frames * PTE_BYTES, page_size)
    bitmap = _round_up(-(-frames // 64) * 8, page_size)
    stack = max(1, MODULE_STACK_BYTES // page_size) * page_size
    user = size - kernel_size - page_tables - bitmap - stack
    return MemoryRegions(frames, kernel_size, page_tables, bitmap, stack, user)


def scatter_multiplier(modulus):
    """An odd multiplier near modulus * 0.618 that is coprime with ``modulus`` (and < 2**32)."""
    if modulus <= 2:
        return 1
    m = max(1, int(modulus * GOLDEN))
    while math.gcd(m, modulus) != 1:
        m += 1
    return m % modulus or 1


class Memory:
    """The source machine's physical memory.

    Parameters: ``size`` and ``page_size`` in bytes, ``kernel_size`` bytes of kernel region,
    ``working_set_pages`` and ``zero_pages`` counts of user pages, ``layout`` ('contiguous' or
    'scattered'), ``processes`` user page-table trees. Raises ValueError when they do not fit.
    """

    def __init__(self, size, page_size, kernel_size, working_set_pages, zero_pages=0, layout="scattered",
                 processes=1, block_pages=1, holes=()):
        if size % page_size:
            raise ValueError("memory size must be a multiple of the page size")
        self.page_size = int(page_size)
        self.n_frames = n = int(size // page_size)
        self.ptes_per_pt = max(1, page_size // 8)
        regions = memory_regions(int(size), self.page_size, int(kernel_size))  # the layout the config checks
        self.kernel_frames = regions.kernel_bytes // page_size
        self.pt_base = self.kernel_frames
        self.n_pt = regions.page_table_bytes // page_size
        self.module_base = self.pt_base + self.n_pt
        self.n_module = (regions.bitmap_bytes + regions.module_stack_bytes) // page_size
        self.user_base = self.module_base + self.n_module
        self.user_frames = n - self.user_base
        if self.user_frames <= 0:
            raise ValueError("no user memory is left after the kernel, page tables and module structures")
        self.working_set_pages = int(working_set_pages)
        self.zero_pages = int(zero_pages)
        self.layout = layout
        # Dense index i -> frame user_base + ((i // block) * mult % blocks) * block + i % block.
        block, placeable = placeable_user_pages(self.user_frames, layout, block_pages)
        self.block = block
        self.blocks = self.user_frames // block
        self.mult = 1 if layout == "contiguous" else scatter_multiplier(self.blocks)
        # Holes (contiguous layout): ``holes`` [(at, pages)], at in dense indices, increasing: dense index i
        # moves up by the pages of every hole at or before it; the frames skipped keep their non-zero
        # contents and are never written.
        holes = [(int(a), int(p)) for a, p in holes]
        if holes and layout != "contiguous":
            raise ValueError("holes need the contiguous layout")
        self.hole_at = np.array([a for a, _ in holes], dtype=INDEX_DTYPE)
        self.hole_shift = np.concatenate([[0], np.cumsum([p for _, p in holes])]).astype(INDEX_DTYPE)
        self.identity = self.mult == 1 and not holes   # dense index i is frame user_base + i
        if working_set_pages + zero_pages + int(self.hole_shift[-1]) > placeable:
            raise ValueError("working set and zero pages do not fit in user memory")
        self.processes = int(min(processes, self.user_frames))
        # Harvest segments: the kernel tables first, then one tree per user process.
        user_bounds = self.user_base + (np.arange(self.processes + 1, dtype=INDEX_DTYPE) * self.user_frames
                                        ) // self.processes
        self.segment_bounds = np.concatenate([np.array([0], dtype=INDEX_DTYPE), user_bounds])
        self.segment_ptes = np.diff(self.segment_bounds)
        assert self.segment_bounds[0] == 0 and self.segment_bounds[-1] == n and (self.segment_ptes >= 0).all()
        self.bitmap = np.zeros(-(-n // 64), dtype=WORD_DTYPE)
        self._init_state()

    sparse = False

    def _init_state(self):
        """Per-frame PTEs and versions of every frame. Every page has been written since boot, so every PTE
        starts dirty (the first rendezvous harvest moves that to soft dirty), except the zero pages: dense
        indices [working set, working set + zero pages) get version 0 and a clean PTE. The dense map keeps
        blocks whole, so the user blocks are written once as rows of a (blocks, block) view, each row zero
        or not; the partial blocks at the ends of the zero pages frame by frame (and every page where
        holes shift the map)."""
        n = self.n_frames
        dirty = PTE_DTYPE(PTE_PRESENT | PTE_RW | PTE_ACCESSED | PTE_DIRTY)
        clean = PTE_DTYPE(dirty & ~PTE_DTYPE(PTE_DIRTY | PTE_ACCESSED))
        lo, hi = self.working_set_pages, self.working_set_pages + self.zero_pages
        blk, ub = self.block, self.user_base
        first, last = -(-lo // blk), hi // blk        # the whole blocks inside [lo, hi)
        if len(self.hole_at) or hi <= lo:             # holes shift the map: every page through it
            first, last = 1, 0
        self.pte = np.empty(n, dtype=PTE_DTYPE)
        self.versions = np.empty(n, dtype=VERSION_DTYPE)
        whole = slice(ub, ub + self.blocks * blk)
        for a, b in ((0, ub), (whole.stop, n)):       # the kernel's frames and the tail beyond the blocks
            self.pte[a:b] = dirty
            self.versions[a:b] = 1
        zero_row = np.zeros(self.blocks, dtype=bool)
        for b in range(first, last, CHUNK):
            rows = np.arange(b, min(last, b + CHUNK), dtype=np.uint64)
            zero_row[(rows * np.uint64(self.mult) % np.uint64(self.blocks)).astype(INDEX_DTYPE)] = True
        p = self.pte[whole].reshape(self.blocks, blk)
        v = self.versions[whole].reshape(self.blocks, blk)
        for r in range(0, self.blocks, max(1, CHUNK // blk)):   # row chunks: the row values stay small
            z = zero_row[r:r + max(1, CHUNK // blk)]
            p[r:r + len(z)] = np.where(z, clean, dirty)[:, None]
            v[r:r + len(z)] = (~z).astype(VERSION_DTYPE)[:, None]
        if hi <= lo:
            return
        ends = [(lo, hi)] if first > last else [(lo, first * blk), (last * blk, hi)]
        for a, b in ends:
            for x in range(a, b, CHUNK):
                frames = self.dense_to_frames(np.arange(x, min(b, x + CHUNK), dtype=INDEX_DTYPE))
                self.versions[frames] = 0
                self.pte[frames] &= clean

    @property
    def size(self):
        return self.n_frames * self.page_size

    @property
    def pinned_range(self):
        """Frames always in the blackout list: page-table pages and module structures."""
        return self.pt_base, self.user_base

    def dense_to_frames(self, dense):
        """Frame numbers of user pages with dense indices ``dense`` (an int64 array)."""
        if self.identity:
            return self.user_base + dense
        if len(self.hole_at):
            return self.user_base + dense + self.hole_shift[np.searchsorted(self.hole_at, dense, side="right")]
        d = dense.astype(np.uint64)
        blk = np.uint64(self.block)
        return self.user_base + ((d // blk * np.uint64(self.mult) % np.uint64(self.blocks)) * blk + d % blk
                                 ).astype(INDEX_DTYPE)

    def touch_module(self):
        """The module rewrote its bitmap and stack: their contents changed."""
        self.versions[self.module_base:self.user_base] += 1

    # -- accessors: what the CPUs, the harvest, the link and the oracle do to per-frame state. Block-sparse
    # memory (sparse.py) offers the same ones.
    def apply_writes(self, kernels, frames, cpu_bounds, tlb_tag, tlb_flags, out_counts):
        """Kernel ``apply_writes`` of the CPUs' writes ``frames``."""
        kernels.apply_writes(frames, cpu_bounds, self.pte, self.versions, tlb_tag, tlb_flags, self.pt_base,
                             self.ptes_per_pt, out_counts)

    def harvest(self, kernels, bounds, bitmap, clear, out_dirty):
        """Kernel ``harvest`` over frame segments ``bounds``; returns the new bitmap bits."""
        return kernels.harvest(self.pte, bounds, bitmap, self.versions, self.pt_base, self.ptes_per_pt, clear,
                               out_dirty)

    def read_versions(self, frames):
        return self.versions[frames]

    def add_versions(self, frames, counts):
        """``versions[frames] += counts`` (numpy fancy-index semantics)."""
        self.versions[frames] += counts

    def new_partner(self):
        """The partner's copy of this memory, garbage until copied."""
        return Partner(self.n_frames)

    def lost_writes(self, kernels, partner, skip, stale):
        """Frames whose partner copy differs from memory, except frames [skip[0], skip[1]) (None: none);
        the first ones go into ``stale``; returns the count."""
        a, b = self.versions, partner.versions
        if skip is None:
            return kernels.find_mismatch(a, b, stale)
        lo, hi = skip
        first = kernels.find_mismatch(a[:lo], b[:lo], stale)
        rest = np.empty(len(stale), dtype=INDEX_DTYPE)
        second = kernels.find_mismatch(a[hi:], b[hi:], rest)
        k = min(first, len(stale))
        stale[k:] = rest[:len(stale) - k] + hi
        return first + second


def run_frames(starts, lens):
    """The frame numbers of runs ``[starts[i], starts[i] + lens[i])``, in order (int64)."""
    return np.repeat(starts - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens) + np.arange(int(lens.sum()))


class Partner:
    """The partner node, or the hot-spare memory module: one version per frame, garbage until copied."""

    def __init__(self, n_frames):
        self.versions = np.full(n_frames, PARTNER_GARBAGE, dtype=VERSION_DTYPE)

    def receive(self, kernels, memory, starts, lens):
        """Kernel ``deliver_runs`` from ``memory``'s versions; returns the zero pages copied."""
        return kernels.deliver_runs(memory.versions, self.versions, starts, lens)

    def count_garbage(self, starts, lens):
        """How many frames of runs ``[starts[i], starts[i] + lens[i])`` were never received."""
        v = self.versions
        if len(starts) == 1:
            s = int(starts[0])
            return int(np.count_nonzero(v[s:s + int(lens[0])] == PARTNER_GARBAGE))
        return int(np.count_nonzero(v[run_frames(starts, lens)] == PARTNER_GARBAGE))

    def read_versions(self, frames):
        return self.versions[frames]

    def write_versions(self, frames, values):
        self.versions[frames] = values


SPARSE_MIN_BYTES = 1 << 40


def use_sparse(memory, working_set_bytes):
    """Whether config section ``memory`` asks for block-sparse memory: ``sparse`` true, or auto and
    memory of at least 1 TiB of which the working set is at most a quarter. Below that the dense
    arrays fit this class of machine and apply writes faster (docs/performance.md)."""
    if getattr(memory, "holes", None):
        return False
    if memory.sparse != "auto":
        return memory.sparse == "true"
    return memory.size >= SPARSE_MIN_BYTES and working_set_bytes * 4 <= memory.size


def placeable_user_pages(user_frames, layout, block_pages):
    """User frames the layout can place pages in: ``scattered`` places whole blocks of ``block_pages``
    (a block too big for two of them falls back to single pages), so a last partial block is left out."""
    block = int(block_pages) if layout == "scattered" else 1
    if block > 1 and user_frames // block < 2:
        block = 1
    return block, user_frames // block * block


def build_memory(size, page_size, kernel_size, working_set_pages, zero_pages=0, layout="scattered", processes=1,
                 block_pages=1, sparse=False, holes=()):
    """`Memory`, or with ``sparse`` its block-sparse twin (sparse.py): same arguments, same results.
    ``holes`` (dense memory only): [(at, pages)] as ``Memory`` takes them."""
    if not sparse:
        return Memory(size, page_size, kernel_size, working_set_pages, zero_pages, layout, processes, block_pages,
                      holes)
    if holes:
        raise ValueError("holes need dense memory")
    from .sparse import SparseMemory

    class BlockSparseMemory(SparseMemory, Memory):
        _init_state = SparseMemory._init_sparse

    return BlockSparseMemory(size, page_size, kernel_size, working_set_pages, zero_pages, layout, processes,
                             block_pages)
