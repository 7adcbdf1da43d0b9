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
