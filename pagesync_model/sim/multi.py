"""Several migrations on one machine model: each VM with its own memory, workload and policy, all in
one SimPy environment, their streams sharing links (a source NIC, the fabric, a destination NIC)
max-min fairly (sim/interconnect.py: `Fabric`, `SharedInterconnect`).

`run_batch(specs, links, concurrency)` is the entry point: it starts the migrations in the order
given, at most ``concurrency`` at a time, each as soon as a slot is free, and returns a `BatchRun`
with one `MigrationRun` per migration (its start and end on the common clock, its own Result, the
rate its stream got over time). Each migration runs on the engine unchanged: its `Machine` sees an
offset view of the common environment (`VmEnv`) whose clock reads 0 when the migration starts, so
its result reads as a single run's; only its link is the shared one. A migration that shares no
link with a running one gets exactly the result of its single run (tests/test_multi.py).
"""
from dataclasses import dataclass, field
from functools import partial
from typing import Optional

import simpy

from .engine import Engine
from .faults import hold, mathis_rate, scheduled
from .interconnect import Fabric, SharedInterconnect

__all__ = ["MigrationSpec", "MigrationRun", "BatchRun", "VmEnv", "run_batch"]


class VmEnv:
    """A migration's view of the common environment: the same events and queue, its clock offset so
    that it reads 0 at ``origin``. Processes started through it are kept, so that those still
    running when the migration ends (its CPUs' process) can be stopped (`stop`)."""

    def __init__(self, env, origin):
        self._env = env
        self.origin = int(origin)
        self.processes = []

    @property
    def now(self):
        return self._env.now - self.origin

    def peek(self):
        return self._env.peek() - self.origin

    def process(self, generator):
        p = self._env.process(_stoppable(generator))
        self.processes.append(p)
        return p

    def timeout(self, delay, value=None):
        return self._env.timeout(delay, value)

    def event(self):
        return self._env.event()

    def any_of(self, events):
        return self._env.any_of(events)

    def all_of(self, events):
        return self._env.all_of(events)

    def stop(self):
        """Interrupt every process of this migration that is still running."""
        for p in self.processes:
            if p.is_alive:
                p.interrupt("migration ended")


def _stoppable(generator):
    """Run ``generator`` as a process that ends quietly when interrupted by `VmEnv.stop`."""
    try:
        return (yield from generator)
    except simpy.Interrupt:
        return None


@dataclass
class MigrationSpec:
    """One migration: ``cfg`` a validated page-level Config (its ``link`` is the migration's own view
    of its route: bottleneck bandwidth and summed latency), ``route`` the names of the fabric's links
    it crosses, ``cap`` its own rate limit in bytes/s on the wire (None: none; QEMU max-bandwidth,
    KubeVirt bandwidthPerMigration), ``channels`` its connections (multifd channels), ``seed`` its
    write streams' seed (None: ``sim.seed``)."""
    name: str
    cfg: object
    route: list
    cap: Optional[float] = None
    channels: int = 1
    seed: Optional[int] = None


@dataclass
class MigrationRun:
    """What one migration of a batch did: ``start_s`` and ``end_s`` on the batch's clock (seconds
    from the batch's start; ``end_s`` is when it ended, cut over or not), ``result`` its Result (times
    in it count from its own start; with faults, its last attempt's), ``rates`` the (time s,
    bytes/s) steps of its stream's rate (over all its attempts), ``attempts`` how many times it was
    started, ``last_start_s`` when the last attempt started, ``outcome`` 'done', 'failed' (a fault ended
    its last attempt) or 'lost' (a fault ended it in post-copy: the guest is lost).

    A migration that stopped early as unable to converge (``stop_reason`` steady-state,
    ``sim.early_stop``) keeps its stream busy at its share until the end its outcome was projected
    to (``sim.time_limit`` after its start), which is its ``end_s``; the projection took the share it had when it
    stopped, so when others end before it its outcome is pessimistic (``sim.early_stop: false``
    simulates it to the end)."""
    spec: MigrationSpec
    start_s: float
    end_s: float
    result: object
    rates: list = field(default_factory=list)
    attempts: int = 1
    last_start_s: float = 0.0
    outcome: str = "done"


