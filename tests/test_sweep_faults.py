"""Sweeps under faults: every row once and only once. Colliding axis values, resuming a changed sweep,
a journal torn at every byte of its last record or damaged in the middle, a sweep killed with
SIGKILL, a run that hangs (in-process and on Dask), a cross product too large, a journal in use."""
import fcntl
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import pandas as pd
import psutil
import pytest
import yaml

from conftest import SMALL
from pagesync_model.cli import main
from pagesync_model.sweep import journal as journal_mod
from pagesync_model.sweep import spec as spec_mod
from pagesync_model.sweep.execute import run_sweep
from pagesync_model.sweep.spec import SweepError, sweep_from_dict

TINY = {"base": SMALL, "axes": {"link.bandwidth": ["500MB/s", "2GB/s"], "stratus.threshold": [16, 4096]}}
# the second run is a QEMU migration rate-limited to 1 MiB/s that can never get under a 1 ms
# downtime-limit: it would go on for hours of wall time until sim.time_limit (1 h simulated)
HANGS = {"base": SMALL, "set": ["policy=qemu", "qemu.downtime_limit=1ms", "sim.early_stop=false"],
         "axes": {"qemu.max_bandwidth": ["1GiB/s", "1MiB/s"]}}
# the subprocesses import the package this test imports: the installed one (CI) or the tree on
# PYTHONPATH (a developer's in-place build); run outside the source tree, where ``python -m`` would
# otherwise pick up the uncompiled sources from the working directory
ENV = dict(os.environ)
OUTSIDE = tempfile.gettempdir()


