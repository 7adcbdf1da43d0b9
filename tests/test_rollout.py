"""pagesync-sim rollout: a rolling maintenance on the fluid host model, on Dask (pagesync_model/rollout)."""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from pagesync_model.cli import main
from pagesync_model.evacuate import host_from_dict, run_host
from pagesync_model.rollout import load_cluster, run_fluid, run_rollout
from pagesync_model.rollout.cluster import batch_groups, draw_host

ROOT = Path(__file__).resolve().parents[1]
QEMU = str(ROOT / "configs/qemu-default.yaml")
# near-idle guests: one page write a second per vCPU, no zero pages (the page level would skip them)
QUIET = {"memory.kernel_size": "16MiB", "qemu.max_bandwidth": "10Gbit/s", "qemu.setup": "1ms",
         "memory.zero_fraction": 0, "workload.rate": "1/s", "workload.working_set": "16MiB"}
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))


def vm(name, size, count=1):
    return {"name": name, "config": QEMU, "count": count, "set": {"memory.size": size}}


def write_cluster(tmp_path, host, **rollout):
    (tmp_path / "h.yaml").write_text(yaml.safe_dump(host))
    path = tmp_path / "c.yaml"
    shared = rollout.pop("shared", [])
    path.write_text(yaml.safe_dump({"rollout": {"host": "h.yaml", **rollout}, "shared": shared}))
    return str(path)


# two hosts a batch, each with its own 10 Gbit/s NIC, sharing a 12 Gbit/s fabric; four VMs of 1 GiB
# per host, two at once: four streams on the fabric, each min(10/2, 12/4) = 3 Gbit/s on the wire
IDLE_HOST = {"host": {"platform": "none", "concurrency": 2},
             "links": [{"name": "nic", "bandwidth": "10Gbit/s", "latency": "10us"},
                       {"name": "fabric", "bandwidth": "12Gbit/s", "latency": "20us"}],
             "defaults": dict(QUIET), "vms": [vm("g", "1GiB", 4)]}


def test_fluid_model_drains_idle_batches_in_closed_form(tmp_path):
    path = write_cluster(tmp_path, IDLE_HOST, hosts=5, batch=2, seeds=2, maintenance="60s", retries=0,
                         shared=["fabric"])
    c = load_cluster(path)
    res = run_rollout(c, scheduler="inprocess", progress=False)
    eff = 0.941  # qemu-default's link.efficiency
    dirty = 4 * 1 * 4096  # 4 vCPUs x 1 write/s x 4 KiB
    m = 2**30
    per_stream = 3e9 / 8 * eff
    wave = m / per_stream                 # round 0 of a VM
    rnd = dirty * wave / per_stream       # round 1: what it dirtied meanwhile, under the limit: stop-copy
    full = 2 * (wave + rnd)               # two waves of two VMs per host
    # the last batch has one host: its two streams get min(10/2, 12/2) = 5 Gbit/s
    alone = 5e9 / 8 * eff
    last = 2 * (m / alone + dirty * (m / alone) / alone)
    expect = 2 * full + last + 3 * 60
    assert len(res.runs) == 2
    for r in res.runs:
        assert r["duration_s"] == pytest.approx(expect, rel=1e-9)
        assert r["migrated"] == 20 and r["failed"] == 0 and r["retried"] == 0
        assert r["max_downtime_s"] == pytest.approx(rnd + 30e-6, rel=1e-9)
    assert res.distribution["duration_s"]["max"] == pytest.approx(expect, rel=1e-9)