@dataclass
class BatchRun:
    """A batch's migrations in start order, the time the last one ended (``drain_s``) and how many
    times the fabric re-solved its rates; ``faults`` the faults' (time s, kind, link or VM, 'start' or
    'end') in time order."""
    runs: list
    drain_s: float
    solves: int
    links: list
    faults: list = field(default_factory=list)


def _clock(specs):
    clocks = {float(s.cfg.cpus.clock) for s in specs}
    if len(clocks) > 1:
        raise ValueError("the migrations of one batch run on one host: their cpus.clock must agree, got "
                         + ", ".join(f"{c:g}" for c in sorted(clocks)))
    return clocks.pop()


class _Faults:
    """The batch's fault state: links down (capacity 0) and their losses, destinations reset, the
    migrations under way to tell when a connection breaks (sim/faults.py)."""

    def __init__(self, env, fabric, latencies, clock, mss, retries, retry_delay, postcopy_recover):
        self.env, self.fabric, self.clock = env, fabric, clock
        self.latency = dict(latencies)
        self.nominal = list(fabric.capacity)
        self.down = [0] * len(self.nominal)          # outages in force per link (stalls and drops)
        self.down_until = [0] * len(self.nominal)
        self.loss = [[] for _ in self.nominal]       # loss probabilities in force per link
        self.reset_until = {}
        self.mss, self.retries, self.retry_delay, self.recover = mss, retries, retry_delay, postcopy_recover
        self.running = {}                            # vm name -> (route indices, break event)
        self.streams = {}                            # vm name -> (stream, own cap, channels, route names)
        self.pauses = {}                             # vm name -> [(start, end) cycles] of its pause faults
        self.log = []                                # [(time s, kind, target, what)]

    def apply(self, fault):
        """Process role: one fault from its start to its end."""
        env, f = self.env, fault
        wait = int(round(f.at * self.clock)) - env.now
        if wait > 0:
            yield env.timeout(wait)
        end = env.now + int(round(f.duration * self.clock))
        self.log.append((env.now / self.clock, f.kind, f.link or f.vm, "start"))
        if f.kind == "pause":  # read by the VM's stop (`hold_s`)
            yield env.timeout(end - env.now)
            self.log.append((env.now / self.clock, f.kind, f.vm, "end"))
            return
        if f.kind == "reset":
            self.reset_until[f.vm] = max(self.reset_until.get(f.vm, 0), end)
            self._break(lambda name, route: name == f.vm, "reset", f"destination of {f.vm} reset")
            yield env.timeout(end - env.now)
            self.log.append((env.now / self.clock, f.kind, f.vm, "end"))
            return
        idx = self.fabric.index(f.link)
        if f.kind == "loss":
            self.loss[idx].append(f.loss)
            self._recap()
            yield env.timeout(end - env.now)
            self.loss[idx].remove(f.loss)
            self._recap()
        else:
            self.down[idx] += 1
            self.down_until[idx] = max(self.down_until[idx], end)
            self.fabric.set_capacity(idx, 0.0)
            if f.kind == "drop":
                self._break(lambda name, route: idx in route, "drop", f"link {f.link} dropped")
            yield env.timeout(end - env.now)
            self.down[idx] -= 1
            if not self.down[idx]:
                self.fabric.set_capacity(idx, self.nominal[idx])
        self.log.append((env.now / self.clock, f.kind, f.link, "end"))

    def hold_s(self, name):
        """Seconds a stop of VM ``name``'s vCPUs beginning now waits for them (its pause faults)."""
        return hold(self.pauses.get(name, ()), self.env.now) / self.clock

    def stop_failed(self, name, why):
        """VM ``name``'s policy gave up stopping its source (a pause fault beyond its system's bound):
        its attempt fails now; returns an event that never fires, for the policy to wait on until the
        attempt stops it."""
        self._break(lambda n, route: n == name, "pause", f"source of {name} could not stop: {why}")
        return self.env.event()

    def _break(self, hit, kind, why):
        for name, (route, ev) in list(self.running.items()):
            if hit(name, route) and not ev.triggered:
                ev.succeed((kind, why))

    def cap(self, route_names, own, channels):
        """A migration's cap with the losses in force on its route."""
        idx = [self.fabric.index(n) for n in route_names]
        keep = 1.0
        for i in idx:
            for p in self.loss[i]:
                keep *= 1.0 - p
        rtt = 2 * sum(self.latency.get(n, 0.0) for n in route_names)
        tcp = mathis_rate(1.0 - keep, rtt, self.mss)
        if tcp is None:
            return own
        tcp *= channels
        return tcp if own is None else min(own, tcp)

    def _recap(self):
        for stream, own, channels, route in self.streams.values():
            cap = self.cap(route, own, channels)
            if cap != stream.cap:
                stream.set_cap(cap)

    def clear_at(self, name, route_names, paused=False):
        """The fabric time at which the route's links are up and the VM's destination is back (and,
        ``paused``: its source can stop its vCPUs again)."""
        t = self.reset_until.get(name, 0)
        if paused:
            t = max(t, self.env.now + hold(self.pauses.get(name, ()), self.env.now))
        for n in route_names:
            i = self.fabric.index(n)
            if self.down[i]:
                t = max(t, self.down_until[i])
        return t


