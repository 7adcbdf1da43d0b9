"""Replay the four recorded real programs under the stratus and qemu policies at two link speeds.

    python experiments/real_traces/run.py            # all cases -> results.json, results.md, results.png
    python experiments/real_traces/run.py --stats    # also rewrite stats/<name>.txt and stats/<name>.png

Each trace is replayed (looping) on one CPU of a machine sized to it: the working set is the trace's
distinct pages rounded up to 1 MiB, memory is 64 MiB more than that (16 MiB of kernel), so the
mirror's first full copy is short and the passes are about the program's own writes. Every other
value is the default (stratus: 4 passes, threshold 1000 pages; qemu: 300 ms downtime limit,
128 MiB/s max bandwidth). Deterministic: tests/test_replay.py re-runs one case against results.json.
"""
import argparse
import contextlib
import io
import json
import math
from pathlib import Path

HERE = Path(__file__).resolve().parent
TRACES = ("sqlite3", "gzip", "python", "redis")
POLICIES = ("stratus", "qemu")
LINKS = ("1Gbit/s", "10Gbit/s")
MIB = 1 << 20
FIELDS = ("passes", "converged", "stop_reason", "downtime_s", "total_time_s", "pages_sent", "workload_writes",
          "lost_writes")


def config(name, policy, link):
    """The Config replaying trace ``name`` under ``policy`` over a ``link``-speed link."""
    from pagesync_model.config import config_from_dict
    from pagesync_model.workloads import load_trace
    path = HERE / "traces" / f"{name}.npz"
    tr = load_trace(path)
    ws_mib = max(1, math.ceil(tr.n_distinct * tr.page_size / MIB))
    return config_from_dict({
        "policy": policy,
        "memory": {"size": f"{ws_mib + 64}MiB", "kernel_size": "16MiB", "processes": 8},
        "cpus": {"count": 1},
        "workload": {"kind": "trace", "trace": str(path), "rate": "1/s", "working_set": f"{ws_mib}MiB",
                     "loop": True},
        "link": {"bandwidth": link},
        "sim": {"time_limit": "30s"},
    })


def run_case(name, policy, link):
    """The result fields of one case (a dict)."""
    from pagesync_model.sim.engine import simulate
    s = simulate(config(name, policy, link)).summary
    return {"trace": name, "policy": policy, "link": link, **{k: s[k] for k in FIELDS}}


def trace_row(name):
    from pagesync_model.trace import stats
    st = stats(HERE / "traces" / f"{name}.npz")
    return st


def markdown(rows, traces):
    out = ["| program | distinct pages | intervals (10 ms) | mean pages/interval | policy | link | passes | "
           "downtime ms | total s | pages sent | lost |", "|---|---:|---:|---:|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        t = traces[r["trace"]]
        dt = "n/a" if r["downtime_s"] is None else f"{r['downtime_s'] * 1e3:.2f}"
        out.append(f"| {r['trace']} | {t['distinct']} | {t['intervals']} | {t['mean']:.1f} | {r['policy']} | "
                   f"{r['link']} | {r['passes']} | {dt} | {r['total_time_s']:.3f} | {r['pages_sent']} | "
                   f"{r['lost_writes']} |")
    return "\n".join(out) + "\n"


def plot(rows, png):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    cases = [(p, link) for p in POLICIES for link in LINKS]
    width = 0.8 / len(cases)
    for i, (p, link) in enumerate(cases):
        sel = [next(r for r in rows if r["trace"] == t and r["policy"] == p and r["link"] == link) for t in TRACES]
        xs = [j + (i - (len(cases) - 1) / 2) * width for j in range(len(TRACES))]
        axes[0].bar(xs, [(r["downtime_s"] or 0) * 1e3 for r in sel], width, label=f"{p} {link}")
        axes[1].bar(xs, [r["passes"] for r in sel], width, label=f"{p} {link}")
    for ax, title in zip(axes, ("downtime (ms, log)", "passes")):
        ax.set_xticks(range(len(TRACES)), TRACES)
        ax.set_title(title)
    axes[0].set_yscale("log")
    axes[1].legend(fontsize=8)
    fig.suptitle("Real programs' recorded writes, replayed (one CPU, machine sized to the trace)")
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stats", action="store_true", help="rewrite stats/<name>.txt and .png too")
    args = ap.parse_args()
    from pagesync_model.trace import plot_stats, print_stats
    traces = {}
    for name in TRACES:
        st = trace_row(name)
        traces[name] = {"distinct": int(st["n_distinct_pages"]), "intervals": int(st["n_intervals"]),
                        "mean": float(st["pages_per_interval"]["mean"])}
        if args.stats:
            (HERE / "stats").mkdir(exist_ok=True)
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                print_stats(HERE / "traces" / f"{name}.npz", buf)
            # name the trace relative to the repository, not to wherever this checkout lies
            text = buf.getvalue().replace(f"{HERE.parents[1]}/", "")
            (HERE / "stats" / f"{name}.txt").write_text(text)
            plot_stats(HERE / "traces" / f"{name}.npz", HERE / "stats" / f"{name}.png")
    rows = [run_case(t, p, link) for t in TRACES for p in POLICIES for link in LINKS]
    (HERE / "results.json").write_text(json.dumps({"traces": traces, "rows": rows}, indent=1) + "\n")
    (HERE / "results.md").write_text(markdown(rows, traces))
    plot(rows, HERE / "results.png")
    print(markdown(rows, traces), end="")


if __name__ == "__main__":
    main()
