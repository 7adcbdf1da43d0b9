"""Statistics of a write trace: how many pages per interval, how many distinct, how the working set
grows with the window length, and how skewed the writes are.

Definitions (the tests hold the code to these):
  * ``write count`` of a page: the number of intervals in which it was written.
  * working-set curve: for a window of w consecutive intervals, the number of distinct pages written
    in it, averaged over all n - w + 1 window positions (and the maximum over positions); w runs
    over a log-spaced set of integers from 1 to n.
  * top-p share: the share of all page-writes that fall on the ceil(p * n_distinct) pages with the
    highest write counts (at least one page).
  * Gini coefficient of the write counts of the distinct pages: 0 when all pages are written
    equally often, approaching 1 when a few pages take all writes.  Pages never written are not in
    the trace and do not count.

matplotlib is only imported by ``plot_stats``.
"""
from __future__ import annotations

import math
import sys

import numpy as np

from .format import Trace, TraceError, read_trace


def _load(trace_or_path) -> Trace:
    return trace_or_path if isinstance(trace_or_path, Trace) else read_trace(trace_or_path)


def window_lengths(n: int, points: int = 24) -> np.ndarray:
    """Log-spaced distinct integer window lengths from 1 to n (int64); empty for n == 0."""
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    w = np.unique(np.round(np.logspace(0, math.log10(n), points)).astype(np.int64))
    return w[(w >= 1) & (w <= n)]


def working_set_curve(trace: Trace, windows=None):
    """Distinct pages per window of w intervals: returns (windows, mean, max).

    ``windows``: window lengths in intervals (default ``window_lengths(n)``).  The mean uses gaps:
    a page is absent from a window exactly when the window fits in a gap between two of its
    writes, so the count over all positions is sum_p [(n - w + 1) - sum_gaps max(0, g - w + 1)].
    """
    n = trace.n_intervals
    w = window_lengths(n) if windows is None else np.asarray(windows, dtype=np.int64)
    if n == 0 or trace.n_distinct == 0:
        return w, np.zeros(len(w)), np.zeros(len(w), dtype=np.int64)
    iv = trace.interval_of_write()
    pg = trace.pages.astype(np.int64)
    order = np.lexsort((iv, pg))
    pg, iv = pg[order], iv[order]
    first = np.ones(len(pg), dtype=bool)
    first[1:] = pg[1:] != pg[:-1]
    last = np.ones(len(pg), dtype=bool)
    last[:-1] = pg[1:] != pg[:-1]
    inner = np.diff(iv) - 1
    gaps = np.concatenate([iv[first],                 # before a page's first write
                           inner[~first[1:]],         # between consecutive writes of a page
                           n - 1 - iv[last]])         # after its last write
    gaps = np.sort(gaps[gaps > 0])
    suffix = np.concatenate([np.cumsum(gaps[::-1])[::-1], [0]])  # sum of gaps[i:]
    npages = trace.n_distinct
    means = np.empty(len(w))
    for j, wl in enumerate(w):
        i = np.searchsorted(gaps, wl, side="left")            # gaps >= wl fit a window
        fit = suffix[i] - (wl - 1) * (len(gaps) - i)          # sum of (g - wl + 1)
        means[j] = (npages * (n - wl + 1) - fit) / (n - wl + 1)
    maxes = np.empty(len(w), dtype=np.int64)
    for j, wl in enumerate(w):
        maxes[j] = _max_distinct(pg, iv, n, int(wl))
    return w, means, maxes


def _max_distinct(pg, iv, n, w) -> int:
    """Max over window positions of distinct pages, by a difference array: a write at interval t
    makes its page present in the windows starting in (previous write + 1 .. t) clipped to
    [t - w + 1, t], counting each page once per window."""
    if w >= n:
        return int(len(np.unique(pg)))
    prev = np.empty(len(iv), dtype=np.int64)
    prev[0] = -10**18
    prev[1:] = np.where(pg[1:] == pg[:-1], iv[:-1], -10**18)
    lo = np.maximum(np.maximum(iv - w + 1, prev + 1), 0)
    hi = np.minimum(iv, n - w)
    ok = lo <= hi
    diff = np.zeros(n - w + 2, dtype=np.int64)
    np.add.at(diff, lo[ok], 1)
    np.add.at(diff, hi[ok] + 1, -1)
    return int(np.cumsum(diff)[: n - w + 1].max())


def write_counts(trace: Trace) -> np.ndarray:
    """Intervals in which each distinct page was written (int64 [n_distinct])."""
    return np.bincount(trace.pages.astype(np.int64), minlength=trace.n_distinct)


