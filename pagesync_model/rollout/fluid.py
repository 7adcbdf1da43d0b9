"""The fluid host model: many hosts' migrations at once, each VM the ``analytic`` policy's per-round
pre-copy model, its rate its stream's max-min fair share of the links it crosses.

A VM of M bytes dirtying D bytes/s sends round 0 (M bytes), then round i the bytes dirtied while
round i-1 ran (D x its duration, at most M), as the analytic policy does (policies/analytic.py), but
at the rate its stream gets on the shared links (`max_min_rates`, payload = wire rate x the link's
efficiency), which is solved again whenever a stream starts or ends. When a round ends, the next is
the stop-and-copy if D is below the payload rate and the next round fits ``downtime_limit`` at the
current payload rate (the analytic stop rule); a VM whose rounds reach ``max_rounds`` first did not
converge and ends there, failed (an operator's timeout would abort it), without a cut-over (unless a
switch to post-copy is still to come, below). The stop-and-copy is sent at the stream's share too;
the downtime is its duration plus the route's latency. No pages, no per-copy costs, no operator layer: for idle guests it gives the page-level
drain times within the per-copy overheads (tests/test_rollout.py checks 1%).

`run_fluid(groups, links, faults, start)` is the entry point; a group is one host's migrations,
started in order, at most its ``concurrency`` at once (0: all).

Faults (a `FaultPlan`: the batch's outages on its link instances, pagesync_model/sim/faults.py for
what each kind is): a ``stall`` or ``drop`` makes its link's capacity 0 while it lasts (a stalled
stream gets no rate and its guest goes on dirtying, so its round grows); a ``drop`` also ends every
migration crossing the link when it starts, and a ``reset`` the migration of the VM it names: a
pre-copy migration (the stop-and-copy included) fails and its source keeps running (outcome
``fault`` set); one that would start while its route is down or its destination reset fails at once
(the connection is refused).

Post-copy: a VM with ``postcopy_round`` switches at the end of that pre-copy round (unless the stop
rule completed it first), one with ``postcopy_at`` at that time after its start; the source stops (the
downtime: the route's latency), the guest runs on the destination and what it lacks (the round's
dirt, or at a time the round's rest and its dirt so far, at most its memory) is pushed at the
stream's rate. A drop on its route then loses the guest (``lost``), or with ``postcopy_recover`` the
push waits for the link; a reset of its destination loses it. A switch still to come keeps the
rounds going past ``max_rounds``. ``loss`` caps each connection crossing
the link at `mathis_rate` of the route's combined loss and twice its latency (times the
migration's channels, at most its own cap).
"""
import math
from dataclasses import dataclass, field
from typing import Optional

from ..sim.faults import mathis_rate, scheduled
from ..sim.interconnect import Lv08, shared_rates

__all__ = ["FluidVm", "SimgridRule", "FluidGroup", "FluidOutcome", "Outage", "FaultPlan", "run_fluid"]


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
    simgrid: Optional["SimgridRule"] = None
    postcopy_at: Optional[float] = None     # s after its start: the switch to post-copy (None: none)
    postcopy_round: Optional[int] = None    # or at the end of this pre-copy round (0: the first pass)
    postcopy_recover: bool = False          # a drop in post-copy waits for the link (postcopy-recover)


