"""The engine: builds the machine from a config, runs a policy on it, records the passes, assembles
the result.

A page-level policy's scanner runs as a SimPy process on the `Machine` (sim/machine.py), beside the
CPUs' process; the engine keeps the run loop, the pass recorder and the lost-write oracle. A fluid
policy is computed directly. The engine asks the policy registry (policies/base.py) for what it
needs and knows no policy by name. Time is an integer count of CPU cycles.
"""
import time

import numpy as np

from .. import __version__
from ..kernels import get_backend
from ..kernels.dtypes import INDEX_DTYPE
from ..policies import REGISTRY
from ..policies.base import VARIANTS, VariantError
from ..results import PassRecord, Result, Summary
from .cpus import cpus
from .machine import Harvest, Machine
from .quantum import resolve as resolve_quantum

__all__ = ["Engine", "PassRecorder", "Harvest", "VariantError", "VARIANTS", "simulate"]


PROGRESS_STEP = 0.05  # simulated seconds between two progress calls


class PassRecorder:
    """The per-pass records of one run and its outcome (what ``Machine.finish`` reported)."""

    def __init__(self, machine):
        self.m = machine
        self.records = []
        self.outcome = {}

    def open_pass(self, kind, start=None):
        m, link = self.m, self.m.link
        at = m.env.now if start is None else start
        rec = PassRecord(pass_=len(self.records), kind=kind, start_s=m.seconds(at))
        rec._marks = (at, link.pages_sent, link.bytes_sent, link.calls, link.zero_pages_sent, m.cpus.writes)
        self.records.append(rec)
        return rec

    def close_pass(self, rec, dirty_pages, brownout_cycles=0, overcopy=0, end=None):
        m, link = self.m, self.m.link
        t0, pages, nbytes, calls, zeros, writes = rec._marks
        m.catch_up()
        rec.duration_s = m.seconds((m.env.now if end is None else end) - t0)
        rec.brownout_s = m.seconds(brownout_cycles)
        rec.dirty_pages = int(dirty_pages)
        rec.pages_copied = link.pages_sent - pages
        rec.bytes = link.bytes_sent - nbytes
        rec.ranges = link.calls - calls
        rec.zero_pages = link.zero_pages_sent - zeros
        rec.overcopy_pages = int(overcopy)
        rec.writes = m.cpus.writes - writes
        del rec._marks
        return rec

    def finish(self, converged, stop_reason, blackout_start, **extra):
        self.outcome = dict(converged=bool(converged), stop_reason=stop_reason, blackout_start=blackout_start,
                            cutover=self.m.env.now, **extra)


