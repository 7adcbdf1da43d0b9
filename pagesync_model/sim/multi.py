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
    in it count from its own start), ``rates`` the (time s, bytes/s) steps of its stream's rate.

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


@dataclass
class BatchRun:
    """A batch's migrations in start order, the time the last one ended (``drain_s``) and how many
    times the fabric re-solved its rates."""
    runs: list
    drain_s: float
    solves: int
    links: list


def _clock(specs):
    clocks = {float(s.cfg.cpus.clock) for s in specs}
    if len(clocks) > 1:
        raise ValueError("the migrations of one batch run on one host: their cpus.clock must agree, got "
                         + ", ".join(f"{c:g}" for c in sorted(clocks)))
    return clocks.pop()


def _migrate(env, fabric, spec, backend, clock, runs, slot=None):
    """Process role: one migration from now until it ends; appends its MigrationRun to ``runs``."""
    origin = env.now
    venv = VmEnv(env, origin)
    stream = fabric.stream(spec.route, nominal=spec.cfg.link.bandwidth, cap=spec.cap, channels=spec.channels,
                           name=spec.name)
    factory = partial(SharedInterconnect.from_config, stream=stream, origin=origin)
    engine = Engine(spec.cfg, backend=backend, seed=spec.seed, env=venv, link_factory=factory)
    done = engine.launch()
    yield done
    result = engine.collect(0.0)
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
    runs.append(MigrationRun(spec, origin / clock, env.now / clock, result,
                             [(t / clock, r) for t, r in stream.history]))
    if slot is not None:
        slot.release()


def run_batch(specs, links, concurrency=0, backend="auto"):
    """Run the migrations ``specs`` (MigrationSpec, in start order) over the shared ``links`` (a
    sequence of (name, bandwidth bytes/s)), at most ``concurrency`` at once (0: all at once), and
    return the BatchRun. Raises ValueError for migrations whose clocks differ or a route naming an
    unknown link (the host config's checks refuse both first)."""
    specs = list(specs)
    if not specs:
        return BatchRun([], 0.0, 0, list(links))
    clock = _clock(specs)
    env = simpy.Environment()
    fabric = Fabric(env, links, clock)
    for s in specs:
        for name in s.route:
            if name not in fabric.names:
                raise ValueError(f"{s.name}: route names the unknown link '{name}'")
    runs = []
    limit = len(specs) if concurrency <= 0 else int(concurrency)
    slots = simpy.Resource(env, capacity=limit)

    def launcher():
        procs = []
        for spec in specs:
            req = slots.request()
            yield req
            procs.append(env.process(_migrate(env, fabric, spec, backend, clock, runs, _Slot(slots, req))))
        yield env.all_of(procs)

    end = env.process(launcher())
    env.run(until=end)
    order = {id(s): i for i, s in enumerate(specs)}
    runs.sort(key=lambda r: order[id(r.spec)])
    return BatchRun(runs, env.now / clock, fabric.solves, list(links))


class _Slot:
    def __init__(self, resource, request):
        self.resource, self.request = resource, request

    def release(self):
        self.resource.release(self.request)
