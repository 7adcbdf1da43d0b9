"""SimGrid's cloud-migration example (idle 1000 MB and 100 MB VMs, Fafard -> Tremblay on
small_platform.xml), from its stated inputs. Run: ``python experiments/reproductions/simgrid_cloud_migration/run.py``
(well under a second). Writes results.json and results.md next to this file."""
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parents[2])]  # common.py; the tree's pagesync_model
from common import run_config, write_results  # noqa: E402

# the example's tesh file: "VM0 migrated: Fafard->Tremblay in 132.766 s" / "in 13.346 s"
PUBLISHED = {"vm1000": 132.766, "vm100": 13.346}


def main():
    rows, runs = [], {}
    for name, pub in PUBLISHED.items():
        d = run_config(HERE / f"{name}.yaml")
        s = d
        runs[name] = {k: s[k] for k in ("total_time_s", "downtime_s", "stop_reason", "flow_rate_Bps",
                                        "latency_phase_s", "stage1_s")}
        ram = "1000 MB" if name == "vm1000" else "100 MB"
        rows.append({"quantity": f"migration time, {ram} idle VM", "published": pub,
                     "predicted": round(s["total_time_s"], 3), "unit": "s",
                     "note": f"unrounded {s['total_time_s']:.6f} s"})
    return write_results(HERE, "SimGrid cloud-migration example", rows, {"runs": runs})


if __name__ == "__main__":
    main()
