"""Running a sweep: one run as a flat row, and the executors that run many.

``run_row`` is what a worker executes: it builds the config from the base tree and the run's
overrides, simulates, and returns a flat row (every scalar summary field); any exception becomes the
row's ``error`` so one bad run never stops a sweep. With a time limit, ``run_row_limited`` runs it in
the thread's child process (see ``host``) and records a run that overstays as timed out. A row's
``status`` is 'ok', 'failed' (see ``error``), 'timed-out' or 'lost' (its worker died). Executors:

- ``inprocess``: runs one after the other in this process (tests, tiny sweeps);
- ``local`` (default): a Dask LocalCluster on this machine, one single-threaded worker process per core
  (the engine holds the GIL in its Python parts, so processes, not threads);
- ``tcp://HOST:PORT``: an existing Dask scheduler, used as it is (workers there need pagesync-sim).

Rows come back through ``on_row`` as they finish; a KeyboardInterrupt cancels what is pending and
propagates, so the caller keeps and writes the rows it already has.
"""
import os
import time
from contextlib import contextmanager

WALL_FIELD = "wall_s"
STATUS_FIELD = "status"


def scalar_fields(summary):
    """The scalar entries of a result summary (lists such as ``stale_frames`` are left out)."""
    return {k: v for k, v in summary.items() if v is None or isinstance(v, (bool, int, float, str))}


def run_row(base, base_overrides, source, run, backend="auto"):
    """Simulate one run and return its row: ``run``, ``run_id``, the axis values, ``seed``, every
    scalar summary field, ``error`` (None, or 'ExceptionType: message') and ``wall_s`` (the run's wall
    time in the worker: config, simulation and row). Never raises for a failing run."""
    from ..config import config_from_dict
    from ..sim.engine import simulate

    t0 = time.perf_counter()
    row = {"run": run.index, "run_id": run.run_id, **run.values, "seed": run.seed}
    try:
        cfg = config_from_dict(base, list(base_overrides) + list(run.overrides), source=source)
        result = simulate(cfg, backend=backend, seed=run.seed)
        row["seed"] = result.meta["seed"]
        row.update(scalar_fields(result.summary))
        row["backend"] = result.meta["backend"]
        row[STATUS_FIELD] = "ok"
        row["error"] = None
    except Exception as exc:  # noqa: BLE001 -- a failed run is recorded in its row, the sweep goes on
        row[STATUS_FIELD] = "failed"
        row["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
    row[WALL_FIELD] = time.perf_counter() - t0
    return row


def _bare_row(run, status, error, wall):
    return {"run": run.index, "run_id": run.run_id, **run.values, "seed": run.seed, STATUS_FIELD: status,
            "error": error, WALL_FIELD: wall}


def run_row_limited(base, base_overrides, source, run, backend="auto", timeout=None):
    """``run_row`` in this thread's child process: a run still going after ``timeout`` seconds is
    killed and its row says 'timed-out'; a run whose process dies says 'failed' with how it died.
    ``timeout`` None runs it here, unlimited. Never raises for a failing run."""
    if timeout is None:
        return run_row(base, base_overrides, source, run, backend)
    from .host import Died, HostError, Timeout, thread_host
    t0 = time.perf_counter()
    try:
        return thread_host().call(run_row, (base, base_overrides, source, run, backend), timeout)
    except Timeout:
        return _bare_row(run, "timed-out", f"timed out: still running after {timeout:g} s (--run-timeout), "
                                           "killed", time.perf_counter() - t0)
    except (Died, HostError) as exc:
        return _bare_row(run, "failed", str(exc), time.perf_counter() - t0)


def run_inprocess(sweep, runs, on_row, backend="auto", timeout=None):
    """Run ``runs`` one after the other from this process (in a child process when there is a
    ``timeout``), calling ``on_row(row)`` after each."""
    try:
        for run in runs:
            on_row(run_row_limited(sweep.base, sweep.base_overrides, sweep.source, run, backend, timeout))
    finally:
        if timeout is not None:
            from .host import thread_host
            thread_host().close()


def default_workers():
    """Worker processes for a LocalCluster: the cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def local_cluster(workers):
    """A Dask LocalCluster of ``workers`` single-threaded worker processes, quiet and without a
    dashboard. The caller closes it."""
    import logging

    from dask.distributed import LocalCluster
    return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                        silence_logs=logging.ERROR)


def run_dask(sweep, runs, on_row, scheduler="local", workers=None, backend="auto", timeout=None):
    """Run ``runs`` on Dask: a new LocalCluster of ``workers`` (default: the cores) when ``scheduler``
    is 'local', else the scheduler at that address ('tcp://HOST:PORT'), which is left running. With a
    ``timeout`` each worker thread runs its runs in a child process and kills one that overstays
    (``run_row_limited``), so a hanging run costs its worker ``timeout`` seconds, never the sweep.
    Calls ``on_row(row)`` as each run finishes. Raises OSError (or Dask's TimeoutError) when the
    scheduler cannot be reached; a KeyboardInterrupt cancels the pending runs and propagates."""
    from dask.distributed import as_completed

    with dask_client(scheduler, workers) as client:
        futures = []
        try:
            base = client.scatter(sweep.base, broadcast=True) if runs else None
            futures = [client.submit(run_row_limited, base, sweep.base_overrides, sweep.source, run, backend,
                                     timeout, key=f"pagesync-run-{run.run_id}-{run.index}", pure=False, retries=0)
                       for run in runs]
            for future in as_completed(futures, loop=client.loop):
                try:
                    row = future.result()
                except Exception as exc:  # noqa: BLE001 -- e.g. a worker died under the run
                    row = _lost_row(future, runs, exc)
                on_row(row)
                future.release()
        finally:
            if futures:
                client.cancel(futures)


@contextmanager
def dask_client(scheduler="local", workers=None):
    """A Dask Client: on a new LocalCluster of ``workers`` (default: the cores) when ``scheduler`` is
    'local', else on the scheduler at that address ('tcp://HOST:PORT'), which is left running. The
    client, and a cluster made here, are closed on leaving. Raises OSError (or Dask's TimeoutError) when
    the scheduler cannot be reached."""
    from dask.distributed import Client

    cluster = None
    if scheduler == "local":
        cluster = local_cluster(workers or default_workers())
        client = Client(cluster, set_as_default=False)
    else:
        client = Client(scheduler, timeout="10s", set_as_default=False)
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _lost_row(future, runs, exc):
    """The row of a run whose worker failed outright (killed, out of memory)."""
    index = int(str(future.key).rsplit("-", 1)[1])
    run = next(r for r in runs if r.index == index)
    return _bare_row(run, "lost", f"{type(exc).__name__}: {exc}".splitlines()[0], None)
