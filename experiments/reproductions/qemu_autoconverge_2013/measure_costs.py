"""Measure QEMU 1.6's per-page migration-thread costs on this machine (costs_bench.c: the zero test and
the dirty-bitmap sync's walk, copied from QEMU's tree at 7ca1dfad) and write costs_measured.json.

Run: ``nice -n 10 python experiments/reproductions/qemu_autoconverge_2013/measure_costs.py`` (about a
minute; needs gcc). Each of ``RUNS`` invocations reports the median of its repeats (thread CPU time);
the file keeps every invocation and the median over them. This is a measurement of the same code on a
different machine from the one of the published runs (whose hardware the commit does not state).
"""
import json
import platform
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUNS = 3
ARGS = ["1024", "67111056", "1", "7"]  # 1 GiB of zero pages; the guest's 67,111,056 pages, 0.1% dirty; 7 repeats


def cpu_model():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main():
    with tempfile.TemporaryDirectory() as tmp:
        exe = Path(tmp) / "costs_bench"
        subprocess.run(["gcc", "-O2", "-o", str(exe), str(HERE / "costs_bench.c")], check=True)
        runs = [json.loads(subprocess.run([str(exe), *ARGS], check=True, capture_output=True, text=True).stdout)
                for _ in range(RUNS)]
        gcc = subprocess.run(["gcc", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    keys = ("zero_page_test_ns", "nonzero_page_test_ns", "sync_ns_per_page")
    out = {"what": "QEMU 7ca1dfad per-page costs (costs_bench.c), thread CPU time, measured on this machine "
                   "(not the published runs' host)",
           "median": {k: round(statistics.median(r[k] for r in runs), 3) for k in keys},
           "runs": runs, "args": ARGS, "machine": {"cpu": cpu_model(), "compiler": gcc + " -O2",
                                                    "loadavg_1min": float(Path("/proc/loadavg").read_text().split()[0])},
           "date": datetime.now(timezone.utc).strftime("%Y-%m-%d")}
    (HERE / "costs_measured.json").write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    json.dump(main()["median"], sys.stdout)
    print()
