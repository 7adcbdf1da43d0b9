"""The tidy table of a sweep: one row per run (the axis values, the seed, every scalar summary field,
the status, the error and the run's wall time), written as PREFIX.csv and PREFIX.parquet.

Both files are views of the sweep's journal (see ``journal``), which is what --resume reads. They are
written whole each time (to a temporary file, synced, then renamed), so an interrupted sweep always
leaves complete, readable tables of the runs that finished, never a torn row.
"""
import math
import os

from .runner import STATUS_FIELD, WALL_FIELD

LEAD = ("run", "run_id")
TAIL = ("backend", STATUS_FIELD, "error", WALL_FIELD)


class TableError(ValueError):
    """An output table that cannot be written or resumed from; one line naming the file."""


def _missing(v):
    return v is None or (isinstance(v, float) and math.isnan(v))


class Table:
    """The rows of one sweep, keyed by run_id. ``axis_keys`` fixes the column order after ``run`` and
    ``run_id``; summary fields follow in the order first seen."""

    def __init__(self, axis_keys, prefix):
        self.axis_keys = list(axis_keys)
        self.prefix = prefix
        self.rows = {}

    @property
    def csv_path(self):
        return self.prefix + ".csv"

    @property
    def parquet_path(self):
        return self.prefix + ".parquet"

    def add(self, row):
        self.rows[row["run_id"]] = row

    def done_ids(self):
        """run_ids of rows that finished without an error (what --resume skips)."""
        return {rid for rid, row in self.rows.items() if _missing(row.get("error"))}

    def columns(self):
        head = list(LEAD) + self.axis_keys + ["seed"]
        rest = []
        for row in self.rows.values():
            for k in row:
                if k not in head and k not in TAIL and k not in rest:
                    rest.append(k)
        return head + rest + list(TAIL)

    def frame(self):
        """The rows as a pandas DataFrame, sorted by run, in column order."""
        import pandas as pd
        rows = sorted(self.rows.values(), key=lambda r: r["run"])
        return pd.DataFrame(rows, columns=self.columns())

    def write(self):
        """Write PREFIX.csv and PREFIX.parquet. Raises TableError if either cannot be written."""
        df = self.frame()
        for path, writer in ((self.csv_path, lambda p: df.to_csv(p, index=False)),
                             (self.parquet_path, lambda p: df.to_parquet(p, index=False))):
            tmp = f"{path}.tmp{os.getpid()}"
            try:
                writer(tmp)
                fd = os.open(tmp, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(tmp, path)
            except OSError as exc:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise TableError(f"cannot write '{path}': {exc.strerror or exc}") from None
