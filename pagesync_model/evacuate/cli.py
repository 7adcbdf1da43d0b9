"""``pagesync-sim evacuate HOST.yaml``: drain a host (docs/evacuate.md).

Prints the VMs' migrations (start, end, verdict, downtime, bytes) and the drain time; ``--json`` writes
the HostResult document, ``--plot`` the Gantt-style plot; ``--plan`` searches the concurrency limit and
order that drain the host soonest with no VM over the downtime bound. Bad input: one line, exit 2.
"""
import json
import sys

from ..cli import PROG, ArgParser, UsageError, write_output

__all__ = ["main", "format_host", "format_plan"]


def _gib(n):
    return f"{n / 2**30:.2f} GiB"


def _ms(s):
    return "-" if s is None else f"{s * 1e3:.1f}"


def format_host(r):
    """The text summary of a HostResult."""
    lim = "no limit" if not r.concurrency else f"{r.concurrency} at once"
    route = " > ".join(f"{ln['name']} {ln['bandwidth'] * 8 / 1e9:g} Gbit/s" for ln in r.links)
    lines = [f"host {r.host}: {r.platform}, {lim}, {r.order}; {len(r.vms)} VMs over {route}", ""]
    w = max(4, *(len(v.name) for v in r.vms))
    lines.append(f"{'vm'.ljust(w)}  policy  {'memory':>10}  {'start s':>9}  {'end s':>9}  verdict   "
                 f"{'downtime ms':>11}  {'sent':>10}  stop")
    lines.append(f"{'-' * w}  ------  {'-' * 10}  {'-' * 9}  {'-' * 9}  --------  {'-' * 11}  {'-' * 10}  ----")
    for v in r.vms:
        lines.append(f"{v.name.ljust(w)}  {v.policy:<6}  {_gib(v.memory_bytes):>10}  {v.start_s:9.3f}  {v.end_s:9.3f}  "
                     f"{v.verdict:<8}  {_ms(v.downtime_s):>11}  {_gib(v.bytes_sent):>10}  {v.stop_reason}"
                     + (f" (attempt {v.attempts})" if v.attempts > 1 else ""))
    worst = "" if r.max_downtime_s is None else f"; longest downtime {_ms(r.max_downtime_s)} ms"
    lost = f", {r.lost} lost" if r.lost else ""
    lines += ["", f"drain time  {r.drain_s:.3f} s  ({r.migrated} migrated, {r.failed} failed{lost}{worst})", ""]
    return "\n".join(lines)


def format_plan(p):
    """The text of a PlanResult: every candidate and the choice."""
    bound = "no downtime bound" if not p.max_downtime_s else f"downtime <= {p.max_downtime_s * 1e3:g} ms"
    lines = [f"plan: every VM migrated, {bound}", "",
             "concurrency  order              drain s  migrated  failed  longest downtime ms  ok",
             "-----------  -----------------  -------  --------  ------  -------------------  --"]
    for t in p.tried:
        lines.append(f"{t['concurrency']:>11}  {t['order']:<17}  {t['drain_s']:7.3f}  {t['migrated']:>8}  "
                     f"{t['failed']:>6}  {_ms(t['max_downtime_s']):>19}  {'yes' if t['ok'] else 'no'}")
    lines.append("")
    if p.best is None:
        lines.append("no concurrency limit and order tried meets the bound")
    else:
        lines.append(f"best: concurrency {p.best[0]}, {p.best[1]}: drains in {p.result.drain_s:.3f} s")
    return "\n".join(lines) + "\n"


def _ints(text, what):
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"{what}: expected whole numbers separated by commas, got '{text}'") from None
    if not out or any(x < 0 for x in out):
        raise UsageError(f"{what}: expected whole numbers >= 0 separated by commas, got '{text}'")
    return out


