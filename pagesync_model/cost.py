"""The cost guard: what a run will ask of this machine, estimated from its config before it starts.

A config can be valid, every value within its field's physical range, and still describe a run no
workstation finishes: a 1 ns quantum over an hour of simulated time is 3.6e12 steps. `estimate`
bounds from above the three things a page-level run's cost grows with (steps of ``sim.quantum``,
simulated page writes, and model state for the page frames) and `check` refuses a run whose
estimate passes LIMITS, naming the estimate, the fields that drive it and ``--force``.

The estimate is an upper bound, not a prediction: the mirror is taken to last until its policy's
last possible pass with every pass copying all of memory (``qemu``, which has no such pass, until
``sim.time_limit``), and every CPU to write at its full rate all along. The closed-form policies
(``simgrid``, ``analytic``) simulate no pages and cost nothing here.
"""
from __future__ import annotations

from dataclasses import dataclass

from .units import format_bytes

# What a 2-core, 24 GiB machine does in about an hour (experiments/performance/bench.py, unloaded:
# ~27 million simulated page writes per wall second with the compiled kernels (the numpy twin is
# ~14 times slower), ~30 us per quantum, 16 bytes of model state per page frame and 9 per TLB entry).
# Past these a run is refused unless --force.
LIMITS = {
    "quanta": 1e8,             # about an hour of per-quantum work
    "writes": 1e11,            # about an hour of page writes with the compiled kernels
    "state_bytes": 16 << 30,   # two thirds of the machine's memory
}
FRAME_BYTES = 16               # PTE (8) + page version (4) + the partner's version (4) + dirty bit
TLB_ENTRY_BYTES = 9            # tag (8) + flags (1)
XBZRLE_ENTRY_BYTES = 16        # tag (8) + age (8)
SPARSE_BLOCK_BYTES = 64        # block-sparse memory's tables per block, both sides (pagesync_model/sparse.py)
BITMAPS = 6                    # dense dirty bitmaps a policy keeps at most (xen-legacy: five and the memory's)

# the fields to look at when an estimate is over its limit
_DRIVERS = {
    "quanta": "sim.quantum, sim.warmup and sim.time_limit",
    "writes": "workload.rate, cpus.count, dma.rate and sim.time_limit",
    "state_bytes": "memory.size, memory.page_size, cpus.count x cpus.tlb_entries and qemu.xbzrle_cache",
}


@dataclass(frozen=True)
class Estimate:
    """Upper bounds of a run's cost: ``simulated_s`` of simulated time (warm-up included), ``quanta``
    steps, ``writes`` simulated page writes, ``pages`` page frames and ``state_bytes`` of model state."""

    simulated_s: float
    quanta: float
    writes: float
    pages: int
    state_bytes: float

    def over(self) -> list[str]:
        """The names in LIMITS this estimate exceeds, in LIMITS order."""
        return [name for name, limit in LIMITS.items() if getattr(self, name) > limit]

    def describe(self) -> str:
        return (f"up to {self.quanta:.3g} quanta, {self.writes:.3g} page writes and {self.pages} pages "
                f"({format_bytes(self.state_bytes)} of model state) over {self.simulated_s:.3g} s simulated")


class CostError(Exception):
    """A run whose estimated cost is beyond LIMITS; ``str()`` is one line ending with the --force hint."""


def _trace_rate(section) -> float:
    """Page writes per second of one CPU replaying ``section.trace`` at its ``time_scale``."""
    from .workloads.replay import load_trace
    trace = load_trace(section.trace)
    if trace.n_intervals == 0:
        return 0.0
    seconds = max(int(trace.t_end_ns[-1]), 1) / 1e9 * section.time_scale
    return len(trace.pages) / seconds


def _pattern_rate(section) -> float:
    """Page writes per second per CPU of a workload section: its fastest phase, or itself."""
    leaves = section.phases or (section,)
    return max(_trace_rate(p) if p.kind == "trace" else p.rate for p in leaves)


def write_rate(cfg) -> float:
    """Page writes per second of every CPU and device together, at full speed."""
    w = cfg.workload
    cpus = sum(g.cpus * _pattern_rate(g) for g in w.groups) if w.groups else cfg.cpus.count * _pattern_rate(w)
    return cpus + cfg.dma.rate


