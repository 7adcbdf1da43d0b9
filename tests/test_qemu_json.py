"""``--json-format qemu``: the ``ram`` object carries every member of QEMU's MigrationStats (the list
read from QEMU's qapi/migration.json, tests/data/qemu/), each computed from the run."""
import copy
import json
from pathlib import Path

import pytest

from pagesync_model.cli import main
from pagesync_model.config import config_from_dict
from pagesync_model.sim.engine import simulate

SCHEMA_KEYS = [line.strip() for line in (Path(__file__).parent / "data" / "qemu" / "MigrationStats.txt")
               .read_text().splitlines() if line.strip()]

BASE = {
    "policy": "qemu",
    "memory": {"size": "64MiB", "kernel_size": "8MiB", "zero_fraction": 0.25},
    "cpus": {"count": 2},
    "workload": {"kind": "uniform", "rate": "2k/s", "working_set": "16MiB"},
    "link": {"bandwidth": "1Gbit/s"},
    "qemu": {"max_bandwidth": "1Gbit/s"},
    "sim": {"time_limit": "20s"},
}


def run(**qemu):
    tree = copy.deepcopy(BASE)
    tree["qemu"].update(qemu)
    return simulate(config_from_dict(tree))


def test_schema_list_is_the_qapi_one():
    assert len(SCHEMA_KEYS) == 17 and len(set(SCHEMA_KEYS)) == 17
    assert {"pages-per-second", "multifd-bytes", "postcopy-requests", "dirty-sync-missed-zero-copy"} <= set(SCHEMA_KEYS)


def test_converged_run_has_every_key_with_the_runs_values():
    r = run()
    q = r.to_qemu()
    d = r.to_dict()
    assert q["status"] == "completed"
    ram = q["ram"]
    assert list(ram) == SCHEMA_KEYS
    ps = 4096
    assert ram["page-size"] == ps
    assert ram["total"] == 64 * 2**20
    assert ram["transferred"] == d["bytes_sent"] == sum(p["bytes"] for p in d["per_pass"])
    assert ram["duplicate"] + ram["normal"] == d["pages_sent"] == sum(p["pages_copied"] for p in d["per_pass"])
    assert ram["duplicate"] == sum(p["zero_pages"] for p in d["per_pass"]) > 0
    assert ram["normal-bytes"] == ram["normal"] * ps
    assert ram["remaining"] == 0
    assert ram["precopy-bytes"] + ram["downtime-bytes"] == ram["transferred"]
    assert ram["downtime-bytes"] == d["per_pass"][-1]["bytes"] > 0     # the stop-and-copy pass
    assert ram["postcopy-bytes"] == ram["postcopy-requests"] == 0
    assert ram["multifd-bytes"] == ram["dirty-sync-missed-zero-copy"] == 0
    assert ram["dirty-sync-count"] == d["dirty_sync_count"] >= 2
    # the last period's pages and bits: every page carries its 8-byte header (zero pages: no payload),
    # so pages x (page + header) x 8 bounds mbps from above
    assert 0 < ram["pages-per-second"] * (ps + 8) * 8 / 1e6 >= q["ram"]["mbps"] * 0.5


def test_unconverged_run_reports_what_remains():
    r = run(max_bandwidth="8MiB/s")
    q = r.to_qemu()
    assert q["status"] == "active" and list(q["ram"]) == SCHEMA_KEYS
    ram = q["ram"]
    assert ram["remaining"] > 0 and ram["remaining"] % 4096 == 0
    assert ram["downtime-bytes"] == 0 and ram["precopy-bytes"] == ram["transferred"]
    # 8 MiB/s of pages of 4 KiB + 8 bytes: at most 2048 pages/s (zero pages cost 8 bytes, so more)
    assert ram["pages-per-second"] > 1500
    assert ram["mbps"] == pytest.approx(8 * 2**20 * 8 / 1e6, rel=0.1)


@pytest.mark.parametrize("policy", ["xen-legacy", "stratus", "analytic"])
def test_other_policies_carry_every_key(policy):
    tree = copy.deepcopy(BASE)
    tree["policy"] = policy
    tree.pop("qemu")
    r = simulate(config_from_dict(tree))
    ram = r.to_qemu()["ram"]
    assert list(ram) == SCHEMA_KEYS
    assert ram["pages-per-second"] > 0


def test_cli_json_format_qemu(tmp_path, capsys):
    import yaml
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(BASE))
    assert main([str(path), "--json", "-", "--json-format", "qemu"]) == 0
    assert list(json.loads(capsys.readouterr().out)["ram"]) == SCHEMA_KEYS
