"""The command line: every flag, the JSON/CSV outputs, and one-line errors with exit status 2."""
import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import SMALL
from pagesync_model.cli import main
from pagesync_model.kernels import default_backend_name

ROOT = Path(__file__).resolve().parents[1]
JSON_KEYS = {"passes", "converged", "downtime_s", "brownout_s", "total_time_s", "bytes_sent", "pages_sent",
             "lost_writes", "backend", "seed", "config", "version", "per_pass"}
PASS_KEYS = {"pass", "start_s", "duration_s", "brownout_s", "dirty_pages", "pages_copied", "ranges", "bytes"}


@pytest.fixture
def small_yaml(tmp_path):
    p = tmp_path / "small.yaml"
    p.write_text(yaml.safe_dump(SMALL))
    return p


def cli(*args, capsys=None):
    rc = main([str(a) for a in args])
    out = capsys.readouterr() if capsys else None
    return rc, out


def test_table_json_csv(small_yaml, tmp_path, capsys):
    j, c = tmp_path / "r.json", tmp_path / "r.csv"
    rc, out = cli(small_yaml, "--json", j, "--csv", c, capsys=capsys)
    assert rc == 0
    assert "blackout (downtime)" in out.out and "lost writes" in out.out and "brownout ms" in out.out
    d = json.loads(j.read_text())
    assert JSON_KEYS <= d.keys()
    assert all(PASS_KEYS <= r.keys() for r in d["per_pass"])
    rows = list(csv.DictReader(io.StringIO(c.read_text())))
    assert len(rows) == d["passes"] == len(d["per_pass"])
    assert [int(r["dirty_pages"]) for r in rows] == [r["dirty_pages"] for r in d["per_pass"]]
    # the recorded config reproduces the run
    again = tmp_path / "again.yaml"
    again.write_text(yaml.safe_dump(d["config"]))
    j2 = tmp_path / "r2.json"
    assert cli(again, "--json", j2, "--quiet", "--seed", d["seed"])[0] == 0
    d2 = json.loads(j2.read_text())
    for k in ("per_pass", "downtime_s", "bytes_sent", "lost_writes"):
        assert d2[k] == d[k]


def test_flags(small_yaml, capsys):
    rc, out = cli(small_yaml, "--json", "-", "--set", "stratus.passes=1", "--set", "link.bandwidth=4Gbit/s",
                  "--seed", 7, "--backend", "numpy", "--variant", "no-tlb-flush", capsys=capsys)
    assert rc == 0
    d = json.loads(out.out)  # nothing but the JSON on stdout
    assert d["seed"] == 7 and d["backend"] == "numpy" and d["variant"] == "no-tlb-flush"
    assert d["config"]["stratus"]["passes"] == 1 and d["config"]["link"]["bandwidth"] == "4Gbit/s"
    assert d["passes"] <= 3
    rc, out = cli(small_yaml, "--quiet", capsys=capsys)
    assert rc == 0 and out.out == "" and out.err == ""


def bad(args, capsys):
    rc, out = cli(*args, capsys=capsys)
    assert rc == 2
    lines = out.err.strip().splitlines()
    assert len(lines) == 1, out.err
    assert "Traceback" not in out.err
    return lines[0]


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("mutate,expect", [
    (lambda d: d["link"].update(bandwidth="25 gigs"), ["link.bandwidth", "25 gigs"]),
    (lambda d: d["link"].update(bandwith="1GB/s"), ["link.bandwith", "bandwidth"]),
    (lambda d: d.update(lnk={}), ["lnk"]),
    (lambda d: d["memory"].pop("size"), ["memory.size", "missing"]),
    (lambda d: d["memory"].update(size=64), ["memory.size", "64"]),
    (lambda d: d["memory"].update(size="64 furlongs"), ["memory.size", "64 furlongs"]),
    (lambda d: d["memory"].update(size="0GiB"), ["memory.size", "0GiB"]),
    (lambda d: d["workload"].update(rate="-5k/s"), ["workload.rate", "-5k/s"]),
    (lambda d: d["workload"].update(working_set="100GiB"), ["workload.working_set", "100GiB"]),
    (lambda d: d["workload"].update(kind="zipfy"), ["workload.kind", "zipfy"]),
    (lambda d: d["sim"].update(variant="sloppy") if "sim" in d else d.update(sim={"variant": "sloppy"}),
     ["sim.variant", "sloppy"]),
])
def test_bad_config_values(tmp_path, capsys, mutate, expect):
    d = yaml.safe_load(yaml.safe_dump(SMALL))
    mutate(d)
    p = write(tmp_path, yaml.safe_dump(d))
    line = bad([p], capsys)
    assert line.startswith("pagesync-sim: ")
    for e in expect:
        assert e in line, line


