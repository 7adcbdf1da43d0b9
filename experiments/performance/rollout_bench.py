"""Rollout at cluster scale: the figures quoted in docs/performance.md ("A rolling maintenance").

Run: ``python experiments/performance/rollout_bench.py [--seeds 20] [--out rollout_results.json]``

Runs ``configs/clusters/rollout-1000.yaml`` (1000 KubeVirt nodes of 8 drawn guests, 10 at a time over a
shared fabric; the fluid host model) as a Monte Carlo of ``--seeds`` runs on a Dask LocalCluster of
1 and then 2 worker processes, each measurement in this process: its wall time from the call to the
result (cluster start and shutdown included), the tasks' own compute time summed from the journal
(``wall_s`` of each (seed, batch) row), and the load averages before and after. Targets: < 5 min of
wall time for the 1000-host rollout; >= 1.8x faster on 2 workers than on 1.
"""
import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CLUSTER = ROOT / "configs" / "clusters" / "rollout-1000.yaml"


def measure(seeds, workers):
    from pagesync_model.rollout import load_cluster, run_rollout
    from pagesync_model.sweep.journal import read

    cluster = load_cluster(CLUSTER)
    cluster.seeds = seeds
    with tempfile.TemporaryDirectory() as tmp:
        load0 = os.getloadavg()
        t0 = time.perf_counter()
        res = run_rollout(cluster, os.path.join(tmp, "r"), scheduler="local", workers=workers, progress=False)
        wall = time.perf_counter() - t0
        load1 = os.getloadavg()
        _, rows, _ = read(os.path.join(tmp, "r.journal"))
    return {"workers": workers, "seeds": seeds, "tasks": res.tasks, "wall_s": wall,
            "task_compute_s": sum(r["wall_s"] for r in rows), "load_before": list(load0), "load_after": list(load1),
            "distribution": res.distribution}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--out", default=str(HERE / "rollout_results.json"))
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    one = measure(args.seeds, 1)
    two = measure(args.seeds, 2)
    doc = {"cluster": "configs/clusters/rollout-1000.yaml", "one_worker": one, "two_workers": two,
           "speedup": one["wall_s"] / two["wall_s"], "per_rollout_s_one_worker": one["wall_s"] / args.seeds}
    Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
    print("| workers | seeds | tasks | wall | tasks' compute | load before / after |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in (one, two):
        print(f"| {r['workers']} | {r['seeds']} | {r['tasks']} | {r['wall_s']:.1f} s | {r['task_compute_s']:.1f} s | "
              f"{r['load_before'][0]:.1f} / {r['load_after'][0]:.1f} |")
    print(f"speedup 2 vs 1 worker: {doc['speedup']:.2f}x")


if __name__ == "__main__":
    main()
