"""The .npz trace format (write/read/validate, one-line errors) and the trace statistics."""
import json
import math

import numpy as np
import pytest

from pagesync_model.trace import Trace, TraceError, read_trace, stats, write_trace
from pagesync_model.trace.format import FORMAT_NAME
from pagesync_model.trace.stats import gini, plot_stats, print_stats, top_share, working_set_curve

# 4 intervals; write counts: page 10 -> 4, page 11 -> 2, page 12 -> 1
SETS = [{10, 11}, {10}, {10, 12}, {10, 11}]
T_END = [1_000_000, 2_000_000, 3_000_000, 4_000_000]


def small():
    return Trace.from_vpn_sets(SETS, T_END, page_size=4096, metadata={"command": ["x"]})


def check_obj(tr: Trace):
    """Invariants every trace must satisfy, checked independently of validate()."""
    assert tr.offsets[0] == 0 and tr.offsets[-1] == len(tr.pages)
    assert np.all(np.diff(tr.offsets.astype(np.int64)) >= 0)
    for k in range(tr.n_intervals):
        iv = tr.interval(k).astype(np.int64)
        assert np.all(np.diff(iv) > 0)
    assert len(tr.pages) == 0 or tr.pages.max() < tr.n_distinct


def raw_arrays(tr: Trace) -> dict:
    return dict(format=np.array(FORMAT_NAME), version=np.array(1), offsets=tr.offsets,
                pages=tr.pages, page_vpn=tr.page_vpn, t_end=tr.t_end_ns,
                time_unit=np.array("ns"), page_size=np.array(4096, dtype=np.uint64),
                metadata=np.array("{}"))


def assert_one_line(exc: pytest.ExceptionInfo, *needles):
    msg = str(exc.value)
    assert "\n" not in msg and msg
    for n in needles:
        assert n in msg, msg


def test_round_trip(tmp_path):
    tr = Trace.from_vpn_sets(SETS, T_END, metadata={"command": ["a", "b"], "interval_s": 0.001},
                             scan_ns=[5, 6, 7, 8])
    check_obj(tr)
    p = tmp_path / "t.npz"
    write_trace(p, tr)
    back = read_trace(p)
    check_obj(back)
    for name in ("offsets", "pages", "page_vpn", "t_end_ns", "scan_ns"):
        a, b = getattr(tr, name), getattr(back, name)
        assert a.dtype == b.dtype and np.array_equal(a, b), name
    assert back.page_size == 4096 and back.metadata == tr.metadata
    assert [set(back.interval_vpns(k).tolist()) for k in range(4)] == SETS


def test_round_trip_empty_intervals(tmp_path):
    tr = Trace.from_vpn_sets([[], [7], []], [1, 2, 3])
    write_trace(tmp_path / "e.npz", tr)
    back = read_trace(tmp_path / "e.npz")
    assert back.counts.tolist() == [0, 1, 0] and back.page_vpn.tolist() == [7]