def top_share(counts: np.ndarray, fraction: float) -> float:
    """Share of all writes on the ceil(fraction * len(counts)) most-written pages (at least 1)."""
    if len(counts) == 0 or counts.sum() == 0:
        return 0.0
    k = max(1, math.ceil(fraction * len(counts) - 1e-9))
    top = np.sort(counts)[::-1][:k]
    return float(top.sum() / counts.sum())


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative values: sum_ij |x_i - x_j| / (2 n^2 mean)."""
    x = np.sort(np.asarray(counts, dtype=np.float64))
    n = len(x)
    if n == 0 or x.sum() == 0:
        return 0.0
    i = np.arange(1, n + 1)
    return float((2.0 * np.sum(i * x)) / (n * x.sum()) - (n + 1.0) / n)


def stats(path) -> dict:
    """Statistics of a trace file (or a Trace).  Raises TraceError if the file is unreadable.

    Keys: n_intervals, duration_s, interval_s_mean, page_size, n_distinct_pages, distinct_bytes,
    n_page_writes, pages_per_interval ({mean, median, p95, max}), pages_per_interval_series
    (list), working_set ({windows_intervals, windows_s, mean_pages, max_pages}), top1_share,
    top10_share, gini, metadata.
    """
    tr = _load(path)
    n = tr.n_intervals
    counts = tr.counts
    dur = float(tr.t_end_ns[-1]) / 1e9 if n else 0.0
    w, ws_mean, ws_max = working_set_curve(tr)
    wc = write_counts(tr)
    per = counts.astype(np.float64) if n else np.zeros(1)
    return {
        "n_intervals": n,
        "duration_s": dur,
        "interval_s_mean": dur / n if n else 0.0,
        "page_size": tr.page_size,
        "n_distinct_pages": tr.n_distinct,
        "distinct_bytes": tr.n_distinct * tr.page_size,
        "n_page_writes": int(len(tr.pages)),
        "pages_per_interval": {"mean": float(per.mean()), "median": float(np.median(per)),
                               "p95": float(np.percentile(per, 95)), "max": int(per.max())},
        "pages_per_interval_series": counts.tolist(),
        "working_set": {"windows_intervals": w.tolist(),
                        "windows_s": (w * (dur / n if n else 0.0)).tolist(),
                        "mean_pages": [float(x) for x in ws_mean],
                        "max_pages": [int(x) for x in ws_max]},
        "top1_share": top_share(wc, 0.01),
        "top10_share": top_share(wc, 0.10),
        "gini": gini(wc),
        "metadata": tr.metadata,
    }


def print_stats(path, file=None) -> dict:
    """Print a readable summary of ``stats(path)`` to ``file`` (default stdout); return the dict."""
    out = file or sys.stdout
    s = stats(path)
    m = s["metadata"]
    ppi = s["pages_per_interval"]
    kib = s["page_size"] / 1024
    print(f"trace          {path if not isinstance(path, Trace) else '<trace>'}", file=out)
    if m.get("command"):
        print(f"command        {' '.join(map(str, m['command']))}", file=out)
    if m.get("kernel"):
        print(f"recorded       {m.get('date', '?')} on Linux {m['kernel']}", file=out)
    print(f"intervals      {s['n_intervals']} over {s['duration_s']:.3f} s "
          f"(mean {s['interval_s_mean'] * 1e3:.2f} ms), page size {s['page_size']} B", file=out)
    print(f"pages/interval mean {ppi['mean']:.1f}  median {ppi['median']:.0f}  "
          f"p95 {ppi['p95']:.0f}  max {ppi['max']}", file=out)
    print(f"distinct pages {s['n_distinct_pages']} ({s['n_distinct_pages'] * kib / 1024:.1f} MiB); "
          f"page-writes {s['n_page_writes']}", file=out)
    print(f"skew           top 1% of pages take {s['top1_share'] * 100:.1f}% of writes, "
          f"top 10% take {s['top10_share'] * 100:.1f}%; Gini {s['gini']:.3f}", file=out)
    print("working set    window        mean pages    max pages", file=out)
    ws = s["working_set"]
    for wi, wsec, mean, mx in zip(ws["windows_intervals"], ws["windows_s"], ws["mean_pages"],
                                  ws["max_pages"]):
        print(f"               {wi:6d} ({wsec * 1e3:9.1f} ms) {mean:12.1f} {mx:12d}", file=out)
    return s


def plot_stats(path, png) -> None:
    """Save a three-panel plot (pages per interval, working-set curve, write-count Lorenz curve)
    to ``png``.  Raises TraceError if matplotlib is not installed or the trace is unreadable."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise TraceError("plotting needs matplotlib, which is not installed "
                         "(pip install matplotlib)") from None
    tr = _load(path)
    s = stats(tr)
    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    t = tr.t_end_ns.astype(np.float64) / 1e9
    ax[0].step(t, tr.counts, where="post")
    ax[0].set(xlabel="time (s)", ylabel="pages written in interval", title="pages per interval")
    ws = s["working_set"]
    ax[1].loglog(np.maximum(ws["windows_s"], 1e-9), ws["mean_pages"], "o-", label="mean")
    ax[1].loglog(np.maximum(ws["windows_s"], 1e-9), ws["max_pages"], "s--", label="max")
    ax[1].set(xlabel="window (s)", ylabel="distinct pages written",
              title="writable working set")
    ax[1].legend()
    wc = np.sort(write_counts(tr))
    if len(wc):
        x = np.arange(len(wc) + 1) / len(wc)
        y = np.concatenate([[0], np.cumsum(wc)]) / max(wc.sum(), 1)
        ax[2].plot(x, y, label=f"Gini {s['gini']:.2f}")
    ax[2].plot([0, 1], [0, 1], ":", color="grey")
    ax[2].set(xlabel="share of pages (least written first)", ylabel="share of writes",
              title="skew (Lorenz curve)")
    ax[2].legend()
    cmd = " ".join(map(str, tr.metadata.get("command", [])))
    if cmd:
        fig.suptitle(cmd[:120])
    fig.tight_layout()
    try:
        fig.savefig(png, dpi=100)
    except OSError as e:
        raise TraceError(f"{png}: cannot save plot: {e.strerror or e}") from e
    finally:
        plt.close(fig)
