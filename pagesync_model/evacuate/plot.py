"""The Gantt-style plot of a host's drain (``evacuate --plot FILE``): each VM's migration as a bar from
its start to its end (its downtime at the end in black, a failed one hatched), and below it the
rate each stream got over time, stacked, against the host's narrowest link. Built without pyplot,
as pagesync_model/plots.py does."""
import numpy as np
from matplotlib.figure import Figure

from ..plots import PlotError, save_figure

__all__ = ["plot_host", "save_figure", "PlotError"]


def _steps(rates, grid):
    """A stream's rate (bytes/s) at each time of ``grid``, from its (time, rate) steps."""
    if not rates:
        return np.zeros_like(grid)
    t = np.array([r[0] for r in rates])
    v = np.array([r[1] for r in rates])
    idx = np.searchsorted(t, grid, side="right") - 1
    return np.where(idx >= 0, v[np.clip(idx, 0, None)], 0.0)


def plot_host(result):
    """A Figure of a HostResult (or its ``to_dict()``): the migrations over time and their shared rates."""
    d = result.to_dict() if hasattr(result, "to_dict") else dict(result)
    vms = d["vms"]
    if not vms:
        raise PlotError("the host has no migrations to plot")
    n = len(vms)
    fig = Figure(figsize=(10, 3 + 0.28 * n + 3), layout="constrained")
    ax_g, ax_r = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [max(2.0, 0.28 * n), 3]})
    worst = d.get("max_downtime_s")
    limit = "no limit" if not d["concurrency"] else f"{d['concurrency']} at once"
    fig.suptitle(f"{d['host']} ({d['platform']}, {limit}, {d['order']}): drained in {d['drain_s']:.2f} s, "
                 f"{d['migrated']} migrated, {d['failed']} failed"
                 + (f", longest downtime {worst * 1e3:.0f} ms" if worst is not None else ""))
    colours = [f"C{i % 10}" for i in range(n)]
    for i, (v, c) in enumerate(zip(vms, colours)):
        y = n - 1 - i
        length = v["end_s"] - v["start_s"]
        failed = v["verdict"] != "migrated"
        ax_g.broken_barh([(v["start_s"], length)], (y - 0.4, 0.8), facecolors=c, alpha=0.85,
                         hatch="//" if failed else None, edgecolor="white")
        if v["downtime_s"]:
            ax_g.broken_barh([(v["end_s"] - v["downtime_s"], v["downtime_s"])], (y - 0.4, 0.8), facecolors="black")
    ax_g.set_yticks(range(n))
    ax_g.set_yticklabels([v["name"] for v in reversed(vms)], fontsize="small" if n <= 40 else "x-small")
    ax_g.set_ylim(-0.6, n - 0.4)
    ax_g.set_ylabel("VM (start order from the top)")
    ax_g.grid(True, axis="x", alpha=0.3)

    end = max(d["drain_s"], 1e-9)
    grid = np.linspace(0.0, end, 2000)
    stacks = [_steps(v["rates"], grid) * 8 / 1e9 for v in vms]
    ax_r.stackplot(grid, stacks, colors=colours, step="post", alpha=0.85)
    narrowest = min(ln["bandwidth"] for ln in d["links"])
    ax_r.axhline(narrowest * 8 / 1e9, color="black", linestyle="--", linewidth=1,
                 label=f"narrowest link ({narrowest * 8 / 1e9:g} Gbit/s on the wire)")
    ax_r.set_xlabel("time since the drain started (s)")
    ax_r.set_ylabel("stream rates, stacked (Gbit/s)")
    ax_r.set_xlim(0, end)
    ax_r.grid(True, alpha=0.3)
    ax_r.legend(loc="upper right", fontsize="small")
    return fig
