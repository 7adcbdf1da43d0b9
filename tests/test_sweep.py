"""Sweeps: the file format and its errors, the runs it expands to, identical rows in-process and on a
Dask LocalCluster, failed runs recorded in their rows, Ctrl-C keeping finished rows, and --resume."""
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import SMALL
from pagesync_model.cli import main
from pagesync_model.sweep import runner
from pagesync_model.sweep.execute import run_sweep
from pagesync_model.sweep.spec import SweepError, load_sweep, sweep_from_dict

TINY = {"base": SMALL, "axes": {"link.bandwidth": ["500MB/s", "2GB/s"], "stratus.threshold": [16, 4096]}}


def write(tmp_path, data, name="s.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return str(path)


def comparable(table):
    df = table.frame().drop(columns=["wall_s"])
    return df.astype(object).where(df.notna(), None).to_dict("records")


def test_axes_expand_to_the_cross_product_with_seeds_innermost():
    s = sweep_from_dict({"base": SMALL, "axes": {"link.bandwidth": {"log": ["1Gbit/s", "100Gbit/s"], "num": 3},
                                                 "workload.rate": {"linear": ["10k/s", "30k/s"], "num": 3},
                                                 "memory.layout": ["contiguous", "scattered"]},
                         "seeds": 2})
    assert s.axes["link.bandwidth"] == pytest.approx([1.25e8, 1.25e9, 1.25e10])
    assert s.axes["workload.rate"] == pytest.approx([1e4, 2e4, 3e4])
    runs = s.runs()
    assert len(runs) == s.size() == 3 * 3 * 2 * 2
    assert [r.seed for r in runs[:4]] == [1, 2, 1, 2]
    assert runs[0].values == {"link.bandwidth": 1.25e8, "workload.rate": 1e4, "memory.layout": "contiguous"}
    assert len({r.run_id for r in runs}) == len(runs)
    assert [r.run_id for r in s.runs()] == [r.run_id for r in runs]  # stable, for --resume


def test_sizes_in_a_range_stay_whole_pages():
    s = sweep_from_dict({"base": SMALL, "axes": {"memory.size": {"log": ["64MiB", "100MiB"], "num": 4}}})
    assert all(v % 4096 == 0 for v in s.axes["memory.size"])
    assert s.axes["memory.size"][0] == 64 << 20


@pytest.mark.parametrize("axes, message", [
    ({"link.bandwith": [1]}, "axes.link.bandwith: 'link.bandwith' is not a config key (did you mean 'link.bandwidth'?)"),
    ({"link.bandwidth": ["1Gbit/s", "25 gigs"]}, "axes.link.bandwidth[1]: cannot read '25 gigs' as a bandwidth"),
    ({"memory.layout": {"linear": ["a", "b"], "num": 2}}, "a range needs a numeric key"),
    ({"link.bandwidth": {"log": ["0B/s", "1GB/s"], "num": 2}}, "must be > 0"),
    ({"link.bandwidth": {"linear": ["1GB/s", "2GB/s"]}}, "a range is {linear: [FROM, TO], num: N}"),
    ({"link": [1]}, "is a section, not a field"),
])
def test_bad_axes_name_the_yaml_path(axes, message):
    with pytest.raises(SweepError, match=None) as err:
        sweep_from_dict({"base": SMALL, "axes": axes}, "s.yaml")
    assert message in str(err.value) and str(err.value).startswith("s.yaml: ")


def test_bad_base_and_seeds(tmp_path):
    with pytest.raises(SweepError, match="cannot open"):
        sweep_from_dict({"base": "nope.yaml", "axes": {}}, str(tmp_path / "s.yaml"))
    with pytest.raises(SweepError, match="seeds"):
        sweep_from_dict({"base": SMALL, "seeds": 0})
    with pytest.raises(SweepError, match="unknown key"):
        sweep_from_dict({"base": SMALL, "axis": {}})
    with pytest.raises(SweepError, match="link.bandwidth"):
        sweep_from_dict({"base": {**SMALL, "link": {"bandwidth": "fast"}}})


def test_base_file_is_relative_to_the_sweep_file(tmp_path):
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(SMALL))
    (tmp_path / "sweeps").mkdir()
    s = load_sweep(write(tmp_path / "sweeps", {"base": "../cfg.yaml", "axes": {"stratus.threshold": [1, 2]}}))
    assert s.base == SMALL and s.size() == 2


def test_inprocess_and_local_cluster_give_identical_rows():
    s = sweep_from_dict(TINY)
    a = run_sweep(s, scheduler="inprocess", progress=False, write=False)
    b = run_sweep(s, scheduler="local", workers=2, progress=False, write=False)
    assert a.ran == b.ran == 4 and not a.failed and not b.failed
    assert comparable(a.table) == comparable(b.table)
    row = a.table.frame().iloc[0]
    assert row["link.bandwidth"] == 5e8 and row["stratus.threshold"] == 16 and row["seed"] == 1
    assert row["converged"] in (True, False) and row["downtime_s"] > 0 and row["passes"] >= 2


def test_an_existing_scheduler_is_used_and_left_running():
    from dask.distributed import LocalCluster
    s = sweep_from_dict({**TINY, "axes": {"stratus.threshold": [16, 4096]}})
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        out = run_sweep(s, scheduler=cluster.scheduler_address, progress=False, write=False)
        assert len(cluster.scheduler.workers) == 1 and cluster.status.name == "running"
    ref = run_sweep(s, scheduler="inprocess", progress=False, write=False)
    assert comparable(out.table) == comparable(ref.table)


