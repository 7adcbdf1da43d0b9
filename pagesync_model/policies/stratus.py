"""The Stratus pagesync algorithm, as published on linux-mm (2009): ``stratus``.

pagesync_synchronize_memory(copy, sync, threshold, passes):

1. Rendezvous all CPUs and harvest: every hardware dirty bit becomes a soft dirty bit; zero the
   bitmap and its count.
2. Copy all of memory while the CPUs run.
3. For pass = passes .. 0: a brownout harvest on all CPUs (user page tables in parallel, CPU i
   taking process i mod ncpu, then CPU 0 the kernel tables; a per-PTE TLB flush and a final full
   flush) moves hardware dirty to soft dirty and sets bitmap bits, counting 0->1 transitions.
   If count < threshold or pass == 0: blackout. Otherwise release the CPUs and copy every maximal
   run of dirty frames (test-and-clear), one copy call per run.
4. Blackout: the copy list holds at most MAX_COPYRANGE (100) ranges; a dirty frame within NEARBY
   (6) frames of the last range extends it; when the list is full the two closest ranges merge
   (over-copying the gap). Page-table pages and the module's own structures are always in the list.
   The platform copies the list and cuts over.

``stop: after-copy`` (a user-space controller's option, not the published rule) copies the pass whose
count decided the blackout while the CPUs run, then stops them, harvests once more and copies in the
blackout only what was written during that copy; the blackout's record holds that last count.
``stop_per_page`` adds to the blackout a cost per page mirrored so far (a controller's bookkeeping over
the set of pages its partner holds), before its copy.

``setup`` adds a fixed platform cost to the blackout before its copy; ``brownout: false`` skips
steps 2-3 and copies all memory with the CPUs stopped (a platform that cannot copy while running).

Variant ``copy-before-clear`` reads pages before their dirty bits are cleared: each repeat pass's
harvest only reads the hardware dirty bits; each chunk of dirty runs is read and sent, and only then
are its pages' dirty bits cleared. A write landing between a page's read and its clear is lost. Variant
``no-tlb-flush`` is the machine's sync without the TLB invalidation after clearing.
"""
import numpy as np

from ..bounds import MAX_COPYRANGE, MAX_FRAMES, MAX_ROUNDS, MAX_STEP
from ..kernels.dtypes import INDEX_DTYPE
from ..schema import BOOL, CHOICE, DURATION, INT, Field, Section
from .base import PagePolicy, register

SECTION = Section("Stratus pagesync policy (pagesync_synchronize_memory).", dict(
    passes=Field(INT, 4, "Copy passes after the initial full copy before the forced blackout.", ge=0, le=MAX_ROUNDS),
    threshold=Field(INT, 1000, "Dirty pages below which the next pass is the blackout.", ge=0, le=MAX_FRAMES),
    max_copyrange=Field(INT, 100, "Most ranges in the blackout copy list (MAX_COPYRANGE).", ge=2, le=MAX_COPYRANGE),
    nearby=Field(INT, 6, "Frames within which a dirty frame extends a blackout range (NEARBY).", ge=0, le=MAX_FRAMES),
    tracking_outside=Field(BOOL, False, "The page tables and the tracker's bitmap and stack are not in the memory "
                                        "mirrored (a user-space mirror of one process: the kernel and the controller "
                                        "hold them): neither the full copy nor the blackout copies them, and they are not "
                                        "compared."),
    cutover=Field(DURATION, "1ms", "Platform cut-over after the final copy.", ge=0, le=MAX_STEP),
    setup=Field(DURATION, "0s", "Fixed platform cost of each resync, spent in the blackout before its copy "
                                "(SMI entry, rendezvous of the modules, chipset re-synchronisation).", ge=0,
                le=MAX_STEP),
    brownout=Field(BOOL, True, "Copy memory while the CPUs run (brownout passes), then the rest in the "
                               "blackout; false: stop the CPUs and copy all memory in the blackout (NEC's "
                               "resync with Hyper-V, \"cannot use the brownout copy method\")."),
    stop=Field(CHOICE, "at-once", "When a pass's scan decides the blackout: at-once (stop the CPUs and copy that "
                                  "scan's pages with them stopped, the published rule) or after-copy (copy that "
                                  "pass's pages while the CPUs run, then stop them, scan once more and copy what was "
                                  "written meanwhile).", choices=["at-once", "after-copy"]),
    stop_per_page=Field(DURATION, "0s", "Blackout cost per page mirrored so far, spent with the CPUs stopped before "
                                        "its copy (a controller's bookkeeping over the set of pages the partner "
                                        "holds).", ge=0, le=MAX_STEP),
))

