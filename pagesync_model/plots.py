"""Plots of one run and of a sweep (matplotlib; PNG or SVG by the file's extension).

Every function returns a matplotlib Figure built without pyplot (no global state, no display needed),
so tests can inspect its axes and series before ``save_figure`` writes it.

- ``plot_run(result)``: per pass, the dirty pages the harvest found and the pages copied (log scale),
  the pass durations, and a time line of the passes, the brownouts and the blackout.
- ``plot_sweep(df, axes, field)``: a heatmap of a summary field over two axes, or lines over one axis
  (one line per value of a second), with the runs that did not converge marked and the boundary
  between converged and not-converged drawn.
"""
import math
import os

import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

FORMATS = (".png", ".svg")
KIND_COLOURS = {"full": "tab:blue", "pass": "tab:green", "blackout": "black"}


class PlotError(ValueError):
    """A plot that cannot be drawn as asked (unknown field or axis, unsupported file type); one line."""


def save_figure(fig, path, dpi=120):
    """Write ``fig`` to ``path`` as PNG or SVG (chosen by the extension). Raises PlotError for another
    extension, OSError if the file cannot be written."""
    ext = os.path.splitext(str(path))[1].lower()
    if ext not in FORMATS:
        raise PlotError(f"'{path}': unsupported file type '{ext or '(none)'}' (use .png or .svg)")
    fig.savefig(path, format=ext[1:], dpi=dpi, bbox_inches="tight")
    return path


# ---------------------------------------------------------------------------------------------
# one run

def plot_run(result):
    """The passes of one run (a Result or its ``to_dict()``) as a Figure with three axes: pages per
    pass (2 series: dirty pages found, pages copied; log y), pass durations (bars), and the time line
    (3 series: copy passes, brownouts, blackout)."""
    d = result.to_dict() if hasattr(result, "to_dict") else dict(result)
    passes = d["per_pass"]
    if not passes:
        raise PlotError("the run has no passes to plot")
    idx = np.array([p["pass"] for p in passes])
    kinds = [p["kind"] for p in passes]
    fig = Figure(figsize=(9, 9.5), layout="constrained")
    ax_pages, ax_dur, ax_time = fig.subplots(3, 1, gridspec_kw={"height_ratios": [3, 2, 2]})
    downtime = "n/a" if d.get("downtime_s") is None else f"{d['downtime_s'] * 1e3:.1f} ms"
    verdict = "converged" if d.get("converged") else "NOT converged"
    fig.suptitle(f"{d.get('policy', '?')}: {len(passes)} passes, {verdict} ({d.get('stop_reason', '?')}), "
                 f"blackout {downtime}, total {d.get('total_time_s', float('nan')):.2f} s")

    dirty = np.array([max(p["dirty_pages"], 0) for p in passes], dtype=float)
    copied = np.array([max(p["pages_copied"], 0) for p in passes], dtype=float)
    # log axes cannot show 0: an empty pass is drawn at 0.5 pages, under the 1-page gridline
    ax_pages.plot(idx, np.where(dirty > 0, dirty, 0.5), "o-", label="dirty pages found by the harvest")
    ax_pages.plot(idx, np.where(copied > 0, copied, 0.5), "s--", label="pages copied")
    ax_pages.set_yscale("log")
    ax_pages.set_xlabel("pass")
    ax_pages.set_ylabel("pages (log scale)")
    ax_pages.set_xticks(idx)
    ax_pages.set_xticklabels([f"{i}\n{k}" for i, k in zip(idx, kinds)])
    ax_pages.grid(True, which="major", alpha=0.3)
    ax_pages.legend(loc="best")

    durations = np.array([p["duration_s"] for p in passes], dtype=float)
    ax_dur.bar(idx, durations, color=[KIND_COLOURS.get(k, "grey") for k in kinds])
    if durations.min() > 0 and durations.max() / durations.min() >= 10:
        ax_dur.set_yscale("log")
    ax_dur.set_xlabel("pass")
    ax_dur.set_ylabel("pass duration (s)")
    ax_dur.set_xticks(idx)
    ax_dur.grid(True, axis="y", alpha=0.3)

    live = [(p["start_s"], p["duration_s"]) for p in passes if p["kind"] != "blackout"]
    black = [(p["start_s"], p["duration_s"]) for p in passes if p["kind"] == "blackout"]
    brown = [(p["start_s"], p["brownout_s"]) for p in passes if p["brownout_s"] > 0]
    ax_time.broken_barh(live, (2.6, 0.8), facecolors=[KIND_COLOURS.get(k, "grey") for k in kinds
                                                       if k != "blackout"], edgecolor="white",
                        label="copy passes (CPUs running)")
    # brownouts and the blackout last milliseconds in a run of seconds: markers keep them visible
    ax_time.plot([t for t, _ in brown], [1.5] * len(brown), "|", color="tab:red", markersize=18,
                 markeredgewidth=2, label=f"brownouts ({len(brown)} harvests, "
                                          f"{sum(w for _, w in brown) * 1e3:.1f} ms)")
    ax_time.broken_barh(black, (0.1, 0.8), facecolors="black", label=f"blackout ({downtime})")
    for t, w in black:
        ax_time.plot([t + w / 2], [0.5], "v", color="black", markersize=10)
    ax_time.set_yticks([0.5, 1.5, 3.0])
    ax_time.set_yticklabels(["blackout", "brownouts", "passes"])
    ax_time.set_ylim(0, 3.6)
    ax_time.set_xlabel("time since the start of the mirror (s)")
    ax_time.set_ylabel("phase")
    ax_time.grid(True, axis="x", alpha=0.3)
    ax_time.legend(loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=3, fontsize="small")
    return fig