def test_truncated(tmp_path):
    p = tmp_path / "t.npz"
    write_trace(p, small())
    data = p.read_bytes()
    for cut in (10, len(data) // 2, len(data) - 5):
        q = tmp_path / f"cut{cut}.npz"
        q.write_bytes(data[:cut])
        with pytest.raises(TraceError) as e:
            read_trace(q)
        assert_one_line(e, str(q))


@pytest.mark.parametrize("kind", ["text", "npy", "other_npz", "version", "unit", "missing"])
def test_wrong_format(tmp_path, kind):
    p = tmp_path / "bad.npz"
    arrays = raw_arrays(small())
    if kind == "text":
        p.write_text("not a trace\nat all\n")
    elif kind == "npy":
        with open(p, "wb") as f:
            np.save(f, np.arange(3))
    elif kind == "other_npz":
        with open(p, "wb") as f:
            np.savez(f, a=np.arange(3))
    else:
        if kind == "version":
            arrays["version"] = np.array(99)
        elif kind == "unit":
            arrays["time_unit"] = np.array("us")
        else:
            del arrays["page_vpn"]
        with open(p, "wb") as f:
            np.savez_compressed(f, **arrays)
    with pytest.raises(TraceError) as e:
        read_trace(p)
    assert_one_line(e, str(p))


def test_missing_file(tmp_path):
    with pytest.raises(TraceError) as e:
        read_trace(tmp_path / "nope.npz")
    assert_one_line(e, "no such file")


@pytest.mark.parametrize("field,value,needle", [
    ("offsets", np.array([0, 2, 1, 5, 7], dtype=np.uint64), "not monotone"),
    ("offsets", np.array([0, 2, 3, 5, 6], dtype=np.uint64), "offsets[-1]"),
    ("offsets", np.array([1, 2, 3, 5, 7], dtype=np.uint64), "offsets[0]"),
    ("pages", np.array([0, 1, 0, 0, 2, 0, 9], dtype=np.uint32), "out of range"),
    ("pages", np.array([0, 1, 0, 0, 0, 0, 1], dtype=np.uint32), "not strictly increasing"),
    ("pages", np.array([0, 1, 0, 0, 2, 0, 1], dtype=np.int64), "dtype"),
    ("t_end", np.array([1, 3, 2, 4], dtype=np.uint64), "end times"),
    ("t_end", np.array([1, 2, 3], dtype=np.uint64), "end times for 4 intervals"),
    ("page_vpn", np.array([10, 10, 12], dtype=np.uint64), "page_vpn"),
    ("page_size", np.array(3000, dtype=np.uint64), "power of two"),
    ("metadata", np.array("{not json"), "JSON"),
    ("metadata", np.array("[1, 2]"), "JSON object"),
])
def test_inconsistent(tmp_path, field, value, needle):
    arrays = raw_arrays(small())
    arrays[field] = value
    p = tmp_path / "bad.npz"
    with open(p, "wb") as f:
        np.savez_compressed(f, **arrays)
    with pytest.raises(TraceError) as e:
        read_trace(p)
    assert_one_line(e, str(p), needle)


def test_write_rejects_inconsistent(tmp_path):
    tr = small()
    tr.offsets = tr.offsets[::-1].copy()
    with pytest.raises(TraceError) as e:
        write_trace(tmp_path / "x.npz", tr)
    assert_one_line(e, "inconsistent")
    assert not (tmp_path / "x.npz").exists()


# ---- statistics ----

def test_stats_hand_computed(tmp_path):
    p = tmp_path / "t.npz"
    write_trace(p, small())
    s = stats(p)
    assert s["n_intervals"] == 4 and s["n_distinct_pages"] == 3 and s["n_page_writes"] == 7
    assert s["pages_per_interval_series"] == [2, 1, 2, 2]
    assert s["pages_per_interval"]["max"] == 2 and s["pages_per_interval"]["mean"] == 1.75
    assert s["duration_s"] == pytest.approx(0.004)
    # counts [4, 2, 1]: the top 1% and top 10% of 3 pages are both 1 page (ceil) -> 4/7
    assert s["top1_share"] == pytest.approx(4 / 7)
    assert s["top10_share"] == pytest.approx(4 / 7)
    # sum |xi - xj| over ordered pairs of [1, 2, 4] = 12; 12 / (2 * 9 * 7/3) = 2/7
    assert s["gini"] == pytest.approx(2 / 7)
    ws = s["working_set"]
    assert ws["windows_intervals"] == [1, 2, 3, 4]
    # w=1: (2+1+2+2)/4; w=2: windows {10,11},{10,12},{10,11,12}; w=3,4: all three pages
    assert ws["mean_pages"] == pytest.approx([7 / 4, 7 / 3, 3, 3])
    assert ws["max_pages"] == [2, 3, 3, 3]
    assert ws["windows_s"] == pytest.approx([0.001, 0.002, 0.003, 0.004])


def test_skew_hand_computed():
    counts = np.array([10] + [1] * 99)          # 100 pages, 109 page-writes
    assert top_share(counts, 0.01) == pytest.approx(10 / 109)
    assert top_share(counts, 0.10) == pytest.approx(19 / 109)
    assert gini(counts) == pytest.approx(891 / 10900)
    assert gini(np.array([3, 3, 3])) == pytest.approx(0.0)
    assert gini(np.array([0, 0, 0, 5])) == pytest.approx(0.75)  # (n-1)/n for one page taking all


def naive_working_set(sets, w):
    distinct = [len(set().union(*sets[s:s + w])) for s in range(len(sets) - w + 1)]
    return sum(distinct) / len(distinct), max(distinct)


@pytest.mark.parametrize("seed", range(5))
def test_working_set_matches_naive(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    sets = [set(rng.choice(60, size=int(rng.integers(0, 12)), replace=False).tolist())
            for _ in range(n)]
    tr = Trace.from_vpn_sets(sets, np.arange(1, n + 1) * 10)
    windows = np.arange(1, n + 1)
    w, mean, mx = working_set_curve(tr, windows)
    for wl, m, x in zip(w, mean, mx):
        ref_mean, ref_max = naive_working_set(sets, int(wl))
        assert m == pytest.approx(ref_mean) and x == ref_max


def test_print_stats_and_plot(tmp_path, capsys):
    p = tmp_path / "t.npz"
    write_trace(p, small())
    print_stats(p)
    out = capsys.readouterr().out
    assert "Gini 0.286" in out and "distinct pages 3" in out
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        with pytest.raises(TraceError) as e:
            plot_stats(p, tmp_path / "t.png")
        assert_one_line(e, "matplotlib")
    else:
        plot_stats(p, tmp_path / "t.png")
        assert (tmp_path / "t.png").stat().st_size > 0


def test_metadata_is_json(tmp_path):
    p = tmp_path / "t.npz"
    write_trace(p, small())
    with np.load(p) as z:
        assert json.loads(str(z["metadata"][()])) == {"command": ["x"]}
        assert not math.isnan(float(z["page_size"][()]))