def test_a_failed_run_records_its_error_and_the_sweep_goes_on(tmp_path, capsys):
    # a 16 MiB machine cannot hold SMALL's 32 MiB working set: the config check fails in the worker
    path = write(tmp_path, {"base": SMALL, "axes": {"memory.size": ["16MiB", "64MiB"]}})
    assert main(["sweep", path, "--scheduler", "inprocess", "--quiet"]) == 1
    df = pd.read_csv(str(tmp_path / "s.csv"))
    assert len(df) == 2
    assert "working_set" in df.loc[0, "error"] and math.isnan(df.loc[0, "downtime_s"])
    assert pd.isna(df.loc[1, "error"]) and df.loc[1, "downtime_s"] > 0


def test_interrupt_keeps_finished_rows_and_resume_runs_the_rest(tmp_path, monkeypatch):
    s = sweep_from_dict({**TINY, "seeds": 2})
    prefix = str(tmp_path / "out")
    real = runner.run_row
    calls = []

    def interrupted_after_three(*args, **kw):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(runner, "run_row", interrupted_after_three)
    first = run_sweep(s, prefix, scheduler="inprocess", progress=False)
    assert first.interrupted and first.ran == 3
    assert len(pd.read_parquet(prefix + ".parquet")) == 3 and len(pd.read_csv(prefix + ".csv")) == 3
    monkeypatch.setattr(runner, "run_row", real)
    second = run_sweep(s, prefix, scheduler="inprocess", progress=False, resume=True)
    assert not second.interrupted and second.skipped == 3 and second.ran == 5
    full = run_sweep(s, scheduler="inprocess", progress=False, write=False)
    assert comparable(second.table) == comparable(full.table)
    assert sorted(pd.read_parquet(prefix + ".parquet")["run"]) == list(range(8))


def test_resume_refuses_a_table_of_another_sweep(tmp_path, capsys):
    a = write(tmp_path, TINY, "a.yaml")
    b = write(tmp_path, {**TINY, "axes": {"stratus.threshold": [7]}}, "b.yaml")
    assert main(["sweep", a, "--scheduler", "inprocess", "--quiet", "--out", str(tmp_path / "t")]) == 0
    capsys.readouterr()
    assert main(["sweep", b, "--scheduler", "inprocess", "--quiet", "--resume", "--out", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err
    assert "was written by a different sweep (0 of its 4 runs" in err and err.count("\n") == 1


def test_cli_writes_csv_parquet_and_plot(tmp_path, capsys):
    path = write(tmp_path, {**TINY, "plot": {"field": "total_time_s"}})
    assert main(["sweep", path, "--scheduler", "inprocess", "--plot", str(tmp_path / "p.png")]) == 0
    err = capsys.readouterr().err
    assert "4/4 runs" in err and "ETA" in err
    csv, pq = pd.read_csv(str(tmp_path / "s.csv")), pd.read_parquet(str(tmp_path / "s.parquet"))
    assert len(csv) == len(pq) == 4 and list(csv.columns) == list(pq.columns)
    assert list(csv.columns[:5]) == ["run", "run_id", "link.bandwidth", "stratus.threshold", "seed"]
    assert {"downtime_s", "converged", "error", "wall_s"} <= set(csv.columns)
    assert (tmp_path / "p.png").stat().st_size > 1000
    # everything is done: --resume runs nothing and redraws
    assert main(["sweep", path, "--scheduler", "inprocess", "--resume", "--quiet"]) == 0


@pytest.mark.parametrize("argv, message", [
    (["--scheduler", "bogus"], "--scheduler: 'bogus' is not local"),
    (["--workers", "0"], "--workers: must be >= 1"),
    (["--plot", "x.pdf"], "--plot: 'x.pdf' must end in .png or .svg"),
    (["--x", "memory.size"], "not an axis"),
])
def test_cli_bad_options_are_one_line(tmp_path, capsys, argv, message):
    path = write(tmp_path, TINY)
    assert main(["sweep", path, "--scheduler", "inprocess"] + argv if argv[0] != "--scheduler"
                else ["sweep", path] + argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_cli_bad_sweep_file_is_one_line(tmp_path, capsys):
    path = write(tmp_path, {"base": SMALL, "axes": {"link.bandwidth": ["fast"]}})
    assert main(["sweep", path]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pagesync-sim: ") and "axes.link.bandwidth[0]" in err and err.count("\n") == 1


SWEEPS = sorted((Path(__file__).resolve().parents[1] / "configs" / "sweeps").glob("*.yaml"))


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_committed_sweeps_load_and_their_tables_match(path):
    s = load_sweep(str(path))
    assert s.size() >= 4
    table = pd.read_csv(path.with_suffix(".csv"))
    assert sorted(table["run_id"]) == sorted(r.run_id for r in s.runs())
    assert table["error"].isna().all()
    assert path.with_suffix(".png").stat().st_size > 1000
    lines = path.read_text().splitlines()
    for before, line in zip([""] + lines, lines):  # every value says where it comes from, inline or above
        if ":" in line and not line.lstrip().startswith(("#", "-")) and line.split(":", 1)[1].strip():
            assert "#" in line or before.lstrip().startswith("#"), line
