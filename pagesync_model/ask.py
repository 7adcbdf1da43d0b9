"""``pagesync-sim ask``: a capacity planner's question in the planner's numbers, answered in one command.

    pagesync-sim ask --memory 64GiB --dirty-rate 1GB/s --working-set 16GiB --link 10Gbit/s \\
        --preset qemu-default --downtime-limit 300ms --time-limit 10min

takes the preset's config (configs/PRESET.yaml: its policy, link costs, tracking costs and defaults),
puts the planner's numbers in (memory.size, workload.dirty_rate and working_set, link.bandwidth,
the downtime limit, sim.time_limit), runs it, and answers: does it converge, in how long, how many
bytes, with what downtime -- or, if not, the downtime it would have had and the limit it would need.
The config it ran is written out (``--write-config``, default ask-config.yaml) for ``pagesync-sim
CONFIG`` to run again with the same answer.

The working set defaults to the preset's share of its memory (qemu-default: 4 GiB of 8 GiB, half).
``--downtime-limit`` is QEMU's downtime-limit for the qemu presets (for nova-default: the final,
largest limit Nova steps up to); the presets whose limit is a schedule (ovirt-minimal-downtime) or
that have none (xen-2005, stratus) refuse it. The needed limit comes from the result when the run
reports it (``needed_downtime_limit_s``); else ``--find-limit`` bisects over the downtime limit
(several runs), and without it the answer says how to ask.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import yaml

from .cli import PROG, ArgParser, UsageError, admit, write_output
from .units import (UnitError, format_bandwidth, format_bytes, format_duration, parse_bandwidth, parse_duration,
                    parse_size)

# a checkout's configs/, or the copy an install puts next to the package (setup.py: build_py)
_CHECKOUT_PRESETS = Path(__file__).resolve().parent.parent / "configs"
PRESETS_DIR = _CHECKOUT_PRESETS if _CHECKOUT_PRESETS.is_dir() else Path(__file__).resolve().parent / "presets"
PRESETS = ("qemu-default", "nova-default", "kubevirt-default", "ovirt-minimal-downtime", "xen-2005", "stratus")
DEFAULT_CONFIG = "ask-config.yaml"
FIND_LIMIT_HI = 60.0     # s: the largest downtime limit --find-limit tries


def build_parser():
    p = ArgParser(prog=f"{PROG} ask", description="Will a VM of this size and dirty rate migrate over this link? "
                                                  "How long, how many bytes, what downtime, which limit?")
    p.add_argument("--memory", required=True, help="guest memory, e.g. 512GB or 64GiB")
    p.add_argument("--dirty-rate", required=True, dest="dirty_rate",
                   help="whole-guest dirty rate as QEMU's calc-dirty-rate measures it, e.g. 2GB/s, 500MiB/s, "
                        "100000pages/s")
    p.add_argument("--working-set", dest="working_set",
                   help="memory the dirty rate lands on (default: the preset's share of its memory)")
    p.add_argument("--link", required=True, help="link bandwidth, e.g. 10Gbit/s or 25Gbps")
    p.add_argument("--preset", default="qemu-default", help=f"platform: {', '.join(PRESETS)} (default qemu-default)")
    p.add_argument("--downtime-limit", dest="downtime_limit", help="the migration's downtime limit, e.g. 300ms "
                                                                   "(default: the preset's)")
    p.add_argument("--max-bandwidth", dest="max_bandwidth", help="qemu presets: QEMU's max-bandwidth (default: the "
                                                                 "preset's; qemu-default keeps QEMU's 128MiB/s)")
    p.add_argument("--vcpus", type=int, help="guest vCPUs (default: the preset's)")
    p.add_argument("--time-limit", dest="time_limit", help="give up after this much simulated time, e.g. 20min "
                                                           "(default: the preset's)")
    p.add_argument("--quantum", default="auto", help="the simulation's time step: auto (default: chosen from the "
                                                    "run's own time scales, see docs/model.md) or a duration, e.g. 1ms")
    p.add_argument("--find-limit", action="store_true", dest="find_limit",
                   help="if it does not converge, bisect for the smallest downtime limit that converges "
                        "(several runs)")
    p.add_argument("--write-config", metavar="PATH", default=DEFAULT_CONFIG, dest="write_config",
                   help=f"where to write the config used (default {DEFAULT_CONFIG}; '-' for stdout, '' for none)")
    p.add_argument("--json", metavar="PATH", help="also write the full result as JSON ('-' for stdout)")
    p.add_argument("--backend", default="auto", help="kernel backend: auto, cython or numpy")
    p.add_argument("--force", action="store_true", help="run even when the estimated cost is beyond this machine")
    return p


def _read(kind, option, text, parse):
    try:
        return parse(text)
    except UnitError as exc:
        raise UsageError(f"{option}: {exc}") from None


def question_tree(args):
    """The config tree the planner's numbers make on the preset; raises UsageError."""
    from .config import ConfigError, load_tree
    if args.preset not in PRESETS:
        raise UsageError(f"--preset: unknown preset '{args.preset}' (choose from {', '.join(PRESETS)})")
    path = PRESETS_DIR / f"{args.preset}.yaml"
    try:
        tree = load_tree(path)
    except ConfigError as exc:
        raise UsageError(f"--preset: cannot read the preset {path.name}: {exc}") from None
    mem = tree.setdefault("memory", {})
    wl = tree.setdefault("workload", {})
    size = _read("size", "--memory", args.memory, parse_size)
    if size <= 0:
        raise UsageError(f"--memory: must be > 0, got '{args.memory}'")
    if args.working_set is None:
        share = parse_size(wl["working_set"]) / parse_size(mem["size"])
        ws = int(size * share)
        ws_text = f"{ws - ws % 4096}B"
    else:
        _read("size", "--working-set", args.working_set, parse_size)
        ws_text = args.working_set
    _read("bandwidth", "--link", args.link, parse_bandwidth)
    mem["size"] = args.memory
    for key in ("rate", "dirty_rate_file", "dirty_rate_window"):
        wl.pop(key, None)
    wl["dirty_rate"] = args.dirty_rate
    wl["working_set"] = ws_text
    tree.setdefault("link", {})["bandwidth"] = args.link
    policy = tree.get("policy", "stratus")
    operator = (tree.get("operator") or {}).get("kind", "none")
    if args.downtime_limit is not None:
        limit = _read("duration", "--downtime-limit", args.downtime_limit, parse_duration)
        if not isinstance(limit, float) or limit <= 0:
            raise UsageError(f"--downtime-limit: must be a positive time such as 300ms, got '{args.downtime_limit}'")
        key = downtime_key(tree)
        if key is None:
            why = ("its downtime limit is a schedule (oVirt's convergence policy)" if operator == "ovirt"
                   else f"the {policy} policy has no downtime limit (it stops after its rounds)")
            raise UsageError(f"--downtime-limit: the {args.preset} preset takes none: {why}; use qemu-default, "
                             "kubevirt-default or nova-default")
        section, field = key.split(".")
        tree.setdefault(section, {})[field] = args.downtime_limit
    if args.max_bandwidth is not None:
        if policy != "qemu":
            raise UsageError(f"--max-bandwidth: the {args.preset} preset is not QEMU")
        _read("bandwidth", "--max-bandwidth", args.max_bandwidth, parse_bandwidth)
        tree.setdefault("qemu", {})["max_bandwidth"] = args.max_bandwidth
    if args.vcpus is not None:
        if args.vcpus < 1:
            raise UsageError(f"--vcpus: must be >= 1, got {args.vcpus}")
        tree.setdefault("cpus", {})["count"] = args.vcpus
    if args.time_limit is not None:
        _read("duration", "--time-limit", args.time_limit, parse_duration)
        tree.setdefault("sim", {})["time_limit"] = args.time_limit
    tree.setdefault("sim", {})["quantum"] = args.quantum
    return tree


