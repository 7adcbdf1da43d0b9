"""Block-sparse memory at scale: the figures quoted in docs/performance.md ("Very large guests").

Run: ``python experiments/performance/sparse_bench.py [--skip-dense] [--out sparse_results.json]``

Each run is a fresh subprocess, so its peak RSS is its own. It measures:
1. A 12 TiB guest with a 1 TiB working set (``configs/stratus.yaml`` scaled: 64 CPUs writing 8k pages/s
   each, about 2 GB/s; a 200 Gbit/s partner link; 10 ms quanta) with ``memory.sparse: true``
   (target: < 120 s wall, < 16 GiB peak RSS). Dense memory would need about 50 GB for its per-page
   arrays on the two sides: it is not run.
2. The 1 TiB stratus case of bench.py with ``memory.sparse`` false and true: the same result (checked
   here field by field), the wall time and peak RSS of each.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STRATUS = ROOT / "configs" / "stratus.yaml"
TIB = ["memory.size=1TiB", "cpus.count=64", "workload.working_set=384GiB", "memory.processes=800",
       "stratus.threshold=320000"]
SAP = ["memory.size=12TiB", "cpus.count=64", "workload.rate=8k/s", "workload.working_set=1TiB",
       "memory.processes=800", "stratus.threshold=320000", "link.bandwidth=200Gbit/s", "sim.quantum=10ms"]

CHILD = r"""
import json, resource, sys, time
from pagesync_model.config import load_config
from pagesync_model.sim.engine import Engine
cfg = load_config(sys.argv[1], sys.argv[2:])
t0 = time.perf_counter()
e = Engine(cfg)
r = e.run()
wall = time.perf_counter() - t0
d = r.to_dict()
m, p = e.machine.memory, e.machine.partner
sparse = {"blocks": m.nb, "block_frames": m.B, "materialised": m.materialised_blocks(),
          "partner_materialised": p.materialised_blocks()} if m.sparse else None
keep = ("passes", "converged", "stop_reason", "downtime_s", "total_time_s", "bytes_sent", "pages_sent",
        "copy_calls", "lost_writes", "workload_writes", "dirty_bit_sets", "memory_pages")
print(json.dumps({"wall_s": wall, "rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "backend": d["backend"], "sparse": sparse, "result": {k: d[k] for k in keep},
                  "per_pass": d["per_pass"]}))
"""


def run_child(config, overrides):
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(CHILD)
    try:
        out = subprocess.run([sys.executable, f.name, str(config), *overrides], capture_output=True, text=True,
                             check=True, env=dict(os.environ))
    finally:
        os.unlink(f.name)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-dense", action="store_true", help="skip the dense 1 TiB run (about a minute)")
    ap.add_argument("--skip-sap", action="store_true", help="skip the 12 TiB run")
    ap.add_argument("--out", default=str(Path(__file__).with_name("sparse_results.json")))
    args = ap.parse_args()
    res = {}
    if not args.skip_sap:
        res["sap_12tib"] = run_child(STRATUS, SAP + ["memory.sparse=true"])
    res["tib_sparse"] = run_child(STRATUS, TIB + ["memory.sparse=true"])
    if not args.skip_dense:
        res["tib_dense"] = run_child(STRATUS, TIB + ["memory.sparse=false"])
        same = (res["tib_dense"]["result"] == res["tib_sparse"]["result"]
                and res["tib_dense"]["per_pass"] == res["tib_sparse"]["per_pass"])
        res["tib_identical"] = same
    for r in res.values():
        if isinstance(r, dict):
            r.pop("per_pass", None)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print("| run | wall | peak RSS | materialised blocks (source / partner) | result |")
    print("| --- | --- | --- | --- | --- |")
    for name, r in res.items():
        if not isinstance(r, dict):
            continue
        sp = r["sparse"]
        mat = f"{sp['materialised']:,} / {sp['partner_materialised']:,} of {sp['blocks']:,}" if sp else "dense"
        o = r["result"]
        print(f"| {name} | {r['wall_s']:.1f} s | {r['rss_kib'] / 2**20:.2f} GiB | {mat} | {o['passes']} passes, "
              f"{o['stop_reason']}, downtime {o['downtime_s']}, lost {o['lost_writes']} |")
    if "tib_identical" in res:
        print(f"1 TiB dense and sparse results identical: {res['tib_identical']}")


if __name__ == "__main__":
    main()
