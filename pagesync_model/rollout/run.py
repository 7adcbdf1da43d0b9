"""Running a rollout: one task per (seed, batch), on Dask or in this process, journalled for --resume.

A batch starts when the one before it has finished its drain and its maintenance, and carries
nothing over, so the batches of a run are independent tasks and a run's figures are sums and maxima
over its batches: ``duration_s`` the sum of the batches' drain plus maintenance, ``failed`` and
``retried`` sums, ``max_downtime_s`` the largest. `batch_row(cluster, seed, batch)` is what a worker
runs: the batch's hosts drawn (cluster.draw_host), drained together in the fluid model
(rollout/fluid.py) with their shared links, then the VMs that failed migrated again (up to
``rollout.retries`` times; each retry pass waits for the previous one). `run_rollout` runs the tasks
(LocalCluster by default, any scheduler by address, or 'inprocess'), journals each row as it comes
(PREFIX.journal, the sweep journal's format: a run killed at any moment resumes with --resume),
and returns a `RolloutResult`; ``summary`` holds the distribution over seeds (median, p90, max; p90
by linear interpolation between order statistics, numpy's default).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

from .cluster import batch_groups, batch_latencies, draw_host, fault_plan
from .fluid import run_fluid

__all__ = ["batch_row", "run_rollout", "RolloutResult", "summarize", "RolloutError"]

FIELDS = ("duration_s", "failed", "retried", "lost", "max_downtime_s")


class RolloutError(ValueError):
    """A journal or output that cannot be used; one line."""


def batch_row(cluster, seed, batch):
    """Drain batch ``batch`` of run ``seed`` and return its row: run_id, seed, batch, hosts, vms,
    drain_s (all passes), duration_s (drain + maintenance), migrated, failed, retried,
    fault_failed (attempts a fault ended), lost (guests a fault lost in post-copy: not retried, never
    counted as migrated), max_downtime_s (None if no VM cut over), passes, wall_s.
    With faults (cluster.fault_plan) the passes run on the batch's one time line: a retry pass
    starts when the previous one has ended and the routes of the VMs it retries are up."""
    t0 = time.perf_counter()
    first = batch * cluster.batch
    count = min(cluster.batch, cluster.hosts - first)
    hosts = [draw_host(cluster, seed, first + i) for i in range(count)]
    plan = fault_plan(cluster, seed, batch, count)
    now = 0.0
    migrated = retried = fault_failed = lost = 0
    downs = []
    todo = hosts
    passes = 0
    failed = 0
    for attempt in range(cluster.retries + 1):
        if not any(todo):
            break
        groups, caps = batch_groups(cluster, todo, first)
        if attempt and plan is not None:
            now = plan.clear_at(now, {i for g in groups for v in g.vms for i in v.route},
                                {v.name for g in groups for v in g.vms})
        lats = batch_latencies(cluster, len(todo))
        if plan is None:  # each pass on its own clock (the passes meet no faults)
            run = run_fluid(groups, caps, sharing=cluster.sharing, latencies=lats)
            now += run.end_s
        else:
            run = run_fluid(groups, caps, plan, now, cluster.sharing, lats)
            now = max(now, run.end_s)
        passes += 1
        if attempt:
            retried += sum(len(vms) for vms in todo)
        again = [[] for _ in todo]
        for o in run.outcomes:
            if o.converged:
                migrated += 1
                downs.append(o.downtime_s)
            elif o.lost:
                lost += 1
                fault_failed += 1
            else:
                fault_failed += o.fault is not None
                again[o.group].append(todo[o.group][o.index])
        failed = sum(len(vms) for vms in again)
        todo = again
    return {"run_id": f"s{seed}-b{batch}", "seed": seed, "batch": batch, "hosts": count,
            "vms": sum(len(h) for h in hosts), "drain_s": now, "duration_s": now + cluster.maintenance,
            "migrated": migrated, "failed": failed, "retried": retried, "fault_failed": fault_failed, "lost": lost,
            "max_downtime_s": max(downs) if downs else None, "passes": passes,
            "wall_s": time.perf_counter() - t0}


def _quantiles(values):
    import numpy as np
    vals = [v for v in values if v is not None]
    if not vals:
        return {"median": None, "p90": None, "max": None}
    a = np.asarray(vals, dtype=float)
    return {"median": float(np.median(a)), "p90": float(np.percentile(a, 90)), "max": float(a.max())}


def summarize(cluster, rows):
    """Per seed: its figures over its batches ({seed, duration_s, vms, migrated, failed, retried,
    fault_failed, lost, max_downtime_s}), and the distribution of each over the seeds with all their
    batches done; with faults, ``distribution['fault_failure']``: ``p_run`` the share of runs in
    which a fault made at least one migration fail, ``p_attempt`` the share of migration attempts
    (VMs + retries) a fault ended, over all the runs."""
    by_seed = {}
    for r in rows:
        by_seed.setdefault(r["seed"], []).append(r)
    runs = []
    for seed in sorted(by_seed):
        rs = by_seed[seed]
        if len({r["batch"] for r in rs}) != cluster.batches:
            continue
        downs = [r["max_downtime_s"] for r in rs if r["max_downtime_s"] is not None]
        runs.append({"seed": seed, "duration_s": sum(r["duration_s"] for r in rs), "vms": sum(r["vms"] for r in rs),
                     "migrated": sum(r["migrated"] for r in rs), "failed": sum(r["failed"] for r in rs),
                     "retried": sum(r["retried"] for r in rs),
                     "fault_failed": sum(r.get("fault_failed", 0) for r in rs),
                     "lost": sum(r.get("lost", 0) for r in rs),
                     "max_downtime_s": max(downs) if downs else None})
    dist = {f: _quantiles([r[f] for r in runs]) for f in FIELDS}
    if cluster.faults or cluster.random_faults:
        dist["fault_failed"] = _quantiles([r["fault_failed"] for r in runs])
        attempts = sum(r["vms"] + r["retried"] for r in runs)
        dist["fault_failure"] = {
            "p_run": sum(r["fault_failed"] > 0 for r in runs) / len(runs) if runs else None,
            "p_attempt": sum(r["fault_failed"] for r in runs) / attempts if attempts else None}
    return runs, dist


@dataclass
class RolloutResult:
    """``runs`` one entry per seed (summarize), ``distribution`` {field: {median, p90, max}},
    ``tasks`` total, ``skipped`` (already in the journal), ``ran``, ``interrupted``, ``wall_s``."""
    cluster: object
    runs: list
    distribution: dict
    tasks: int
    skipped: int
    ran: int
    interrupted: bool
    wall_s: float

    def to_dict(self):
        c = self.cluster
        return {"cluster": c.name, "hosts": c.hosts, "batch": c.batch, "batches": c.batches,
                "maintenance_s": c.maintenance, "retries": c.retries, "concurrency": c.concurrency, "order": c.order,
                "shared": c.shared, "model": "fluid", "seeds": [r["seed"] for r in self.runs],
                "distribution": self.distribution, "runs": self.runs}


def _tasks(cluster):
    return [(cluster.seed + k, b) for k in range(cluster.seeds) for b in range(cluster.batches)]


def _run_inprocess(cluster, todo, on_row):
    for seed, b in todo:
        on_row(batch_row(cluster, seed, b))


# tasks go to Dask in about this many chunks per worker thread (a (seed, batch) of the fluid model takes
# tens of ms, less than Dask's own cost of scheduling a task and returning its result), each chunk's rows
# journalled together
CHUNKS_PER_WORKER = 8


def batch_rows(cluster, pairs):
    """`batch_row` for each (seed, batch) of ``pairs``, in order: one Dask task's share."""
    return [batch_row(cluster, seed, b) for seed, b in pairs]