def _in_postcopy(engine):
    return any(r.kind == "postcopy" for r in engine.recorder.records)


def _attempt(env, fabric, spec, backend, clock, faults):
    """Process step: one attempt at the migration, from now until it ends or a fault ends it; returns
    (engine result, end kind: 'done', 'failed' or 'lost', rate steps, the fault that ended it: None,
    'drop', 'reset' or 'pause')."""
    origin = env.now
    venv = VmEnv(env, origin)
    cap = spec.cap if faults is None else faults.cap(spec.route, spec.cap, spec.channels)
    stream = fabric.stream(spec.route, nominal=spec.cfg.link.bandwidth, cap=cap, channels=spec.channels,
                           name=spec.name)
    factory = partial(SharedInterconnect.from_config, stream=stream, origin=origin)
    engine = Engine(spec.cfg, backend=backend, seed=spec.seed, env=venv, link_factory=factory)
    if faults is not None and spec.name in faults.pauses:
        engine.machine.pause_hold = partial(faults.hold_s, spec.name)
        engine.machine.stop_failed = partial(faults.stop_failed, spec.name)
    done = engine.launch()
    outcome, stopped, cause = "done", None, None
    if faults is None:
        yield done
    else:
        route = {fabric.index(n) for n in spec.route}
        faults.streams[spec.name] = (stream, spec.cap, spec.channels, spec.route)
        # a plain event for the end: a Condition inside another one loses its own callbacks when the
        # outer one fires first (SimPy removes them recursively), and would then never fire
        finished = env.event()
        done.callbacks.append(lambda _e: finished.succeed())
        while not finished.triggered:
            broke = env.event()
            faults.running[spec.name] = (route, broke)
            yield env.any_of([finished, broke])
            if finished.triggered or not broke.triggered:
                break
            kind, why = broke.value
            post = _in_postcopy(engine)
            if post and kind == "drop" and faults.recover:
                continue  # postcopy-recover: the guest waits on the destination until the link is back
            outcome, cause = ("lost" if post else "failed"), kind
            stopped = f"{'lost' if post else 'failed'} ({why}{' in post-copy' if post else ''})"
            break
        faults.running.pop(spec.name, None)
        faults.streams.pop(spec.name, None)
    if stopped is not None:
        venv.stop()
        for rec in engine.recorder.records:
            if hasattr(rec, "_marks"):
                engine.recorder.close_pass(rec, 0)
    result = engine.collect(0.0, stopped=stopped)
    venv.stop()
    s = result.summary
    if s.stop_reason == "steady-state":
        # stopped early as unable to converge (sim.early_stop), its outcome projected to its time
        # limit: it keeps sending at its share until then, as the migration it stands for would
        end = origin + int(round(spec.cfg.sim.time_limit * clock))
        if end > env.now:
            stream.push(end - env.now + 1)
            yield env.timeout(end - env.now)
    fabric.close(stream)
    return result, outcome, stream.history, cause