def write(tmp_path, data, name="s.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return str(path)


def rows(df):
    """The rows without what differs between two runs of one run (wall time), as plain records."""
    df = df.drop(columns=["wall_s"])
    return df.astype(object).where(df.notna(), None).to_dict("records")


def host_processes():
    """The run-host children of this test process (there should be none after a sweep)."""
    me = psutil.Process()
    return [p for p in me.children(recursive=True)
            if "pagesync_model.sweep.host" in " ".join(p.cmdline() if p.is_running() else [])]


def sweep_cli(*argv):
    return subprocess.run([sys.executable, "-m", "pagesync_model", "sweep", *argv], capture_output=True,
                          text=True, env=ENV, timeout=120, cwd=OUTSIDE)


# -- identity and duplicates ------------------------------------------------------------------------

@pytest.mark.parametrize("key, values, spelled", [
    ("memory.size", ["64MiB", "128MiB", "65536KiB"], "[0] '64MiB' and [2] '65536KiB' are both 64MiB"),
    ("link.bandwidth", ["1GB/s", "8Gbit/s"], "[0] '1GB/s' and [1] '8Gbit/s' are both 8Gbit/s"),
    ("stratus.threshold", {"linear": [1, 3], "num": 5}, "values 2 and 3 of {linear: [1, 3], num: 5} are both 2"),
])
def test_axis_values_that_collide_are_refused_naming_both_spellings(tmp_path, capsys, key, values, spelled):
    path = write(tmp_path, {"base": SMALL, "axes": {key: values}})
    assert main(["sweep", path, "--scheduler", "inprocess", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"s.yaml: axes.{key}: {spelled}" in err and "would be the same run" in err and err.count("\n") == 1
    assert not (tmp_path / "s.csv").exists() and not (tmp_path / "s.journal").exists()


def test_run_identity_is_the_effective_config_and_seed():
    ids = [r.run_id for r in sweep_from_dict(TINY).runs()]
    # the same machine spelled differently in the base, and the base's seed given as seeds: [1]
    respelled = {**SMALL, "memory": {**SMALL["memory"], "size": "65536KiB"}, "link": {**SMALL["link"], "bandwidth": "8Gbit/s"}}
    assert [r.run_id for r in sweep_from_dict({**TINY, "base": respelled, "seeds": [1]}).runs()] == ids
    # anything that changes what runs changes every identity: set:, the base, the seed
    for other in ({**TINY, "set": ["link.latency=3us"]},
                  {**TINY, "base": {**SMALL, "cpus": {**SMALL["cpus"], "count": 2}}},
                  {**TINY, "seeds": [2]}):
        assert not set(r.run_id for r in sweep_from_dict(other).runs()) & set(ids)


def test_the_cross_product_is_guarded(tmp_path):
    big = write(tmp_path, {"base": SMALL, "axes": {"link.bandwidth": {"log": ["1Gbit/s", "100Gbit/s"], "num": 1000},
                                                   "workload.rate": {"linear": ["1k/s", "50k/s"], "num": 1000}},
                           "seeds": 100})
    t0 = time.monotonic()
    out = sweep_cli(big, "--scheduler", "inprocess", "--quiet")
    assert out.returncode == 2 and time.monotonic() - t0 < 60
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert ("axes: 1000 link.bandwidth x 1000 workload.rate x 100 seeds = 100,000,000 runs, more than 100,000"
            in out.stderr) and "--force" in out.stderr


def test_force_runs_past_the_guard(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(spec_mod, "MAX_RUNS", 3)
    path = write(tmp_path, TINY)
    assert main(["sweep", path, "--scheduler", "inprocess", "--quiet", "--run-timeout", "none"]) == 2
    assert "= 4 runs, more than 3" in capsys.readouterr().err
    assert main(["sweep", path, "--scheduler", "inprocess", "--quiet", "--run-timeout", "none", "--force"]) == 0
    assert len(pd.read_csv(tmp_path / "s.csv")) == 4


# -- resume -----------------------------------------------------------------------------------------

def test_resume_refuses_a_sweep_whose_set_changed_and_resume_changed_reruns_it(tmp_path, capsys):
    path = write(tmp_path, TINY)
    assert run_sweep(sweep_from_dict(TINY, path), str(tmp_path / "s"), scheduler="inprocess", progress=False).ran == 4
    write(tmp_path, {**TINY, "set": ["link.latency=20us"]})
    capsys.readouterr()
    assert main(["sweep", path, "--scheduler", "inprocess", "--quiet", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "was written by a different sweep (0 of its 4 runs are runs of this one" in err and err.count("\n") == 1
    out = run_sweep(sweep_from_dict({**TINY, "set": ["link.latency=20us"]}, path), str(tmp_path / "s"),
                    scheduler="inprocess", progress=False, resume_changed=True)
    assert out.skipped == 0 and out.ran == 4 and out.dropped == 4
    fresh = run_sweep(sweep_from_dict({**TINY, "set": ["link.latency=20us"]}), scheduler="inprocess",
                      progress=False, write=False)
    assert rows(pd.read_parquet(tmp_path / "s.parquet")) == rows(fresh.table.frame())


def test_resume_changed_keeps_the_runs_that_did_not_change(tmp_path):
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(SMALL))
    first = {"base": "cfg.yaml", "axes": {"stratus.threshold": [16, 4096]}}
    path = write(tmp_path, first)
    prefix = str(tmp_path / "s")
    assert run_sweep(sweep_from_dict(first, path), prefix, scheduler="inprocess", progress=False).ran == 2
    # the base file is edited: same machine, spelled in other units -- the runs are the same
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump({**SMALL, "memory": {**SMALL["memory"], "size": "65536KiB"}}))
    same = run_sweep(sweep_from_dict(first, path), prefix, scheduler="inprocess", progress=False, resume=True)
    assert same.skipped == 2 and same.ran == 0
    # an axis grows and moves first: the two old runs are kept under their new numbers
    grown = {"base": "cfg.yaml", "axes": {"link.bandwidth": ["1GB/s"], "stratus.threshold": [16, 256, 4096]}}
    with pytest.raises(ValueError, match="different sweep"):
        run_sweep(sweep_from_dict(grown, path), prefix, scheduler="inprocess", progress=False, resume=True)
    out = run_sweep(sweep_from_dict(grown, path), prefix, scheduler="inprocess", progress=False, resume_changed=True)
    assert out.skipped == 2 and out.ran == 1 and out.dropped == 0
    fresh = run_sweep(sweep_from_dict(grown, path), scheduler="inprocess", progress=False, write=False)
    assert rows(pd.read_csv(prefix + ".csv")) == rows(pd.read_csv(_csv_of(fresh, tmp_path)))
    # the base file really changes: nothing old is kept
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump({**SMALL, "cpus": {**SMALL["cpus"], "count": 2}}))
    out = run_sweep(sweep_from_dict(grown, path), prefix, scheduler="inprocess", progress=False, resume_changed=True)
    assert out.skipped == 0 and out.ran == 3 and out.dropped == 3


def _csv_of(outcome, tmp_path):
    """``outcome``'s table through the same CSV writer as the sweep's (so dtypes compare alike)."""
    path = tmp_path / "fresh.csv"
    outcome.table.frame().to_csv(path, index=False)
    return path


def test_a_torn_csv_row_is_not_a_finished_run(tmp_path, capsys):
    path = write(tmp_path, TINY)
    assert run_sweep(sweep_from_dict(TINY, path), str(tmp_path / "s"), scheduler="inprocess", progress=False).ran == 4
    complete = pd.read_csv(tmp_path / "s.csv")
    text = (tmp_path / "s.csv").read_text()
    (tmp_path / "s.csv").write_text(text[:len(text) - len(text.splitlines()[-1]) // 2])  # half the last row
    (tmp_path / "s.parquet").unlink()
    assert main(["sweep", path, "--scheduler", "inprocess", "--quiet", "--resume"]) == 0
    assert rows(pd.read_csv(tmp_path / "s.csv")) == rows(complete)
    assert pd.read_parquet(tmp_path / "s.parquet")["run_id"].tolist() == complete["run_id"].tolist()


# -- the journal ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 4-run sweep: (sweep file, its journal's bytes, its CSV as records)."""
    tmp = tmp_path_factory.mktemp("finished")
    path = write(tmp, TINY)
    out = run_sweep(sweep_from_dict(TINY, path), str(tmp / "s"), scheduler="inprocess", progress=False)
    assert out.ran == 4 and not out.failed
    return path, (tmp / "s.journal").read_bytes(), rows(pd.read_csv(tmp / "s.csv"))


def test_a_journal_torn_anywhere_in_its_last_record_loses_only_that_record(tmp_path, finished):
    _, data, complete = finished
    lines = data.splitlines(keepends=True)
    assert len(lines) == 5  # the header and four rows
    last = len(data) - len(lines[-1])
    path = tmp_path / "t.journal"
    for cut in range(last, len(data)):
        path.write_bytes(data[:cut])
        head, got, torn = journal_mod.read(str(path))
        assert head is not None and torn == cut - last, cut
        assert [r["run_id"] for r in got] == [r["run_id"] for r in complete[:3]], cut
    path.write_bytes(data)
    assert len(journal_mod.read(str(path))[1]) == 4
    for cut in range(0, len(lines[0])):  # the header itself torn: nothing to resume
        path.write_bytes(data[:cut])
        assert journal_mod.read(str(path)) == (None, [], cut)


def test_resume_from_a_torn_journal_reruns_the_torn_run(tmp_path, finished):
    sweep_path, data, complete = finished
    lines = data.splitlines(keepends=True)
    prefix = str(tmp_path / "s")
    for cut in (len(data) - len(lines[-1]) + 1, len(data) - 1):  # the torn record's first and last byte
        open(prefix + ".journal", "wb").write(data[:cut])
        out = run_sweep(sweep_from_dict(TINY, sweep_path), prefix, scheduler="inprocess", progress=False, resume=True)
        assert out.skipped == 3 and out.ran == 1
        assert rows(pd.read_csv(prefix + ".csv")) == complete
        assert len(journal_mod.read(prefix + ".journal")[1]) == 4


def test_a_journal_damaged_before_its_end_is_refused(tmp_path, capsys, finished):
    sweep_path, data, _ = finished
    lines = data.splitlines(keepends=True)
    damaged = bytearray(data)
    damaged[len(lines[0]) + 40] ^= 0x01  # one bit of the first row's JSON
    (tmp_path / "s.journal").write_bytes(bytes(damaged))
    assert main(["sweep", sweep_path, "--scheduler", "inprocess", "--quiet", "--resume",
                 "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert f"the record at byte {len(lines[0])} is damaged" in err and err.count("\n") == 1
    assert (tmp_path / "s.journal").read_bytes() == bytes(damaged)  # left as it was for inspection


def test_starting_over_says_how_many_runs_it_replaced(tmp_path, capsys, finished):
    sweep_path, data, _ = finished
    (tmp_path / "s.journal").write_bytes(data)
    assert main(["sweep", sweep_path, "--scheduler", "inprocess", "--quiet", "--run-timeout", "none",
                 "--out", str(tmp_path / "s")]) == 0
    err = capsys.readouterr().err
    assert f"started over: the 4 runs in {tmp_path / 's'}.journal were replaced (--resume keeps them)" in err
    assert len(journal_mod.read(str(tmp_path / "s.journal"))[1]) == 4


def test_resume_without_a_journal_is_refused(tmp_path, capsys):
    path = write(tmp_path, TINY)
    pd.DataFrame({"run": [0], "run_id": ["x"]}).to_csv(tmp_path / "s.csv", index=False)
    assert main(["sweep", path, "--scheduler", "inprocess", "--quiet", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "there is no journal" in err and err.count("\n") == 1


def test_a_journal_in_use_is_refused(tmp_path, capsys):
    path = write(tmp_path, TINY)
    with open(tmp_path / "s.journal", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert main(["sweep", path, "--scheduler", "inprocess", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "is in use by another sweep" in err and err.count("\n") == 1


def test_a_sweep_killed_with_sigkill_resumes_to_the_full_table(tmp_path, finished):
    _, _, complete = finished
    path = write(tmp_path, TINY)
    proc = subprocess.Popen([sys.executable, "-m", "pagesync_model", "sweep", path, "--scheduler", "inprocess",
                             "--quiet"], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            cwd=OUTSIDE, start_new_session=True)
    journal = tmp_path / "s.journal"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and (not journal.exists() or journal.read_bytes().count(b"\n") < 2):
        time.sleep(0.005)
    # freeze the sweep and its run host at once (a run takes a few ms: looking up the children first let the
    # sweep finish before the kill), then kill the sweep alone and let the run host go on to notice
    os.killpg(proc.pid, signal.SIGSTOP)
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:  # never leave a process stopped
        try:
            os.killpg(proc.pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
    gone, alive = psutil.wait_procs(children, timeout=10)  # the run host dies with the sweep
    assert children and not alive
    kept = len(journal_mod.read(str(journal))[1])
    assert 1 <= kept < 4
    out = sweep_cli(path, "--scheduler", "inprocess", "--resume", "--run-timeout", "none")
    assert out.returncode == 0, out.stderr
    assert f"{4 - kept} runs in" in out.stderr and f"{kept} already done" in out.stderr
    assert rows(pd.read_csv(tmp_path / "s.csv")) == complete


# -- a run that hangs --------------------------------------------------------------------------------

def _check_timed_out(df, timeout):
    assert list(df["status"]) == ["ok", "timed-out"]
    assert pd.isna(df.loc[0, "error"]) and df.loc[0, "converged"]
    assert df.loc[1, "error"].startswith(f"timed out: still running after {timeout:g} s")
    assert timeout <= df.loc[1, "wall_s"] < timeout + 30


def test_a_run_that_hangs_is_killed_and_recorded_in_process(tmp_path, capsys):
    path = write(tmp_path, HANGS)
    t0 = time.monotonic()
    assert main(["sweep", path, "--scheduler", "inprocess", "--run-timeout", "3s"]) == 1
    assert time.monotonic() - t0 < 60
    assert "2 runs in" in (err := capsys.readouterr().err) and "1 failed (1 timed out)" in err
    _check_timed_out(pd.read_csv(tmp_path / "s.csv"), 3)
    assert not host_processes()
    # --resume gives the timed-out run another go (here with no better luck)
    assert main(["sweep", path, "--scheduler", "inprocess", "--run-timeout", "2s", "--resume", "--quiet"]) == 1
    _check_timed_out(pd.read_parquet(tmp_path / "s.parquet"), 2)


def test_a_run_that_hangs_on_a_local_cluster_is_killed_and_recorded(tmp_path):
    s = sweep_from_dict(HANGS)
    out = run_sweep(s, str(tmp_path / "s"), scheduler="local", workers=1, progress=False, timeout=3)
    assert out.ran == 2 and out.failed == 1 and out.timed_out == 1
    _check_timed_out(pd.read_csv(tmp_path / "s.csv"), 3)


@pytest.mark.parametrize("value, message", [
    ("soon", "--run-timeout: cannot read 'soon' as a duration"),
    ("0s", "--run-timeout: must be a duration > 0"),
    ("100cycles", "--run-timeout: must be a duration > 0"),
])
def test_bad_run_timeout_is_one_line(tmp_path, capsys, value, message):
    path = write(tmp_path, TINY)
    assert main(["sweep", path, "--scheduler", "inprocess", "--run-timeout", value]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_duplicates_are_caught_by_the_api_too():
    with pytest.raises(SweepError, match="would be the same run"):
        sweep_from_dict({"base": SMALL, "axes": {"memory.size": ["64MiB", "0.0625GiB"]}}).runs()


@pytest.mark.slow
def test_a_run_that_hangs_on_an_existing_scheduler_is_killed_and_the_worker_kept(tmp_path):
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    sched_file = str(tmp_path / "scheduler.json")
    procs = [subprocess.Popen(dask + ["--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file",
                                      sched_file], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        deadline = time.monotonic() + 60
        while not os.path.exists(sched_file) and time.monotonic() < deadline:
            time.sleep(0.1)
        procs.append(subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file",
                                       sched_file, "--nthreads", "1", "--nworkers", "1", "--no-dashboard",
                                       "--host", "127.0.0.1"], env=ENV, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        address = json.load(open(sched_file))["address"]
        from dask.distributed import Client
        with Client(address, timeout="60s") as client:
            client.wait_for_workers(1, timeout=60)
        s = sweep_from_dict({**HANGS, "axes": {"qemu.max_bandwidth": ["1GiB/s", "1MiB/s", "2GiB/s"]}})
        out = run_sweep(s, str(tmp_path / "s"), scheduler=address, progress=False, timeout=3)
        assert out.ran == 3 and out.timed_out == 1
        df = pd.read_csv(tmp_path / "s.csv")
        assert list(df["status"]) == ["ok", "timed-out", "ok"]  # the one worker went on after the kill
    finally:
        descendants = [c for p in procs for c in psutil.Process(p.pid).children(recursive=True)]
        for p in reversed(procs):
            p.terminate()
            p.wait(timeout=30)
        gone, alive = psutil.wait_procs(descendants, timeout=15)
        assert not alive  # the worker's run host went with it


def test_a_device_as_the_sweep_file_is_refused_before_reading(tmp_path):
    """/dev/zero never ends: the sweep reader uses the config reader's bounds and refuses it at once."""
    from pagesync_model.sweep.spec import SweepError, load_sweep
    with pytest.raises(SweepError, match="character device"):
        load_sweep("/dev/zero")
