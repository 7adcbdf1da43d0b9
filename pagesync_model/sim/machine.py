"""The machine a page-level policy runs on: the only object its scanner receives.

`Machine` owns the memory, the CPUs and their workload, the interconnect and the partner, and the
kernels, and offers the verbs a policy needs, as SimPy's ``Environment`` offers ``timeout`` and
``process``: a policy calls them and never sets attributes on the CPUs or the link.

- time: ``now``, ``cycles``/``seconds``, ``wait``;
- CPUs: ``pause``/``resume``, ``throttle``, ``catch_up`` (apply the writes up to now);
- tracking: ``harvest`` (read the dirty bits, no time), ``sync`` (harvest and flush the TLBs: the
  one place that decides the flush, which the ``no-tlb-flush`` variant skips), ``brownout`` and
  ``end_brownout`` (stop, sync, hold the CPUs for its cost), ``stop_and_scan``, ``peek``,
  ``clear_runs``;
- copying: ``copy``, ``send_bytes``, ``drain`` (the interconnect times them), ``copy_bitmap_runs``,
  ``extract_runs``, ``take_pages`` (the next K pages of a bitmap, the last run cut), ``all_runs``;
- records: ``open_pass``, ``close_pass`` and ``finish``, kept by the engine's recorder.

Time is an integer count of CPU cycles.
"""
import numpy as np
import simpy

from ..kernels.dtypes import INDEX_DTYPE, PARTNER_GARBAGE, WORD_DTYPE
from ..dirtyrate import DirtyRateMeter
from ..memory import build_memory, run_frames, use_sparse
from ..workloads import build_dma, build_workload, working_set_pages
from . import fused
from .cpus import Cpus
from .interconnect import Interconnect

RUN_CAP = 1 << 16


class Harvest:
    """What one harvest found and cost: ``new_bits`` (the count of 0->1 bitmap transitions),
    ``dirty`` per segment, and ``cycles`` the CPUs were stopped."""

    def __init__(self, new_bits, dirty, cycles, stopped=True):
        self.new_bits = new_bits
        self.dirty = dirty
        self.cycles = cycles
        self.stopped = stopped