def downtime_key(tree):
    """The config key of the preset's downtime limit, or None when it has none the planner may set."""
    if tree.get("policy") != "qemu":
        return None
    operator = (tree.get("operator") or {}).get("kind", "none")
    if operator == "nova":
        return "operator.downtime"
    if operator in ("none", "kubevirt"):
        return "qemu.downtime_limit"
    return None


def _ms(s):
    return format_duration(s) if s is not None else "n/a"


def answer_lines(args, cfg, d, needed=None):
    """The answer, a few lines of text, from the result document ``d``."""
    wl = cfg.workload
    limit_key = downtime_key(d["config"])
    limit = None
    if limit_key:
        section, field = limit_key.split(".")
        limit = getattr(getattr(cfg, section), field)
    q = (f"{format_bytes(cfg.memory.size)} guest, {args.dirty_rate} dirty rate on {format_bytes(wl.working_set)}, "
         f"{format_bandwidth(cfg.link.bandwidth)} link, {args.preset}"
         + (f", downtime limit {_ms(limit)}" if limit is not None else "")
         + f", time limit {_ms(cfg.sim.time_limit)}"
         + (f" (time step {_ms(d['quantum_s'])})" if d.get("quantum_s") else ""))
    out = [f"question   {q}"]
    if d["converged"]:
        out.append(f"answer     converges ({d['stop_reason']}) in {_ms(d['total_time_s'])}, "
                   f"downtime {_ms(d['downtime_s'])}, {format_bytes(d['bytes_sent'])} sent "
                   f"({d['copies_per_page']:.2f} x memory) in {d['passes']} passes")
    else:
        expected = d.get("expected_downtime_s")
        proj = d.get("projected")
        if d["stop_reason"] == "steady-state" and proj:
            expected = proj.get("expected_downtime_s", expected)
            out.append(f"answer     does NOT converge: steady at {_ms(proj.get('stopped_at_s', d['total_time_s']))}, "
                       f"so the run stopped early; projected at the time limit ({proj['stop_reason']}): "
                       f"{format_bytes(proj['bytes_sent'])} sent in {proj['passes']} passes"
                       + (f"; expected downtime {_ms(expected)}" if expected is not None else ""))
        else:
            out.append(f"answer     does NOT converge ({d['stop_reason']}) within {_ms(d['total_time_s'])}: "
                       f"{format_bytes(d['bytes_sent'])} sent in {d['passes']} passes"
                       + (f"; expected downtime {_ms(expected)}" if expected is not None else ""))
        if needed is not None:
            out.append(needed)
        elif d.get("needed_downtime_limit_s") is not None:
            out.append(f"needed     a downtime limit of {_ms(d['needed_downtime_limit_s'])} would converge (an upper "
                       f"bound: --find-limit bisects for the least)")
        elif limit_key:
            out.append("needed     not computed: add --find-limit to bisect for the downtime limit it needs")
    if d.get("achieved_dirty_rate_bytes_s") is not None:
        out.append(f"dirty rate {format_bandwidth(d['achieved_dirty_rate_bytes_s'], 'byte')} achieved (distinct "
                   f"pages per {format_duration(wl.dirty_rate_window)}, as QEMU's calc-dirty-rate measures it; "
                   f"{format_bandwidth(wl.rate * cfg.cpus.count * cfg.memory.page_size, 'byte')} of page writes)")
    if cfg.policy == "qemu" and cfg.qemu.max_bandwidth < cfg.link.bandwidth * cfg.link.efficiency:
        out.append(f"note       QEMU's max-bandwidth {format_bandwidth(cfg.qemu.max_bandwidth, 'byte')} caps the "
                   f"transfer below the link (--max-bandwidth to change it)")
    return out


