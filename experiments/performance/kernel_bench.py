"""Per-write and per-step costs: the figures of docs/performance.md's "Where the time goes" list.

Run: ``python experiments/performance/kernel_bench.py [--baseline DIR] [--repeat 5] [--out kernel_results.json]``

Each measurement runs in a fresh subprocess of this tree and, with ``--baseline DIR`` (a checkout of an older
commit with its kernels built in place), of that tree too, alternately, so both are measured under the same
load; medians of ``--repeat``. Times are the child's CPU time (``time.process_time``: user and system), which
a loaded machine inflates far less than wall time. What is measured (compiled kernels):
- ``apply_writes``: 1 M uniform random writes by 16 CPUs (1536-entry TLBs) over 16 M frames (64 GiB of 4 KiB
  pages) and over 128 M frames (512 GiB), ns per write;
- ``gen_random``: 1 M targets of 4 CPUs with the default 512-frame block and with single frames, ns per write;
- a CPU step (``Cpus.advance_to``) of a 1-CPU ``uniform`` workload writing 244 pages per 1 ms step, us per step;
- ``harvest`` with clearing of 16 M PTEs (64 GiB), every one dirty (a first pass's harvest), ns per PTE;
- building the state of a 512 GB ``qemu-default.yaml`` memory (30% zero pages), s.
Every measurement also prints a digest of its output, which must be the same in both trees.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CHILD = r"""
import json, sys, time
import numpy as np
what = sys.argv[1]
out = {}
if what.startswith("apply_writes"):
    from pagesync_model import _cykernels as K
    n = int(what.split(":")[1])
    ncpu, entries, nw = 16, 1536, 1_000_000
    rng = np.random.default_rng(1)
    pte = np.ones(n, np.uint64)
    ver = np.ones(n, np.uint32)
    tag = np.full((ncpu, entries), -1, np.int64)
    fl = np.zeros((ncpu, entries), np.uint8)
    counts = np.zeros((ncpu, 3), np.int64)
    bounds = np.linspace(0, nw, ncpu + 1).astype(np.int64)
    frames = [rng.integers(n // 64, n, size=nw, dtype=np.int64) for _ in range(3)]
    K.apply_writes(frames[0], bounds, pte, ver, tag, fl, 0, 512, counts)   # first touch out of the timing
    t = time.process_time()
    for f in frames[1:]:
        K.apply_writes(f, bounds, pte, ver, tag, fl, 0, 512, counts)
    out["value"] = (time.process_time() - t) / (2 * nw) * 1e9
    out["digest"] = int(ver.astype(np.uint64) @ np.arange(n, dtype=np.uint64) % (1 << 61))
elif what.startswith("gen_random"):
    from pagesync_model import _cykernels as K
    block = int(what.split(":")[1])
    modulus = (1 << 27) // block
    keys = np.arange(1, 5, dtype=np.uint64) * np.uint64(12345)
    ctr = np.zeros(4, np.uint64)
    counts = np.full(4, 250_000, np.int64)
    buf = np.zeros(1_000_000, np.int64)
    t = time.process_time()
    h = 0
    for _ in range(3):
        K.gen_random(keys, ctr, counts, 0, 0, modulus * block, 5000, 1234567, modulus, buf, block)
        h = (h * 31 + int(buf.sum())) % (1 << 61)
    out["value"] = (time.process_time() - t) / 3e6 * 1e9
    out["digest"] = h
elif what == "cpu_step":
    from pagesync_model.config import load_config
    from pagesync_model.sim.engine import Engine
    cfg = load_config("configs/xen-2005.yaml", ["memory.size=4GiB", "workload.kind=uniform",
                                                "workload.working_set=2GiB", "workload.rate=244140/s"])
    c = Engine(cfg, backend="cython").machine.cpus
    q = max(1, int(round(1e-3 * cfg.cpus.clock)))
    t = time.process_time()
    for i in range(1, 20001):
        c.advance_to(i * q)
    out["value"] = (time.process_time() - t) / 20000 * 1e6
    out["digest"] = [c.writes, c.walks, c.dirty_sets, float(c.tracking_cycles)]
elif what.startswith("harvest"):
    from pagesync_model import _cykernels as K
    n = int(what.split(":")[1])
    pte = np.full(n, 0x23, np.uint64)            # present, writable, accessed
    ver = np.ones(n, np.uint32)
    bm = np.zeros((n + 63) // 64, np.uint64)
    bounds = np.array([0, n], np.int64)
    seg = np.zeros(1, np.int64)
    total = 0.0
    for _ in range(3):
        pte |= np.uint64(0x40)                   # every PTE dirty: a first pass's harvest
        bm[:] = 0
        t = time.process_time()
        K.harvest(pte, bounds, bm, ver, 0, 512, True, seg)
        total += time.process_time() - t
    out["value"] = total / (3 * n) * 1e9
    out["digest"] = [int(ver.astype(np.uint64) @ np.arange(n, dtype=np.uint64) % (1 << 61)), int(pte.sum() % (1 << 61))]
elif what == "memory_512GB":
    from pagesync_model.config import load_config
    from pagesync_model.memory import build_memory
    from pagesync_model.workloads import working_set_pages
    cfg = load_config("configs/qemu-default.yaml", ["memory.size=512GB", "workload.working_set=256GB"])
    mem = cfg.memory
    ws = working_set_pages(cfg.workload, mem.page_size)
    t = time.process_time()
    m = build_memory(mem.size, mem.page_size, mem.kernel_size, ws, int(mem.zero_fraction * (mem.size // mem.page_size)),
                     mem.layout, mem.processes, mem.block // mem.page_size)
    out["value"] = time.process_time() - t
    out["digest"] = [int((m.versions == 0).sum()), int(m.pte.sum() % (1 << 61))]
print(json.dumps(out))
"""

MEASURES = {"apply_writes:16777216": "ns/write", "apply_writes:134217728": "ns/write", "gen_random:512": "ns/write",
            "gen_random:1": "ns/write", "cpu_step": "us/step", "harvest:16777216": "ns/PTE", "memory_512GB": "s"}


def run(tree, what):
    env = dict(os.environ, PYTHONPATH=str(tree), PAGESYNC_BACKEND="cython")
    p = subprocess.run([sys.executable, "-c", CHILD, what], capture_output=True, text=True, check=True, env=env,
                       cwd=str(tree))
    return json.loads(p.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", help="a checkout of an older commit, kernels built in place")
    ap.add_argument("--baseline-label", default="")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--only", nargs="*", choices=sorted(MEASURES))
    ap.add_argument("--out", default=str(Path(__file__).with_name("kernel_results.json")))
    args = ap.parse_args()
    res = {"machine": {"cpus": os.cpu_count(), "load_avg_start": os.getloadavg()[0]},
           "baseline": args.baseline_label if args.baseline else None, "measures": {}}
    for what in args.only or list(MEASURES):
        new, old = [], []
        for _ in range(args.repeat):
            new.append(run(ROOT, what))
            if args.baseline:
                old.append(run(Path(args.baseline).resolve(), what))
        entry = {"unit": MEASURES[what], "new": statistics.median(r["value"] for r in new),
                 "new_all": [round(r["value"], 3) for r in new], "digest": new[0]["digest"]}
        assert all(r["digest"] == new[0]["digest"] for r in new), what
        line = f"{what}: {entry['new']:.2f} {entry['unit']}"
        if old:
            entry["baseline"] = statistics.median(r["value"] for r in old)
            entry["baseline_all"] = [round(r["value"], 3) for r in old]
            entry["same_digest"] = all(r["digest"] == new[0]["digest"] for r in old)
            entry["ratio"] = entry["baseline"] / entry["new"]
            line += f", baseline {entry['baseline']:.2f} ({entry['ratio']:.2f}x), same output: {entry['same_digest']}"
        res["measures"][what] = entry
        print(line, flush=True)
    res["machine"]["load_avg_end"] = os.getloadavg()[0]
    res["when"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