class Machine:
    """The source machine of ``cfg`` (a validated Config) with its link and partner.

    ``kernels`` is a kernel backend, ``variant`` one of the policies' VARIANTS, ``seed`` the write
    streams' seed, ``link_options`` the policy's stream format (``PagePolicy.link_options``),
    ``quantum`` the time step in seconds (default ``sim.quantum``; the engine resolves ``auto``).
    ``env`` is the SimPy environment to run in (default: a new one; several migrations share one,
    each through an offset view, sim/multi.py) and ``link_factory`` builds the interconnect (default
    ``Interconnect.from_config``; a migration on shared links passes ``SharedInterconnect``'s).
    Raises ValueError for a memory that does not fit (the config's checks refuse it first).
    """

    # seconds a stop of the vCPUs waits beyond its usual time (a ``pause`` fault, sim/faults.py; set
    # by sim/multi.py), or None
    pause_hold = None
    # called by a policy whose source could not stop in time (its system gives up: sim/faults.py) with
    # why; returns an event that never fires, the migration's attempt ending as failed (set by
    # sim/multi.py), or None
    stop_failed = None

    def __init__(self, cfg, kernels, variant, seed, link_options, quantum=None, env=None, link_factory=None):
        self.cfg = cfg
        self.kernels = kernels
        self.variant = variant
        self.seed = seed
        self.clock = float(cfg.cpus.clock)
        self.env = simpy.Environment() if env is None else env
        mem = cfg.memory
        ps = mem.page_size
        ws_pages = working_set_pages(cfg.workload, ps)
        zero_pages = int(mem.zero_fraction * (mem.size // ps))
        self.memory = build_memory(mem.size, ps, mem.kernel_size, ws_pages, zero_pages, mem.layout, mem.processes,
                                   mem.block // ps, sparse=use_sparse(mem, ws_pages * ps),
                                   holes=[(h.at // ps, h.size // ps) for h in mem.holes])
        self.partner = self.memory.new_partner()
        self.workload = build_workload(cfg.workload, self.memory, cfg.cpus.count, kernels, seed, clock=self.clock)
        c = cfg.cpus
        self.cpus = Cpus(self.env, self.memory, self.workload, kernels, c.count, self.clock, cfg.workload.rate,
                         c.tlb_entries, self.cycles(c.tlb_walk), self.cycles(c.dirty_update),
                         paced=cfg.workload.paced, catchup=cfg.workload.catchup,
                         dma=build_dma(cfg, self.memory, self.partner, kernels, seed, self.clock))
        # the achieved dirty rate, over the window the planner's rate was given for (QEMU's calc-time)
        self.cpus.meter = DirtyRateMeter(self.cycles(cfg.workload.dirty_rate_window), ws_pages)
        self.quantum_s = cfg.sim.quantum if quantum is None else quantum
        self.quantum = max(1, self.cycles(self.quantum_s))
        self.link = (link_factory or Interconnect.from_config)(self.env, self.memory, self.partner, kernels, cfg.link, self.quantum_s,
                                             self.clock, sync=self.catch_up, **link_options)
        # a copy of more than one piece runs in the copy loop when it can (sim/fused.py)
        self.link.multi_piece = self._copy_loop_for
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
        self._peek_bounds = np.zeros(2, dtype=INDEX_DTYPE)
        self.recorder = None
        self.brownout_cycles = 0
        self.brownouts = 0
        self.harvests = 0
        self.waits = 0

    # -- time -------------------------------------------------------------------------------------
    @property
    def now(self):
        """The current time in cycles."""
        return self.env.now

    def cycles(self, seconds):
        """Seconds -> whole CPU cycles."""
        return int(round(seconds * self.clock))

    def seconds(self, cycles):
        return cycles / self.clock

    def wait(self, cycles):
        """A timeout of ``cycles`` (counted, so tests can check the event budget)."""
        self.waits += 1
        return self.env.timeout(max(0, int(cycles)))

    def spawn(self, generator):
        """Run ``generator`` as a process of its own beside the policy's (e.g. a destination's loop)."""
        return self.env.process(generator)

    def signal(self):
        """An event a process can wait on and another can trigger."""
        return self.env.event()

    def first_of(self, events):
        """An event that fires when the first of ``events`` does."""
        return self.env.any_of(events)

    # -- the CPUs -----------------------------------------------------------------------------------
    def guest_writes(self, run, counts):
        """The frames the workload writes when each CPU runs ``run[i]`` cycles (``counts[i]`` is set to
        CPU i's number of writes), for a policy that applies the writes itself (post-copy's destination)."""
        return self.workload.step(run, counts)

    def catch_up(self):
        """Apply every write the CPUs issued up to now (before reading what they wrote)."""
        self.cpus.advance_to(self.env.now)

    def pause(self):
        """Stop every CPU (their writes are applied up to now first); they stay stopped until ``resume``."""
        self.cpus.stop()

    def resume(self):
        self.cpus.resume()

    def throttle(self, fraction):
        """From now on each CPU runs only ``1 - fraction`` of its time (QEMU's cpu-throttle)."""
        self.catch_up()
        self.cpus.throttle = fraction

    # -- dirty tracking -----------------------------------------------------------------------------
    def harvest_cost(self, dirty):
        """Cycles a stop-the-world harvest takes: user trees in parallel (process i on CPU i mod ncpu),
        then CPU 0 walks the kernel tables, plus rendezvous and the final full TLB flush."""
        m = self.memory
        seg_cycles = m.segment_ptes * self.pte_scan_cycles + dirty * self.pte_harvest_cycles
        per_cpu = np.bincount(self._proc_cpu, weights=seg_cycles[1:], minlength=self.cpus.ncpu)
        per_cpu[0] += seg_cycles[0]
        flush = self.tlb_flush_cycles if self.variant != "no-tlb-flush" else 0.0
        return int(round(self.rendezvous_cycles + per_cpu.max() + flush))

    def log_sync_cost(self):
        """Cycles a hypervisor's dirty-log sync of all memory takes: one scan step per page and the
        remote TLB flush."""
        return self.memory.n_frames * self.pte_scan_cycles + self.tlb_flush_cycles

    def harvest(self, bitmap=None, clear=True):
        """Walk every PTE: dirty ones set their bitmap bit; with ``clear`` move hardware dirty to soft dirty.

        No time passes here; returns a Harvest with its cost.
        """
        m = self.memory
        bitmap = m.bitmap if bitmap is None else bitmap
        self.catch_up()
        new_bits = m.harvest(self.kernels, m.segment_bounds, bitmap, clear, self._seg_dirty)
        dirty = self._seg_dirty.copy()
        return Harvest(int(new_bits), dirty, self.harvest_cost(dirty))

    def sync(self, bitmap=None, clear=True):
        """Harvest into ``bitmap`` and invalidate every TLB, so the next write to a cleared page sets
        its dirty bit again; the ``no-tlb-flush`` variant skips the flush (and loses such writes).
        No time passes here; returns the Harvest."""
        h = self.harvest(bitmap=bitmap, clear=clear)
        if self.variant != "no-tlb-flush":
            self.cpus.flush_tlbs()
        return h

    def peek(self, bitmap, lo, hi):
        """Read (not clear) the dirty bits of frames [lo, hi) into ``bitmap``; no time passes and the
        CPUs' writes are taken as they stand (``catch_up`` first for the latest)."""
        m = self.memory
        self._peek_bounds[0], self._peek_bounds[1] = lo, hi
        m.harvest(self.kernels, self._peek_bounds, bitmap, False, self._seg_dirty[:1])

    def brownout(self, zero_bitmap=False, clear=True, wait=True):
        """Process step: stop all CPUs, sync, and hold the CPUs for the harvest's cost.

        The CPUs stay stopped; the caller resumes them (``end_brownout``) or goes on into the blackout.
        ``zero_bitmap`` zeroes the bitmap after harvesting (the initial rendezvous); ``clear=False``
        only reads the dirty bits (the copy-before-clear variant clears them after copying).
        ``wait=False`` returns at once and leaves the cost to the caller (a scan that runs while the
        CPUs write: its count decides whether they are stopped now). With ``tracking.stop_cpus``
        false the CPUs are not stopped at all.
        """
        stop = self.cfg.tracking.stop_cpus
        if stop:
            self.cpus.stop()
        h = self.sync(clear=clear)
        h.stopped = stop
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
        they kept writing); the scan's cost (``tracking.stop_scan``, or the harvest's) is spent with
        them stopped."""
        self.cpus.stop()
        h = self.sync(clear=clear)
        self.memory.touch_module()
        self.harvests += 1
        cost = self.cfg.tracking.stop_scan
        yield self.wait(self.cycles(cost) if cost > 0 else h.cycles)
        return h

    def clear_runs(self, starts, lens):
        """Clear the hardware dirty bits of the given runs now (copy-before-clear variant) and flush TLBs."""
        m = self.memory
        scratch = self.new_bitmap()
        for s, n in zip(starts.tolist(), lens.tolist()):
            m.harvest(self.kernels, np.array([s, s + n], dtype=INDEX_DTYPE), scratch, True, self._seg_dirty[:1])
        self.cpus.flush_tlbs()

    # -- bitmaps and runs -----------------------------------------------------------------------------
    def new_bitmap(self):
        """An all-clear bitmap of every frame."""
        return np.zeros_like(self.memory.bitmap, dtype=WORD_DTYPE)

    def extract_runs(self, bitmap, lo, hi, max_pages, clear=True):
        """(starts, lens, next_pos): the next maximal runs of set bits from ``lo``, up to ``max_pages``
        (the run that reaches it is whole)."""
        n, _pages, nxt = self.kernels.bitmap_extract_runs(bitmap, lo, hi, max_pages, clear, self._run_starts,
                                                          self._run_lens)
        return self._run_starts[:n].copy(), self._run_lens[:n].copy(), nxt

    def take_pages(self, bitmap, lo, hi, k, clear=True):
        """(starts, lens, end): the first ``k`` set pages of ``bitmap`` in [lo, hi) as runs, the last run
        cut so that exactly ``k`` go (all of them when fewer are set), test-and-cleared with ``clear``;
        ``end`` is where the next take starts (``hi`` when the range ran out)."""
        n, _pages, end = self.kernels.bitmap_take_pages(bitmap, lo, hi, k, clear, self._run_starts, self._run_lens)
        return self._run_starts[:n].copy(), self._run_lens[:n].copy(), end

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

    # -- the link -------------------------------------------------------------------------------------
    def copy(self, starts, lens, encode=None):
        """Process step: copy runs of frames to the partner (``Interconnect.copy``); its value is the
        number of all-zero pages copied."""
        return (yield from self.link.copy(starts, lens, encode))

    def _copy_loop_for(self, starts, lens):
        """The copy loop's process step for a copy of runs (``Interconnect.copy``, more than one piece), or
        None when it cannot run now."""
        if len(lens) <= fused.RUN_CAP and lens.min() > 0 and fused.fusable(self):
            return fused.copy(self, starts, lens)
        return None

    def copy_aside(self, starts, lens):
        """Copy runs on a second channel (``Interconnect.send_aside``): no time passes here and the
        link's FIFO is not delayed; returns the all-zero pages copied."""
        return self.link.send_aside(starts, lens)

    def copy_at(self, starts, lens, at):
        """Queue runs on the link's FIFO from cycle ``at`` for another sender (``Interconnect.send_at``);
        no time passes here; returns the cycle the last byte leaves."""
        return self.link.send_at(starts, lens, at)

    def link_busy_until(self):
        """The cycle at which everything handed to the link so far has left."""
        return self.link.busy_until

    def link_rate(self):
        """The link's payload rate, bytes/s."""
        return self.link.bandwidth

    def send_bytes(self, nbytes):
        """Process step: send ``nbytes`` that are not page contents (device state, stream headers)."""
        yield from self.link.send_bytes(nbytes)

    def drain(self):
        """Process step: wait until everything sent so far has reached the partner."""
        yield from self.link.drain()

    def copy_bitmap_runs(self, bitmap=None):
        """Process step: copy every maximal run of dirty frames in the bitmap (test-and-clear), one
        copy call per run, while the CPUs run; the runs are taken a link chunk at a time."""
        m = self.memory
        bitmap = m.bitmap if bitmap is None else bitmap
        if fused.fusable(self):
            yield from fused.copy(self, bitmap=bitmap)
            return
        pos, n = 0, m.n_frames
        while pos < n:
            starts, lens, pos = self.extract_runs(bitmap, pos, n, self.link.chunk_pages)
            if len(starts):
                yield from self.link.copy(starts, lens)

    @property
    def chunk_pages(self):
        """Pages the link carries in one quantum: the most a policy should hand it between writes."""
        return self.link.chunk_pages

    @property
    def bytes_sent(self):
        return self.link.bytes_sent

    @property
    def pages_sent(self):
        return self.link.pages_sent

    @property
    def zero_pages_sent(self):
        return self.link.zero_pages_sent

    def link_idle(self):
        """Nothing queued on the link: everything handed to it has left."""
        return self.link.busy_until <= self.env.now

    def request_time(self, nbytes):
        """Seconds for a request to reach the partner and ``nbytes`` to come back on an idle link."""
        return self.link.request_time(nbytes)

    def new_to_partner(self, starts, lens):
        """How many non-zero pages of runs ``[starts[i], starts[i] + lens[i])`` the partner has never
        received (read before they are copied)."""
        if len(starts) == 0:
            return 0
        frames = run_frames(starts, lens)
        return int(np.count_nonzero((self.partner.read_versions(frames) == PARTNER_GARBAGE)
                                    & (self.memory.read_versions(frames) != 0)))

    # -- records --------------------------------------------------------------------------------------
    def open_pass(self, kind, start=None):
        """Start the record of a pass of ``kind`` ('full', 'pass', 'blackout', 'postcopy') at ``start``
        (default now); returns it for ``close_pass``."""
        return self.recorder.open_pass(kind, start)

    def close_pass(self, rec, dirty_pages, brownout_cycles=0, overcopy=0, end=None):
        """Fill ``rec`` with what happened since ``open_pass`` (up to ``end``, default now)."""
        return self.recorder.close_pass(rec, dirty_pages, brownout_cycles, overcopy, end)

    @property
    def pass_count(self):
        """Pass records opened so far."""
        return len(self.recorder.records)

    def workload_settled(self):
        """Whether the workload's own schedule has nothing left that can change its write pattern (no
        phase change due, no trace); see ``policies.steady.workload_settled``."""
        from ..policies.steady import workload_settled
        return workload_settled(self.workload)

    def finish(self, converged, stop_reason, blackout_start, **extra):
        """Record the cut-over (``blackout_start`` None: there was none): called by the policy when the
        partner holds the final copy, or when it gives up; ``extra`` are its own result fields."""
        self.recorder.finish(converged, stop_reason, blackout_start, **extra)