def test_fluid_drain_agrees_with_the_page_level_evacuation_for_quiet_guests(tmp_path):
    """The fluid model against the page-level engine on a case where both apply: near-idle guests
    (the page level adds per-page framing and the engine's per-pass costs: within 2%)."""
    host = {"host": {"platform": "none", "concurrency": 2},
            "links": [{"name": "nic", "bandwidth": "2Gbit/s", "latency": "10us"}],
            "defaults": dict(QUIET), "vms": [vm("a", "256MiB", 2), vm("b", "128MiB", 2)]}
    path = write_cluster(tmp_path, host, hosts=1)
    page = run_host(host_from_dict(host, str(tmp_path / "h.yaml")))
    c = load_cluster(path)
    groups, caps = batch_groups(c, [draw_host(c, 1, 0)], 0)
    fluid = run_fluid(groups, caps)
    assert fluid.end_s == pytest.approx(page.drain_s, rel=0.02)
    ends = sorted(o.end_s for o in fluid.outcomes)
    assert ends == pytest.approx(sorted(v.end_s for v in page.vms), rel=0.02)


def test_a_guest_that_cannot_converge_fails_and_is_retried_alone(tmp_path):
    """A guest dirtying faster than its share fails at max_rounds; retried after its batch, it has the
    link alone and converges."""
    host = {"host": {"platform": "none", "concurrency": 0},
            "links": [{"name": "nic", "bandwidth": "1Gbit/s"}],
            "defaults": dict(QUIET, **{"analytic.max_rounds": 5}),
            # 4 x 20k/s x 4 KiB = 328 MB/s dirtied against 1 Gbit/s x 0.941 = 118 MB/s (shared with
            # the other guest while it runs): it never converges; alone on the retry it neither does
            "vms": [vm("q", "256MiB"), {"name": "hot", "config": QEMU, "set": {"memory.size": "256MiB",
                                                                              "workload.rate": "20k/s"}}]}
    path = write_cluster(tmp_path, host, hosts=2, batch=1, seeds=1, retries=1)
    res = run_rollout(load_cluster(path), scheduler="inprocess", progress=False)
    (r,) = res.runs
    assert r["failed"] == 2 and r["retried"] == 2 and r["migrated"] == 2


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dask_cli():
    return [os.path.join(os.path.dirname(sys.executable), "dask")]


@pytest.fixture
def dask_scheduler():
    """A real `dask scheduler` and two `dask worker` processes on 127.0.0.1, stopped afterwards."""
    port = _free_port()
    addr = f"tcp://127.0.0.1:{port}"
    procs = []
    logs = tempfile.TemporaryDirectory()
    try:
        def spawn(args, name):
            log = open(os.path.join(logs.name, name), "w")
            procs.append(subprocess.Popen(_dask_cli() + args, stdout=log, stderr=log, env=ENV,
                                          cwd=tempfile.gettempdir()))
        spawn(["scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"], "scheduler")
        for i in range(2):
            spawn(["worker", addr, "--nthreads", "1", "--nworkers", "1", "--host", "127.0.0.1", "--no-dashboard",
                   "--name", f"w{i}"], f"worker{i}")
        from dask.distributed import Client
        deadline = time.monotonic() + 60
        client = None
        while time.monotonic() < deadline:
            try:
                client = Client(addr, timeout="2s", set_as_default=False)
                break
            except OSError:
                time.sleep(0.5)
        assert client is not None, "the dask scheduler did not come up"
        try:
            client.wait_for_workers(2, timeout=60)
        finally:
            client.close()
        yield addr
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        logs.cleanup()


def drawn_cluster(tmp_path, **rollout):
    host = {"host": {"platform": "kubevirt", "order": "largest-first"},
            "links": [{"name": "nic", "bandwidth": "25Gbit/s", "latency": "5us"},
                      {"name": "fabric", "bandwidth": "40Gbit/s", "latency": "20us"}],
            "defaults": {k: v for k, v in QUIET.items() if k != "workload.rate"},
            "draw": {"count": 4, "config": QEMU, "sizes": ["1GiB", "2GiB", "4GiB"], "working_set": 0.25,
                     "dirty_rate": ["10MB/s", "400MB/s"]}}
    return write_cluster(tmp_path, host, **{"hosts": 6, "batch": 3, "seeds": 4, "shared": ["fabric"], **rollout})


def _table(res):
    return json.dumps(res.to_dict(), sort_keys=True)


