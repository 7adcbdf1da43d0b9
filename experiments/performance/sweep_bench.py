"""Sweep machinery benchmark: a 200-run sweep of configs/stratus.yaml (64 GiB; 200 seeds) on a Dask
LocalCluster with 1 and with 2 workers.

Reports, per repeat and as medians: the wall time with 1 and 2 workers, the speedup (target >= 1.7x
on a 2-core machine), and the machinery's overhead with 1 worker: 1 - (sum of the runs' own wall
times inside the worker) / (the sweep's total wall time, cluster start and shutdown included);
target < 5%. Load averages are recorded before and after each measurement: these are shared
machines, so read the figures next to them.

    python experiments/performance/sweep_bench.py [--runs 200] [--repeats 3] [--out sweep_results.json]
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def wait_for_quiet(max_load, max_wait_s):
    """Wait (up to max_wait_s) until the 1-minute load average is under max_load; returns it."""
    t0 = time.monotonic()
    while os.getloadavg()[0] >= max_load and time.monotonic() - t0 < max_wait_s:
        time.sleep(5)
    return os.getloadavg()[0]


def measure(runs, workers):
    from pagesync_model.sweep.execute import run_sweep
    from pagesync_model.sweep.spec import sweep_from_dict

    spec = {"base": str(ROOT / "configs" / "stratus.yaml"), "seeds": runs}
    sweep = sweep_from_dict(spec, str(HERE / "bench-sweep.yaml"))
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        outcome = run_sweep(sweep, os.path.join(tmp, "bench"), scheduler="local", workers=workers, progress=False)
        wall = time.perf_counter() - t0
    rows = list(outcome.table.rows.values())
    failed = sum(r.get("error") is not None for r in rows)
    inside = sum(r["wall_s"] for r in rows if r.get("wall_s") is not None)
    return {"workers": workers, "runs": len(rows), "failed": failed, "wall_s": wall, "sum_run_wall_s": inside,
            "overhead": 1 - inside / wall / workers if workers == 1 else None,
            "load_before": load0, "load_after": os.getloadavg()}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(HERE / "sweep_results.json"))
    p.add_argument("--max-load", type=float, default=1.0, help="wait for a 1-minute load under this first")
    p.add_argument("--max-wait", type=float, default=180.0, help="...but no longer than this (s)")
    args = p.parse_args()
    rounds = []
    for i in range(args.repeats):
        wait_for_quiet(args.max_load, args.max_wait)
        one = measure(args.runs, 1)
        wait_for_quiet(args.max_load, args.max_wait)
        two = measure(args.runs, 2)
        rounds.append({"one": one, "two": two, "speedup": one["wall_s"] / two["wall_s"]})
        print(f"repeat {i}: 1 worker {one['wall_s']:.1f} s (runs {one['sum_run_wall_s']:.1f} s, overhead "
              f"{one['overhead'] * 100:.2f}%), 2 workers {two['wall_s']:.1f} s, speedup "
              f"{rounds[-1]['speedup']:.2f}x; load {one['load_before'][0]:.2f} -> {two['load_after'][0]:.2f}",
              flush=True)
    summary = {
        "runs": args.runs, "repeats": args.repeats, "cores": os.cpu_count(),
        "wall_1_worker_s": statistics.median(r["one"]["wall_s"] for r in rounds),
        "wall_2_workers_s": statistics.median(r["two"]["wall_s"] for r in rounds),
        "speedup": statistics.median(r["speedup"] for r in rounds),
        "overhead_1_worker": statistics.median(r["one"]["overhead"] for r in rounds),
        "median_run_s": statistics.median(r["one"]["sum_run_wall_s"] / r["one"]["runs"] for r in rounds),
        "load_1min_at_start": rounds[0]["one"]["load_before"][0],
        "load_1min_max": max(max(r[k]["load_before"][0], r[k]["load_after"][0]) for r in rounds for k in ("one", "two")),
    }
    Path(args.out).write_text(json.dumps({"summary": summary, "repeats": rounds}, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
