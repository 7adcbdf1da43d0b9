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