def main(argv):
    from ..bounds import MAX_SEED
    from ..config import ConfigError
    from ..kernels import BACKEND_NAMES, BackendError
    from ..units import UnitError, parse_duration
    from .host import ORDERS, load_host
    from .run import plan_host, run_host

    p = ArgParser(prog=f"{PROG} evacuate", description="Drain a host: its VMs' migrations sharing its links, "
                                                       "as many at once and in the order its platform allows.")
    p.add_argument("host", help="host file, e.g. configs/hosts/kubevirt-node.yaml")
    p.add_argument("--json", metavar="PATH", help="write the result as JSON ('-' for stdout)")
    p.add_argument("--plot", metavar="FILE", help="draw the migrations and their shared rates over time (.png or .svg)")
    p.add_argument("--concurrency", type=int, metavar="N", help="migrations at once (0 = no limit), instead of the "
                                                                "platform's")
    p.add_argument("--order", help=f"start order instead of the host's: {', '.join(ORDERS)}")
    p.add_argument("--plan", action="store_true", help="search the concurrency limit and order that drain the host "
                                                        "soonest with every VM migrated within the downtime bound")
    p.add_argument("--limits", metavar="N,N,...", help="--plan: the concurrency limits to try (default 1, 2, 4, ... "
                                                       "up to the VM count)")
    p.add_argument("--orders", metavar="ORDER,...", help="--plan: the orders to try (default all)")
    p.add_argument("--max-downtime", metavar="TIME", help="--plan: the downtime bound (default host.max_downtime)")
    p.add_argument("--seed", type=int, help="seed of the write streams (VM i gets seed + i; default host.seed)")
    p.add_argument("--fault-seed", type=int, help="seed of the random faults (the i-th gets seed + i; default "
                                                   "their own)")
    p.add_argument("--backend", default="auto", help="kernel backend: auto, cython or numpy (default auto)")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    args = p.parse_args(argv)
    if args.backend not in BACKEND_NAMES:
        raise UsageError(f"--backend: unknown backend '{args.backend}' (choose from {', '.join(BACKEND_NAMES)})")
    if args.seed is not None and not 0 <= args.seed <= MAX_SEED:
        raise UsageError(f"--seed: must be in [0, {MAX_SEED}], got {args.seed}")
    if args.fault_seed is not None and not 0 <= args.fault_seed <= MAX_SEED:
        raise UsageError(f"--fault-seed: must be in [0, {MAX_SEED}], got {args.fault_seed}")
    if args.concurrency is not None and args.concurrency < 0:
        raise UsageError(f"--concurrency: must be >= 0 (0 = no limit), got {args.concurrency}")
    for name, text in (("--order", args.order), *((("--orders", o) for o in (args.orders or "").split(",")
                                                   if args.orders))):
        if text is not None and text not in ORDERS:
            raise UsageError(f"{name}: unknown order '{text}' (choose from {', '.join(ORDERS)})")
    if not args.plan and (args.limits or args.orders or args.max_downtime):
        raise UsageError("--limits, --orders and --max-downtime go with --plan")
    bound = None
    if args.max_downtime is not None:
        try:
            bound = parse_duration(args.max_downtime)
        except UnitError as exc:
            raise UsageError(f"--max-downtime: {exc}") from None
        if not isinstance(bound, float) or bound < 0:
            raise UsageError(f"--max-downtime: must be a time >= 0 such as 500ms, got '{args.max_downtime}'")
    try:
        host = load_host(args.host)
    except ConfigError as exc:
        where = args.host if not str(exc).startswith("cannot open") else None
        raise UsageError(f"{where}: {exc}" if where else str(exc)) from None
    host = host.with_(concurrency=args.concurrency, order=args.order)
    try:
        if args.plan:
            limits = _ints(args.limits, "--limits") if args.limits else None
            orders = args.orders.split(",") if args.orders else None
            out = plan_host(host, limits, orders, bound, seed=args.seed, backend=args.backend,
                            fault_seed=args.fault_seed)
            text = format_plan(out) + ("" if out.result is None else "\n" + format_host(out.result))
            result = out.result
        else:
            out = result = run_host(host, seed=args.seed, backend=args.backend, fault_seed=args.fault_seed)
            text = format_host(out)
    except BackendError as exc:
        raise UsageError(f"--backend: {exc}") from None
    except MemoryError:
        raise UsageError(f"{args.host}: not enough memory to hold the state of the host's VMs") from None
    if args.json:
        write_output(args.json, json.dumps(out.to_dict(), indent=1) + "\n")
    if args.plot:
        from .plot import PlotError, plot_host, save_figure
        if result is None:
            raise UsageError("--plot: no plan met the bound: nothing to draw")
        try:
            save_figure(plot_host(result), args.plot)
        except (PlotError, OSError) as exc:
            raise UsageError(f"--plot: {exc}") from None
    if not args.quiet and args.json != "-":
        sys.stdout.write(text)
    return 0
