"""The CPUs of the source machine: their write streams, their TLBs and the time they lose to tracking.

All CPUs are stepped together by one process (``cpus``), one event per quantum, so the number of
SimPy events does not grow with the CPU count or the write count. Any other process that is about
to read or change page state first calls ``Cpus.advance_to(now)``: every write that happened
before that instant is applied before the read, and none after it. Writes are therefore applied at
most one quantum late and never early, which is what makes a write before or after the scanner's
position land in the right pass.

Time lost to tracking is charged back to the workload: a write that walks the page tables because
a flush emptied the TLB, or that must set a cleared dirty bit, costs cycles that the CPU owes
(``debt``) and pays from its next running time, so a CPU-bound writer slowed by tracking also writes
less. A writer paced by a clock (``paced``) pays from the time it would have slept: its rate holds
unless tracking takes all of its CPU.

The workload decides how many pages each CPU writes in the cycles it ran (``Workload.step``: a rate,
or a trace's timeline). Device DMA (``dma``, a DmaWriter) runs in wall time while the CPUs run, is
not throttled, and writes memory without going through a PTE or a TLB.
"""
import numpy as np

from ..kernels.dtypes import INDEX_DTYPE, TLB_FLAG_DTYPE, TLB_TAG_DTYPE
from ..memory import Memory
from ..workloads.patterns import RandomWrites


