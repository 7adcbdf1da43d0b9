"""Speed at planner scale: the figures of docs/performance.md's "Planner scale" table.

Run: ``python experiments/performance/planner_bench.py [--repeat 1] [--baseline DIR] [--only NAME ...]
[--out planner_results.json]``

Each case runs in a fresh subprocess (``--force``: the cost guard is not what is measured) and reports
its wall time (split into building the engine and its per-frame state, and the run itself: on a virtual
machine the first touch of memory the host has not backed, or has reclaimed, costs up to ~3 s per GiB and
makes the first part vary from run to run), its CPU time (the figure to compare on a loaded machine), simulated seconds per wall and
per CPU second and peak RSS, medians of ``--repeat`` runs. With
``--baseline DIR`` (a checkout of an older commit with its kernels built in place) the same cases run
there too, alternating with this tree, and the ratio of their medians is reported: both measured in the
same run, which is what counts on these shared machines.

The dirty rates are expressed with today's keys (``workload.dirty_rate`` does not exist yet): a
``uniform`` workload over a working set large enough that nearly every write in a sync period hits a
distinct page, at ``rate`` = dirty rate / page size / vCPUs.
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


def dirty(bytes_per_s, cpus, page=4096):
    """workload.rate (per CPU) for ``bytes_per_s`` of distinct dirtied pages over ``cpus`` CPUs."""
    return f"workload.rate={bytes_per_s / page / cpus:.0f}/s"


# name: (config, overrides, target, what the target is)
PLANNER = ["memory.size=512GB", "workload.kind=uniform", "workload.working_set=256GB", dirty(2e9, 4),
           "qemu.max_bandwidth=10Gbit/s", "link.bandwidth=10Gbit/s", "sim.time_limit=20min"]
GIB64 = ["memory.size=64GiB", "workload.kind=uniform", "workload.working_set=32GiB", "link.bandwidth=10Gbit/s",
         "sim.time_limit=60s"]
CASES = {
    "planner-512GB-qemu": ("qemu-default.yaml", PLANNER, ("wall_s", "<", 20.0)),
    "planner-512GB-qemu-60s": ("qemu-default.yaml", PLANNER[:-1] + ["sim.time_limit=60s"], None),
    "64GiB-qemu": ("qemu-default.yaml", GIB64 + [dirty(1e9, 4), "qemu.max_bandwidth=10Gbit/s"],
                   ("sim_per_wall", ">=", 100.0)),
    "64GiB-xen-legacy": ("xen-2005.yaml", GIB64 + [dirty(1e9, 1), "memory.processes=100", "xen.rate_limit=false"],
                         ("sim_per_wall", ">=", 100.0)),
    "64GiB-stratus": ("stratus.yaml", GIB64 + [dirty(1e9, 16)], ("sim_per_wall", ">=", 100.0)),
    # xen-2005.yaml as it is (the Clark et al. 2005 guest, its rate limiter on): not a planner's case, the
    # batch loop's effect on the default xen-legacy run
    "xen-2005-default": ("xen-2005.yaml", [], None),
    "1TiB-stratus": ("stratus.yaml", ["memory.size=1TiB", "cpus.count=64", "workload.working_set=384GiB",
                                      "memory.processes=800", "stratus.threshold=320000"], ("wall_s", "<", 15.0)),
}

CHILD = r"""
import json, resource, sys, time
from pagesync_model.config import load_config
from pagesync_model.sim.engine import Engine
cfg = load_config(sys.argv[1], sys.argv[2:])
t0, c0 = time.perf_counter(), time.process_time()
engine = Engine(cfg, backend="cython")
t1 = time.perf_counter()
r = engine.run()
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
d = r.to_dict()
print(json.dumps({"wall_s": wall, "cpu_s": cpu, "build_s": t1 - t0, "run_s": wall - (t1 - t0), "rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "simulated_s": d["total_time_s"], "passes": d["passes"], "pages_sent": d["pages_sent"],
                  "writes": d["workload_writes"], "stop_reason": d["stop_reason"], "downtime_s": d["downtime_s"],
                  "quantum_s": d.get("quantum_s")}))