def test_a_running_dask_scheduler_gives_the_in_process_result(tmp_path, dask_scheduler):
    c = load_cluster(drawn_cluster(tmp_path))
    here = run_rollout(c, scheduler="inprocess", progress=False)
    there = run_rollout(c, scheduler=dask_scheduler, progress=False)
    assert len(here.runs) == 4 and _table(there) == _table(here)
    # the seeds draw different hosts: the runs differ
    assert len({r["duration_s"] for r in here.runs}) == 4


def test_resume_after_an_interrupted_run_gives_the_same_table(tmp_path):
    c = load_cluster(drawn_cluster(tmp_path))
    full = run_rollout(c, scheduler="inprocess", progress=False)
    prefix = str(tmp_path / "r")
    first = run_rollout(c, prefix, scheduler="inprocess", progress=False)
    assert _table(first) == _table(full) and first.ran == 8
    # a run killed after three tasks, in the middle of writing the fourth
    lines = Path(prefix + ".journal").read_bytes().splitlines(keepends=True)
    Path(prefix + ".journal").write_bytes(b"".join(lines[:4]) + lines[4][:30])
    again = run_rollout(c, prefix, scheduler="inprocess", progress=False, resume=True)
    assert again.skipped == 3 and again.ran == 5
    assert _table(again) == _table(full)
    # a journal of another cluster is refused
    other = load_cluster(drawn_cluster(tmp_path, batch=2))
    assert main(["rollout", other.source, "--scheduler", "inprocess", "--out", prefix, "--resume", "--quiet"]) == 2


def test_cli_text_json_and_out(tmp_path, capsys):
    path = drawn_cluster(tmp_path, seeds=2)
    assert main(["rollout", path, "--scheduler", "inprocess", "--json", str(tmp_path / "r.json")]) == 0
    text = capsys.readouterr().out
    doc = json.loads((tmp_path / "r.json").read_text())
    assert "rollout duration" in text and doc["seeds"] == [1, 2]
    assert doc["distribution"]["duration_s"]["max"] == max(r["duration_s"] for r in doc["runs"])


@pytest.mark.parametrize("rollout, shared, message", [
    ({"hosts": 0}, [], "rollout.hosts"),
    ({"hosts": 2, "batch": "x"}, [], "rollout.batch"),
    ({"hosts": 2}, ["wan"], "shared: unknown link 'wan'"),
    ({"hosts": 2, "host": "missing.yaml"}, [], "missing.yaml"),
    ({"hosts": 2, "retries": -1}, [], "rollout.retries"),
])
def test_bad_cluster_file_is_one_line_exit_2(tmp_path, capsys, rollout, shared, message):
    (tmp_path / "h.yaml").write_text(yaml.safe_dump(IDLE_HOST))
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"rollout": {"host": "h.yaml", **rollout}, "shared": shared}))
    assert main(["rollout", str(path), "--scheduler", "inprocess", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err


def test_bad_host_file_names_the_host_file(tmp_path, capsys):
    bad = dict(IDLE_HOST, vms=[vm("g", "lots")])
    path = write_cluster(tmp_path, bad, hosts=2)
    assert main(["rollout", path, "--scheduler", "inprocess", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "h.yaml" in err and "memory.size" in err and "\n" not in err


def test_unreachable_scheduler_is_one_line(tmp_path, capsys):
    path = drawn_cluster(tmp_path, seeds=1)
    port = _free_port()
    assert main(["rollout", path, "--scheduler", f"tcp://127.0.0.1:{port}", "--quiet"]) == 2
    assert "cannot reach" in capsys.readouterr().err


def test_preset_loads():
    c = load_cluster(ROOT / "configs/clusters/rollout-1000.yaml")
    assert c.hosts == 1000 and c.batches == 100 and c.shared == ["fabric"] and c.concurrency == 2
    assert len(draw_host(c, 1, 0)) == 8 and draw_host(c, 1, 0) != draw_host(c, 2, 0)