def find_limit(tree, key, backend, lo, expected=None, needed=None):
    """Bisect ``key`` (a downtime limit) in [lo, FIND_LIMIT_HI] s for the smallest that converges, to 5 %,
    first trying ``needed`` (the run's ``needed_downtime_limit_s``, an upper bound) or else a quarter above
    ``expected`` (the downtime QEMU expected at the end of the run). Returns (limit_s or None, runs)."""
    from .config import config_from_dict
    from .sim.engine import simulate

    def converges(value):
        c = config_from_dict(tree, [f"{key}={value!r}s"])
        return simulate(c, backend=backend)["converged"]

    runs = 0
    if needed is not None and lo < needed <= FIND_LIMIT_HI:
        hi = needed
    else:
        hi = min(max(lo * 1.1, 1.25 * expected if expected else lo * 2, 0.05), FIND_LIMIT_HI)
    while not converges(hi):
        runs += 1
        if hi >= FIND_LIMIT_HI:
            return None, runs
        lo, hi = hi, min(hi * 4, FIND_LIMIT_HI)
    runs += 1
    while hi / lo > 1.05:
        mid = math.sqrt(lo * hi)
        runs += 1
        if converges(mid):
            hi = mid
        else:
            lo = mid
    return hi, runs


def cost_drivers(cfg):
    """What a refused question should change, in ask's own options (for `cost.check`), naming the page
    writes the dirty rate takes on this working set and pattern: a dirty rate near what the working
    set holds in a window takes many writes for each distinct page."""
    from .cost import write_rate
    per = f" ({write_rate(cfg):.3g} page writes/s dirty that rate on that working set)"
    return {"writes": f"--dirty-rate, --working-set{per} and --time-limit",
            "quanta": "--quantum and --time-limit",
            "state_bytes": "--memory"}