@dataclass(frozen=True)
class SimgridRule:
    """A FluidVm migrated by SimGrid's rules instead of the analytic ones (SimGrid 3.32, as read in
    simgrid/simgrid's tree; experiments/simgrid_agreement/README.md):

    - its dirtying follows its share of its host's CPU: the VM's ``dirty`` is what it dirties with a
      whole core (intensity x mig_speed: MigrationTx's dp_rate = mig_speed x intensity / host speed
      per flop computed, src/plugins/vm/VmLiveMigration.cpp, the flops read by
      sg_vm_lookup_computed_flops, src/plugins/vm/dirty_page_tracking.cpp); the ``busy`` VMs (one
      running task each) of a host of ``cores`` cores share it max-min, each bounded by one core
      (VirtualMachineImpl::update_action_weight: penalty 1 / min(tasks, vCPUs), bound that many
      cores; VMModel::next_occurring_event hands the share to the VM's vCPU;
      src/kernel/resource/VirtualMachineImpl.cpp); a suspended VM takes none (suspend() suspends
      its action); it is on ``host`` until its stop-and-copy and on ``dst`` (if given) after it;
    - its stop rule is stage 2's: after each message of N bytes that took d s (its latency phase
      included), threshold = trunc(N / d x ``max_downtime``) and the next message is what it dirtied
      during that one, trunc(flops x dp_rate) at most ``working_set`` (dp_cap); it stops when the
      threshold is not below that. ``max_rounds`` stage-2 messages without stopping: not converged.
    """
    host: str
    dst: Optional[str] = None
    busy: bool = True
    working_set: float = math.inf
    max_downtime: float = 0.03


@dataclass
class FluidGroup:
    """One host's migrations in start order, at most ``concurrency`` at once (0: no limit), the first
    not before ``start`` s."""
    vms: list
    concurrency: int = 0
    start: float = 0.0


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
    fault: Optional[str] = None    # 'drop' or 'reset' when a fault ended it
    postcopy: bool = False         # it switched to post-copy
    lost: bool = False             # a fault in post-copy lost the guest (never reported as converged)


@dataclass(frozen=True)
class Outage:
    """One fault of a batch: ``kind`` (stall, drop, loss, reset) from ``start`` to ``end`` s on link
    instance ``link`` (stall, drop, loss) or the destination of migration ``target`` (reset, the
    FluidVm's name); ``loss`` for kind loss."""
    kind: str
    start: float
    end: float
    link: Optional[int] = None
    target: Optional[str] = None
    loss: float = 0.0


class FaultPlan:
    """A batch's faults: ``fixed`` Outages and ``randoms`` [(sim.faults.RandomFaults, link index)],
    whose outages are drawn (`scheduled`) as far as the run goes (the draw up to a later horizon
    begins with the draw up to an earlier one, so it does not matter how far); ``mss`` the TCP
    segment payload for loss."""

    def __init__(self, fixed=(), randoms=(), mss=1448, horizon=600.0):
        self.fixed = list(fixed)
        self.randoms = list(randoms)
        self.mss = float(mss)
        self.horizon = 0.0
        self.outages = []
        self._draw(horizon if self.randoms else math.inf)

    def _draw(self, horizon):
        drawn = [Outage(f.kind, f.at, f.at + f.duration, idx, None, f.loss)
                 for rf, idx in self.randoms for f in scheduled(rf, horizon)]
        self.outages = sorted(self.fixed + drawn, key=lambda o: (o.start, o.end, o.kind, o.link or -1,
                                                                 o.target or ""))
        self.horizon = horizon

    def cover(self, t):
        """Draw the random outages at least up to ``t``."""
        while t >= self.horizon:
            self._draw(self.horizon * 2)

    def in_force(self, t):
        """The outages in force at ``t`` (start <= t < end)."""
        self.cover(t)
        return [o for o in self.outages if o.start <= t < o.end]

    def next_edge(self, t):
        """The first instant after ``t`` at which an outage starts or ends (or the draw's horizon)."""
        self.cover(t)
        nxt = self.horizon
        for o in self.outages:
            if o.start > t:
                nxt = min(nxt, o.start)
                break  # sorted by start: later ones start later still
        for o in self.outages:
            if o.start <= t < o.end:
                nxt = min(nxt, o.end)
        return nxt

    def clear_at(self, t, links, targets):
        """The first instant from ``t`` at which no drop is in force on ``links`` and no reset on
        ``targets`` (when a failed migration can be started again)."""
        links, targets = set(links), set(targets)
        while True:
            block = [o.end for o in self.in_force(t) if (o.kind == "drop" and o.link in links)
                     or (o.kind == "reset" and o.target in targets)]
            if not block:
                return t
            t = max(block)


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
    wait_until: float = -math.inf   # sharing 'simgrid': in a message's latency phase until then
    acking: bool = False        # sharing 'simgrid': resumed, the acknowledgement on its way
    resume: float = 0.0
    msg: float = 0.0            # SimgridRule: this message's bytes
    post: bool = False          # in post-copy: the guest runs on the destination, the rest is pushed
    core_s: float = 0.0         # SimgridRule: core-seconds the guest computed since the last lookup


