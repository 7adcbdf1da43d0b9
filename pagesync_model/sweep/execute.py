"""``run_sweep``: expand a sweep, skip what an earlier run finished, run the rest on an executor, and
keep the table on disk up to date (every few seconds, at the end, and on Ctrl-C)."""
import dataclasses
import time

from .progress import Progress
from .runner import run_dask, run_inprocess
from .table import Table

SCHEDULERS = ("local", "inprocess")
FLUSH_EVERY_S = 2.0


@dataclasses.dataclass
class SweepOutcome:
    """What a sweep did: the ``table``; runs ``total``, ``skipped`` (already done), ``ran`` and
    ``failed`` in this call; whether it was ``interrupted``; ``wall_s`` of this call."""
    table: Table
    total: int
    skipped: int
    ran: int
    failed: int
    interrupted: bool
    wall_s: float


def run_sweep(sweep, prefix=None, scheduler="local", workers=None, resume=False, progress=True,
              backend="auto", write=True):
    """Run ``sweep`` (a Sweep) and return a SweepOutcome.

    ``prefix``: output files PREFIX.csv and PREFIX.parquet (None with ``write=False`` keeps the table in
    memory only). ``scheduler``: 'local' (a new LocalCluster of ``workers`` processes, default one per
    core), 'inprocess', or a Dask scheduler address. ``resume``: read the existing table and skip the
    runs it holds without an error (failed runs are run again). A Ctrl-C stops the sweep; the finished
    rows are written and the outcome says ``interrupted``. Raises TableError (unwritable output, a
    table from another sweep), OSError or TimeoutError (scheduler unreachable).
    """
    t0 = time.perf_counter()
    runs = sweep.runs()
    table = Table(sweep.axis_keys, prefix or "")
    if resume and prefix:
        table.load({r.run_id for r in runs})
    done = table.done_ids()
    todo = [r for r in runs if r.run_id not in done]
    bar = Progress(len(runs), skipped=len(runs) - len(todo), enabled=progress)
    state = {"failed": 0, "ran": 0, "flushed": time.monotonic()}

    def on_row(row):
        table.add(row)
        state["ran"] += 1
        failed = row.get("error") is not None
        state["failed"] += failed
        bar.update(failed)
        if write and prefix and time.monotonic() - state["flushed"] >= FLUSH_EVERY_S:
            table.write()
            state["flushed"] = time.monotonic()

    interrupted = False
    try:
        if todo:
            if scheduler == "inprocess":
                run_inprocess(sweep, todo, on_row, backend)
            else:
                run_dask(sweep, todo, on_row, scheduler=scheduler, workers=workers, backend=backend)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
        if write and prefix:
            table.write()
    return SweepOutcome(table, len(runs), len(runs) - len(todo), state["ran"], state["failed"], interrupted,
                        time.perf_counter() - t0)