def main(argv):
    from .config import ConfigError, config_from_dict
    from .kernels import BACKEND_NAMES, BackendError
    from .sim.engine import simulate

    args = build_parser().parse_args(argv)
    if args.backend not in BACKEND_NAMES:
        raise UsageError(f"--backend: unknown backend '{args.backend}' (choose from {', '.join(BACKEND_NAMES)})")
    tree = question_tree(args)
    notices = []
    try:
        cfg = config_from_dict(tree, source=f"ask --preset {args.preset}", notices=notices)
    except ConfigError as exc:
        raise UsageError(f"ask: {_option_of(exc)}{exc}") from None
    admit(cfg, notices, args.force, "ask", cost_drivers(cfg))
    text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    if args.write_config:
        write_output(args.write_config, f"# written by: {PROG} ask {' '.join(argv)}\n" + text)
    try:
        result = simulate(cfg, backend=args.backend)
    except BackendError as exc:
        raise UsageError(f"--backend: {exc}") from None
    d = result.to_dict()
    needed = None
    key = downtime_key(d["config"])
    if not d["converged"] and args.find_limit and key:
        section, field = key.split(".")
        limit, runs = find_limit(cfg.to_dict(), key, args.backend, getattr(getattr(cfg, section), field),
                                 d.get("expected_downtime_s"), d.get("needed_downtime_limit_s"))
        needed = (f"needed     a downtime limit of {_ms(limit)} converges ({key}, bisected to 5 % in {runs} runs)"
                  if limit is not None else f"needed     no downtime limit up to {_ms(FIND_LIMIT_HI)} converges within "
                                            f"the time limit ({runs} runs)")
    if args.json:
        write_output(args.json, result.to_json())
    if args.json != "-" and args.write_config != "-":
        lines = answer_lines(args, cfg, d, needed)
        if args.write_config:
            lines.append(f"config     {args.write_config} (run it again: {PROG} {args.write_config})")
        sys.stdout.write("\n".join(lines) + "\n")
    return 0


_OPTION_OF = {"memory.size": "--memory", "workload.dirty_rate": "--dirty-rate", "workload.working_set": "--working-set",
              "link.bandwidth": "--link", "qemu.downtime_limit": "--downtime-limit",
              "operator.downtime": "--downtime-limit", "qemu.max_bandwidth": "--max-bandwidth",
              "cpus.count": "--vcpus", "sim.time_limit": "--time-limit"}


def _option_of(exc):
    option = _OPTION_OF.get(getattr(exc, "path", ""))
    return f"{option}: " if option else ""