# The published defaults, which the live mirror of a real process shares.
PASSES = SECTION.members["passes"].default
THRESHOLD = SECTION.members["threshold"].default


def stop_rule(count, pass_left, threshold):
    """(blackout now, converged): pagesync's decision once a pass's harvest found ``count`` dirty
    pages with ``pass_left`` passes left (0: the last); the simulated scanner and the live mirror both
    decide by it."""
    converged = count < threshold
    return converged or pass_left == 0, converged


@register
class Stratus(PagePolicy):
    """The published pagesync module. The platform DMA copies whole pages, zero or not, with no
    stream headers (the default link options)."""
    name = "stratus"
    variants = ("correct", "copy-before-clear", "no-tlb-flush")
    sections = {"stratus": SECTION}
    # configs and every recorded result have listed this section before ``sim`` since it was a core one
    section_before = "sim"

    def tracking_outside(self, cfg):
        return cfg.stratus.tracking_outside

    def scanner(self, machine):
        """Process role: the pagesync scanner."""
        return scanner(machine)

    def time_scales(self, cfg):
        """The time the link takes to copy the threshold's pages: the shortest pass whose harvest
        still decides between another pass and the blackout."""
        t = cfg.stratus.threshold * cfg.memory.page_size / (cfg.link.bandwidth * cfg.link.efficiency)
        return [("stratus.threshold's copy time", t)] if t > 0 else []


def scanner(e):
    """Process role: the pagesync scanner on machine ``e``."""
    p = e.cfg.stratus
    m = e.memory
    read_first = e.variant == "copy-before-clear"

    if not p.brownout:
        yield from stop_and_copy_all(e)
        return
    rec = e.open_pass("full")
    if e.cfg.tracking.stop_cpus and (yield from stuck(e)):
        return
    h = yield from e.brownout(zero_bitmap=True)
    e.end_brownout(h)
    if p.tracking_outside:  # the tracker's tables and structures are not part of what is mirrored
        lo, hi = m.pinned_range
        yield from e.copy(np.array([0, hi]), np.array([lo, m.n_frames - hi]))
    else:
        yield from e.copy([0], [m.n_frames])
    e.close_pass(rec, m.n_frames, h.cycles if h.stopped else 0)

    for pass_left in range(p.passes, -1, -1):
        rec = e.open_pass("pass")
        t_stop = e.now
        running = not e.cfg.tracking.stop_cpus
        if not running and (yield from stuck(e)):
            return
        # a scan that runs with the CPUs writing decides on its count at once; its cost (and the
        # rest of the pass's fixed work) is spent only when the pass goes on to copy
        h = yield from e.brownout(clear=not read_first, wait=not running)
        count = h.new_bits
        stop, converged = stop_rule(count, pass_left, p.threshold)
        if stop and p.stop == "after-copy":
            # copy the deciding pass with the CPUs running, then stop them and scan once more: the
            # blackout copies only what was written during that copy
            yield from copy_pass(e, rec, h, count, running, read_first)
            rec = e.open_pass("blackout")
            t_stop = e.now
            if (yield from stuck(e)):
                return
            if running:
                h = yield from e.stop_and_scan(clear=not read_first)
            else:
                h = yield from e.brownout(clear=not read_first)
            yield from blackout(e, rec, h.new_bits, converged, t_stop)
            return
        if stop:
            if not h.stopped:
                # The scan ran with the CPUs writing: stop them now (the downtime starts) and scan what
                # was written since. The record keeps the deciding scan's count; it copies both.
                t_stop = e.now
                if (yield from stuck(e)):
                    return
                yield from e.stop_and_scan(clear=not read_first)
            rec.kind = "blackout"
            yield from blackout(e, rec, count, converged, t_stop)
            return
        yield from copy_pass(e, rec, h, count, running, read_first)


def stuck(e):
    """Process step: whether a stop of the CPUs beginning now cannot complete (a ``pause`` fault,
    sim/faults.py: a vCPU that does not exit). The resync is abandoned and starts over once the
    fault has ended, as after a drop (sim/multi.py); no bound is published for how long the
    rendezvous waits, and none is needed: the new resync cannot start before the fault ends anyway."""
    if e.pause_hold is None or e.pause_hold() <= 0:
        return False
    yield e.stop_failed("the CPUs did not stop in time")
    return True