def _run_dask(cluster, todo, on_row, scheduler, workers):
    from dask.distributed import as_completed

    from ..sweep.runner import dask_client
    with dask_client(scheduler, workers) as client:
        futures = []
        try:
            threads = max(1, sum(client.nthreads().values()))
            size = -(-len(todo) // (CHUNKS_PER_WORKER * threads))
            chunks = [todo[i:i + size] for i in range(0, len(todo), size)]
            spec = client.scatter(cluster, broadcast=True)
            futures = [client.submit(batch_rows, spec, chunk, pure=False,
                                     key=f"pagesync-rollout-s{chunk[0][0]}-b{chunk[0][1]}-n{len(chunk)}")
                       for chunk in chunks]
            for future in as_completed(futures, loop=client.loop):
                for row in future.result():
                    on_row(row)
                future.release()
        finally:
            if futures:
                client.cancel(futures)


def run_rollout(cluster, prefix=None, scheduler="local", workers=None, resume=False, progress=True):
    """Run every (seed, batch) task of ``cluster`` and return the RolloutResult. ``prefix``: write
    PREFIX.journal as rows come (and keep the rows of an earlier run with ``resume``). ``scheduler``:
    'local' (a LocalCluster of ``workers`` processes), 'inprocess', or a scheduler address. A Ctrl-C
    stops it; the rows so far stay journalled and the result says ``interrupted``. Raises
    RolloutError (journal refused or unwritable), OSError or TimeoutError (scheduler unreachable)."""
    from ..sweep.journal import Journal, JournalError, header
    from ..sweep.progress import Progress

    t0 = time.perf_counter()
    tasks = _tasks(cluster)
    rows, journal = [], None
    if prefix:
        journal = Journal(prefix + ".journal")
        if resume and not os.path.exists(journal.path):
            raise RolloutError(f"--resume: there is no journal '{journal.path}'")
        try:
            journal.lock()
            spec = cluster.spec_hash()
            if resume:
                head, old, _torn = journal.existing()
                if head is not None and head.get("spec") != spec:
                    raise RolloutError(f"--resume: '{journal.path}' was written by a different rollout (its "
                                       "cluster, host or model version changed): give another --out")
                wanted = {f"s{s}-b{b}" for s, b in tasks}
                rows = list({r["run_id"]: r for r in old if r.get("run_id") in wanted}.values())
            journal.start(header(spec, ["seed", "batch"], len(tasks), cluster.source), rows)
        except JournalError as exc:
            journal.close()
            raise RolloutError(str(exc)) from None
        except BaseException:
            journal.close()
            raise
    done = {r["run_id"] for r in rows}
    todo = [(s, b) for s, b in tasks if f"s{s}-b{b}" not in done]
    bar = Progress(len(tasks), skipped=len(tasks) - len(todo), enabled=progress, label="rollout")
    skipped, ran = len(tasks) - len(todo), 0

    def on_row(row):
        nonlocal ran
        if journal is not None:
            try:
                journal.append(row)
            except JournalError as exc:
                raise RolloutError(str(exc)) from None
        rows.append(row)
        ran += 1
        bar.update()

    interrupted = False
    try:
        if todo:
            if scheduler == "inprocess":
                _run_inprocess(cluster, todo, on_row)
            else:
                _run_dask(cluster, todo, on_row, scheduler, workers)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
        if journal is not None:
            journal.close()
    runs, dist = summarize(cluster, rows)
    return RolloutResult(cluster, runs, dist, len(tasks), skipped, ran, interrupted, time.perf_counter() - t0)


def write_json(result, path):
    from ..cli import write_output
    write_output(path, json.dumps(result.to_dict(), indent=1) + "\n")
