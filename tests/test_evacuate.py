"""pagesync-sim evacuate: a host's VMs drained over shared links (pagesync_model/evacuate)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pagesync_model.evacuate import host_from_dict, load_host, plan_host, run_host
from pagesync_model.sim.engine import simulate

ROOT = Path(__file__).resolve().parents[1]
QEMU = str(ROOT / "configs/qemu-default.yaml")
SMALL = {"memory.kernel_size": "16MiB", "qemu.max_bandwidth": "10Gbit/s", "qemu.setup": "1ms"}


def vm(name, size, ws, count=1, **more):
    return {"name": name, "config": QEMU, "count": count,
            "set": {"memory.size": size, "workload.working_set": ws, **more}}


def host(vms, platform="none", links=None, **h):
    return {"host": {"platform": platform, **h},
            "links": links or [{"name": "nic", "bandwidth": "2Gbit/s", "latency": "10us"}],
            "defaults": dict(SMALL), "vms": vms}


THREE = [vm("small", "128MiB", "32MiB"), vm("big", "512MiB", "64MiB"), vm("mid", "256MiB", "64MiB",
                                                                        **{"workload.rate": "2k/s"})]


def test_platform_concurrency_defaults():
    one = [vm("a", "128MiB", "32MiB")]
    assert host_from_dict(host(one, "nova")).concurrency == 1       # max_concurrent_live_migrations
    assert host_from_dict(host(one, "kubevirt")).concurrency == 2   # min(perNode 2, perCluster 5)
    assert host_from_dict(host(one, "kubevirt", cluster_concurrency=1)).concurrency == 1
    assert host_from_dict(host(one, "ovirt")).concurrency == 3      # max_outgoing_migrations
    assert host_from_dict(host(one, "ovirt", cores=2)).concurrency == 2  # min(it, cores)
    assert host_from_dict(host(one, "none")).concurrency == 0
    assert host_from_dict(host(one, "nova", concurrency=4)).concurrency == 4
    # ovirt's migration_max_bandwidth (32 MiB/s) caps each migration; none elsewhere
    assert host_from_dict(host(one, "ovirt")).vms[0].cap == 32 * 2**20
    assert host_from_dict(host(one, "kubevirt")).vms[0].cap is None
    # the platform's monitor for a qemu VM that runs none
    assert host_from_dict(host(one, "kubevirt")).vms[0].cfg.operator.kind == "kubevirt"
    assert host_from_dict(host(one, "kubevirt", operator="config")).vms[0].cfg.operator.kind == "none"


def test_a_host_of_one_vm_is_its_single_run():
    h = host_from_dict(host([vm("a", "256MiB", "64MiB")]))
    r = run_host(h)
    single = simulate(h.vms[0].cfg, seed=h.seed).summary
    o = r.vms[0]
    assert (o.downtime_s, o.total_time_s, o.bytes_sent) == (single.downtime_s, single.total_time_s, single.bytes_sent)
    assert r.drain_s == o.end_s == single.total_time_s


def test_one_at_a_time_drains_in_the_sum_of_single_runs():
    h = host_from_dict(host(THREE, concurrency=1))
    r = run_host(h)
    singles = [simulate(v.cfg, seed=h.seed + v.index).summary.total_time_s for v in h.vms]
    assert r.drain_s == pytest.approx(sum(singles), rel=1e-12)
    for a, b in zip(r.vms, r.vms[1:]):
        assert b.start_s == a.end_s


@pytest.mark.parametrize("order, names", [
    ("as-listed", ["small", "big", "mid"]),
    ("largest-first", ["big", "mid", "small"]),
    ("smallest-first", ["small", "mid", "big"]),
    # dirty rates: small and big write 4 x 20k pages/s, mid 4 x 2k/s
    ("least-dirty-first", ["mid", "small", "big"]),
])
def test_orders(order, names):
    r = run_host(host_from_dict(host(THREE, order=order, concurrency=1)))
    assert [v.name for v in r.vms] == names


@pytest.mark.parametrize("limit", [1, 2])
def test_the_concurrency_limit_holds(limit):
    vms = [vm("v", "128MiB", "32MiB", count=5)]
    r = run_host(host_from_dict(host(vms, concurrency=limit)))
    edges = sorted([(v.start_s, 1) for v in r.vms] + [(v.end_s, -1) for v in r.vms], key=lambda e: (e[0], e[1]))
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    assert peak == limit
    assert r.migrated == 5 and r.failed == 0


def test_the_same_seed_gives_the_same_drain_and_another_seed_its_own():
    h = host_from_dict(host(THREE, concurrency=2))
    a, b, c = run_host(h), run_host(h), run_host(h, seed=9)
    assert a.to_dict() | {"simulator": None} == b.to_dict() | {"simulator": None}
    assert c.seed == 9 and [v.bytes_sent for v in c.vms] != [v.bytes_sent for v in a.vms]


def test_drawn_vms_follow_their_distribution():
    data = host([], platform="kubevirt")
    data["draw"] = {"count": 12, "config": QEMU, "sizes": ["256MiB", "512MiB"], "working_set": 0.25,
                    "dirty_rate": ["1MB/s", "50MB/s"], "seed": 4}
    h1, h2 = host_from_dict(data), host_from_dict(data)
    assert [(v.memory, v.cfg.workload.dirty_rate) for v in h1.vms] == \
        [(v.memory, v.cfg.workload.dirty_rate) for v in h2.vms]
    assert {v.memory for v in h1.vms} == {256 * 2**20, 512 * 2**20}
    for v in h1.vms:
        assert 1e6 <= float(v.cfg.workload.dirty_rate[:-3]) <= 50e6
        assert v.cfg.workload.working_set == v.memory // 4
    data["draw"]["seed"] = 5
    assert [v.memory for v in host_from_dict(data).vms] != [v.memory for v in h1.vms] or \
        [v.dirty_bytes_s for v in host_from_dict(data).vms] != [v.dirty_bytes_s for v in h1.vms]


def test_shared_nic_two_at_once_each_at_half():
    vms = [vm("v", "256MiB", "32MiB", count=2, **{"workload.rate": "1/s", "cpus.count": 1})]
    r = run_host(host_from_dict(host(vms)))
    for v in r.vms:
        assert v.rates[0][1] == pytest.approx(2e9 / 8 / 2, rel=1e-12)


def test_plan_picks_the_fastest_candidate_within_the_bound():
    h = host_from_dict(host(THREE))
    p = plan_host(h, limits=[1, 3], orders=["as-listed", "largest-first"], max_downtime=10.0)
    assert len(p.tried) == 4 and p.best is not None
    for t in p.tried:  # each candidate, run on its own, drains as the plan says
        again = run_host(h.with_(concurrency=t["concurrency"], order=t["order"]))
        assert again.drain_s == t["drain_s"]
    assert p.result.drain_s == min(t["drain_s"] for t in p.tried if t["ok"])
    none = plan_host(h, limits=[3], orders=["as-listed"], max_downtime=1e-3)
    assert none.best is None and not none.tried[0]["ok"]


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "pagesync_model", "evacuate", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd or ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


def test_cli_text_json_and_plot(tmp_path):
    f = tmp_path / "h.yaml"
    f.write_text(yaml.safe_dump(host(THREE, "kubevirt")))
    out = tmp_path / "r.json"
    png = tmp_path / "r.png"
    proc = _cli(f, "--json", out, "--plot", png)
    assert proc.returncode == 0, proc.stderr
    d = json.loads(out.read_text())
    assert d["concurrency"] == 2 and len(d["vms"]) == 3 and d["migrated"] == 3
    assert d["drain_s"] == max(v["end_s"] for v in d["vms"])
    assert f"drain time  {d['drain_s']:.3f} s" in proc.stdout
    assert png.stat().st_size > 10000


def test_cli_plan(tmp_path):
    f = tmp_path / "h.yaml"
    f.write_text(yaml.safe_dump(host(THREE)))
    proc = _cli(f, "--plan", "--limits", "1,3", "--orders", "as-listed", "--max-downtime", "10s", "--json", "-")
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    assert d["best"]["order"] == "as-listed" and len(d["tried"]) == 2


def _bad(tmp_path, data):
    f = tmp_path / "bad.yaml"
    f.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return _cli(f)


BAD = [
    (host(THREE) | {"hosts": 1}, "hosts: unknown key"),
    (host(THREE, order="fastest"), "host.order: unknown choice 'fastest'"),
    (host(THREE, platform="vmware"), "host.platform: unknown choice"),
    (host(THREE) | {"route": ["nic", "wan"]}, "route: unknown link 'wan'"),
    (host([{"name": "a", "config": QEMU, "route": ["x"]}]), "vms[0].route: unknown link 'x'"),
    (host([{"name": "a"}]), "vms[0].config: required value is missing"),
    (host([{"config": "nowhere.yaml"}]), "vms[0].config: cannot open"),
    (host([vm("a", "1MiB", "64MiB")]), "vms[0] (a): "),
    (host([vm("a", "128MiB", "32MiB", **{"link.bandwidth": "1Gbit/s"})]), "vms[0].set: link.bandwidth"),
    (host([{"config": QEMU, "set": [1, 2]}]), "vms[0].set: expected a mapping"),
    (host([vm("a", "128MiB", "32MiB"), vm("b", "128MiB", "32MiB", **{"cpus.clock": "3GHz"})]), "share its clock"),
    (host([vm("a", "128MiB", "32MiB", policy="simgrid")]), "fluid model"),
    (host([]), "vms: the host has no VMs"),
    (host(THREE, links=[{"name": "nic"}]), "links[0].bandwidth: required value is missing"),
    (host(THREE, bandwidth_per_migration="fast"), "host.bandwidth_per_migration"),
    (host(THREE) | {"draw": {"count": 2, "config": QEMU}}, "draw.sizes: required value is missing"),
    (host(THREE) | {"draw": {"count": 2, "config": QEMU, "sizes": ["1GiB"], "dirty_rate": ["9MB/s", "1MB/s"]}},
     "draw.dirty_rate: expected 0 < low <= high"),
    ("host: [1\n", "bad.yaml"),
]


@pytest.mark.parametrize("data, needle", BAD, ids=[b[1][:30] for b in BAD])
def test_bad_host_files_are_one_line_and_exit_2(tmp_path, data, needle):
    proc = _bad(tmp_path, data)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert needle in proc.stderr, proc.stderr


@pytest.mark.parametrize("args, needle", [
    (["--order", "fastest"], "--order: unknown order"),
    (["--concurrency", "-1"], "--concurrency: must be >= 0"),
    (["--limits", "1,2"], "go with --plan"),
    (["--plan", "--limits", "a"], "--limits: expected whole numbers"),
    (["--plan", "--max-downtime", "fast"], "--max-downtime"),
    (["--backend", "gpu"], "--backend: unknown backend"),
])
def test_bad_options_are_one_line_and_exit_2(args, needle):
    proc = _cli(ROOT / "configs/hosts/kubevirt-node.yaml", *args)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and needle in proc.stderr, proc.stderr


def test_missing_host_file():
    proc = _cli("no-such-host.yaml")
    assert proc.returncode == 2 and "cannot open" in proc.stderr and proc.stderr.count("\n") == 1


def test_the_preset_host_loads_and_drains():
    h = load_host(ROOT / "configs/hosts/kubevirt-node.yaml")
    assert h.platform == "kubevirt" and h.concurrency == 2 and len(h.vms) == 8
    assert all(v.cfg.link.bandwidth == 25e9 / 8 for v in h.vms)        # the route's bottleneck
    assert all(v.cfg.link.latency == pytest.approx(30e-6) for v in h.vms)  # 5 + 20 + 5 us


@pytest.mark.slow
def test_a_vm_stopped_early_as_steady_keeps_its_share_until_its_projected_end():
    busy = {"name": "busy", "config": QEMU, "set": {"memory.size": "256MiB", "workload.working_set": "128MiB",
                                                    "workload.kind": "uniform", "workload.rate": "200k/s",
                                                    "sim.time_limit": "20s"}}
    quiet = vm("quiet", "3GiB", "64MiB")
    r = run_host(host_from_dict(host([busy, quiet], links=[{"name": "nic", "bandwidth": "1Gbit/s"}])))
    b, q = r.vms
    assert b.stop_reason == "steady-state" and b.verdict == "failed"
    assert b.total_time_s < 20 and b.end_s == pytest.approx(20.0, abs=1e-6)  # held to its time limit
    # the quiet one, 3 GiB at half of 1 Gbit/s, is still running then: the busy one's stream holds half
    # the link from its stop to its time limit, and the quiet one gets the whole link only after
    assert q.end_s > b.end_s
    held = [r for r in b.rates if r[0] >= b.total_time_s - 1e-9]
    assert held[-1] == [pytest.approx(20.0, abs=1e-6), 0.0]
    assert all(r == pytest.approx(1e9 / 8 / 2) for _, r in held[:-1]) and len(held) >= 2
    assert max(r for t, r in q.rates if t >= 20.0 - 1e-6) == pytest.approx(1e9 / 8)
    assert max(r for t, r in q.rates if b.total_time_s <= t < 20.0 - 1e-6) == pytest.approx(1e9 / 8 / 2)


def test_simgrid_sharing_divides_the_nic_by_route_penalty():
    # host.sharing: simgrid (SimGrid LV08): two streams, one over the NIC alone (10 us), one over the
    # NIC and a slow 1 Gbit/s uplink (10 us more): shares of 0.97 x NIC / 1.05 in inverse proportion
    # to latency + 20537 B / bandwidth summed over each route
    links = [{"name": "nic", "bandwidth": "2Gbit/s", "latency": "10us"},
             {"name": "up", "bandwidth": "10Gbit/s", "latency": "10us"}]
    vms = [vm("a", "256MiB", "32MiB", **{"workload.rate": "1/s", "cpus.count": 1}),
           dict(vm("b", "256MiB", "32MiB", **{"workload.rate": "1/s", "cpus.count": 1}), route=["nic", "up"])]
    r = run_host(host_from_dict(dict(host(vms, links=links, sharing="simgrid"), route=["nic"])))
    nic, up = 2e9 / 8, 10e9 / 8
    pa, pb = 10e-6 + 20537 / nic, 20e-6 + 20537 / nic + 20537 / up
    total = 0.97 * nic / 1.05
    a, b = r.vms
    assert a.rates[0][1] == pytest.approx(total * (1 / pa) / (1 / pa + 1 / pb), rel=1e-12)
    assert b.rates[0][1] == pytest.approx(total * (1 / pb) / (1 / pa + 1 / pb), rel=1e-12)