def _migrate(env, fabric, spec, backend, clock, runs, slot=None, faults=None):
    """Process role: one migration from now until it ends (after its retries, when faults end its
    attempts); appends its MigrationRun to ``runs``."""
    first = env.now
    rates, attempts = [], 0
    while True:
        attempts += 1
        start = env.now
        result, outcome, history, cause = yield from _attempt(env, fabric, spec, backend, clock, faults)
        rates += history
        if outcome != "failed":
            break
        again = spec.cfg.policy == "stratus" or attempts <= faults.retries
        ready = max(faults.clear_at(spec.name, spec.route, cause == "pause"), env.now) \
            + int(round(faults.retry_delay * clock))
        if not again or ready - first >= spec.cfg.sim.time_limit * clock:
            break
        yield env.timeout(ready - env.now)
    runs.append(MigrationRun(spec, first / clock, env.now / clock, result, [(t / clock, r) for t, r in rates],
                             attempts, start / clock, outcome))
    if slot is not None:
        slot.release()


def run_batch(specs, links, concurrency=0, backend="auto", faults=(), random_faults=(), retries=0,
              retry_delay=0.0, postcopy_recover=False, mss=1448, sharing="equal"):
    """Run the migrations ``specs`` (MigrationSpec, in start order) over the shared ``links`` (a
    sequence of (name, bandwidth bytes/s) or (name, bandwidth, latency s)), at most ``concurrency``
    at once (0: all at once), and return the BatchRun.

    ``faults`` (sim/faults.py `Fault`) and ``random_faults`` (`RandomFaults`) happen on the way;
    ``retries`` is how many times a failed pre-copy migration is started again (after its route is
    up, its destination back and ``retry_delay`` s), ``postcopy_recover`` whether a post-copy whose
    link drops recovers, ``mss`` the TCP segment payload that loss bounds. Raises ValueError for
    migrations whose clocks differ or a route or fault naming an unknown link (the host config's
    checks refuse these first). ``sharing``: how a link is shared between streams, 'equal' (max-min
    per connection) or 'simgrid' (SimGrid's LV08 rule, sim/interconnect.py `shared_rates`)."""
    specs = list(specs)
    links = [tuple(ln) for ln in links]
    if not specs:
        return BatchRun([], 0.0, 0, links)
    clock = _clock(specs)
    env = simpy.Environment()
    fabric = Fabric(env, [(ln[0], ln[1]) for ln in links], clock, sharing,
                    [ln[2] if len(ln) > 2 else 0.0 for ln in links])
    for s in specs:
        for name in s.route:
            if name not in fabric.names:
                raise ValueError(f"{s.name}: route names the unknown link '{name}'")
    fault_state = None
    if faults or random_faults:
        fault_state = _Faults(env, fabric, [(ln[0], ln[2] if len(ln) > 2 else 0.0) for ln in links], clock, mss,
                              retries, retry_delay, postcopy_recover)
        horizon = sum(s.cfg.sim.time_limit for s in specs) * (retries + 1) + 1.0
        every = list(faults) + [f for rf in random_faults for f in scheduled(rf, horizon)]
        for f in every:
            if f.kind == "pause":
                fault_state.pauses.setdefault(f.vm, []).append((int(round(f.at * clock)),
                                                                int(round((f.at + f.duration) * clock))))
            if f.link is not None and f.link not in fabric.names:
                raise ValueError(f"a {f.kind} fault names the unknown link '{f.link}'")
            env.process(fault_state.apply(f))
    runs = []
    limit = len(specs) if concurrency <= 0 else int(concurrency)
    slots = simpy.Resource(env, capacity=limit)

    def launcher():
        procs = []
        for spec in specs:
            req = slots.request()
            yield req
            procs.append(env.process(_migrate(env, fabric, spec, backend, clock, runs, _Slot(slots, req),
                                              fault_state)))
        yield env.all_of(procs)

    end = env.process(launcher())
    env.run(until=end)
    order = {id(s): i for i, s in enumerate(specs)}
    runs.sort(key=lambda r: order[id(r.spec)])
    return BatchRun(runs, env.now / clock, fabric.solves, links, [] if fault_state is None else fault_state.log)


class _Slot:
    def __init__(self, resource, request):
        self.resource, self.request = resource, request

    def release(self):
        self.resource.release(self.request)