class Engine:
    """One simulated mirror of the machine described by ``cfg`` (a validated Config) under its
    page-level policy (or ``policy``, a registered name).

    ``backend`` names the kernel backend ('auto', 'cython', 'numpy'); ``variant`` one of VARIANTS;
    ``seed`` overrides ``sim.seed``. ``env`` and ``link_factory`` go to the `Machine` (a migration
    sharing an environment and links with others, sim/multi.py). Raises VariantError for a variant the policy does not model,
    ValueError for an unknown policy or one that is not page-level, BackendError for an unknown or
    unavailable backend.
    """

    def __init__(self, cfg, backend="auto", variant=None, seed=None, policy=None, env=None, link_factory=None):
        self.cfg = cfg
        self.kernels = get_backend(backend)
        self.variant = variant or cfg.sim.variant
        self.seed = int(cfg.sim.seed if seed is None else seed)
        self.policy_name = policy or cfg.policy
        self.policy = REGISTRY.get(self.policy_name)
        if self.policy.kind != "page":
            raise ValueError(f"the {self.policy_name} policy is a {self.policy.kind} model: use simulate()")
        self.policy.check_variant(self.variant)
        self.quantum_s = resolve_quantum(cfg, self.policy)
        self.machine = Machine(cfg, self.kernels, self.variant, self.seed, self.policy.link_options(cfg),
                               quantum=self.quantum_s, env=env, link_factory=link_factory)
        self.recorder = PassRecorder(self.machine)
        self.machine.recorder = self.recorder

    # -- the run ----------------------------------------------------------------------------------
    def run(self, progress=None):
        """Run the mirror to cut-over (or to ``sim.time_limit``) and return the Result. ``progress``, if
        given, is called as ``progress(simulated_s, passes, dirty_pages)`` every ``PROGRESS_STEP`` of
        simulated time (the dirty pages the last closed pass's harvest found); the run is the same."""
        wall0 = time.perf_counter()
        m = self.machine
        done = self.launch()
        if progress is not None:
            m.env.process(self._ticker(progress, done))
        m.env.run(until=done)
        return self.collect(time.perf_counter() - wall0)

    def launch(self):
        """Warm up, start the CPUs' and the scanner's processes, and return the event of the run's end
        (the scanner's, or the time-limit backstop's); the caller runs the environment."""
        m = self.machine
        self.warm_up()
        m.env.process(cpus(m.env, m.cpus, m.quantum))
        self._scanner = proc = m.env.process(self.policy.scanner(m))
        # A backstop: policies stop themselves at sim.time_limit with their own counters; this only
        # catches one that would not.
        limit = m.env.timeout(m.cycles(self.cfg.sim.time_limit * 1.05 + 1.0))
        return m.env.any_of([proc, limit])

    def collect(self, wall_s, stopped=None):
        """The Result once the event `launch` returned has fired (``wall_s``: the wall time it took).
        ``stopped``, a stop reason, when the run was ended from outside before its scanner finished (a
        fault, sim/faults.py): no cut-over, not converged."""
        if stopped is not None and not self._scanner.triggered:
            self.recorder.outcome = dict(converged=False, stop_reason=stopped, blackout_start=None, cutover=None)
        elif not self._scanner.triggered:
            self.recorder.outcome = dict(converged=False, stop_reason="time-limit", blackout_start=None,
                                         cutover=None)
        return self._result(wall_s)

    def _ticker(self, progress, done):
        """Process role: call ``progress`` every PROGRESS_STEP of simulated time until ``done``. It only
        reads the records, so every other event keeps its order and the run is the same."""
        m = self.machine
        step = max(1, m.cycles(PROGRESS_STEP))
        while not done.triggered:
            yield m.env.timeout(step)
            recs = self.recorder.records
            closed = [r for r in recs if not hasattr(r, "_marks")]
            progress(m.seconds(m.env.now), len(recs), closed[-1].dirty_pages if closed else 0)

    def lost_writes(self, stale):
        """Frames whose partner copy is stale at cut-over; the first ones go into ``stale``.

        When the tracker's memory is outside what is mirrored (``Policy.tracking_outside``: a
        hypervisor's EPT/shadow entries and log bitmap, or a user-space mirror of one process) the
        page-table and bitmap frames are left out of the comparison.
        """
        m = self.machine.memory
        skip = m.pinned_range if self.policy.tracking_outside(self.cfg) else None
        return m.lost_writes(self.kernels, self.machine.partner, skip, stale)

    def achieved_dirty_rate(self, running_end):
        """Mean distinct bytes dirtied per second over the complete measured windows of
        ``workload.dirty_rate_window`` (DirtyRateMeter) before the guest stopped for good (QEMU's
        calc-dirty-rate measure); None if there was none."""
        mach = self.machine
        counts = mach.cpus.meter.finish(running_end)
        if not counts:
            return None
        window_s = mach.seconds(mach.cpus.meter.window)
        return float(np.mean(counts)) * mach.memory.page_size / window_s

    def warm_up(self):
        """Run the workload for ``sim.warmup`` before time 0, a quantum at a time (no SimPy events):
        TLBs and dirty bits are then as on a machine that has been running."""
        m = self.machine
        c = m.cpus
        warm = m.cycles(self.cfg.sim.warmup)
        if warm <= 0:
            return
        c.t_done = -warm
        for t in range(-warm + m.quantum, 0, m.quantum):
            c.advance_to(t)
        c.advance_to(0)
        c.writes = c.walks = c.dirty_sets = c.flush_refills = 0
        c.tracking_cycles = 0.0
        c.running_cycles = 0

    def _result(self, wall_s):
        mach = self.machine
        m, o, link, c = mach.memory, self.recorder.outcome, mach.link, mach.cpus
        if o.get("blackout_start") is None:  # never cut over (time limit, abort): nothing to compare
            o["cutover"] = None
        stale = np.empty(16, dtype=INDEX_DTYPE)
        lost = self.lost_writes(stale) if o["cutover"] else None
        end = o["cutover"] if o["cutover"] is not None else mach.env.now
        running_end = o["blackout_start"] if o["blackout_start"] is not None else mach.env.now
        cpu_cycles = c.ncpu * max(1, running_end)
        lost_cycles = c.tracking_cycles + c.ncpu * mach.brownout_cycles
        counters = dict(
            converged=o["converged"], stop_reason=o["stop_reason"],
            downtime_s=None if o["cutover"] is None else mach.seconds(o["cutover"] - o["blackout_start"]),
            brownout_s=mach.seconds(mach.brownout_cycles), brownouts=mach.brownouts, total_time_s=mach.seconds(end),
            bytes_sent=link.bytes_sent, pages_sent=link.pages_sent, copies_per_page=link.pages_sent / m.n_frames,
            copy_calls=link.calls, zero_pages_sent=link.zero_pages_sent, slowdown=lost_cycles / cpu_cycles,
            lost_writes=lost, stale_frames=[] if not lost else [int(f) for f in stale[:min(lost, 16)]],
            workload_writes=c.writes, dirty_bit_sets=c.dirty_sets, tlb_flush_refills=c.flush_refills,
            tracking_cycles=c.tracking_cycles, memory_pages=m.n_frames, page_size=m.page_size,
            # defaults a policy may restate (QEMU's counters)
            dirty_sync_count=mach.harvests, normal_pages=link.pages_sent - link.zero_pages_sent,
            zero_pages=link.zero_pages_sent, expected_downtime_s=None, throttle_pct=[],
            achieved_dirty_rate_bytes_s=self.achieved_dirty_rate(running_end))
        own = {k: v for k, v in o.items() if k not in ("converged", "stop_reason", "blackout_start", "cutover")}
        summary = Summary.page_level(self.policy_name, len(self.recorder.records), counters, own)
        simulator = {"wall_s": wall_s, "waits": mach.waits + link.timeouts,
                     "quanta": c.t_done // mach.quantum, "simulated_s_per_wall_s": mach.seconds(end) / wall_s
                     if wall_s > 0 else None}
        meta = _meta(self.cfg, self.variant, self.kernels, self.seed)
        meta["quantum_s"] = self.quantum_s
        return Result(summary, list(self.recorder.records), meta, simulator)


