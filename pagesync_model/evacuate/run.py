"""Draining a host: `run_host(host, seed) -> HostResult`, the entry point for one evacuation, and
`plan_host`, the search for the concurrency limit and order that drain it soonest.

`HostResult` (``to_dict`` is the ``--json`` document):
- ``host``, ``platform``, ``concurrency`` (migrations at once, 0 = no limit), ``order``, ``seed``;
- ``drain_s``: seconds from the first migration's start until the last one ended;
- ``migrated`` / ``failed`` / ``lost``: how many VMs cut over / did not (aborted, timed out, not
  converging, failed by a fault after their retries: the source keeps running) / were lost (a fault in
  post-copy);
- ``max_downtime_s``: the longest downtime of a migrated VM (None if none was);
- ``links``: [{name, bandwidth (bytes/s), latency (s)}];
- ``vms``: one `VmOutcome` per VM in start order: ``name``, ``policy``, ``memory_bytes``, ``start_s``
  and ``end_s`` (host clock), ``verdict`` ('migrated', 'failed' or 'lost'), ``stop_reason``, ``converged``,
  ``downtime_s`` (None without a cut-over), ``total_time_s`` (its own migration time), ``bytes_sent``,
  ``cap`` (bytes/s or None), ``channels``, ``rates`` ([[t s, bytes/s], ...], its stream's rate steps),
  ``attempts`` (1 + the times a fault made it start again; the other fields are its last attempt's);
- ``lost``; ``faults``: [{t_s, kind, target (link or VM), edge ('start' or 'end')}];
- ``simulator``: {wall_s, solves}.
``results`` (not in the JSON) holds each VM's full Result (`pagesync_model.results.Result`), in the
same order.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict, dataclass, field

from ..sim.multi import MigrationSpec, run_batch
from .host import ORDERS, order_vms

__all__ = ["VmOutcome", "HostResult", "run_host", "plan_host", "PlanResult"]


@dataclass
class VmOutcome:
    name: str
    policy: str
    memory_bytes: int
    start_s: float
    end_s: float
    verdict: str
    stop_reason: str
    converged: bool
    downtime_s: float | None
    total_time_s: float
    bytes_sent: int
    cap: float | None
    channels: int
    rates: list = field(default_factory=list)
    attempts: int = 1


@dataclass
class HostResult:
    host: str
    platform: str
    concurrency: int
    order: str
    seed: int
    drain_s: float
    migrated: int
    failed: int
    max_downtime_s: float | None
    links: list
    vms: list
    simulator: dict
    results: list = field(default_factory=list, repr=False)
    lost: int = 0
    faults: list = field(default_factory=list)

    def to_dict(self):
        d = asdict(self)
        d.pop("results")
        return d


def run_host(host, seed=None, backend="auto", fault_seed=None):
    """Drain ``host`` (a `Host`, evacuate/host.py): its VMs' migrations in its order, at most its
    concurrency at once, sharing its links, through its faults. ``seed`` replaces the host's seed (VM
    i of the listing gets seed + i unless it states its own); ``fault_seed`` replaces the random
    faults' seeds (the i-th gets fault_seed + i). Returns the HostResult."""
    base = host.seed if seed is None else int(seed)
    vms = order_vms(host.vms, host.order)
    specs = [MigrationSpec(v.name, v.cfg, v.route, v.cap, v.channels, v.seed if v.seed is not None else base + v.index)
             for v in vms]
    wall0 = time.perf_counter()
    randoms = host.random_faults
    if fault_seed is not None:
        randoms = [dataclasses.replace(rf, seed=int(fault_seed) + i) for i, rf in enumerate(randoms)]
    batch = run_batch(specs, host.links, host.concurrency, backend, faults=host.faults, random_faults=randoms,
                      retries=host.retries, retry_delay=host.retry_delay, postcopy_recover=host.postcopy_recover,
                      mss=host.mss, sharing=host.sharing)
    wall = time.perf_counter() - wall0
    out = []
    for run, vm in zip(batch.runs, vms):
        s = run.result.summary
        verdict = "lost" if run.outcome == "lost" else "migrated" if s.downtime_s is not None else "failed"
        out.append(VmOutcome(vm.name, s.policy, vm.memory, run.start_s, run.end_s, verdict,
                             s.stop_reason, bool(s.converged), s.downtime_s, s.total_time_s, int(s.bytes_sent),
                             vm.cap, vm.channels, [[t, r] for t, r in run.rates], run.attempts))
    downs = [o.downtime_s for o in out if o.downtime_s is not None]
    return HostResult(host.name, host.platform, host.concurrency, host.order, base, batch.drain_s,
                      sum(o.verdict == "migrated" for o in out), sum(o.verdict == "failed" for o in out),
                      max(downs) if downs else None,
                      [{"name": n, "bandwidth": bw, "latency": lat} for n, bw, lat in host.links], out,
                      {"wall_s": wall, "solves": batch.solves}, [r.result for r in batch.runs],
                      sum(o.verdict == "lost" for o in out),
                      [{"t_s": t, "kind": k, "target": x, "edge": e} for t, k, x, e in batch.faults])


@dataclass
class PlanResult:
    """The plan: ``best`` (concurrency, order) or None if no candidate met the bound, its HostResult,
    and every candidate tried as {concurrency, order, drain_s, migrated, failed, max_downtime_s, ok}."""
    best: tuple | None
    result: HostResult | None
    tried: list

    def to_dict(self):
        return {"best": None if self.best is None else {"concurrency": self.best[0], "order": self.best[1]},
                "max_downtime_s": self.max_downtime_s, "tried": self.tried,
                "result": None if self.result is None else self.result.to_dict()}

    max_downtime_s: float = 0.0


def plan_host(host, limits=None, orders=None, max_downtime=None, seed=None, backend="auto", on_try=None,
              fault_seed=None):
    """Search the concurrency limits ``limits`` (default 1, 2, 4, ... up to the VM count) and the
    ``orders`` (default all) for the one that drains ``host`` soonest with every VM migrated and no
    downtime over ``max_downtime`` s (default the host's ``max_downtime``; 0 = no bound), none lost. Each
    candidate is a full `run_host` with the same seed; ties go to the lower limit, then the order
    listed first. ``on_try(entry)`` is called after each candidate."""
    n = len(host.vms)
    if limits is None:
        limits, k = [], 1
        while k < n:
            limits.append(k)
            k *= 2
        limits.append(n)
    orders = list(ORDERS) if orders is None else list(orders)
    bound = host.max_downtime if max_downtime is None else max_downtime
    tried, best, best_res = [], None, None
    for lim in limits:
        for order in orders:
            res = run_host(host.with_(concurrency=lim, order=order), seed=seed, backend=backend, fault_seed=fault_seed)
            ok = res.failed == 0 and res.lost == 0 and (not bound or (res.max_downtime_s or 0.0) <= bound)
            entry = {"concurrency": lim, "order": order, "drain_s": res.drain_s, "migrated": res.migrated,
                     "failed": res.failed, "max_downtime_s": res.max_downtime_s, "ok": ok}
            tried.append(entry)
            if on_try is not None:
                on_try(entry)
            if ok and (best_res is None or res.drain_s < best_res.drain_s):
                best, best_res = (lim, order), res
    return PlanResult(best, best_res, tried, bound)