@dataclass
class FluidRun:
    outcomes: list = field(default_factory=list)
    end_s: float = 0.0
    solves: int = 0


def run_fluid(groups, links, faults=None, start=0.0, sharing="equal", latencies=None, host_cores=None):
    """Run the groups' migrations over ``links`` (wire bytes/s of each link; routes index them) from
    time ``start`` until every one ended, through the outages of ``faults`` (a FaultPlan or None).
    ``sharing``: 'equal' (`max_min_rates`) or 'simgrid' (SimGrid's LV08, `shared_rates`, over the
    links' ``latencies``), in which each message (round 0, every live round, the stop-and-copy) also
    starts with SimGrid's latency phase, latency_factor x the route's latency at no rate, the
    downtime is the stop-and-copy's message (latency phase included) and the migration ends one
    more latency phase later (the destination's acknowledgement), as SimGrid's migration plugin
    sends them (VmLiveMigration.cpp). A VM with a ``simgrid`` rule (`SimgridRule`) dirties at its
    share of its host's CPU (``host_cores``: cores per host name, 1 when not given) and stops by
    SimGrid's stage-2 rule. Returns a FluidRun (outcomes in end order, ``end_s`` the last end)."""
    lv08 = sharing == "simgrid"
    lat_phase = (lambda vm: Lv08.latency_factor * vm.latency) if lv08 else (lambda vm: 0.0)
    nominal = [float(c) for c in links]
    caps = list(nominal)
    queues = [list(g.vms) for g in groups]
    nexts = [0] * len(groups)
    running = [0] * len(groups)
    active = []
    out = FluidRun()
    now = float(start)
    eps = 1e-9
    down, losses, resets = set(), {}, set()   # link instances down, loss per link, targets reset
    # SimgridRule: where each busy VM computes ((group, index) -> host name; None while suspended)
    where = {(g, i): vm.simgrid.host for g, grp in enumerate(groups) for i, vm in enumerate(grp.vms)
             if vm.simgrid is not None and vm.simgrid.busy}
    cores = dict(host_cores or {})
    shares = {}
    timed = any(vm.postcopy_at is not None for g in groups for vm in g.vms)   # a switch at a time

    def reshare():
        """Each busy VM's share of a core: its host's cores split max-min, at most one each."""
        count = {}
        for h in where.values():
            if h is not None:
                count[h] = count.get(h, 0) + 1
        shares.clear()
        for key, h in where.items():
            if h is not None:
                shares[key] = min(1.0, cores.get(h, 1) / count[h])

    def relocate(s, host):
        key = (s.group, s.index)
        if key in where:
            where[key] = host
            reshare()

    reshare()

    def broken(vm):
        return any(i in down_hard for i in vm.route) or vm.name in resets

    def fail(s, why):
        active.remove(s)
        running[s.group] -= 1
        out.outcomes.append(FluidOutcome(s.group, s.index, s.vm.name, s.start, now, False, None, s.rounds, s.sent,
                                         why, s.post, s.post))

    def switch(s, left):
        """The switch to post-copy: the source stops (the downtime: the route's latency, as a
        stop-and-copy with nothing to send), the guest runs on the destination from now and the
        ``left`` bytes it still lacks are pushed at the stream's rate."""
        s.post, s.stop_start, s.left, s.round_start = True, now, min(float(s.vm.memory), left), now
        s.wait_until = -math.inf

    def switch_pending(s):
        vm = s.vm
        return ((vm.postcopy_at is not None and now < s.start + vm.postcopy_at)
                or (vm.postcopy_round is not None and s.rounds - 1 < vm.postcopy_round))

    def start_group(g):
        if now < groups[g].start:
            return
        while nexts[g] < len(queues[g]) and (not groups[g].concurrency or running[g] < groups[g].concurrency):
            vm = queues[g][nexts[g]]
            s = _Stream(vm, g, nexts[g], now, float(vm.memory), now, msg=float(vm.memory))
            if lv08:
                s.wait_until = now + lat_phase(vm)
            nexts[g] += 1
            running[g] += 1
            active.append(s)
            if faults is not None and broken(vm):  # the connection is refused: it fails at once
                fail(s, "drop" if vm.name not in resets else "reset")

    def cap_of(vm):
        if not losses:
            return vm.cap
        keep = 1.0
        for i in vm.route:
            keep *= losses.get(i, 1.0)
        tcp = mathis_rate(1.0 - keep, 2 * vm.latency, faults.mss)
        if tcp is None:
            return vm.cap
        tcp *= vm.channels
        return tcp if vm.cap is None else min(vm.cap, tcp)

    def solve():
        moving = [s for s in active if s.wait_until <= now]
        rates = shared_rates(sharing, caps, [s.vm.route for s in moving], [s.vm.channels for s in moving],
                             [cap_of(s.vm) for s in moving], latencies, nominal) if moving else []
        for s in active:
            s.rate = 0.0
        for s, r in zip(moving, rates):
            s.rate = r
        out.solves += 1

    down_hard = set()   # links dropped (their connections break), a subset of ``down``

    def apply_faults():
        """Bring the fault state to ``now``; fail the migrations a drop or reset starting now ends."""
        nonlocal down, down_hard, losses, resets
        force = faults.in_force(now)
        new_down = {o.link for o in force if o.kind in ("stall", "drop")}
        new_hard = {o.link for o in force if o.kind == "drop"}
        new_resets = {o.target for o in force if o.kind == "reset"}
        new_losses = {}
        for o in force:
            if o.kind == "loss":
                new_losses[o.link] = new_losses.get(o.link, 1.0) * (1.0 - o.loss)
        hit_links, hit_targets = new_hard - down_hard, new_resets - resets
        down, down_hard, losses, resets = new_down, new_hard, new_losses, new_resets
        for i, c in enumerate(nominal):
            caps[i] = 0.0 if i in down else c
        for s in list(active):
            if s.vm.name in hit_targets:
                fail(s, "reset")     # in post-copy the guest was on the destination: lost
            elif any(i in hit_links for i in s.vm.route):
                if s.post and s.vm.postcopy_recover:
                    continue         # the guest waits for its pages until the link is back
                fail(s, "drop")
        for g in range(len(groups)):
            start_group(g)

    if faults is not None:
        apply_faults()
    else:
        for g in range(len(groups)):
            start_group(g)
    later = sorted({g.start for g in groups if g.start > now})
    if active:
        solve()
    while active or later:
        dt = min([s.left / (s.rate * s.vm.efficiency) for s in active
                  if s.rate > 0 and s.left > 0 and s.wait_until <= now] or [math.inf])
        edge = math.inf if faults is None else faults.next_edge(now)
        if lv08:  # a latency phase's end is an edge too (kept exact: a step is never below a float's grain)
            edge = min([edge] + [s.wait_until for s in active if s.wait_until > now])
        if later:  # a group's start
            edge = min(edge, later[0])
        if timed:
            edge = min([edge] + [s.start + s.vm.postcopy_at for s in active if s.vm.postcopy_at is not None
                                 and not s.stop and not s.post and s.start + s.vm.postcopy_at > now])
        at_edge = edge <= now + dt
        if at_edge:
            dt = edge - now
        if dt == math.inf:
            raise RuntimeError("fluid model: no stream can move and no fault will end")
        now = edge if at_edge else now + dt
        ended = False
        if shares:
            for s in active:
                if s.vm.simgrid is not None:
                    s.core_s += shares.get((s.group, s.index), 0.0) * dt
        for s in list(active):
            payload = s.rate * s.vm.efficiency
            moved = min(s.left, payload * dt)
            s.left -= moved
            s.sent += moved
            if s.left > eps * max(1.0, s.vm.memory):
                continue
            s.left = 0.0
            if s.wait_until > now:  # a latency phase still running
                continue
            while s.left == 0.0 and s in active and s.wait_until <= now:
                if s.post:   # every page is on the destination
                    active.remove(s)
                    running[s.group] -= 1
                    out.outcomes.append(FluidOutcome(s.group, s.index, s.vm.name, s.start, now, True, s.vm.latency,
                                                     s.rounds, s.sent, None, True))
                    ended = True
                    start_group(s.group)
                    break
                if s.stop and lv08 and not s.acking and s.converged:
                    # resumed on the destination; its acknowledgement comes back a latency phase later
                    s.acking, s.resume, s.wait_until = True, now, now + lat_phase(s.vm)
                    if s.vm.simgrid is not None:
                        relocate(s, s.vm.simgrid.dst)
                    ended = True
                    break
                if s.stop:
                    if s.vm.simgrid is not None and s.converged and not lv08:
                        relocate(s, s.vm.simgrid.dst)
                    active.remove(s)
                    running[s.group] -= 1
                    down_s = (s.resume - s.stop_start) if lv08 else now - s.stop_start + s.vm.latency
                    out.outcomes.append(FluidOutcome(s.group, s.index, s.vm.name, s.start, now, s.converged,
                                                     down_s if s.converged else None, s.rounds, s.sent))
                    ended = True
                    start_group(s.group)
                    break
                s.rounds += 1
                rule = s.vm.simgrid
                if rule is not None:
                    # SimGrid's stage 2: the threshold from this message's bandwidth, the next
                    # message what the guest dirtied while it ran (VmLiveMigration.cpp)
                    took = now - s.round_start
                    threshold = math.floor(s.msg / took * rule.max_downtime) if took > 0 else math.inf
                    nxt = float(min(math.floor(s.core_s * s.vm.dirty), rule.working_set))
                    s.core_s = 0.0
                    stop = not threshold < nxt
                else:
                    nxt = min(float(s.vm.memory), s.vm.dirty * (now - s.round_start))
                    payload = s.rate * s.vm.efficiency
                    stop = s.vm.dirty < payload and nxt <= payload * s.vm.downtime_limit
                if stop:
                    s.stop, s.converged, s.stop_start, s.left = True, True, now, nxt
                    if rule is not None:
                        relocate(s, None)   # suspended: its guest computes nothing
                elif s.vm.postcopy_round is not None and s.rounds - 1 >= s.vm.postcopy_round and not s.post:
                    switch(s, nxt)
                    ended = True
                    continue
                elif s.rounds >= s.vm.max_rounds and not switch_pending(s):  # no cut-over: it ends here, failed
                    s.stop, s.converged, s.stop_start, s.left = True, False, now, 0.0
                else:
                    s.left, s.round_start, s.msg = nxt, now, nxt
                if lv08 and not (s.stop and not s.converged):
                    s.wait_until = now + lat_phase(s.vm)   # the next message's latency phase: no rate
                    ended = True
        for s in active if timed else ():   # a switch at its time, in pre-copy: the round's rest and dirt
            if (s.vm.postcopy_at is not None and not s.stop and not s.post
                    and s.start + s.vm.postcopy_at <= now):
                switch(s, s.left + s.vm.dirty * (now - s.round_start))
                ended = True
        if at_edge:
            if faults is not None:
                apply_faults()
            while later and later[0] <= now:
                later.pop(0)
                for g in range(len(groups)):
                    start_group(g)
            ended = True
        if ended and active:
            solve()
    out.end_s = now
    return out