def test_bad_files_and_flags(tmp_path, capsys, small_yaml):
    assert "nope.yaml" in bad([tmp_path / "nope.yaml"], capsys)
    assert "YAML" in bad([write(tmp_path, "memory: {size: 64GiB\n  cpus: [")], capsys)
    assert "mapping" in bad([write(tmp_path, "- 1\n- 2\n")], capsys)
    assert "--backend" in bad([small_yaml, "--backend", "fortran"], capsys)
    assert "--variant" in bad([small_yaml, "--variant", "fast"], capsys)
    line = bad([small_yaml, "--set", "stratus.pases=3"], capsys)
    assert "stratus.pases" in line
    assert "--set" in bad([small_yaml, "--set", "nonsense"], capsys)
    assert "--seed" in bad([small_yaml, "--seed", "-1"], capsys)
    assert "--seed" in bad([small_yaml, "--seed", "x"], capsys)
    assert "unrecognized" in bad([small_yaml, "--frobnicate"], capsys)


def test_console_script_runs_as_a_process(small_yaml):
    p = subprocess.run([sys.executable, "-m", "pagesync_model", str(small_yaml), "--quiet", "--json", "-"],
                       capture_output=True, text=True, timeout=120,
                       cwd=small_yaml.parent)
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["lost_writes"] == 0
    # the process imported the installed package, compiled kernels included (not the bare sources)
    assert d["backend"] == default_backend_name()
    p = subprocess.run([sys.executable, "-m", "pagesync_model", str(small_yaml), "--set", "memory.size=1 lump"],
                       capture_output=True, text=True, timeout=120,
                       cwd=small_yaml.parent)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "memory.size" in p.stderr


def test_trace_subcommand_errors(tmp_path, capsys):
    assert "no such file" in bad(["trace", "stats", tmp_path / "none.npz"], capsys)
    assert "no command" in bad(["trace", "record", "-o", tmp_path / "t.npz"], capsys)
    assert "--interval" in bad(["trace", "record", "--interval", "soon", "-o", tmp_path / "t.npz", "--", "true"],
                               capsys)


def test_json_format_qemu(small_yaml, capsys, tmp_path):
    d = dict(yaml.safe_load(small_yaml.read_text()), policy="qemu")
    p = tmp_path / "vm.yaml"
    p.write_text(yaml.safe_dump(d))
    rc, out = cli(p, "--json", "-", "--json-format", "qemu", capsys=capsys)
    assert rc == 0
    q = json.loads(out.out)
    assert q["status"] == "completed" and isinstance(q["downtime"], int) and isinstance(q["total-time"], int)
    rc, out = cli(p, "--json", "-", capsys=capsys)
    full = json.loads(out.out)
    ram = q["ram"]
    assert ram["transferred"] == full["bytes_sent"]
    assert ram["duplicate"] == full["zero_pages"] and ram["normal"] == full["normal_pages"]
    assert ram["dirty-sync-count"] == full["dirty_sync_count"]
    assert ram["total"] == full["memory_pages"] * 4096
    # QEMU's downtime counter stops on the source: the blackout less the destination's start
    assert q["downtime"] == round(full["qemu_downtime_s"] * 1e3)
    assert full["qemu_downtime_s"] == pytest.approx(full["downtime_s"] - full["downtime_parts"]["dest_start"])
    assert ram["precopy-bytes"] + ram["downtime-bytes"] == ram["transferred"]
    assert "--json-format" in bad([p, "--json-format", "xml"], capsys)


def test_variant_a_policy_does_not_model(tmp_path, capsys):
    d = dict(SMALL, policy="qemu")
    p = tmp_path / "vm.yaml"
    p.write_text(yaml.safe_dump(d))
    line = bad([p, "--variant", "copy-before-clear"], capsys)
    assert "--variant" in line and "qemu" in line and "copy-before-clear" in line


def test_trace_stats_prints_and_saves_a_plot(tmp_path, capsys):
    from pagesync_model.trace import Trace, write_trace
    t = Trace.from_vpn_sets([{1, 2, 3}, {2, 3}, {3, 9}], [10_000_000, 20_000_000, 30_000_000])
    f = tmp_path / "t.npz"
    write_trace(f, t)
    rc, out = cli("trace", "stats", f, capsys=capsys)
    assert rc == 0 and "distinct pages" in out.out
    png = tmp_path / "t.stats.png"
    assert png.exists() and png.read_bytes()[:4] == b"\x89PNG"
    rc, out = cli("trace", "stats", f, "--no-plot", "--plot", tmp_path / "x.png", capsys=capsys)
    assert rc == 0 and not (tmp_path / "x.png").exists()


def test_settings_a_policy_would_silently_ignore_are_refused(tmp_path, capsys):
    root = Path(__file__).resolve().parents[1] / "configs"
    line = bad([root / "stratus.yaml", "--set", "operator.kind=nova"], capsys)
    assert "operator.kind" in line and "qemu" in line
    line = bad([root / "simgrid.yaml", "--set", "dma.rate=1k/s"], capsys)
    assert "dma.rate" in line and "simgrid" in line
    d = yaml.safe_load((root / "simgrid.yaml").read_text())
    d["policy"] = "analytic"
    d["workload"]["groups"] = [{"cpus": d["cpus"]["count"], "kind": "uniform"}]
    p = tmp_path / "a.yaml"
    p.write_text(yaml.safe_dump(d))
    line = bad([p], capsys)
    assert "workload.groups" in line and "analytic" in line
