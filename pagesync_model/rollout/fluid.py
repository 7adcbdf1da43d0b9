"""The fluid host model: many hosts' migrations at once, each VM the ``analytic`` policy's per-round
pre-copy model, its rate its stream's max-min fair share of the links it crosses.

A VM of M bytes dirtying D bytes/s sends round 0 (M bytes), then round i the bytes dirtied while
round i-1 ran (D x its duration, at most M), as the analytic policy does (policies/analytic.py), but
at the rate its stream gets on the shared links (`max_min_rates`, payload = wire rate x the link's
efficiency), which is solved again whenever a stream starts or ends. When a round ends, the next is
the stop-and-copy if D is below the payload rate and the next round fits ``downtime_limit`` at the
current payload rate (the analytic stop rule); a VM whose rounds reach ``max_rounds`` first did not
converge and ends there, failed (an operator's timeout would abort it), without a cut-over. The
stop-and-copy is sent at the stream's share too; the downtime is its duration plus the route's
latency. No pages, no per-copy costs, no operator layer: for idle guests it gives the page-level
drain times within the per-copy overheads (tests/test_rollout.py checks 1%).

`run_fluid(groups, links)` is the entry point; a group is one host's migrations, started in order,
at most its ``concurrency`` at once (0: all).
"""
from dataclasses import dataclass, field
from typing import Optional

from ..sim.interconnect import max_min_rates

__all__ = ["FluidVm", "FluidGroup", "FluidOutcome", "run_fluid"]


@dataclass
class FluidVm:
    """One migration of the fluid model: ``memory`` bytes, ``dirty`` bytes/s, ``route`` link indices,
    ``efficiency`` payload share of the wire, ``latency`` s (the route's), ``downtime_limit`` s,
    ``max_rounds``, ``cap`` wire bytes/s (None: none), ``channels``."""
    name: str
    memory: float
    dirty: float
    route: list
    efficiency: float = 1.0
    latency: float = 0.0
    downtime_limit: float = 0.3
    max_rounds: int = 30
    cap: Optional[float] = None
    channels: int = 1


@dataclass
class FluidGroup:
    """One host's migrations in start order, at most ``concurrency`` at once (0: no limit)."""
    vms: list
    concurrency: int = 0


@dataclass
class FluidOutcome:
    """What one migration did: ``group`` and ``index`` (its place in its group), start and end (s),
    ``converged``, ``downtime_s`` (None if it did not converge), ``rounds`` (live rounds), ``bytes``."""
    group: int
    index: int
    name: str
    start_s: float
    end_s: float
    converged: bool
    downtime_s: Optional[float]
    rounds: int
    bytes: float


@dataclass
class _Stream:
    vm: FluidVm
    group: int
    index: int
    start: float
    left: float                 # payload bytes left in this phase
    round_start: float
    rounds: int = 0             # live rounds finished
    stop: bool = False          # in the stop-and-copy
    converged: bool = False
    stop_start: float = 0.0
    sent: float = 0.0
    rate: float = 0.0           # wire bytes/s


@dataclass
class FluidRun:
    outcomes: list = field(default_factory=list)
    end_s: float = 0.0
    solves: int = 0


def run_fluid(groups, links):
    """Run the groups' migrations over ``links`` (wire bytes/s of each link; routes index them) from
    time 0 until every one ended. Returns a FluidRun (outcomes in end order, ``end_s`` the last end)."""
    caps = [float(c) for c in links]
    queues = [list(g.vms) for g in groups]
    nexts = [0] * len(groups)
    running = [0] * len(groups)
    active = []
    out = FluidRun()
    now = 0.0
    eps = 1e-9

    def start(g):
        while nexts[g] < len(queues[g]) and (not groups[g].concurrency or running[g] < groups[g].concurrency):
            vm = queues[g][nexts[g]]
            active.append(_Stream(vm, g, nexts[g], now, float(vm.memory), now))
            nexts[g] += 1
            running[g] += 1

    def solve():
        rates = max_min_rates(caps, [s.vm.route for s in active], [s.vm.channels for s in active],
                              [s.vm.cap for s in active])
        for s, r in zip(active, rates):
            s.rate = r
        out.solves += 1

    for g in range(len(groups)):
        start(g)
    if active:
        solve()
    while active:
        dt = min(s.left / (s.rate * s.vm.efficiency) for s in active)
        now += dt
        ended = False
        for s in list(active):
            payload = s.rate * s.vm.efficiency
            moved = min(s.left, payload * dt)
            s.left -= moved
            s.sent += moved
            if s.left > eps * max(1.0, s.vm.memory):
                continue
            s.left = 0.0
            while s.left == 0.0 and s in active:
                if s.stop:
                    active.remove(s)
                    running[s.group] -= 1
                    down = now - s.stop_start + s.vm.latency
                    out.outcomes.append(FluidOutcome(s.group, s.index, s.vm.name, s.start, now, s.converged,
                                                     down if s.converged else None, s.rounds, s.sent))
                    ended = True
                    start(s.group)
                    break
                s.rounds += 1
                nxt = min(float(s.vm.memory), s.vm.dirty * (now - s.round_start))
                payload = s.rate * s.vm.efficiency
                if s.vm.dirty < payload and nxt <= payload * s.vm.downtime_limit:
                    s.stop, s.converged, s.stop_start, s.left = True, True, now, nxt
                elif s.rounds >= s.vm.max_rounds:  # no cut-over: it ends here, failed
                    s.stop, s.converged, s.stop_start, s.left = True, False, now, 0.0
                else:
                    s.left, s.round_start = nxt, now
        if ended and active:
            solve()
    out.end_s = now
    return out
