"""Draining a host at scale: the figure quoted in docs/performance.md ("Draining a host").

Run: ``python experiments/performance/evacuate_bench.py [--repeat 1] [--out evacuate_results.json]``

Drains ``configs/hosts/drain-40x64.yaml`` (40 VMs of 64 GiB, a 25 Gbit/s NIC, KubeVirt's two
migrations at once, ``sim.quantum: auto``, ``memory.sparse: true``) in a fresh subprocess per
repeat, compiled kernels, and records its wall time, its CPU time (user + system of that process:
what the run costs, which the other work on a shared machine does not inflate), its peak RSS, the
load averages before and after, and what the drain came to. Target: < 60 s of wall time.
"""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HOST = ROOT / "configs" / "hosts" / "drain-40x64.yaml"

CHILD = r"""
import json, resource, sys, time
from pagesync_model.evacuate import load_host, run_host
t0, c0 = time.perf_counter(), time.process_time()
r = run_host(load_host(sys.argv[1]), backend="cython")
print(json.dumps({"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
                  "rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "vms": len(r.vms),
                  "drain_s": r.drain_s, "migrated": r.migrated, "failed": r.failed,
                  "max_downtime_s": r.max_downtime_s, "solves": r.simulator["solves"]}))
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--out", default=str(Path(__file__).with_name("evacuate_results.json")))
    args = ap.parse_args()
    runs = []
    for _ in range(args.repeat):
        before = os.getloadavg()
        out = subprocess.run([sys.executable, "-c", CHILD, str(HOST)], capture_output=True, text=True, check=True,
                             cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        run = json.loads(out.stdout.strip().splitlines()[-1])
        run["load_before"], run["load_after"] = list(before), list(os.getloadavg())
        runs.append(run)
    Path(args.out).write_text(json.dumps({"host": "configs/hosts/drain-40x64.yaml", "runs": runs}, indent=1) + "\n")
    print("| wall | CPU time | peak RSS | drain (simulated) | migrated | longest downtime | load before / after |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in runs:
        print(f"| {r['wall_s']:.1f} s | {r['cpu_s']:.1f} s | {r['rss_kib'] / 2**20:.2f} GiB | {r['drain_s']:.1f} s | "
              f"{r['migrated']}/{r['vms']} | {r['max_downtime_s'] * 1e3:.0f} ms | "
              f"{r['load_before'][0]:.1f} / {r['load_after'][0]:.1f} |")


if __name__ == "__main__":
    main()
