"""``run_sweep``: expand a sweep, skip what its journal says finished, run the rest on an executor,
journal each row as it comes, and keep the tables on disk up to date (every few seconds, at the end,
and on Ctrl-C)."""
import dataclasses
import os
import time

from .journal import Journal, JournalError, header
from .progress import Progress
from .runner import STATUS_FIELD, run_dask, run_inprocess
from .table import Table, TableError

SCHEDULERS = ("local", "inprocess")
FLUSH_EVERY_S = 2.0
DEFAULT_RUN_TIMEOUT_S = 3600.0


@dataclasses.dataclass
class SweepOutcome:
    """What a sweep did: the ``table``; runs ``total``, ``skipped`` (already done), ``ran``,
    ``failed`` (timed-out ones included) and ``timed_out`` in this call; ``dropped``: journal rows of
    runs no longer in the sweep (--resume-changed); ``replaced``: runs in a journal that a sweep
    without --resume started over; whether it was ``interrupted``; ``wall_s``."""
    table: Table
    total: int
    skipped: int
    ran: int
    failed: int
    interrupted: bool
    wall_s: float
    timed_out: int = 0
    dropped: int = 0
    replaced: int = 0


def _resume_rows(journal, sweep, runs, spec, changed_ok):
    """The rows of the journal that this sweep can keep, brought to its run numbers and axis columns,
    and how many were dropped. Raises TableError when the journal is of another sweep (unless
    ``changed_ok``) or cannot be trusted."""
    head, rows, _torn = journal.existing()
    if head is None:
        return [], 0
    by_id = {r.run_id: r for r in runs}
    latest = {}
    for row in rows:
        latest[row.get("run_id")] = row  # a re-run replaces the earlier row of its run
    ours = {rid: row for rid, row in latest.items() if rid in by_id}
    if head.get("spec") != spec:
        if not changed_ok:
            raise TableError(
                f"--resume: '{journal.path}' was written by a different sweep ({len(ours)} of its {len(latest)} "
                "runs are runs of this one; the base config, set:, axes, seeds or model version changed): "
                "--resume-changed keeps those and runs the rest, or give another --out")
    elif len(ours) != len(latest):
        raise TableError(f"--resume: '{journal.path}' holds runs its own sweep does not have; it cannot be "
                         "trusted: move it away to start over")
    old_axes = head.get("axes") or []
    kept = []
    for rid, row in ours.items():
        run = by_id[rid]
        fresh = {k: v for k, v in row.items() if k not in old_axes}
        fresh.update({"run": run.index, **run.values})
        kept.append(fresh)
    return kept, len(latest) - len(ours)


def run_sweep(sweep, prefix=None, scheduler="local", workers=None, resume=False, progress=True,
              backend="auto", write=True, timeout=None, resume_changed=False):
    """Run ``sweep`` (a Sweep) and return a SweepOutcome.

    ``prefix``: output files PREFIX.journal, PREFIX.csv and PREFIX.parquet (None with ``write=False``
    keeps the table in memory only). ``scheduler``: 'local' (a new LocalCluster of ``workers``
    processes, default one per core), 'inprocess', or a Dask scheduler address. ``resume``: read the
    journal and skip the runs it holds without an error (failed and timed-out runs are run again); a
    journal of a changed sweep is refused unless ``resume_changed``, which keeps the rows of runs
    whose effective config and seed are unchanged. ``timeout``: seconds after which a run is killed
    and recorded as timed out (None: no limit, runs in the executor's own process). A Ctrl-C stops
    the sweep; the finished rows are written and the outcome says ``interrupted``. Raises SweepError
    (duplicate runs), TableError (unwritable output, a journal that is refused), OSError or
    TimeoutError (scheduler unreachable).
    """
    t0 = time.perf_counter()
    runs = sweep.runs()
    table = Table(sweep.axis_keys, prefix or "")
    journal = None
    dropped = replaced = 0
    resume = resume or resume_changed
    if write and prefix:
        journal = Journal(prefix + ".journal")
        if resume and not os.path.exists(journal.path):
            raise TableError(f"--resume: there is no journal '{journal.path}' (tables written by an older "
                             "pagesync-sim have none); run without --resume to start over")
        try:
            journal.lock()
            spec = sweep.spec_hash()
            kept = []
            if resume:
                kept, dropped = _resume_rows(journal, sweep, runs, spec, resume_changed)
            else:
                replaced = _count_runs(journal)
            journal.start(header(spec, sweep.axis_keys, len(runs), sweep.path), kept)
        except JournalError as exc:
            journal.close()
            raise TableError(str(exc)) from None
        except BaseException:
            journal.close()
            raise
        for row in kept:
            table.add(row)
    done = table.done_ids()
    todo = [r for r in runs if r.run_id not in done]
    bar = Progress(len(runs), skipped=len(runs) - len(todo), enabled=progress)
    state = {"failed": 0, "ran": 0, "timed_out": 0, "flushed": time.monotonic()}

    def on_row(row):
        if journal is not None:
            try:
                journal.append(row)
            except JournalError as exc:
                raise TableError(str(exc)) from None
        table.add(row)
        state["ran"] += 1
        failed = row.get("error") is not None
        state["failed"] += failed
        state["timed_out"] += row.get(STATUS_FIELD) == "timed-out"
        bar.update(failed)
        if journal is not None and time.monotonic() - state["flushed"] >= FLUSH_EVERY_S:
            table.write()
            state["flushed"] = time.monotonic()

    interrupted = False
    try:
        if todo:
            if scheduler == "inprocess":
                run_inprocess(sweep, todo, on_row, backend, timeout)
            else:
                run_dask(sweep, todo, on_row, scheduler=scheduler, workers=workers, backend=backend,
                         timeout=timeout)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
        try:
            if journal is not None:
                table.write()
        finally:
            if journal is not None:
                journal.close()
    return SweepOutcome(table, len(runs), len(runs) - len(todo), state["ran"], state["failed"], interrupted,
                        time.perf_counter() - t0, state["timed_out"], dropped, replaced)


def _count_runs(journal):
    """How many runs the journal about to be replaced holds (0 if it cannot be read)."""
    try:
        return len({row.get("run_id") for row in journal.existing()[1]})
    except JournalError:
        return 0
