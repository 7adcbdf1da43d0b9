"""The engine: builds the machine from a config, runs a policy's scanner process, assembles the result.

The engine owns the primitives every policy uses, so a policy reads as its published algorithm:
``brownout()`` (stop the CPUs and harvest the dirty bits, taking the time the harvest costs),
``copy_bitmap_runs()`` (copy every maximal run of dirty frames, one call per run), the link's
``copy`` and ``drain``, and the pass records. Time is an integer count of CPU cycles.
"""
import time

import numpy as np
import simpy

from .. import __version__
from ..config.fields import VARIANTS
from ..kernels import get_backend
from ..kernels.dtypes import INDEX_DTYPE, WORD_DTYPE
from ..memory import Memory
from ..results import PassRecord, Result
from ..workloads import build_dma, build_workload, working_set_pages
from .cpus import Cpus, cpus
from .interconnect import Interconnect, Partner

RUN_CAP = 1 << 16


class VariantError(ValueError):
    """A variant the engine or the chosen policy does not model."""


def check_variant(policy_name, policy, variant):
    """Raise VariantError unless ``policy`` models ``variant``."""
    if variant not in VARIANTS:
        raise VariantError(f"unknown variant '{variant}' (choose from {', '.join(VARIANTS)})")
    modelled = getattr(policy, "VARIANTS", ("correct",))
    if variant not in modelled:
        raise VariantError(f"the {policy_name} policy does not model the variant '{variant}' (it models: "
                           f"{', '.join(modelled)})")


class Harvest:
    """What one harvest found and cost: ``new_bits`` (the count of 0->1 bitmap transitions),
    ``dirty`` per segment, and ``cycles`` the CPUs were stopped."""

    def __init__(self, new_bits, dirty, cycles, stopped=True):
        self.new_bits = new_bits
        self.dirty = dirty
        self.cycles = cycles
        self.stopped = stopped