def _meta(cfg, variant, kernels, seed):
    """What reproduces a result: the variant, backend, seed, version and the effective config."""
    return {"variant": variant, "backend": kernels.name, "seed": seed, "version": __version__,
            "config": cfg.to_dict()}


def simulate(cfg, backend="auto", variant=None, seed=None, progress=None):
    """Run the mirror described by ``cfg`` and return its Result.

    Page-level policies run on the Engine; fluid and closed-form ones are computed directly, with
    the same result schema. Raises VariantError for a variant the policy does not model, ValueError
    for an unknown policy, BackendError for an unknown or unavailable backend, SummaryError for a
    fluid policy that leaves out a declared field.
    """
    policy = REGISTRY.get(cfg.policy)
    if policy.kind == "page":
        return Engine(cfg, backend=backend, variant=variant, seed=seed).run(progress)
    kernels = get_backend(backend)
    variant = variant or cfg.sim.variant
    policy.check_variant(variant)
    seed = int(cfg.sim.seed if seed is None else seed)
    wall0 = time.perf_counter()
    fields, per_pass = policy.compute(cfg, seed)
    summary = Summary.fluid(cfg.policy, per_pass, fields)
    return Result(summary, per_pass, _meta(cfg, variant, kernels, seed),
                  {"wall_s": time.perf_counter() - wall0, "waits": 0})
