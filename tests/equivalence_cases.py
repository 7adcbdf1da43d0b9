"""Small configs of every page-level policy whose results the speed work must leave unchanged.

``python tests/equivalence_cases.py`` prints, for each case and backend, a digest of everything a run
reports except its wall-clock figures; ``--write`` stores them in tests/data/equivalence_digests.json
(the version oracle that tests/test_equivalence.py compares against). Regenerate only on purpose, from
the commit whose results are the reference, and name that commit in the file (``--commit``).
"""
import argparse
import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DIGESTS = ROOT / "tests" / "data" / "equivalence_digests.json"

SMALL = ["memory.size=256MiB", "memory.kernel_size=16MiB", "sim.time_limit=6s"]
QEMU = SMALL + ["sim.time_limit=3s", "workload.working_set=128MiB", "workload.kind=uniform", "workload.rate=12k/s",
                "qemu.max_bandwidth=1Gbit/s", "link.bandwidth=1Gbit/s", "qemu.setup=1ms"]
STRATUS = SMALL + ["workload.working_set=96MiB", "memory.processes=20", "cpus.count=4", "workload.rate=20k/s",
                   "stratus.threshold=3000", "link.bandwidth=2Gbit/s"]
OPS = QEMU + ["memory.size=128MiB", "workload.working_set=64MiB", "workload.rate=15k/s", "sim.time_limit=10s",
              "operator.monitor_period=100ms"]

# name: (config, overrides, variant)
CASES = {
    "stratus": ("stratus.yaml", STRATUS, None),
    "stratus-copy-before-clear": ("stratus.yaml", STRATUS, "copy-before-clear"),
    "stratus-no-tlb-flush": ("stratus.yaml", STRATUS, "no-tlb-flush"),
    "stratus-sequential": ("stratus.yaml", STRATUS + ["workload.kind=sequential", "workload.stride=3"], None),
    "qemu": ("qemu-default.yaml", QEMU, None),
    "qemu-hotcold-converges": ("qemu-default.yaml", QEMU + ["workload.kind=hotcold", "workload.hot_fraction=0.02",
                                                              "workload.hot_share=0.97"], None),
    "qemu-xbzrle": ("qemu-default.yaml", QEMU + ["qemu.xbzrle=true", "qemu.xbzrle_cache=8MiB"], None),
    "qemu-auto-converge": ("qemu-default.yaml", QEMU + ["qemu.auto_converge=true", "workload.rate=40k/s"], None),
    "qemu-zipf": ("qemu-default.yaml", QEMU + ["workload.kind=zipf"], None),
    "nova": ("nova-default.yaml", OPS + ["sim.time_limit=4s", "operator.downtime_delay=1s",
                                        "operator.completion_timeout=20s"], None),
    "kubevirt-postcopy": ("kubevirt-default.yaml", OPS + ["operator.completion_timeout=4s",
                                                          "operator.on_timeout=postcopy"], None),
    "kubevirt-pause": ("kubevirt-default.yaml", OPS + ["operator.completion_timeout=4s",
                                                       "operator.on_timeout=pause"], None),
    "ovirt": ("ovirt-minimal-downtime.yaml", OPS + ["operator.monitor_period=500ms"], None),
    "xen-legacy": ("xen-2005.yaml", SMALL + ["workload.working_set=64MiB", "memory.processes=10"], None),
    "xen-v2": ("xen-2005.yaml", SMALL + ["workload.working_set=64MiB", "memory.processes=10",
                                         "policy=xen-v2"], None),
}
BACKENDS = ("cython", "numpy")


def outcome(name, backend):
    """The run's result document without what depends on the machine (wall clock) or the code version."""
    from pagesync_model.config import load_config
    from pagesync_model.sim.engine import Engine

    config, sets, variant = CASES[name]
    cfg = load_config(ROOT / "configs" / config, sets)
    d = Engine(cfg, backend=backend, variant=variant).run().to_dict()
    d.pop("simulator")
    d.pop("version", None)
    d.pop("backend", None)
    return d


def fields(d):
    """(result keys, per-pass keys) of a result document, the input config left out."""
    return sorted(k for k in d if k not in ("config", "per_pass")), sorted(d["per_pass"][0]) if d["per_pass"] else []


def digest(d, keys, pass_keys):
    """sha256 of the result's ``keys`` and of each pass record's ``pass_keys`` (the oracle's own lists:
    fields added to results later do not change the digest of the ones it knew)."""
    doc = {k: d.get(k) for k in keys}
    doc["per_pass"] = [{k: r.get(k) for k in pass_keys} for r in d["per_pass"]]
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def brief(d):
    """A few figures kept next to the digest, so a mismatch says where it is."""
    return {k: d.get(k) for k in ("passes", "pages_sent", "bytes_sent", "copy_calls", "lost_writes",
                                  "downtime_s", "stop_reason", "workload_writes")}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="store the digests in " + str(DIGESTS.relative_to(ROOT)))
    ap.add_argument("--commit", default="", help="the commit that produced them (recorded in the file)")
    args = ap.parse_args(argv)
    out = {"commit": args.commit, "cases": {}}
    for name in CASES:
        for backend in BACKENDS:
            d = outcome(name, backend)
            keys, pass_keys = fields(d)
            out["cases"][f"{name}/{backend}"] = {"digest": digest(d, keys, pass_keys), "keys": keys,
                                                 "pass_keys": pass_keys, **brief(d)}
            print(name, backend, brief(d), file=sys.stderr)
    if args.write:
        DIGESTS.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    else:
        print(json.dumps(out, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
