"""Capacity planning: parameter sweeps run on Dask, and an inverse planner that bisects one knob.

- `spec`: the sweep file (a base config plus axes), its expansion into runs and each run's identity.
- `knobs`: a dotted config key as a number with units (parse, interpolate, write back as an override).
- `runner`: one run as a flat row, and the executors (Dask LocalCluster, an existing scheduler, in-process).
- `host`: the child process that runs a run under a time limit and is killed when it overstays.
- `journal`: the append-only record of finished runs that --resume trusts.
- `table`: the tidy table of rows, CSV and Parquet.
- `execute`: a whole sweep: resume, run, journal, write.
- `planner`: bisection for the value of a knob at which a summary field crosses a target.
- `cli`: ``pagesync-sim sweep`` and ``pagesync-sim plan``.
"""
