"""The QEMU lab's scripts (experiments/qemu_validation) without QEMU: the options for XBZRLE, post-copy,
the dirtier's backlog tolerance and its spacer, the matrix that passes them, the history row, the
placement decoder; and the committed runs of issues 16 and 14 (measured on this machine) for what the
model's comparison will rely on: which set each configuration is in, and that every run recorded what
its feature needs."""
import glob
import json
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import load_experiment

HERE = Path(__file__).resolve().parents[1] / "experiments" / "qemu_validation"
RM = load_experiment("qemu_validation", "run_migration")
MX = load_experiment("qemu_validation", "run_matrix")
PL = load_experiment("qemu_validation", "placement")
C = load_experiment("qemu_validation", "compare")

NEW = ["xbzrle_c256", "xbzrle_c32", "pc_pass1", "pc_pass1_bw16", "pc_at2", "pc_at2_bw16",
       "pc_pass1_bw16_preempt", "pc_pass1_bw32_preempt", "pc_at2_bw16_preempt", "autoconv_99", "autoconv_99_debt2000", "seq_near_ctl",
       "seq_near_spacer"]


@pytest.mark.parametrize("argv, needle", [
    (["--postcopy-at", "3"], "need --postcopy"),
    (["--postcopy-preempt"], "need --postcopy"),
    (["--max-postcopy-bw", "16"], "need --postcopy"),
    (["--postcopy", "--postcopy-after-passes", "0"], "--postcopy-after-passes must be >= 1"),
    (["--postcopy", "--postcopy-at", "-1"], "--postcopy-at must be >= 0"),
    (["--postcopy", "--max-postcopy-bw", "-5"], "--max-postcopy-bw must be >= 0"),
    (["--xbzrle-cache", "32"], "--xbzrle-cache needs --xbzrle"),
    (["--xbzrle", "--xbzrle-cache", "0"], "--xbzrle-cache needs --xbzrle"),
    (["--max-debt-ms", "0"], "--max-debt-ms must be >= 1"),
    (["--spacer-mib", "400"], "--spacer-mib 400"),  # 400 + 128 MiB do not fit in 512
    (["--spacer-mib", "-1"], "--spacer-mib -1"),
    (["--postcopy-at", "soon", "--postcopy"], "invalid float value"),
])
def test_bad_options_exit_2_with_one_clear_line(argv, needle, capsys):
    with pytest.raises(SystemExit) as e:
        RM.parse(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert needle in last and "Traceback" not in err


def test_defaults_leave_the_older_runs_command_line_unchanged():
    """A run with none of the new options has the kernel command line every committed older run has."""
    a = RM.parse(["--ws", "128", "--rate", "16000"])
    assert (a.xbzrle, a.postcopy, a.postcopy_preempt, a.max_postcopy_bw) == (False, False, False, 0.0)
    assert (a.postcopy_after_passes, a.postcopy_at, a.max_debt_ms, a.spacer_mib) == (None, None, 200, 0)
    old = json.loads((HERE / "runs" / "rand_near__r0.json").read_text())
    assert old["inputs"]["kernel_cmdline"] == (
        "console=ttyS0 quiet panic=-1 dirty_ws=128 dirty_rate=16000 dirty_pattern=rand dirty_report_ms=500")


def _schedstat(root, pid, tid, run_ns, wait_ns):
    d = root / str(pid) / "task" / str(tid)
    d.mkdir(parents=True, exist_ok=True)
    (d / "schedstat").write_text("%d %d 7\n" % (run_ns, wait_ns))


def test_schedwait_sums_threads_including_ones_that_start_and_exit(tmp_path):
    """The wait share over an interval, by hand: thread 10 runs 2 s and waits 0.5 s in it; thread 11
    (QEMU's migration thread) is created after the start, runs 1 s, waits 1.5 s and exits before the
    end (its last reading is kept); thread 12 has a garbled file and is skipped, never fatal."""
    _schedstat(tmp_path, 5, 10, 4_000_000_000, 1_000_000_000)
    w = RM.SchedWait(5, proc=str(tmp_path))
    w.start()
    _schedstat(tmp_path, 5, 10, 5_000_000_000, 1_200_000_000)
    _schedstat(tmp_path, 5, 11, 1_000_000_000, 1_500_000_000)
    (tmp_path / "5" / "task" / "12").mkdir()
    (tmp_path / "5" / "task" / "12" / "schedstat").write_text("garbage\n")
    w.sample()
    import shutil
    shutil.rmtree(tmp_path / "5" / "task" / "11")       # the thread exits
    _schedstat(tmp_path, 5, 10, 6_000_000_000, 1_500_000_000)
    w.sample()
    r = w.result()
    assert (r["run_s"], r["wait_s"], r["threads"]) == (3.0, 2.0, 2)
    assert r["wait_share"] == pytest.approx(2.0 / 3.0, abs=1e-4)


def test_schedwait_of_a_vanished_process_reports_nothing(tmp_path):
    w = RM.SchedWait(99, proc=str(tmp_path))   # no such process
    w.start()
    w.sample()
    assert w.result() == {"run_s": None, "wait_s": None, "wait_share": None, "threads": 0}
    w2 = RM.SchedWait(os.getpid())               # a real process: itself, over a short busy loop
    w2.start()
    sum(i * i for i in range(200000))
    w2.sample()
    r = w2.result()
    assert r["run_s"] > 0 and r["wait_s"] >= 0 and r["threads"] >= 1


@pytest.mark.parametrize("name", NEW)
def test_the_matrix_passes_each_configuration_through(name):
    """Every new configuration's options, as run_matrix writes them, parse back to the configuration."""
    entry = {n: (o, d) for n, o, d in MX.MATRIX}[name]
    cfg = dict(MX.BASE, **entry[0])
    a = RM.parse(MX.args_for(cfg))
    for k, v in entry[0].items():
        assert getattr(a, k) == v, k
    assert a.model_set in ("calibration", "validation") and a.feature


def test_each_feature_is_judged_on_at_least_as_many_configurations_as_it_is_fitted_on():
    """Each feature's constants are fitted on its calibration configurations (one per constant: post-copy's
    stream on pc_pass1, its preempt channel on pc_pass1_bw32_preempt) and judged on at least as many
    validation ones; the matrix and compare.py name the same calibration set."""
    sets = {}
    for n, o, _ in MX.MATRIX:
        if "feature" in o:
            sets.setdefault(o["feature"], {}).setdefault(o["model_set"], []).append(n)
    assert set(sets) == {"xbzrle", "postcopy", "autoconverge_99", "placement"}
    for feature, s in sets.items():
        assert len(s.get("validation", [])) >= max(1, len(s.get("calibration", []))), feature
    assert set(sets["xbzrle"]["calibration"] + sets["postcopy"]["calibration"]) == set(C.FEATURE_CALIBRATION)


def test_history_row_follows_its_field_names():
    q = {"status": "active", "expected-downtime": 120, "cpu-throttle-percentage": 60,
         "ram": {"transferred": 10, "remaining": 20, "dirty-sync-count": 3, "dirty-pages-rate": 40,
                 "mbps": 546.333, "postcopy-requests": 7},
         "xbzrle-cache": {"pages": 100, "bytes": 2000, "cache-miss": 30, "encoding-rate": 5.5}}
    row = dict(zip(RM.HIST_KEYS, RM.compact(q, 1.23456)))
    assert len(RM.compact(q, 0)) == len(RM.HIST_KEYS)
    assert row == {"t": 1.235, "status": "active", "transferred": 10, "remaining": 20,
                   "dirty_sync_count": 3, "dirty_pages_rate": 40, "mbps": 546.33,
                   "expected_downtime": 120, "cpu_throttle_percentage": 60, "xbzrle_pages": 100,
                   "xbzrle_bytes": 2000, "xbzrle_cache_miss": 30, "postcopy_requests": 7,
                   "xbzrle_encoding_rate": 5.5}
    # the first nine columns are the ones every older run has, in the same order
    old = json.loads((HERE / "runs" / "rand_near__r0.json").read_text())
    assert RM.HIST_KEYS[:9] == old["history_fields"]


def _stream(rows):
    return np.array(rows, dtype=[("part", "i4"), ("block", "i2"), ("page", "i8"), ("zero", "?"),
                                 ("dirtier", "?")])


def test_placement_summary_of_a_hand_made_stream():
    """16 pages of RAM (2 "MiB" bins of 8 pages with MIB_PAGES patched), first pass 0..15 with the
    dirtier's pages at 4-6 and 9, then a second pass re-sending 5: counted by hand."""
    rows = []
    for p in range(16):
        rows.append((1, 0, p, p in (0, 1, 2, 3, 12, 13), p in (4, 5, 6, 9)))
    rows.append((1, 1, 0, False, False))  # another block: not pc.ram
    rows += [(2, 0, 5, False, True)]
    old = PL.MIB_PAGES
    PL.MIB_PAGES = 8
    try:
        s = PL.summary(_stream(rows), 16, bin_mib=1)
    finally:
        PL.MIB_PAGES = old
    fp = s["first_pass"]
    assert (fp["pages"], fp["normal"], fp["zero"], fp["dirtier"], fp["other_normal"]) == (16, 10, 6, 4, 6)
    assert s["dirtier_extents"] == {"count": 2, "largest_pages": [3, 1]}
    assert s["dirtier_page_percentiles"]["0"] == 4 and s["dirtier_page_percentiles"]["100"] == 9
    # normal pages in order: 4 5 6 7 8 9 10 11 14 15 -> the dirtier's at positions 0, 1, 2, 5 of 10
    assert s["dirtier_stream_position_percentiles"]["0"] == 0.0
    assert s["dirtier_stream_position_percentiles"]["100"] == 0.5
    assert s["dirtier_pages_per_bin"] == [3, 1]
    assert s["other_normal_pages_per_bin"] == [1, 5]  # 7 | 8 10 11 14 15
    assert s["all_sections"] == {"pages": 17, "normal": 11, "dirtier": 5}


@pytest.mark.parametrize("content", [b"", b"not a stream at all", b"QEVM" + b"\x00" * 64])
def test_placement_rejects_a_file_that_is_not_a_stream(tmp_path, content, capsys):
    stream = tmp_path / "s"
    stream.write_bytes(content)
    run = tmp_path / "r.json"
    run.write_text(json.dumps({"inputs": {}, "host": {}}))
    assert PL.main([str(stream), str(run), "--name", "x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("placement.py: ")


def test_placement_missing_run_file(tmp_path, capsys):
    assert PL.main([str(tmp_path / "nope"), str(tmp_path / "nope.json"), "--name", "x"]) == 2
    assert "nope.json" in capsys.readouterr().err


def test_committed_placement_the_spacer_moves_the_working_set():
    """Decoded from the captured streams (placement.json): with 160 MiB mapped before it, the
    working set's median guest-physical page moves up by at least 100 MiB, and the first pass still
    carries every page of it (32768 + the few the dirtier's binary data adds)."""
    by = {p["name"]: p for p in json.loads((HERE / "placement.json").read_text())}
    base, spaced = by["seq_near"], by["seq_near_spacer"]
    assert base["spacer_mib"] == 0 and spaced["spacer_mib"] == 160
    moved = spaced["dirtier_page_percentiles"]["50"] - base["dirtier_page_percentiles"]["50"]
    assert moved * 4096 >= 100 << 20
    for p in (base, spaced):
        assert 32768 <= p["first_pass"]["dirtier"] <= 32768 + 64
        assert sum(p["dirtier_pages_per_bin"]) == p["first_pass"]["dirtier"]


def _runs(name):
    return [json.loads(Path(p).read_text()) for p in sorted(glob.glob(str(HERE / "runs" / f"{name}__r*.json")))]


@pytest.mark.parametrize("name", [n for n in NEW if _runs(n)])
def test_committed_runs_carry_their_set_and_feature(name):
    o = {n: o for n, o, _ in MX.MATRIX}[name]
    for r in _runs(name):
        assert r["model"] == {"feature": o["feature"], "set": o["model_set"]}
        assert "error" not in r
        assert r["history_fields"] == RM.HIST_KEYS


@pytest.mark.parametrize("name", [n for n in NEW if n.startswith("pc_") and _runs(n)])
def test_committed_postcopy_runs_switched_and_the_guest_survived(name):
    """Every post-copy run switched (QEMU's MIGRATION event postcopy-active after the command), the
    destination completed and reported its blocktime, and its guest kept writing from where the
    source's left off."""
    for r in _runs(name):
        pc = r["postcopy"]
        assert pc["switched"] and pc["start_cmd_wall_t"] <= pc["postcopy_active_t"]
        assert pc["dst_status"] == "completed" and pc["postcopy_blocktime_ms"] is not None
        assert r["dest_check"]["alive_and_writing"]
        if r["inputs"]["postcopy_after_passes"] == 1:
            assert pc["trigger"] == "pass 2"


@pytest.mark.parametrize("name", [n for n in NEW if n.startswith("xbzrle") and _runs(n)])
def test_committed_xbzrle_runs_report_the_cache(name):
    for r in _runs(name):
        f = r["final"] if r["converged"] else r["last_with_stats"]
        assert f["xbzrle-cache"]["cache-size"] == r["inputs"]["xbzrle_cache_mib"] * 2**20
        assert r["migration_capabilities"]["xbzrle"] and r["dst_migration_capabilities"]["xbzrle"]


def test_runs_of_a_lab_only_feature_stay_out_of_the_model_comparison(monkeypatch):
    names = {r["config"] for r in C.load_runs()}
    assert set(NEW) - {"pc_pass1_bw16_preempt"} <= names   # every modelled feature's runs are compared
    assert os.path.exists(HERE / "runs" / "rand_near__r0.json") and "rand_near" in names
    monkeypatch.setattr(C, "LAB_ONLY_FEATURES", {"postcopy"})
    left = {r["config"] for r in C.load_runs()}
    assert not {n for n in NEW if n.startswith("pc_")} & left and "xbzrle_c256" in left