class Engine:
    """One simulated mirror of the machine described by ``cfg`` (a validated Config).

    ``backend`` names the kernel backend ('auto', 'cython', 'numpy'); ``variant`` one of VARIANTS;
    ``seed`` overrides ``sim.seed``. Raises ValueError for an unknown variant, BackendError for an
    unknown or unavailable backend.
    """

    def __init__(self, cfg, backend="auto", variant=None, seed=None, policy=None):
        from ..policies import get_policy
        self.cfg = cfg
        self.kernels = get_backend(backend)
        self.variant = variant or cfg.sim.variant
        self.seed = int(cfg.sim.seed if seed is None else seed)
        self.policy_name = policy or cfg.policy
        self.policy = get_policy(self.policy_name)
        check_variant(self.policy_name, self.policy, self.variant)
        self.clock = float(cfg.cpus.clock)
        self.env = simpy.Environment()
        mem = cfg.memory
        ps = mem.page_size
        ws_pages = working_set_pages(cfg.workload, ps)
        zero_pages = int(mem.zero_fraction * (mem.size // ps))
        self.memory = Memory(mem.size, ps, mem.kernel_size, ws_pages, zero_pages, mem.layout, mem.processes,
                             mem.block // ps)
        self.partner = Partner(self.memory.n_frames)
        self.workload = build_workload(cfg.workload, self.memory, cfg.cpus.count, self.kernels, self.seed,
                                       clock=self.clock)
        c = cfg.cpus
        self.cpus = Cpus(self.env, self.memory, self.workload, self.kernels, c.count, self.clock, cfg.workload.rate,
                         c.tlb_entries, self.cycles(c.tlb_walk), self.cycles(c.dirty_update),
                         paced=cfg.workload.paced, catchup=cfg.workload.catchup,
                         dma=build_dma(cfg, self.memory, self.partner, self.kernels, self.seed, self.clock))
        self.quantum = max(1, self.cycles(cfg.sim.quantum))
        link = cfg.link
        chunk = max(1, int(link.bandwidth * cfg.sim.quantum // ps))
        self.link = Interconnect(self.env, self.memory, self.partner, self.kernels,
                                 link.bandwidth * link.efficiency, link.latency,
                                 link.per_copy, self.clock, chunk, sync=lambda: self.cpus.advance_to(self.env.now),
                                 first_copy=link.first_copy, **self.policy.link_options(cfg))
        t = cfg.tracking
        self.pte_scan_cycles = t.pte_scan * self.clock
        self.pte_harvest_cycles = t.pte_harvest * self.clock
        self.rendezvous_cycles = t.rendezvous * self.clock
        self.tlb_flush_cycles = t.tlb_flush * self.clock
        m = self.memory
        nproc = len(m.segment_ptes) - 1
        self._proc_cpu = np.arange(nproc) % self.cpus.ncpu
        self._seg_dirty = np.zeros(len(m.segment_ptes), dtype=INDEX_DTYPE)
        self._run_starts = np.empty(RUN_CAP, dtype=INDEX_DTYPE)
        self._run_lens = np.empty(RUN_CAP, dtype=INDEX_DTYPE)
        self.records = []
        self.brownout_cycles = 0
        self.brownouts = 0
        self.harvests = 0
        self.waits = 0
        self.outcome = {}

    # -- time -------------------------------------------------------------------------------------
    def cycles(self, seconds):
        """Seconds -> whole CPU cycles."""
        return int(round(seconds * self.clock))

    def seconds(self, cycles):
        return cycles / self.clock

    def wait(self, cycles):
        """A timeout of ``cycles`` (counted, so tests can check the event budget)."""
        self.waits += 1
        return self.env.timeout(max(0, int(cycles)))

    # -- harvesting ---------------------------------------------------------------------------------
    def harvest_cost(self, dirty):
        """Cycles a stop-the-world harvest takes: user trees in parallel (process i on CPU i mod ncpu),
        then CPU 0 walks the kernel tables, plus rendezvous and the final full TLB flush."""
        m = self.memory
        seg_cycles = m.segment_ptes * self.pte_scan_cycles + dirty * self.pte_harvest_cycles
        per_cpu = np.bincount(self._proc_cpu, weights=seg_cycles[1:], minlength=self.cpus.ncpu)
        per_cpu[0] += seg_cycles[0]
        flush = self.tlb_flush_cycles if self.variant != "no-tlb-flush" else 0.0
        return int(round(self.rendezvous_cycles + per_cpu.max() + flush))

    def harvest(self, bitmap=None, clear=True):
        """Walk every PTE: dirty ones set their bitmap bit; with ``clear`` move hardware dirty to soft dirty.

        No time passes here; returns a Harvest with its cost.
        """
        m = self.memory
        bitmap = m.bitmap if bitmap is None else bitmap
        self.cpus.advance_to(self.env.now)
        new_bits = self.kernels.harvest(m.pte, m.segment_bounds, bitmap, m.versions, m.pt_base, m.ptes_per_pt,
                                        clear, self._seg_dirty)
        dirty = self._seg_dirty.copy()
        return Harvest(int(new_bits), dirty, self.harvest_cost(dirty))

    def brownout(self, zero_bitmap=False, clear=True, wait=True):
        """Process step: stop all CPUs, harvest, flush every TLB, and hold the CPUs for the harvest's cost.

        The CPUs stay stopped; the caller resumes them (or goes on into the blackout).
        ``zero_bitmap`` zeroes the bitmap after harvesting (the initial rendezvous); ``clear=False``
        only reads the dirty bits (the copy-before-clear variant clears them after copying).
        ``wait=False`` returns at once and leaves the cost to the caller (a scan that runs while the
        CPUs write: its count decides whether they are stopped now).
        """
        stop = self.cfg.tracking.stop_cpus
        if stop:
            self.cpus.stop()
        h = self.harvest(clear=clear)
        h.stopped = stop
        if self.variant != "no-tlb-flush":
            self.cpus.flush_tlbs()
        self.memory.touch_module()
        if zero_bitmap:
            self.memory.bitmap.fill(0)
        self.harvests += 1
        if wait:
            yield self.wait(h.cycles)
        return h

    def end_brownout(self, h):
        """Release the CPUs after a brownout, accounting its stop as brownout time (nothing to release
        after a scan that ran while the CPUs kept writing: ``tracking.stop_cpus: false``)."""
        if not h.stopped:
            return
        self.brownout_cycles += h.cycles
        self.brownouts += 1
        self.cpus.resume()

    def stop_and_scan(self, clear=True):
        """Process step: stop the CPUs and harvest once more (the blackout after a scan that ran while
        they kept writing); the scan's cost is spent with them stopped."""
        self.cpus.stop()
        h = self.harvest(clear=clear)
        if self.variant != "no-tlb-flush":
            self.cpus.flush_tlbs()
        self.memory.touch_module()
        self.harvests += 1
        cost = self.cfg.tracking.stop_scan
        yield self.wait(self.cycles(cost) if cost > 0 else h.cycles)
        return h

    # -- copying ----------------------------------------------------------------------------------
    def extract_runs(self, bitmap, lo, hi, max_pages, clear=True):
        """(starts, lens, next_pos): the next maximal runs of set bits from ``lo``, up to ``max_pages``."""
        n, _pages, nxt = self.kernels.bitmap_extract_runs(bitmap, lo, hi, max_pages, clear, self._run_starts,
                                                          self._run_lens)
        return self._run_starts[:n].copy(), self._run_lens[:n].copy(), nxt

    def copy_bitmap_runs(self, bitmap=None):
        """Process step: copy every maximal run of dirty frames in the bitmap (test-and-clear), one
        copy call per run, while the CPUs run; the runs are taken a link chunk at a time."""
        m = self.memory
        bitmap = m.bitmap if bitmap is None else bitmap
        pos, n = 0, m.n_frames
        while pos < n:
            starts, lens, pos = self.extract_runs(bitmap, pos, n, self.link.chunk_pages)
            if len(starts):
                yield from self.link.copy(starts, lens)

    def clear_runs(self, starts, lens):
        """Clear the hardware dirty bits of the given runs now (copy-before-clear variant) and flush TLBs."""
        m = self.memory
        scratch = self.new_bitmap()
        for s, n in zip(starts.tolist(), lens.tolist()):
            self.kernels.harvest(m.pte, np.array([s, s + n], dtype=INDEX_DTYPE), scratch, m.versions, m.pt_base,
                                 m.ptes_per_pt, True, self._seg_dirty[:1])
        self.cpus.flush_tlbs()

    def all_runs(self, bitmap=None, clear=True):
        """(starts, lens) of every maximal run of set bits, in order (test-and-clear with ``clear``)."""
        m = self.memory
        bitmap = m.bitmap if bitmap is None else bitmap
        parts_s, parts_l, pos = [], [], 0
        while pos < m.n_frames:
            s, ln, pos = self.extract_runs(bitmap, pos, m.n_frames, m.n_frames, clear)
            parts_s.append(s)
            parts_l.append(ln)
        if not parts_s:
            return np.empty(0, INDEX_DTYPE), np.empty(0, INDEX_DTYPE)
        return np.concatenate(parts_s), np.concatenate(parts_l)

    def new_bitmap(self):
        return np.zeros_like(self.memory.bitmap, dtype=WORD_DTYPE)

    # -- pass records -------------------------------------------------------------------------------
    def open_pass(self, kind, start=None):
        rec = PassRecord(pass_=len(self.records), kind=kind, start_s=self.seconds(self.env.now if start is None
                                                                                  else start))
        rec._marks = (self.env.now if start is None else start, self.link.pages_sent, self.link.bytes_sent,
                      self.link.calls, self.link.zero_pages_sent, self.cpus.writes)
        self.records.append(rec)
        return rec

    def close_pass(self, rec, dirty_pages, brownout_cycles=0, overcopy=0, end=None):
        """Fill ``rec`` with what happened since ``open_pass`` (up to ``end``, default now)."""
        t0, pages, nbytes, calls, zeros, writes = rec._marks
        self.cpus.advance_to(self.env.now)
        rec.duration_s = self.seconds((self.env.now if end is None else end) - t0)
        rec.brownout_s = self.seconds(brownout_cycles)
        rec.dirty_pages = int(dirty_pages)
        rec.pages_copied = self.link.pages_sent - pages
        rec.bytes = self.link.bytes_sent - nbytes
        rec.ranges = self.link.calls - calls
        rec.zero_pages = self.link.zero_pages_sent - zeros
        rec.overcopy_pages = int(overcopy)
        rec.writes = self.cpus.writes - writes
        del rec._marks
        return rec

    # -- the end --------------------------------------------------------------------------------------
    def finish(self, converged, stop_reason, blackout_start, **extra):
        """Record the cut-over: called by the policy when the partner holds the final copy."""
        self.outcome = dict(converged=bool(converged), stop_reason=stop_reason, blackout_start=blackout_start,
                            cutover=self.env.now, **extra)

    def run(self):
        """Run the mirror to cut-over (or to ``sim.time_limit``) and return the Result."""
        wall0 = time.perf_counter()
        self.warm_up()
        self.env.process(cpus(self.env, self.cpus, self.quantum))
        proc = self.env.process(self.policy.scanner(self))
        # A backstop: policies stop themselves at sim.time_limit with their own counters; this only
        # catches one that would not.
        limit = self.env.timeout(self.cycles(self.cfg.sim.time_limit * 1.05 + 1.0))
        self.env.run(until=self.env.any_of([proc, limit]))
        if not proc.triggered:
            self.outcome = dict(converged=False, stop_reason="time-limit", blackout_start=None, cutover=None)
        return self._result(time.perf_counter() - wall0)

    def lost_writes(self, stale):
        """Frames whose partner copy is stale at cut-over; the first ones go into ``stale``.

        Under a hypervisor (policies with ``TRACKING_IN_HYPERVISOR``) the PTEs are the EPT/shadow
        entries and the page-table and bitmap frames are the hypervisor's own memory, which is not
        migrated: they are left out of the comparison; likewise for ``stratus.tracking_outside``
        (a user-space mirror of one process).
        """
        m = self.memory
        a, b = m.versions, self.partner.versions
        outside = getattr(self.policy, "TRACKING_IN_HYPERVISOR", False) or (
            self.cfg.policy == "stratus" and self.cfg.stratus.tracking_outside)
        if not outside:
            return self.kernels.find_mismatch(a, b, stale)
        lo, hi = m.pinned_range
        first = self.kernels.find_mismatch(a[:lo], b[:lo], stale)
        rest = np.empty(len(stale), dtype=INDEX_DTYPE)
        second = self.kernels.find_mismatch(a[hi:], b[hi:], rest)
        k = min(first, len(stale))
        stale[k:] = rest[:len(stale) - k] + hi
        return first + second

    def warm_up(self):
        """Run the workload for ``sim.warmup`` before time 0, a quantum at a time (no SimPy events):
        TLBs and dirty bits are then as on a machine that has been running."""
        warm = self.cycles(self.cfg.sim.warmup)
        if warm <= 0:
            return
        self.cpus.t_done = -warm
        for t in range(-warm + self.quantum, 0, self.quantum):
            self.cpus.advance_to(t)
        self.cpus.advance_to(0)
        self.cpus.writes = self.cpus.walks = self.cpus.dirty_sets = self.cpus.flush_refills = 0
        self.cpus.tracking_cycles = 0.0
        self.cpus.running_cycles = 0

    def _result(self, wall_s):
        m, o = self.memory, self.outcome
        if o.get("blackout_start") is None:  # never cut over (time limit, abort): nothing to compare
            o["cutover"] = None
        stale = np.empty(16, dtype=INDEX_DTYPE)
        lost = self.lost_writes(stale) if o["cutover"] else None
        end = o["cutover"] if o["cutover"] is not None else self.env.now
        running_end = o["blackout_start"] if o["blackout_start"] is not None else self.env.now
        cpu_cycles = self.cpus.ncpu * max(1, running_end)
        lost_cycles = self.cpus.tracking_cycles + self.cpus.ncpu * self.brownout_cycles
        summary = {
            "policy": self.policy_name,
            "passes": len(self.records),
            "converged": o["converged"],
            "stop_reason": o["stop_reason"],
            "downtime_s": None if o["cutover"] is None else self.seconds(o["cutover"] - o["blackout_start"]),
            "brownout_s": self.seconds(self.brownout_cycles),
            "brownouts": self.brownouts,
            "total_time_s": self.seconds(end),
            "bytes_sent": self.link.bytes_sent,
            "pages_sent": self.link.pages_sent,
            "copies_per_page": self.link.pages_sent / m.n_frames,
            "copy_calls": self.link.calls,
            "zero_pages_sent": self.link.zero_pages_sent,
            "slowdown": lost_cycles / cpu_cycles,
            "lost_writes": lost,
            "stale_frames": [] if not lost else [int(f) for f in stale[:min(lost, 16)]],
            "workload_writes": self.cpus.writes,
            "dirty_bit_sets": self.cpus.dirty_sets,
            "tlb_flush_refills": self.cpus.flush_refills,
            "tracking_cycles": self.cpus.tracking_cycles,
            "memory_pages": m.n_frames,
            "page_size": m.page_size,
        }
        # Fields every policy reports; a policy's own values (from finish) take precedence.
        summary.update({
            "dirty_sync_count": self.harvests,
            "normal_pages": self.link.pages_sent - self.link.zero_pages_sent,
            "zero_pages": self.link.zero_pages_sent,
            "expected_downtime_s": None,
            "throttle_pct": [],
        })
        for k, v in o.items():
            if k not in ("converged", "stop_reason", "blackout_start", "cutover"):
                summary[k] = v
        meta = {
            "variant": self.variant,
            "backend": self.kernels.name,
            "seed": self.seed,
            "version": __version__,
            "config": self.cfg.to_dict(),
        }
        simulator = {"wall_s": wall_s, "waits": self.waits + self.link.timeouts,
                     "quanta": self.cpus.t_done // self.quantum, "simulated_s_per_wall_s": self.seconds(end) / wall_s
                     if wall_s > 0 else None}
        return Result(summary, list(self.records), meta, simulator)


def direct_fields(per_pass, memory_pages):
    """The result fields a fluid or closed-form policy reports the same way: counted from its pass
    records, with no pages simulated (no brownouts, no zero pages, no version oracle)."""
    pages_sent = sum(r.pages_copied for r in per_pass)
    return {"brownout_s": 0.0, "brownouts": 0, "bytes_sent": sum(r.bytes for r in per_pass),
            "pages_sent": pages_sent, "copies_per_page": pages_sent / memory_pages, "copy_calls": len(per_pass),
            "zero_pages_sent": 0, "normal_pages": pages_sent, "zero_pages": 0, "throttle_pct": [],
            "slowdown": 0.0, "lost_writes": None, "stale_frames": [], "workload_writes": None}


def simulate(cfg, backend="auto", variant=None, seed=None):
    """Run the mirror described by ``cfg`` and return its Result.

    Page-level policies run on the Engine; fluid and closed-form policies (those with a
    ``compute`` function) are computed directly, with the same result schema. Raises ValueError for
    an unknown variant or policy, BackendError for an unknown or unavailable backend.
    """
    from ..policies import get_policy
    policy = get_policy(cfg.policy)
    if not hasattr(policy, "compute"):
        return Engine(cfg, backend=backend, variant=variant, seed=seed).run()
    kernels = get_backend(backend)
    variant = variant or cfg.sim.variant
    check_variant(cfg.policy, policy, variant)
    seed = int(cfg.sim.seed if seed is None else seed)
    wall0 = time.perf_counter()
    summary, per_pass = policy.compute(cfg, seed)
    summary = {"policy": cfg.policy, "passes": len(per_pass), **direct_fields(per_pass, summary["memory_pages"]),
               **summary}
    meta = {"variant": variant, "backend": kernels.name, "seed": seed, "version": __version__,
            "config": cfg.to_dict()}
    return Result(summary, per_pass, meta, {"wall_s": time.perf_counter() - wall0, "waits": 0})