"""


def run_child(tree, name, extra=()):
    config, sets, _ = CASES[name]
    sets = [*sets, *extra]
    env = dict(os.environ, PYTHONPATH=str(tree), PAGESYNC_BACKEND="cython")
    out = subprocess.run([sys.executable, "-c", CHILD, str(tree / "configs" / config), *sets], capture_output=True,
                         text=True, check=True, env=env, cwd=str(tree))
    d = json.loads(out.stdout.strip().splitlines()[-1])
    d["sim_per_wall"] = d["simulated_s"] / d["wall_s"]
    d["sim_per_cpu"] = d["simulated_s"] / d["cpu_s"]
    return d


def median(runs):
    m = dict(runs[0])
    for k in ("wall_s", "cpu_s", "build_s", "run_s", "rss_kib", "sim_per_wall", "sim_per_cpu"):
        m[k] = statistics.median(r[k] for r in runs)
    m["wall_all_s"] = [round(r["wall_s"], 2) for r in runs]
    m["cpu_all_s"] = [round(r["cpu_s"], 2) for r in runs]
    return m


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--baseline", help="a checkout of an older commit, kernels built in place")
    ap.add_argument("--baseline-label", default="", help="what the baseline is (its commit), kept in the JSON")
    ap.add_argument("--only", nargs="*", choices=sorted(CASES), help="run only these cases")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="an override added to every case, in both trees (e.g. sim.quantum=auto)")
    ap.add_argument("--out", default=str(Path(__file__).with_name("planner_results.json")))
    ap.add_argument("--auto", action="store_true",
                    help="also run each case with sim.quantum=auto, alternating with the 1 ms run, and report "
                         "the ratio and the results' differences (default --out planner_auto_results.json)")
    args = ap.parse_args()
    if args.auto:
        if args.out == ap.get_default("out"):
            args.out = str(Path(__file__).with_name("planner_auto_results.json"))
        return auto_main(args)
    names = args.only or list(CASES)
    res = {"machine": {"cpus": os.cpu_count(), "load_avg_start": os.getloadavg()[0]}, "cases": {},
           "baseline": args.baseline_label if args.baseline else None, "extra_overrides": args.set}
    for name in names:
        new, old = [], []
        for _ in range(args.repeat):
            new.append(run_child(ROOT, name, args.set))
            if args.baseline:
                old.append(run_child(Path(args.baseline).resolve(), name, args.set))
        entry = {"config": CASES[name][0], "overrides": CASES[name][1] + args.set, "new": median(new)}
        if old:
            entry["baseline"] = median(old)
            entry["speedup"] = entry["baseline"]["wall_s"] / entry["new"]["wall_s"]
            entry["speedup_cpu"] = entry["baseline"]["cpu_s"] / entry["new"]["cpu_s"]
            entry["speedup_run"] = entry["baseline"]["run_s"] / entry["new"]["run_s"]
        target = CASES[name][2]
        if target:
            key, op, value = target
            got = entry["new"][key]
            entry["target"] = f"{key} {op} {value}"
            entry["met"] = got < value if op == "<" else got >= value
        res["cases"][name] = entry
        line = (f"{name}: {entry['new']['wall_s']:.1f} s wall, {entry['new']['cpu_s']:.1f} s CPU, "
                f"{entry['new']['sim_per_wall']:.1f} sim-s/wall-s, {entry['new']['sim_per_cpu']:.1f} sim-s/CPU-s "
                f"(building the state {entry['new']['build_s']:.1f} s, the run {entry['new']['run_s']:.1f} s)")
        if "speedup" in entry:
            line += (f", baseline {entry['baseline']['wall_s']:.1f} s wall ({entry['speedup']:.2f}x), "
                     f"{entry['baseline']['cpu_s']:.1f} s CPU ({entry['speedup_cpu']:.2f}x), the run alone "
                     f"{entry['baseline']['run_s']:.1f} s ({entry['speedup_run']:.2f}x)")
        if target:
            line += f"; target {entry['target']}: {'met' if entry['met'] else 'NOT met'}"
        print(line, flush=True)
    res["machine"]["load_avg_end"] = os.getloadavg()[0]
    res["when"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")


def auto_main(args):
    """Each case at the fixed 1 ms step and with ``sim.quantum=auto``, alternately, in this tree."""
    names = args.only or list(CASES)
    res = {"machine": {"cpus": os.cpu_count(), "load_avg_start": os.getloadavg()[0]}, "cases": {}}
    for name in names:
        fixed, auto = [], []
        for _ in range(args.repeat):
            fixed.append(run_child(ROOT, name))
            auto.append(run_child(ROOT, name, ["sim.quantum=auto"]))
        f, a = median(fixed), median(auto)
        entry = {"config": CASES[name][0], "overrides": CASES[name][1], "fixed_1ms": f, "auto": a,
                 "speedup": f["wall_s"] / a["wall_s"],
                 "diff": {k: (a[k] - f[k]) / f[k] if f[k] else None
                          for k in ("simulated_s", "pages_sent", "downtime_s") if f[k] is not None and a[k] is not None},
                 "same_verdict": (f["stop_reason"], f["passes"]) == (a["stop_reason"], a["passes"])}
        res["cases"][name] = entry
        print(f"{name}: quantum {a['quantum_s'] * 1e3:g} ms; 1 ms {f['wall_s']:.1f} s, auto {a['wall_s']:.1f} s wall "
              f"({entry['speedup']:.1f}x, {a['sim_per_wall']:.1f} sim-s/wall-s); {f['stop_reason']}/{a['stop_reason']}, "
              f"passes {f['passes']}/{a['passes']}; " + ", ".join(f"{k} {v:+.2%}" for k, v in entry["diff"].items()),
              flush=True)
    res["machine"]["load_avg_end"] = os.getloadavg()[0]
    res["when"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
