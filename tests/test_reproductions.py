"""Each reproduction under experiments/reproductions/ re-simulated (or a reduced version of it) and
held to its committed results.json and to the published figure within the tolerance its README
states. The published figures are written here as the publications print them (see the folders'
READMEs and experiments/reproductions/SOURCES.md), not taken from the committed results."""
import json
from pathlib import Path

import pytest

from pagesync_model.config import load_config
from pagesync_model.sim.engine import simulate

REPRO = Path(__file__).resolve().parents[1] / "experiments" / "reproductions"


def committed(folder):
    return {r["quantity"]: r for r in json.loads((REPRO / folder / "results.json").read_text())["rows"]}


def run(folder, name, overrides=()):
    return simulate(load_config(str(REPRO / folder / name), list(overrides))).to_dict()


# ---- SimGrid cloud-migration example: tesh output, printed to 1 ms

@pytest.mark.parametrize("name, quantity, published", [
    ("vm1000.yaml", "migration time, 1000 MB idle VM", 132.766),
    ("vm100.yaml", "migration time, 100 MB idle VM", 13.346),
])
def test_simgrid_cloud_migration(name, quantity, published):
    total = run("simgrid_cloud_migration", name)["total_time_s"]
    assert total == pytest.approx(committed("simgrid_cloud_migration")[quantity]["predicted"], abs=5e-4)
    # the tesh prints 3 decimals: a faithful model lands within half a millisecond
    assert total == pytest.approx(published, abs=5e-4)


# ---- NEC R320g/h resync with Hyper-V: NEC's table (s, printed to 1 s)

NEC_TABLE = {
    "M4": {16: 3, 32: 4, 64: 5, 128: 9, 256: 16, 320: 17, 512: 25, 640: 31},
    "E4": {16: 3, 32: 4, 64: 7, 128: 13, 256: 25, 320: 30},
}


def test_nec_resync_predicted_table():
    data = json.loads((REPRO / "nec_resync" / "results.json").read_text())
    rows = committed("nec_resync")
    for model, table in NEC_TABLE.items():
        p = data["platforms"][model]
        for gb, published in table.items():
            d = run("nec_resync", "base.yaml", [f"link.bandwidth={p['bandwidth_GiBps']!r}GiB/s",
                                                f"stratus.setup={p['setup_s']!r}s", f"memory.size={gb}GiB"])
            assert d["downtime_s"] == pytest.approx(rows[f"R320g/h-{model}, {gb} GB"]["predicted"], abs=0.006)
            # the README's stated tolerance for an out-of-sample prediction: within 30% of NEC's figure
            assert 0.7 < d["downtime_s"] / published < 1.3, (model, gb)


def test_nec_resync_platform_is_the_r320e_line():
    # the least-squares line through the R320e-M4 Hyper-V table (8..512 GB: 2, 3, 3, 5, 9, 18, 27 s),
    # recomputed here with numpy, is the platform the prediction uses
    import numpy as np
    xs, ys = [8, 16, 32, 64, 128, 256, 512], [2, 3, 3, 5, 9, 18, 27]
    slope, icpt = np.polyfit(xs, ys, 1)
    p = json.loads((REPRO / "nec_resync" / "results.json").read_text())["platforms"]["M4"]
    assert p["bandwidth_GiBps"] == pytest.approx(1 / slope, rel=1e-9)
    assert p["setup_s"] == pytest.approx(icpt, rel=1e-9)


# ---- Stratus 2005: "about 300 mS, depending on the threshold value" (a sweep, not a point prediction)

def test_stratus_2005_blackout_sweep_points():
    data = json.loads((REPRO / "stratus_2005_blackout" / "results.json").read_text())
    grid = {(g["bandwidth"], g["rate"], g["threshold"]): g["blackout_s"] for g in data["grid"]}
    for key in [("1GB/s", "20k/s", 5000), ("1GB/s", "20k/s", 10000), ("200MB/s", "50k/s", 300)]:
        bw, rate, thr = key
        d = run("stratus_2005_blackout", "base.yaml",
                [f"link.bandwidth={bw}", f"workload.rate={rate}", f"stratus.threshold={thr}"])
        assert d["downtime_s"] == pytest.approx(grid[key], rel=1e-9)
    # "depending on the threshold value": along every swept line the blackout never shrinks as the
    # threshold grows
    lines = {}
    for (bw, rate, thr), b in sorted(grid.items(), key=lambda kv: kv[0][2]):
        lines.setdefault((bw, rate), []).append(b)
    assert all(b1 <= b2 * (1 + 1e-9) for bs in lines.values() for b1, b2 in zip(bs, bs[1:]))
    # the README's tolerance: some swept point lies within 25% of the published 300 ms
    assert any(abs(b / 0.300 - 1) <= 0.25 for b in grid.values())