class Cpus:
    """``ncpu`` CPUs at ``clock`` Hz, each writing ``rate`` pages/s through a TLB of ``tlb_entries``.

    ``walk_cycles`` is the cost of a page walk after a flush-induced TLB miss, ``dirty_cycles`` the
    cost of the locked update that sets a clear PTE dirty bit. The workload sets the write counts
    (``rate`` is kept as ``rate_per_cycle``; a policy that runs the guest elsewhere after cut-over,
    such as QEMU's post-copy destination, steps the same workload object). ``dma`` is an optional
    DmaWriter.
    """

    def __init__(self, env, memory, workload, kernels, ncpu, clock, rate, tlb_entries, walk_cycles, dirty_cycles,
                 paced=False, catchup=0.2, dma=None):
        self.env = env
        self.memory = memory
        self.workload = workload
        self.kernels = kernels
        self.ncpu = int(ncpu)
        self.clock = float(clock)
        self.rate_per_cycle = float(rate) / self.clock
        self.walk_cycles = float(walk_cycles)
        self.dirty_cycles = float(dirty_cycles)
        self.tlb_tag = np.full((self.ncpu, int(tlb_entries)), -1, dtype=TLB_TAG_DTYPE)
        self.tlb_flags = np.zeros((self.ncpu, int(tlb_entries)), dtype=TLB_FLAG_DTYPE)
        self.dma = dma
        self.debt = np.zeros(self.ncpu)
        self.throttle = 0.0
        self.paced = bool(paced)
        self.catchup = float(catchup)
        self.t_done = 0
        self.stopped = False
        self.meter = None            # a DirtyRateMeter: distinct pages written per window
        self.pending = None          # the cpus process's next tick, once it runs
        self._bounds = np.zeros(self.ncpu + 1, dtype=INDEX_DTYPE)
        self._counts = np.zeros((self.ncpu, 3), dtype=INDEX_DTYPE)
        self._writes = np.zeros(self.ncpu, dtype=INDEX_DTYPE)
        self._avail = np.zeros(self.ncpu)
        self._extra = np.zeros(self.ncpu)
        self._fast = self._fused_workload()
        # Totals over the run.
        self.writes = 0
        self.walks = 0
        self.dirty_sets = 0
        self.flush_refills = 0
        self.tracking_cycles = 0.0   # cycles all CPUs spent on flush refills and dirty-bit updates
        self.running_cycles = 0      # wall cycles during which the CPUs were not stopped
        self.throttled_cycles = 0.0  # cycles all CPUs gave up to throttling

    def advance_to(self, t):
        """Apply every write the CPUs issue up to cycle ``t``."""
        dt = t - self.t_done
        if dt <= 0:
            return
        self.t_done = t
        if self.stopped:
            return
        self.running_cycles += dt
        run = dt * (1.0 - self.throttle)
        if self.paced and self.throttle > 0 and self.throttle_sleep() <= self.catchup:
            run = float(dt)  # the writer catches up after each throttle sleep: its rate is unchanged
        self.throttled_cycles += (dt - run) * self.ncpu
        if self.dma is not None:
            self.dma.advance(dt)
        # Pay the tracking debt: a writer paced by a clock (``paced``) sleeps between its writes, so
        # tracking costs come out of that idle time and its rate holds, unless they take all of the
        # CPU's time (kernels.cpu_debt_step).
        avail = self._avail
        counts = self._writes
        extra = self._extra
        wl = self._fast
        if wl is not None:
            # The same kernels as below, fused into two calls (kernels.cpu_rate_step, random_write_step).
            total = self.kernels.cpu_rate_step(run, self.debt, self.paced, wl.rate_per_cycle, wl.carry, avail, counts)
            if total == 0:
                return
            m = self.memory
            frames = wl._buffer(total)
            walks, dirty_sets, refills = self.kernels.random_write_step(
                wl.keys, wl.counters, counts, wl.hot_span, wl.hot_threshold, wl.span, m.user_base, m.mult, m.blocks,
                m.block, frames, self._bounds, m.pte, m.versions, self.tlb_tag, self.tlb_flags, m.pt_base,
                m.ptes_per_pt, self._counts, self.walk_cycles, self.dirty_cycles, self.debt, extra)
            if self.meter is not None:
                self.meter.add(frames, t)
        else:
            self.kernels.cpu_debt_step(run, self.debt, self.paced, avail)
            frames = self.workload.step(avail, counts)
            total = len(frames)  # = counts.sum(): a workload returns every write it counted
            if total == 0:
                return
            if self.meter is not None:
                self.meter.add(frames, t)
            counts.cumsum(out=self._bounds[1:])
            m = self.memory
            m.apply_writes(self.kernels, frames, self._bounds, self.tlb_tag, self.tlb_flags, self._counts)
            walks, dirty_sets, refills = self.kernels.charge_tracking(self._counts, self.walk_cycles,
                                                                      self.dirty_cycles, self.debt, extra)
        self.tracking_cycles += float(np.add.reduce(extra))  # extra.sum(), without its Python wrapper
        self.writes += total
        self.walks += walks
        self.dirty_sets += dirty_sets
        self.flush_refills += refills

    def _fused_workload(self):
        """The workload when one CPU step can run as the two fused kernels (a ``uniform`` or ``hotcold``
        workload of its own at the start of dense memory's working set), else None."""
        wl, m = self.workload, self.memory
        if type(wl) is not RandomWrites or wl.region != 0 or type(m) is not Memory:
            return None
        if m.user_base + m.blocks * m.block > m.n_frames:
            return None
        return wl

    def throttle_sleep(self):
        """Seconds a throttled vCPU sleeps per 10 ms it runs (QEMU cpu-throttle.c: pct/(1-pct) x 10 ms)."""
        return 0.010 * self.throttle / (1.0 - self.throttle) if self.throttle < 1 else float("inf")

    def stop(self):
        """Rendezvous: bring the writes up to now, then no CPU runs until ``resume``."""
        self.advance_to(self.env.now)
        self.stopped = True

    def resume(self):
        """Release the CPUs; the stopped interval issues no writes."""
        self.advance_to(self.env.now)
        self.stopped = False

    def flush_tlbs(self):
        """Invalidate every TLB entry on every CPU; tags stay so a refill can be told from a capacity miss."""
        self.tlb_flags.fill(0)


def cpus(env, machine_cpus, quantum_cycles):
    """Process role: the CPUs run their workloads, one batch of writes per quantum.

    When another process has already brought the writes up to date (the scanner does before every
    read), the next batch is due one quantum after that, not after the last tick: writes are still
    applied at most one quantum late, with fewer events.
    """
    while True:
        due = machine_cpus.t_done + quantum_cycles
        # Ticks due strictly before every other scheduled event are the CPUs' alone (the scanner sleeps,
        # rate-limited): nothing can read or change page state in between, so they are applied now, in
        # order, with the same targets, without an event each. Workloads never read the clock.
        nxt = env.peek()
        if nxt != float("inf"):
            while due < nxt:
                machine_cpus.advance_to(due)
                due = machine_cpus.t_done + quantum_cycles
        # kept so a copy loop (sim/fused.py) can tell this tick from every other event due
        machine_cpus.pending = tick = env.timeout(max(1, due - env.now))
        yield tick
        if machine_cpus.t_done + quantum_cycles <= env.now:  # nobody brought the writes up to date meanwhile
            machine_cpus.advance_to(env.now)
