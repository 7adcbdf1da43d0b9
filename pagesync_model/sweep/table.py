"""The tidy table of a sweep: one row per run (the axis values, the seed, every scalar summary field,
the error and the run's wall time), written as PREFIX.csv and PREFIX.parquet, and read back to resume.

Rows are written whole each time (to a temporary file, then renamed), so an interrupted sweep always
leaves a complete, readable table of the runs that finished.
"""
import math
import os

from .runner import WALL_FIELD

LEAD = ("run", "run_id")
TAIL = ("backend", "error", WALL_FIELD)


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
                os.replace(tmp, path)
            except OSError as exc:
                raise TableError(f"cannot write '{path}': {exc.strerror or exc}") from None

    def load(self, valid_ids):
        """Read the rows of an earlier (maybe interrupted) run of this sweep from PREFIX.parquet, or
        PREFIX.csv when there is no Parquet file; returns how many were read. Raises TableError if the
        table holds runs that are not in ``valid_ids`` (another sweep wrote it)."""
        import pandas as pd
        if os.path.exists(self.parquet_path):
            path, df = self.parquet_path, None
            try:
                df = pd.read_parquet(path)
            except Exception as exc:  # noqa: BLE001 -- pyarrow raises several kinds for a damaged file
                raise TableError(f"--resume: cannot read '{path}': {exc}") from None
        elif os.path.exists(self.csv_path):
            path = self.csv_path
            try:
                df = pd.read_csv(path)
            except Exception as exc:  # noqa: BLE001
                raise TableError(f"--resume: cannot read '{path}': {exc}") from None
        else:
            return 0
        if "run_id" not in df.columns:
            raise TableError(f"--resume: '{path}' is not a sweep table (no run_id column)")
        records = df.astype(object).where(df.notna(), None).to_dict("records")
        foreign = [r["run_id"] for r in records if r["run_id"] not in valid_ids]
        if foreign:
            raise TableError(f"--resume: '{path}' holds {len(foreign)} runs that are not in this sweep "
                             f"(e.g. run_id {foreign[0]}); give another --out")
        for r in records:
            self.add({k: v for k, v in r.items()})
        return len(records)