def copy_pass(e, rec, h, count, running, read_first):
    """Process step: a pass that goes on to copy after its scan ``h`` (counted ``count``): wait out a scan
    that ran beside the CPUs, end the brownout, copy the bitmap's runs (or copy before clearing) and
    close the pass's record ``rec``."""
    if running:
        yield e.wait(h.cycles)
    e.end_brownout(h)
    if read_first:
        yield from copy_then_clear(e)
    else:
        yield from e.copy_bitmap_runs()
    e.close_pass(rec, count, h.cycles if h.stopped else 0)


def copy_then_clear(e):
    """Process step of the copy-before-clear variant: each chunk of runs is read and sent, and only
    when it has gone are its pages' dirty bits cleared; writes in between are lost."""
    m = e.memory
    pos = 0
    while pos < m.n_frames:
        starts, lens, pos = e.extract_runs(m.bitmap, pos, m.n_frames, e.chunk_pages)
        if len(starts):
            yield from e.copy(starts, lens)
            e.catch_up()
            e.clear_runs(starts, lens)


def blackout(e, rec, count, converged, t_stop):
    """Process step: build the copy list, copy it with the CPUs stopped, cut over."""
    p = e.cfg.stratus
    m = e.memory
    if not p.tracking_outside:  # the module's own structures and the page tables, always
        lo, hi = m.pinned_range
        e.kernels.bitmap_set_range(m.bitmap, lo, hi)
    starts, lens = e.all_runs()
    out_s = np.empty(p.max_copyrange, dtype=INDEX_DTYPE)
    out_e = np.empty(p.max_copyrange, dtype=INDEX_DTYPE)
    n = e.kernels.build_copy_list(starts, lens, p.nearby, p.max_copyrange, out_s, out_e)
    range_lens = out_e[:n] - out_s[:n]
    overcopy = int(range_lens.sum() - lens.sum())
    # the runs are maximal, so the gaps a range's NEARBY extension spans are those of at most nearby - 1
    # frames; the rest of the over-copy comes from merging far ranges when the list was full
    gaps = starts[1:] - (starts[:-1] + lens[:-1]) if len(starts) > 1 else np.empty(0, INDEX_DTYPE)
    far_overcopy = overcopy - int(gaps[gaps <= p.nearby - 1].sum())
    if p.setup > 0:
        yield e.wait(e.cycles(p.setup))
    if p.stop_per_page > 0:  # bookkeeping over every page mirrored so far (the full copy's)
        lo, hi = m.pinned_range
        mirrored = m.n_frames - (hi - lo) if p.tracking_outside else m.n_frames
        yield e.wait(e.cycles(p.stop_per_page * mirrored))
    yield from e.copy(out_s[:n], range_lens)
    yield from e.drain()
    yield e.wait(e.cycles(p.cutover))
    e.close_pass(rec, count, 0, overcopy=overcopy)
    e.finish(converged, "threshold" if converged else "last-pass", t_stop, blackout_ranges=int(n),
             blackout_overcopy_pages=overcopy, blackout_far_overcopy_pages=far_overcopy)


def stop_and_copy_all(e):
    """Process step of ``brownout: false``: stop the CPUs, pay the resync's setup, copy all of memory
    (less the tracker's structures when they are outside it), cut over. One blackout pass, no brownout."""
    p = e.cfg.stratus
    m = e.memory
    rec = e.open_pass("blackout")
    t_stop = e.now
    if (yield from stuck(e)):
        return
    if e.cfg.tracking.stop_cpus:
        yield from e.brownout(zero_bitmap=True)
    else:
        yield from e.stop_and_scan()
    if p.setup > 0:
        yield e.wait(e.cycles(p.setup))
    if p.tracking_outside:
        lo, hi = m.pinned_range
        yield from e.copy(np.array([0, hi]), np.array([lo, m.n_frames - hi]))
    else:
        yield from e.copy([0], [m.n_frames])
    yield from e.drain()
    yield e.wait(e.cycles(p.cutover))
    e.close_pass(rec, m.n_frames, 0)
    e.finish(True, "no-brownout", t_stop)