# ---- QEMU 7ca1dfad auto-converge (qemu.rules "1.6"), at the README's 1/16 scale

def test_qemu_autoconverge_2013():
    data = json.loads((REPRO / "qemu_autoconverge_2013" / "results.json").read_text())
    runs = data["runs"]
    prefix = run("qemu_autoconverge_2013", "on.yaml",
                 runs["scale"]["overrides"] + [f"sim.time_limit={runs['scale']['prefix']}"])
    for key in ("bytes_sent", "normal_pages", "zero_pages", "dirty_sync_count"):
        assert prefix[key] == runs["on_prefix"][key], key
    # the commit message: completed with auto-converge, still active after 1,487 s without it
    assert runs["on"]["converged"] and not runs["off"]["converged"]
    # the README's stated gap (the model lacks the zero-page scan): total time 241.161 s published,
    # the model shorter but within a factor of 4; downtime 6.373 s within a factor of 2
    assert 241.161 / 4 < runs["on"]["total_time_s"] < 241.161
    assert 6.373 / 2 < runs["on"]["downtime_s"] < 6.373 * 2


def test_qemu_autoconverge_2013_per_page_costs():
    # the per-page costs come from the measurement (costs_measured.json), x16 at the 1/16 scale, and the
    # zero-test runs' link is the off run's bytes over its time less its own zero test (published
    # figures: 383,749,347 kB in 1,487.503 s, 65,461,532 duplicate pages)
    folder = REPRO / "qemu_autoconverge_2013"
    runs = json.loads((folder / "results.json").read_text())["runs"]
    measured = json.loads((folder / "costs_measured.json").read_text())
    median = measured["median"]
    for key in ("zero_page_test_ns", "sync_ns_per_page"):
        assert median[key] == pytest.approx(sorted(r[key] for r in measured["runs"])[1])
    costs = runs["costs"]
    t = median["zero_page_test_ns"]
    link = 383749347 * 1024 / (1487.503 - 65461532 * t * 1e-9)
    assert costs["zero_test"] == [f"qemu.zero_page_test={t * 16!r}ns", f"link.bandwidth={link / 1e6 / 16!r}MB/s"]
    assert costs["sync_walk"] == [f"tracking.pte_scan={median['sync_ns_per_page'] * 16!r}ns"]
    # the README's verdicts: the zero test lengthens the on run but leaves it well short of 241 s; with the
    # sync walk too the model does not converge (the published run did)
    zero, both = runs["on_zero_test"], runs["on_zero_test_sync_walk"]
    assert zero["converged"] and runs["on"]["total_time_s"] + 20 < zero["total_time_s"] < 241.161 / 2
    assert not both["converged"] and both["stop_reason"] == "time-limit"


# ---- Clark et al. 2005 (NSDI), Figures 9 and 11 under xen-legacy with the 2005 rate limiter

CLARK_TEXT = {  # printed in the paper (Section 6 and the figures), not taken from the committed data
    "specweb": {"labels": [676.8, 126.7, 39.0, 28.4, 24.2, 16.7, 14.2, 15.3, 18.2], "total_MB": 960.0,
                "first_round_s": 54.1, "last_copy_s": 0.201},
    "quake3": {"labels": [56.3, 20.4, 4.6, 1.6, 1.2, 0.9, 1.2, 1.1, 0.8, 0.2, 0.1], "total_MB": 88.0},
}


def test_clark_2005_figure_bars_match_the_printed_numbers():
    bars = json.loads((REPRO / "clark_2005" / "figure_bars.json").read_text())
    for name, text in CLARK_TEXT.items():
        rounds = bars[name]["rounds"]
        assert [r["label_MB"] for r in rounds] == text["labels"]
        # "Total Data Transmitted: 960MB" / "88MB": the printed per-round labels add up to it
        assert sum(text["labels"]) == pytest.approx(text["total_MB"], abs=0.5)
        # every live bar's area (rate x length, read off the drawing) is its printed size, in one unit
        unit = bars[name]["unit"]
        for r in rounds:
            if not r["stop_and_copy"] and r["label_MB"] >= 1:
                assert r["sent_area"] / unit == pytest.approx(r["label_MB"], rel=0.1), (name, r)
        assert [r["stop_and_copy"] for r in rounds] == [False] * (len(rounds) - 1) + [True]
    spec = bars["specweb"]["rounds"]
    assert spec[0]["duration_s"] == pytest.approx(CLARK_TEXT["specweb"]["first_round_s"], abs=0.05)
    assert spec[-1]["duration_s"] == pytest.approx(CLARK_TEXT["specweb"]["last_copy_s"], abs=0.002)


