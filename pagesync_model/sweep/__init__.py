"""Capacity planning: parameter sweeps run on Dask, and an inverse planner that bisects one knob.

- `spec`: the sweep file (a base config plus axes) and its expansion into runs.
- `knobs`: a dotted config key as a number with units (parse, interpolate, write back as an override).
- `runner`: one run as a flat row, and the executors (Dask LocalCluster, an existing scheduler, in-process).
- `table`: the tidy table of rows, CSV and Parquet, and resuming from it.
- `planner`: bisection for the value of a knob at which a summary field crosses a target.
- `cli`: ``pagesync-sim sweep`` and ``pagesync-sim plan``.
"""