def mirror_seconds(cfg) -> float:
    """Simulated seconds the mirror can last at most: to its policy's last possible pass, each copying
    all of memory at the link's (or the policy's rate limit's) speed, and never past the engine's
    backstop at ``sim.time_limit``."""
    backstop = cfg.sim.time_limit * 1.05 + 1.0
    bandwidth = cfg.link.bandwidth * cfg.link.efficiency
    if cfg.policy == "stratus":
        passes = cfg.stratus.passes + 2                      # the full copy, the passes, the blackout
    elif cfg.policy == "xen-legacy":
        passes = min(cfg.xen.max_iters, cfg.xen.max_factor) + 1
        if cfg.xen.rate_limit:
            bandwidth = min(bandwidth, cfg.xen.start_rate)
    elif cfg.policy == "xen-v2":
        passes = cfg.xen.v2_max_iterations + 1
    else:
        return backstop
    return min(backstop, passes * cfg.memory.size / bandwidth)


def estimate(cfg) -> Estimate:
    """Upper bounds of the cost of running ``cfg`` (a built Config), as the module says."""
    from .policies import get_policy
    from .sim.quantum import resolve as resolve_quantum
    if get_policy(cfg.policy).kind == "fluid":  # no pages, no quanta: computed in closed form
        return Estimate(0.0, 0.0, 0.0, 0, 0.0)
    simulated = cfg.sim.warmup + mirror_seconds(cfg)
    clock = cfg.cpus.clock
    quantum = resolve_quantum(cfg, get_policy(cfg.policy))
    quanta = simulated * clock / max(1.0, round(quantum * clock))
    pages = cfg.memory.size // cfg.memory.page_size
    state = _frame_state(cfg, pages) + cfg.cpus.count * cfg.cpus.tlb_entries * TLB_ENTRY_BYTES
    if cfg.policy == "qemu" and cfg.qemu.xbzrle:
        entries = max(1, cfg.qemu.xbzrle_cache // cfg.memory.page_size)
        state += (1 << (entries.bit_length() - 1)) * XBZRLE_ENTRY_BYTES
    return Estimate(simulated, quanta, write_rate(cfg) * simulated, pages, state)


def _frame_state(cfg, pages) -> float:
    """Bytes of per-frame state: every frame's, or with block-sparse memory the rows of the blocks the
    working set and the kernel region can reach (a frame's row on both sides), the block tables and
    the dense bitmaps."""
    from .memory import memory_regions, use_sparse
    from .sparse import block_frames
    from .workloads import working_set_pages
    m = cfg.memory
    ws = working_set_pages(cfg.workload, m.page_size)
    if not use_sparse(m, ws * m.page_size):
        return pages * FRAME_BYTES
    regions = memory_regions(m.size, m.page_size, m.kernel_size)
    low = pages - regions.user_bytes // m.page_size
    block = block_frames(m.page_size, m.block // m.page_size if m.layout == "scattered" else 1)
    reached = (-(-ws // block) + 1) * block
    return ((low + min(pages, reached)) * FRAME_BYTES + (pages // block + 1) * SPARSE_BLOCK_BYTES
            + BITMAPS * pages / 8)


def check(cfg, drivers=None) -> Estimate:
    """The estimate of ``cfg``'s cost; raises CostError when it is beyond LIMITS, naming what drives each
    estimate over its limit (``drivers``: LIMITS name -> text, for callers whose users give options
    rather than config fields; default the config fields)."""
    drivers_of = {**_DRIVERS, **(drivers or {})}
    est = estimate(cfg)
    over = est.over()
    if over:
        limits = ", ".join(f"{name.replace('_', ' ')} limit "
                           f"{format_bytes(LIMITS[name]) if name == 'state_bytes' else f'{LIMITS[name]:.3g}'}"
                           for name in over)
        drivers = "; ".join(drivers_of[name] for name in over)
        raise CostError(f"this run would take {est.describe()}, beyond what this machine does in about an "
                        f"hour ({limits}); see {drivers}, or run it anyway with --force")
    return est

