"""The committed live-mirror measurements (experiments/live_mirror/results/*.json): complete,
verified, consistent with their per-pass records, and the README table equal to results.md."""
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RES = ROOT / "experiments" / "live_mirror" / "results"
NAMES = ["writer-5k", "writer-40k", "writer-200k", "python-dict", "sqlite3", "redis"]


def load(name):
    return json.loads((RES / f"{name}.json").read_text())


def test_six_targets_measured_and_verified():
    for name in NAMES:
        r = load(name)
        live, sim, c = r["live"], r["sim"], r["comparison"]
        assert live["verified"] and live["lost_writes"] == 0, name
        assert live["passes"] == len(live["per_pass"]) and live["per_pass"][0]["kind"] == "full"
        assert live["per_pass"][-1]["kind"] == "blackout"
        assert c["dirty_live"] == [p["dirty_pages"] for p in live["per_pass"][1:]]
        assert c["dirty_sim"] == [p["dirty_pages"] for p in sim["per_pass"][1:]]
        assert c["converged_live"] == live["converged"] and c["converged_sim"] == sim["converged"]
        assert c["downtime_live_s"] == live["downtime_s"] > 0


def test_readme_table_is_results_md():
    table = (ROOT / "experiments" / "live_mirror" / "results.md").read_text().strip()
    assert table in (ROOT / "README.md").read_text()
