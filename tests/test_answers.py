"""The answer on screen: the summary's verdict and downtime lines, stratus's over-copy warning, plan's
probes and CSV, sweep --set and a sweep file copied elsewhere."""
import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from conftest import SMALL, small_config
from pagesync_model.cli import main
from pagesync_model.config import load_config
from pagesync_model.results import format_table
from pagesync_model.sim.engine import simulate
from pagesync_model.sweep.planner import PlanRun

ROOT = Path(__file__).resolve().parents[1]
HOT = ["memory.size=1GiB", "workload.working_set=384MiB", "workload.hot_fraction=0.12", "workload.rate=150k/s",
       "sim.time_limit=40s"]


def test_a_non_converged_summary_says_why_and_what_it_would_need():
    r = simulate(load_config(str(ROOT / "configs" / "qemu-default.yaml"), HOT))
    d, text = r.to_dict(), format_table(r)
    assert "NOT converged: the dirty set and the transfer rate are steady" in text
    assert f"expected downtime      {d['expected_downtime_s'] * 1e3:.3f} ms" in text
    assert f"needed downtime limit  {d['needed_downtime_limit_s'] * 1e3:.3f} ms" in text
    assert "the limit was 300ms" in text and "projected at the end   time-limit at 40.000 s" in text


def test_a_converged_summary_says_why():
    text = format_table(simulate(small_config()))
    assert "converged: the last harvest found fewer dirty pages than stratus.threshold" in text
    assert "WARNING" not in text and "expected downtime" not in text


def test_over_copy_of_far_merges_is_warned_and_counted():
    # nearby 0: no range is ever extended (maximal runs are >= 1 frame apart), so with a list of two
    # ranges every over-copied page comes from merging far ranges
    far = simulate(small_config("stratus.nearby=0", "stratus.max_copyrange=2", "stratus.threshold=100000"))
    d = far.to_dict()
    assert d["converged"] and d["blackout_overcopy_pages"] > 0
    assert d["blackout_far_overcopy_pages"] == d["blackout_overcopy_pages"]
    copied = d["per_pass"][-1]["pages_copied"]
    assert (f"WARNING over-copy    the blackout merged far ranges to fit stratus.max_copyrange: "
            f"{d['blackout_far_overcopy_pages']} clean pages copied "
            f"({d['blackout_far_overcopy_pages'] / copied * 100:.1f} % of the {copied} pages") in format_table(far)
    # nearby wider than memory: every run joins the first range, nothing is merged from afar
    near = simulate(small_config("stratus.nearby=1000000", "stratus.threshold=100000")).to_dict()
    assert near["blackout_overcopy_pages"] > 0 and near["blackout_far_overcopy_pages"] == 0
    assert near["blackout_ranges"] == 1


def test_a_plan_run_without_the_field_says_it_did_not_converge():
    r = PlanRun(0.3, None, False, False, stop_reason="steady-state", field="downtime_s")
    assert r.shown() == "none: NOT converged (steady-state)"
    assert PlanRun(0.3, 0.05, True, True, field="downtime_s").shown() == "50ms"


def test_plan_prints_each_probe_and_its_csv_carries_time_and_bytes(tmp_path, capsys):
    from test_plan import ANALYTIC
    cfg = tmp_path / "a.yaml"
    cfg.write_text(yaml.safe_dump(ANALYTIC))
    out_csv = tmp_path / "runs.csv"
    assert main(["plan", str(cfg), "--target", "downtime<=100ms", "--vary", "link.bandwidth",
                 "--range", "1Gbit/s..400Gbit/s", "--csv", str(out_csv)]) == 0
    captured = capsys.readouterr()
    err = captured.out
    assert captured.err == ""
    rows = list(csv.DictReader(out_csv.open()))
    probes = [line for line in err.splitlines() if line.startswith("pagesync-sim plan: probe link.bandwidth=")]
    assert len(probes) == len(rows) > 3
    assert all(("meets the target" in p) == (row["met"] == "True") for p, row in zip(probes, rows))
    for row in rows:  # each probe's totals are those of its run, rerun here
        again = simulate(load_config(str(cfg), [f"link.bandwidth={row['link.bandwidth']}B/s"])).to_dict()
        assert float(row["total_time_s"]) == again["total_time_s"] and int(row["bytes_sent"]) == again["bytes_sent"]
        assert row["stop_reason"] == again["stop_reason"]


def test_a_copied_sweep_finds_its_base_and_takes_set(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "base.yaml").write_text(yaml.safe_dump(SMALL))
    (a / "sw.yaml").write_text(yaml.safe_dump({"base": "base.yaml", "axes": {"stratus.threshold": [16, 4096]}}))
    moved = tmp_path / "moved"
    shutil.copytree(a, moved)  # copied elsewhere, run from another working directory
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, "-m", "pagesync_model", "sweep", str(Path("..") / "moved" / "sw.yaml"),
                        "--scheduler", "inprocess", "--quiet", "--out", "out", "--set", "memory.size=128MiB"],
                       cwd=b, env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    rows = list(csv.DictReader((b / "out.csv").open()))
    assert len(rows) == 2 and all(r["status"] == "ok" for r in rows)
    assert {int(r["memory_pages"]) for r in rows} == {128 * 2**20 // 4096}  # the --set, not the base's 64 MiB
    bad = subprocess.run([sys.executable, "-m", "pagesync_model", "sweep", str(moved / "sw.yaml"), "--scheduler",
                          "inprocess", "--quiet", "--out", str(b / "x"), "--set", "nokey"], cwd=b, env=env,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--set nokey" in bad.stderr