# ---------------------------------------------------------------------------------------------
# a sweep

def _field_scale(field, values):
    """(divisor, label) that shows ``field`` in readable units."""
    finite = [abs(v) for v in values if v is not None and np.isfinite(v)]
    top = max(finite) if finite else 0.0
    if field.endswith("_s"):
        return (1e-3, f"{field[:-2]} (ms)") if top < 10 else (1.0, f"{field[:-2]} (s)")
    if "bytes" in field:
        return (2.0 ** 30, f"{field} (GiB)")
    return (1.0, field)


def _decades(values):
    pos = [v for v in values if isinstance(v, (int, float)) and v > 0]
    return len(pos) == len(values) and len(pos) > 1 and max(pos) / min(pos) >= 10


def _as_float(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _cells(df, field, keys):
    """Mean of ``field`` and 'all converged' per combination of ``keys`` (over seeds)."""
    out = {}
    for combo, group in df.groupby(keys, sort=True, dropna=False):
        combo = combo if isinstance(combo, tuple) else (combo,)
        vals = [_as_float(v) for v in group[field]]
        vals = [v for v in vals if np.isfinite(v)]
        conv = group["converged"] if "converged" in group else []
        ok = bool(len(group)) and all(c is True or c == 1 or c == "True" for c in conv) and \
            ("error" not in group or group["error"].isna().all())
        out[combo] = (float(np.mean(vals)) if vals else float("nan"), ok)
    return out


def plot_sweep(df, axis_keys, field="downtime_s", x=None, y=None, kind="auto", limit=None, label=None):
    """Draw ``field`` of a sweep table ``df`` (one row per run, as `Table.frame` gives) over its axes.

    ``axis_keys``: the sweep's axes; ``x`` (default the first) and ``y`` (default the second, if any)
    choose which; the other axes must hold one value each, and seeds are averaged. ``kind``:
    'heatmap' (needs x and y), 'lines' (one line per y value) or 'auto' (heatmap for two axes).
    Runs that did not converge are marked and the converged/not-converged boundary drawn; ``limit``
    (in the field's base unit, e.g. 0.3 for 300 ms) also draws where the field crosses it. ``label(key,
    value)`` writes an axis value (default ``str(value)``; the sweep passes one that adds its unit). Returns the
    Figure. Raises PlotError for an unknown field or axis or a table without rows.
    """
    if df is None or len(df) == 0:
        raise PlotError("the sweep table has no rows")
    if field not in df.columns:
        numeric = [c for c in df.columns if c not in ("run", "run_id", "error", "backend", "policy", "stop_reason")
                   and c not in axis_keys]
        raise PlotError(f"'{field}' is not a column of the table (fields: {', '.join(numeric)})")
    axis_keys = list(axis_keys)
    if not axis_keys:
        raise PlotError("the sweep has no axes to plot over")
    x = x or axis_keys[0]
    if y is None:  # the next axis that varies, if any
        y = next((k for k in axis_keys if k != x and df[k].nunique(dropna=False) > 1), None)
    for k in (x, y):
        if k is not None and k not in axis_keys:
            raise PlotError(f"'{k}' is not an axis (axes: {', '.join(axis_keys)})")
    for k in axis_keys:
        if k not in (x, y) and df[k].nunique(dropna=False) > 1:
            raise PlotError(f"axis '{k}' has {df[k].nunique()} values; plot it as x or y, or sweep it alone")
    if kind == "auto":
        kind = "heatmap" if y is not None else "lines"
    if kind not in ("heatmap", "lines"):
        raise PlotError(f"unknown plot kind '{kind}' (heatmap, lines or auto)")
    if kind == "heatmap" and y is None:
        raise PlotError("a heatmap needs two axes")
    keys = [x] if y is None else [x, y]
    cells = _cells(df, field, keys)
    scale, flabel = _field_scale(field, [v for v, _ in cells.values()])
    xs = sorted(df[x].dropna().unique(), key=_sort_key)
    ys = sorted(df[y].dropna().unique(), key=_sort_key) if y is not None else [None]
    name = label or (lambda key, value: str(value))
    fig = Figure(figsize=(8.5, 6), layout="constrained")
    ax = fig.add_subplot()
    if kind == "heatmap":
        _heatmap(fig, ax, cells, xs, ys, x, y, scale, flabel, name, limit)
    else:
        _lines(ax, cells, xs, ys, x, y, scale, flabel, name)
        if limit is not None:
            ax.axhline(limit / scale, color="grey", linestyle="--", label=f"limit {limit / scale:g}")
            ax.legend(loc="best", fontsize="small")
    n_runs = len(df)
    seeds = df["seed"].nunique() if "seed" in df else 1
    fig.suptitle(f"{flabel} over {x}" + (f" and {y}" if y else "") +
                 f"  ({n_runs} runs{f', mean of {seeds} seeds' if seeds > 1 else ''})")
    return fig


def _sort_key(v):
    return (0, float(v), "") if isinstance(v, (int, float, np.number)) and not isinstance(v, bool) else (1, 0, str(v))


def _edges(flags):
    """Cell edges between neighbours whose ``flags`` (a 2-D bool array, rows = y) differ."""
    segs = []
    rows, cols = flags.shape
    for i in range(rows):
        for j in range(cols):
            if j + 1 < cols and flags[i, j] != flags[i, j + 1]:
                segs.append([(j + 0.5, i - 0.5), (j + 0.5, i + 0.5)])
            if i + 1 < rows and flags[i, j] != flags[i + 1, j]:
                segs.append([(j - 0.5, i + 0.5), (j + 0.5, i + 0.5)])
    return segs


def _heatmap(fig, ax, cells, xs, ys, x, y, scale, flabel, name, limit=None):
    grid = np.full((len(ys), len(xs)), np.nan)
    ok = np.zeros((len(ys), len(xs)), dtype=bool)
    for (cx, cy), (v, conv) in cells.items():
        if cx in xs and cy in ys:
            i, j = ys.index(cy), xs.index(cx)
            grid[i, j] = v / scale
            ok[i, j] = conv
    finite = grid[np.isfinite(grid)]
    norm = LogNorm(finite[finite > 0].min(), finite.max()) \
        if finite.size and finite.min() > 0 and finite.max() / finite.min() >= 30 else None
    im = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis", norm=norm, interpolation="nearest")
    cbar = fig.colorbar(im, ax=ax)
    cbar.set_label(flabel)
    for i in range(len(ys)):
        for j in range(len(xs)):
            v = grid[i, j]
            text = "n/a" if not np.isfinite(v) else f"{v:.3g}"
            ax.text(j, i, text + ("" if ok[i, j] else "\n(not conv.)"), ha="center", va="center", fontsize=7,
                    color="white" if not ok[i, j] or not np.isfinite(v) or im.norm(v) < 0.5 else "black",
                    bbox=None if ok[i, j] else {"facecolor": "tab:red", "alpha": 0.6, "pad": 1, "lw": 0})
    # the boundary: cell edges between a converged and a not-converged neighbour
    from matplotlib.collections import LineCollection
    segs = _edges(ok)
    if segs:
        ax.add_collection(LineCollection(segs, colors="tab:red", linewidths=3,
                                         label="converged / not converged boundary"))
    if limit is not None:
        under = np.where(np.isfinite(grid), grid <= limit / scale, False) & ok
        lsegs = _edges(under)
        if lsegs:
            ax.add_collection(LineCollection(lsegs, colors="white", linewidths=2.5, linestyles="--",
                                             label=f"{flabel} <= {limit / scale:g} (converged)"))
    if segs or limit is not None:
        ax.legend(loc="upper left", bbox_to_anchor=(0, -0.12), fontsize="small", facecolor="lightgrey")
    ax.set_xticks(range(len(xs)))
    ax.set_xticklabels([name(x, v) for v in xs], rotation=30, ha="right")
    ax.set_yticks(range(len(ys)))
    ax.set_yticklabels([name(y, v) for v in ys])
    ax.set_xlabel(x)
    ax.set_ylabel(y)


def _lines(ax, cells, xs, ys, x, y, scale, flabel, name):
    bad_x, bad_v = [], []
    numeric_x = all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in xs)
    pos = (lambda v: float(v)) if numeric_x else (lambda v: float(xs.index(v)))
    for yv in ys:
        pts = [(cx, cells[(cx,) if y is None else (cx, yv)]) for cx in xs
               if ((cx,) if y is None else (cx, yv)) in cells]
        label = flabel if y is None else f"{y} = {name(y, yv)}"
        ax.plot([pos(cx) for cx, _ in pts], [v / scale for _, (v, _) in pts], "o-", label=label)
        for cx, (v, conv) in pts:
            if not conv:
                bad_x.append(pos(cx))
                bad_v.append(v / scale if np.isfinite(v) else np.nan)
        if y is None:
            # the boundary: midway between the last converged and first not-converged x
            flags = [conv for _, (_, conv) in pts]
            for (a, fa), (b, fb) in zip(zip(pts, flags), zip(pts[1:], flags[1:])):
                if fa != fb:
                    xa, xb = pos(a[0]), pos(b[0])
                    mid = math.sqrt(xa * xb) if numeric_x and _decades(xs) and xa > 0 else (xa + xb) / 2
                    ax.axvline(mid, color="tab:red", linestyle=":", label="converged / not converged")
    if bad_x:
        ax.plot(bad_x, bad_v, "x", color="tab:red", markersize=11, markeredgewidth=2, label="not converged")
    if numeric_x and _decades(xs):
        ax.set_xscale("log")
    if not numeric_x:
        ax.set_xticks(range(len(xs)))
    ticks = [pos(v) for v in xs]
    ax.set_xticks(ticks)
    ax.set_xticklabels([name(x, v) for v in xs], rotation=30, ha="right")
    ax.minorticks_off()
    vals = [v for v, _ in cells.values() if np.isfinite(v) and v > 0]
    if len(vals) > 1 and max(vals) / min(vals) >= 100:
        ax.set_yscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel(flabel)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small")