def test_clark_2005_writer_reproduces_the_fitted_rounds():
    # the configs' hot/cold writer, through the model's own distinct-pages formula, gives the pages the
    # figures' early (fitted) rounds dirtied: SPECweb99 within 5%, Quake 3 (a poor fit, README) 40%
    from pagesync_model.dirtyrate import distinct_pages
    bars = json.loads((REPRO / "clark_2005" / "figure_bars.json").read_text())
    for name, fitted, tol in (("specweb", 5, 0.05), ("quake3", 7, 0.40)):
        cfg = load_config(str(REPRO / "clark_2005" / f"{name}.yaml"))
        w = cfg.workload
        pages = w.working_set // 4096
        hot = round(pages * w.hot_fraction)
        for r in bars[name]["rounds"][:fitted]:
            t = r["duration_s"]
            d = distinct_pages(w.rate * w.hot_share * t, hot) + distinct_pages(w.rate * (1 - w.hot_share) * t,
                                                                              pages - hot)
            assert d * 4096 / 2 ** 20 == pytest.approx(r["dirtied_MB"], rel=tol), (name, r)


@pytest.mark.parametrize("name", ["specweb", "quake3"])
def test_clark_2005_rerun_matches_committed(name):
    rows = committed("clark_2005")
    d = run("clark_2005", f"{name}.yaml")
    label = "SPECweb99, 800 MB VM" if name == "specweb" else "Quake 3, 64 MB VM"
    assert d["bytes_sent"] / 2 ** 20 == pytest.approx(rows[f"{label}: total data sent"]["predicted"], abs=0.05)
    assert d["rounds"] == rows[f"{label}: rounds (live + stop-and-copy)"]["predicted"]
    if name == "specweb":
        first = d["per_pass"][0]
        # the README's claim: the rate-limited early rounds within 3% of the paper (676.8 MB in 54.1 s,
        # then 126.7 and 39.0 MB), the total time (71 s) within 5%
        assert first["pages_copied"] * 4096 / 2 ** 20 == pytest.approx(676.8, rel=0.03)
        assert first["duration_s"] == pytest.approx(54.1, rel=0.03)
        for p, published in zip(d["per_pass"][1:3], (126.7, 39.0)):
            assert p["pages_copied"] * 4096 / 2 ** 20 == pytest.approx(published, rel=0.04)
        assert d["total_time_s"] == pytest.approx(71.0, rel=0.05)
    else:
        # total data within 5% of the published 88 MB
        assert d["bytes_sent"] / 2 ** 20 == pytest.approx(88.0, rel=0.05)


def test_clark_2005_cpu_bound_sender():
    # the CPU-bound sender (clark_2005/README.md): the daemon's 9.6 ms of CPU per MiB (6.2's 12% CPU at
    # 100 x 2^20 bit/s) at half of the one CPU. Its rounds 6-8 send at the rates Figure 9 draws (the bars'
    # heights, figure_bars.json: 357.3, 375.8, 366.6) within 5%, as the README says; the stop is not
    # reproduced (the committed run: the 29-round cap, not the paper's 9 rounds)
    bars = json.loads((REPRO / "clark_2005" / "figure_bars.json").read_text())["specweb"]["rounds"]
    committed_run = json.loads((REPRO / "clark_2005" / "results.json").read_text())["runs"]["specweb_cpu_bound"]
    d = run("clark_2005", "specweb.yaml", committed_run["overrides"])
    assert committed_run["overrides"] == ["xen.sender_cpu=9.6ms", "xen.sender_cpu_share=0.5"]
    assert (d["rounds"], d["stop_reason"], d["bytes_sent"]) == (committed_run["rounds"], committed_run["stop_reason"],
                                                                committed_run["bytes_sent"])
    for p, fig in zip(d["per_pass"][5:8], bars[5:8]):
        rate = p["pages_copied"] * 4096 * 8 / 2 ** 20 / p["duration_s"]
        assert rate == pytest.approx(fig["sent_rate"], rel=0.05), (p, fig)
    assert d["rounds"] != len(bars)
