"""Live mirror vs the simulator: run real targets under ``pagesync-sim live mirror``, record each
target's write trace with ``pagesync-sim trace record`` (a separate run of the same command), and
replay that trace in the simulator's ``stratus`` policy with the copy and stop costs measured on
this machine. Writes results/<name>.json (live, sim and comparison per target), results.md and
mirror.png.

    nice python experiments/live_mirror/run.py [NAME ...]

Needs root (or ptrace access), Linux 6.7+, gcc, sqlite3, redis-server and redis-benchmark.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "results"
PASSES, THRESHOLD, DELAY = 5, 256, 0.5
TRACE_INTERVAL = 0.002
REDIS_PORT = 6391

PY_DICT = ("import time\nd = {}\nt = time.time()\ni = 0\n"
           "while time.time() - t < 3:\n    d[i % 300000] = str(i) * 4\n    i += 1\n")
SQLITE_SQL = ("CREATE TABLE t(a INTEGER PRIMARY KEY, b BLOB);\n"
              "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 3000000) "
              "INSERT INTO t SELECT x, randomblob(64) FROM c;\n")


def targets(bindir):
    w = f"{bindir}/writer"
    return {
        "writer-5k": {"cmd": [w, "64", "5000", "3"], "what": "C writer, 64 MiB, sequential sweep at 5k pages/s"},
        "writer-40k": {"cmd": [w, "64", "40000", "3"], "what": "C writer, 64 MiB, sequential sweep at 40k pages/s"},
        "writer-200k": {"cmd": [w, "64", "200000", "3"], "what": "C writer, 64 MiB, sequential sweep at 200k pages/s"},
        "python-dict": {"cmd": [sys.executable, "-c", PY_DICT], "what": "CPython dict of 300k strings rewritten"},
        "sqlite3": {"cmd": ["sqlite3", ":memory:"], "stdin": SQLITE_SQL, "what": "sqlite3 :memory: 3M inserts"},
        "redis": {"cmd": ["redis-server", "--port", str(REDIS_PORT), "--save", "", "--appendonly", "no",
                          "--bind", "127.0.0.1"], "bench": True,
                  "what": "redis-server under redis-benchmark (SET, 100k keys, 100 B, loopback)"},
    }


def start_bench():
    time.sleep(0.2)
    return subprocess.Popen(["redis-benchmark", "-p", str(REDIS_PORT), "-t", "set", "-n", "100000000", "-r", "100000",
                             "-d", "100", "-c", "8", "-q"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stdin_file(t, tmp):
    if "stdin" not in t:
        return None
    p = Path(tmp) / "stdin.sql"
    p.write_text(t["stdin"])
    return open(p)


def record_trace(name, t, tmp):
    from pagesync_model.trace import record
    out = Path(tmp) / f"{name}.npz"
    bench = start_bench_async() if t.get("bench") else None
    stopper = None
    if bench:  # redis runs until told: shut it down cleanly so the tracer writes its log
        import threading
        stopper = threading.Timer(3.0, lambda: subprocess.run(["redis-cli", "-p", str(REDIS_PORT), "shutdown",
                                                               "nosave"], capture_output=True))
        stopper.start()
    try:
        s = record(t["cmd"], str(out), TRACE_INTERVAL, stdin=stdin_file(t, tmp), stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=60)
    finally:
        if bench:
            stopper.cancel()
            bench.kill()
            bench.wait()
    return out, s


def start_bench_async():
    import threading
    box = {}

    def go():
        box["p"] = start_bench()
    th = threading.Thread(target=go)
    th.start()
    th.join()
    return box["p"]


def live_run(name, t, tmp):
    recv = subprocess.Popen([sys.executable, "-m", "pagesync_model", "live", "receive", "--listen", "127.0.0.1:0",
                             "--quiet"], stderr=subprocess.PIPE, text=True)
    port = int(recv.stderr.readline().strip().rsplit(":", 1)[1])
    out = Path(tmp) / f"{name}.live.json"
    bench = start_bench_async() if t.get("bench") else None
    try:
        p = subprocess.run([sys.executable, "-m", "pagesync_model", "live", "mirror", "--passes", str(PASSES),
                            "--threshold", str(THRESHOLD), "--delay", f"{DELAY}s", "--then", "kill", "--quiet",
                            "--to", f"127.0.0.1:{port}", "--json", str(out), "--", *t["cmd"]],
                           stdin=stdin_file(t, tmp), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                           timeout=120)
    finally:
        if bench:
            bench.kill()
            bench.wait()
        recv.wait(timeout=30)
    if p.returncode != 0:
        raise SystemExit(f"{name}: live mirror failed: {p.stderr.strip()}")
    return json.loads(out.read_text())


def trim_trace(path, start_s, out):
    """The trace from ``start_s`` (seconds since the target's start) on, time shifted to 0 there."""
    from pagesync_model.trace.format import Trace, read_trace, write_trace
    tr = read_trace(path)
    t_end = tr.t_end_ns.astype(np.int64) - int(start_s * 1e9)
    keep = np.flatnonzero(t_end > 0)
    k0 = int(keep[0])
    offs = tr.offsets.astype(np.int64)
    pages = tr.pages[offs[k0]:]
    new_offs = (offs[k0:] - offs[k0]).astype(np.uint64)
    # the first kept interval straddles the start: keep the share of its pages that falls after it
    t_prev = int(tr.t_end_ns[k0 - 1]) - int(start_s * 1e9) if k0 > 0 else -int(start_s * 1e9)
    share = t_end[k0] / max(1, t_end[k0] - t_prev)
    n0 = int(new_offs[1])
    drop = n0 - int(round(n0 * share))
    if drop > 0:
        pages = np.concatenate([pages[:n0][drop:], pages[n0:]])
        new_offs = np.concatenate([[0], new_offs[1:] - drop]).astype(np.uint64)
    write_trace(out, Trace(offsets=new_offs, pages=pages, page_vpn=tr.page_vpn, t_end_ns=t_end[k0:].astype(np.uint64),
                           page_size=tr.page_size, metadata=tr.metadata))
    return tr


def costs(lives):
    """Per-page copy cost and per-pass / stop overheads, measured over every live run."""
    bytes_, secs, over, stops = 0, 0.0, [], []
    for d in lives:
        for r, lp in zip(d["per_pass"], d["live"]["per_pass"]):
            bytes_ += r["bytes"]
            secs += lp["send_s"]
            if r["kind"] != "blackout":
                over.append(r["duration_s"] - lp["send_s"])
            else:
                stops.append(d["downtime_s"] - lp["send_s"])
    return {"bandwidth_Bps": bytes_ / secs, "pass_overhead_s": float(np.median(over)),
            "stop_overhead_s": float(np.median(stops))}


def fitted_costs(live):
    """This run's own costs, fitted to its passes: the time from one scan to the next is a fixed cost
    (scan, maps, bookkeeping, acknowledgement) plus the pages copied times a per-page time (least
    squares over every scan-to-scan interval); the blackout's stop cost is its downtime less its
    pages' copy time."""
    recs = live["per_pass"]
    starts = [r["start_s"] for r in recs]
    xs = [r["pages_copied"] for r in recs[:-1]]
    ys = [b - a for a, b in zip(starts, starts[1:])]
    if len(xs) >= 2 and len(set(xs)) > 1:
        slope, fixed = np.polyfit(xs, ys, 1)
    else:  # one interval: the full copy's own rate, no fixed cost to separate
        slope, fixed = ys[0] / max(1, xs[0]), 0.0
    slope = max(slope, 1e-9)
    stop = live["downtime_s"] - recs[-1]["pages_copied"] * slope
    return {"bandwidth_Bps": 4096 / slope, "pass_overhead_s": max(0.0, float(fixed)),
            "stop_overhead_s": max(1e-6, float(stop))}


def simulate_trace(name, live, trace_path, c, tmp):
    from pagesync_model.config import load_config
    from pagesync_model.sim.engine import simulate
    trimmed = Path(tmp) / f"{name}.trim.npz"
    tr = trim_trace(trace_path, live["live"]["mirror_start_from_target_start_s"], trimmed)
    full = live["per_pass"][0]["pages_copied"]
    ws = max(full, tr.n_distinct) + 16
    cfg = {
        "policy": "stratus",
        "memory": {"size": f"{(ws + ws // 200 + 512) * 4}KiB", "kernel_size": "0B", "layout": "contiguous", "processes": 1,
                   "zero_fraction": 0.0},
        "cpus": {"count": 1, "clock": "1GHz"},
        "workload": {"kind": "trace", "trace": str(trimmed), "rate": "1k/s", "working_set": f"{ws * 4}KiB",
                     "loop": False},
        # the scan runs while the target keeps running (stop_cpus: false): the per-pass overhead (scans,
        # maps, bookkeeping) passes with the target writing, and only the blackout stops it
        "tracking": {"rendezvous": f"{c['pass_overhead_s'] * 1e6:.1f}us", "pte_scan": "0cycles",
                     "pte_harvest": "0cycles", "tlb_flush": "0us", "stop_cpus": False,
                     # the blackout's stop, wait and final scan: the measured stop cost, not a pass's
                     "stop_scan": f"{max(1e-6, c['stop_overhead_s']) * 1e6:.1f}us"},
        "link": {"bandwidth": f"{c['bandwidth_Bps']:.0f}B/s", "latency": "0us", "per_copy": "0us"},
        "stratus": {"passes": PASSES, "threshold": THRESHOLD, "cutover": "0us"},
        "sim": {"quantum": "100us"},
    }
    import yaml
    p = Path(tmp) / f"{name}.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return simulate(load_config(p)).to_dict(), cfg


def compare(live, sim):
    lv = [r["dirty_pages"] for r in live["per_pass"][1:]]
    sm = [r["dirty_pages"] for r in sim["per_pass"][1:]]
    n = min(len(lv), len(sm))
    errs = [(s - l) / l if l else (0.0 if s == 0 else 1.0) for l, s in zip(lv[:n], sm[:n])]
    return {
        "converged_live": live["converged"], "converged_sim": sim["converged"],
        "verdict_ok": live["converged"] == sim["converged"],
        "passes_live": live["passes"], "passes_sim": sim["passes"],
        "dirty_live": lv, "dirty_sim": sm, "dirty_rel_err": errs,
        "dirty_max_abs_err": max((abs(e) for e in errs), default=0.0),
        "downtime_live_s": live["downtime_s"], "downtime_sim_s": sim["downtime_s"],
        "downtime_rel_err": (sim["downtime_s"] - live["downtime_s"]) / live["downtime_s"],
    }


def slim_live(d):
    keep = ("policy", "passes", "converged", "stop_reason", "downtime_s", "total_time_s", "bytes_sent", "pages_sent",
            "memory_pages", "page_size", "verified", "lost_writes", "per_pass")
    out = {k: d[k] for k in keep}
    out["live"] = {k: d["live"][k] for k in ("kernel", "stopped_s", "mirror_start_from_target_start_s",
                                             "full_pass_throughput_Bps", "copy_throughput_Bps", "per_pass")}
    out["command"] = d["config"]["live"]["command"]
    return out


def slim_sim(d):
    return {k: d[k] for k in ("policy", "passes", "converged", "stop_reason", "downtime_s", "total_time_s",
                              "bytes_sent", "pages_sent", "lost_writes", "per_pass")}


def main(argv):
    OUT.mkdir(exist_ok=True)
    tmp = os.environ.get("PAGESYNC_LIVE_EXP_TMP") or tempfile.mkdtemp(prefix="pagesync-live-exp-")
    os.makedirs(tmp, exist_ok=True)
    try:
        subprocess.run(["gcc", "-O2", "-o", f"{tmp}/writer", str(HERE / "writer.c")], check=True)
        ts = targets(tmp)
        names = argv or list(ts)
        lives, traces = {}, {}
        for name in names:
            cached = Path(tmp) / f"{name}.live.json"
            if os.environ.get("PAGESYNC_LIVE_EXP_TMP") and cached.exists() and (Path(tmp) / f"{name}.npz").exists():
                traces[name], lives[name] = Path(tmp) / f"{name}.npz", json.loads(cached.read_text())
                continue
            print(f"{name}: recording the trace", file=sys.stderr)
            traces[name], _ = record_trace(name, ts[name], tmp)
            print(f"{name}: live mirror", file=sys.stderr)
            lives[name] = live_run(name, ts[name], tmp)
        c = costs(lives.values())
        print(f"costs: {c}", file=sys.stderr)
        for name in names:
            # the costs are each run's own (copy rate, fixed per-pass and stop costs vary with the target's
            # address space and with the machine's load at the time), fitted to its passes
            c = fitted_costs(lives[name])
            sim, cfg = simulate_trace(name, lives[name], traces[name], c, tmp)
            cfg["workload"]["trace"] = f"(trace of {name}, trimmed to the mirror's start)"
            res = {"name": name, "what": ts[name]["what"], "costs": c, "comparison": compare(lives[name], sim),
                   "live": slim_live(lives[name]), "sim": slim_sim(sim), "sim_config": cfg}
            (OUT / f"{name}.json").write_text(json.dumps(res, indent=1) + "\n")
            cm = res["comparison"]
            print(f"{name}: live {cm['dirty_live']} {cm['downtime_live_s'] * 1e3:.2f} ms {cm['converged_live']} | "
                  f"sim {cm['dirty_sim']} {cm['downtime_sim_s'] * 1e3:.2f} ms {cm['converged_sim']}", file=sys.stderr)
    finally:
        if not os.environ.get("PAGESYNC_LIVE_EXP_TMP"):
            shutil.rmtree(tmp, ignore_errors=True)
    table()


def table():
    rows = [json.loads(p.read_text()) for p in sorted(OUT.glob("*.json"))]
    order = ["writer-5k", "writer-40k", "writer-200k", "python-dict", "sqlite3", "redis"]
    rows.sort(key=lambda r: order.index(r["name"]) if r["name"] in order else 99)
    lines = ["| target | converged live / sim | dirty pages per pass, live | simulated | worst pass error | "
             "blackout ms live / sim (error) | verified |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        c = r["comparison"]
        lines.append(f"| {r['name']} | {'yes' if c['converged_live'] else 'no'} / {'yes' if c['converged_sim'] else 'no'}"
                     f" | {', '.join(map(str, c['dirty_live']))} | {', '.join(map(str, c['dirty_sim']))} | "
                     f"{c['dirty_max_abs_err'] * 100:.0f}% | {c['downtime_live_s'] * 1e3:.2f} / "
                     f"{c['downtime_sim_s'] * 1e3:.2f} ({c['downtime_rel_err'] * 100:+.0f}%) | "
                     f"{'yes' if r['live']['verified'] else 'NO'} |")
    (HERE / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, len(rows), figsize=(3 * len(rows), 3.2), squeeze=False)
    for ax, r in zip(axes[0], rows):
        c = r["comparison"]
        ax.semilogy(range(1, len(c["dirty_live"]) + 1), [max(1, x) for x in c["dirty_live"]], "o-", label="live")
        ax.semilogy(range(1, len(c["dirty_sim"]) + 1), [max(1, x) for x in c["dirty_sim"]], "s--", label="simulated")
        ax.axhline(THRESHOLD, color="grey", lw=0.8, ls=":")
        ax.set_title(r["name"], fontsize=9)
        ax.set_xlabel("pass")
    axes[0][0].set_ylabel("dirty pages")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(HERE / "mirror.png", dpi=90)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--table"]:
        table()
    else:
        main(sys.argv[1:])
