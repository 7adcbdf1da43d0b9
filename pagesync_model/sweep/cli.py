"""``pagesync-sim sweep`` and ``pagesync-sim plan``.

Bad input (a malformed sweep file, an unknown key, a target that cannot be read, a range without a
boundary) is one line on stderr and exit status 2, as for a single run.
"""
import os
import sys

from ..cli import PROG, ArgParser, UsageError
from .execute import SCHEDULERS


def _plot_sweep(table, sweep, args):
    from ..plots import PlotError, plot_sweep, save_figure
    from .knobs import label_for
    opts = dict(sweep.plot)
    for k in ("field", "x", "y", "limit"):
        if getattr(args, k, None):
            opts[k] = getattr(args, k)
    try:
        field = opts.get("field", "downtime_s")
        limit = None
        if opts.get("limit") is not None:
            from .planner import PlanError, Target
            try:
                limit = Target(field, "<=", str(opts["limit"])).threshold(field)
            except PlanError as exc:
                raise UsageError(f"--limit: {str(exc).split(': ', 1)[-1]}") from None
        fig = plot_sweep(table.frame(), sweep.axis_keys, field=field, x=opts.get("x"), y=opts.get("y"),
                         kind=opts.get("kind", "auto"), limit=limit, label=label_for)
        save_figure(fig, args.plot)
    except PlotError as exc:
        raise UsageError(f"--plot: {exc}") from None


def sweep_main(argv):
    """``pagesync-sim sweep SWEEP.yaml [--scheduler ADDR|local|inprocess] [--workers N] [--out PREFIX]
    [--resume | --resume-changed] [--run-timeout T] [--force] [--plot FILE [--field F] [--x KEY] [--y KEY]
    [--limit V]] [--backend B] [--quiet]``; returns the exit status (0, 1 if some runs failed or timed out,
    130 if interrupted). Raises UsageError for bad input."""
    from .spec import MAX_RUNS, SweepError, load_sweep
    from .table import TableError
    from .execute import DEFAULT_RUN_TIMEOUT_S, run_sweep

    p = ArgParser(prog=f"{PROG} sweep", description="Run a parameter sweep (a base config times axes) on Dask "
                                                   "and write one row per run to PREFIX.csv and PREFIX.parquet; "
                                                   "PREFIX.journal records each run as it finishes, for --resume.")
    p.add_argument("sweep", help="sweep file, e.g. configs/sweeps/stratus-link-memory.yaml")
    p.add_argument("--scheduler", default="local",
                   help="local (a LocalCluster on this machine, default), inprocess (no Dask: one run after "
                        "another from this process), or the address of a running Dask scheduler, tcp://HOST:PORT")
    p.add_argument("--workers", type=int, help="local: worker processes (default: one per core)")
    p.add_argument("--out", metavar="PREFIX", help="output PREFIX.journal, PREFIX.csv and PREFIX.parquet "
                                                   "(default: the sweep file's name without .yaml)")
    p.add_argument("--resume", action="store_true", help="keep the rows already in the output's journal and run "
                                                         "only the missing, failed or timed-out runs; refused if "
                                                         "the sweep changed since")
    p.add_argument("--resume-changed", action="store_true",
                   help="--resume even though the base config, set:, axes or seeds changed: keep the rows of runs "
                        "whose effective config and seed are unchanged, drop the others")
    p.add_argument("--run-timeout", metavar="DURATION", default=f"{DEFAULT_RUN_TIMEOUT_S:g}s",
                   help="kill a run still going after this long and record it as timed out, e.g. 10min "
                        "(default 1h; 'none': no limit, runs in the worker's own process)")
    p.add_argument("--force", action="store_true", help=f"run a cross product of more than {MAX_RUNS:,} runs")
    p.add_argument("--plot", metavar="FILE", help="also draw the sweep (.png or .svg)")
    p.add_argument("--field", help="summary field to plot (default from the sweep file, else downtime_s)")
    p.add_argument("--x", help="axis for the plot's x (default: the first axis)")
    p.add_argument("--y", help="axis for the heatmap's y (default: the second axis, if any)")
    p.add_argument("--limit", help="also mark where the plotted field crosses this value, e.g. 300ms")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                   help="override a config value in every run, after the sweep file's set: (repeatable)")
    p.add_argument("--backend", default="auto", help="kernel backend: auto, cython or numpy")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    args = p.parse_args(argv)
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers: must be >= 1, got {args.workers}")
    if args.scheduler not in SCHEDULERS and "://" not in args.scheduler:
        raise UsageError(f"--scheduler: '{args.scheduler}' is not local, inprocess or an address such as "
                         "tcp://10.0.0.5:8786")
    if args.workers is not None and args.scheduler != "local":
        raise UsageError("--workers: only for --scheduler local (an existing cluster keeps its workers)")
    if args.plot and os.path.splitext(args.plot)[1].lower() not in (".png", ".svg"):
        raise UsageError(f"--plot: '{args.plot}' must end in .png or .svg")
    from ..kernels import BACKEND_NAMES
    if args.backend not in BACKEND_NAMES:
        raise UsageError(f"--backend: unknown backend '{args.backend}' (choose from {', '.join(BACKEND_NAMES)})")
    timeout = _timeout(args.run_timeout)
    try:
        sweep = load_sweep(args.sweep, args.overrides)
        if not args.force:
            sweep.check_size()
        sweep.runs()  # duplicates are refused before anything runs or is written
    except SweepError as exc:
        raise UsageError(str(exc)) from None
    if args.x and args.x not in sweep.axes or args.y and args.y not in sweep.axes:
        bad = args.x if args.x and args.x not in sweep.axes else args.y
        raise UsageError(f"--plot: '{bad}' is not an axis of {args.sweep} (axes: {', '.join(sweep.axes)})")
    prefix = args.out or os.path.splitext(args.sweep)[0]
    try:
        outcome = run_sweep(sweep, prefix, scheduler=args.scheduler, workers=args.workers, resume=args.resume,
                            progress=not args.quiet, backend=args.backend, timeout=timeout,
                            resume_changed=args.resume_changed)
    except TableError as exc:
        raise UsageError(str(exc)) from None
    except (OSError, TimeoutError) as exc:
        raise UsageError(f"--scheduler: cannot reach '{args.scheduler}': {exc}") from None
    if args.plot and outcome.table.rows:
        _plot_sweep(outcome.table, sweep, args)
    if outcome.replaced:
        print(f"{PROG} sweep: started over: the {outcome.replaced} runs in {prefix}.journal were replaced "
              "(--resume keeps them)", file=sys.stderr)
    if not args.quiet:
        skipped = f", {outcome.skipped} already done" if outcome.skipped else ""
        dropped = f" ({outcome.dropped} rows of changed runs dropped)" if outcome.dropped else ""
        failed = f", {outcome.failed} failed" if outcome.failed else ""
        timed_out = f" ({outcome.timed_out} timed out)" if outcome.timed_out else ""
        see = " (see the status and error columns)" if outcome.failed else ""
        print(f"{PROG} sweep: {outcome.ran} runs in {outcome.wall_s:.1f} s{skipped}{dropped}{failed}{timed_out}{see} "
              f"-> {prefix}.csv, {prefix}.parquet", file=sys.stderr)
    if outcome.interrupted:
        print(f"{PROG} sweep: interrupted: {len(outcome.table.rows)} of {outcome.total} runs kept in {prefix}.csv; "
              "--resume runs the rest", file=sys.stderr)
        return 130
    return 1 if outcome.failed else 0


def _timeout(text):
    """--run-timeout as seconds (None for 'none'). Raises UsageError."""
    from ..units import Cycles, parse_duration
    if text.strip().lower() in ("none", "off"):
        return None
    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise UsageError(f"--run-timeout: {exc}") from None
    if isinstance(value, Cycles) or not value > 0:
        raise UsageError(f"--run-timeout: must be a duration > 0 such as 10min, or none, got '{text}'")
    return float(value)


def plan_main(argv):
    """``pagesync-sim plan CONFIG --target FIELD<=VALUE --vary KEY --range LO..HI [--tol T]
    [--scale auto|log|linear] [--set K=V ...] [--seed N] [--csv PATH]``; prints the runs and the answer.
    Returns 0. Raises UsageError for bad input and when there is no boundary in the range."""
    from ..config import ConfigError, config_from_dict, load_config, load_tree
    from ..sim.engine import simulate
    from .knobs import Knob, KnobError
    from .planner import PlanError, Target, format_plan, plan

    p = ArgParser(prog=f"{PROG} plan", description="Find the value of one config key at which a summary field "
                                                  "crosses a target, by bisection.")
    p.add_argument("config", help="scenario YAML file")
    p.add_argument("--target", required=True, help="FIELD<=VALUE (or <, >=, >), e.g. 'downtime<=100ms'")
    p.add_argument("--vary", required=True, metavar="KEY", help="numeric config key, e.g. link.bandwidth")
    p.add_argument("--range", required=True, metavar="LO..HI", dest="range_", help="e.g. 1Gbit/s..400Gbit/s")
    p.add_argument("--tol", type=float, default=0.01, help="relative width of the final bracket (default 0.01)")
    p.add_argument("--scale", choices=("auto", "log", "linear"), default="auto",
                   help="bisect in log space (auto: when the range spans a decade)")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                   help="override a config value (repeatable)")
    p.add_argument("--seed", type=int, help="seed of the write streams")
    p.add_argument("--backend", default="auto", help="kernel backend: auto, cython or numpy")
    p.add_argument("--csv", metavar="PATH", help="also write the runs as CSV")
    p.add_argument("--force", action="store_true", help="probe even when the estimated cost of a run at either "
                                                         "end of the range is beyond this machine")
    args = p.parse_args(argv)
    if not args.tol > 0:
        raise UsageError(f"--tol: must be > 0, got {args.tol}")
    try:
        base_cfg = load_config(args.config, args.overrides)
        tree = load_tree(args.config)
    except ConfigError as exc:
        where = args.config if not str(exc).startswith(("cannot open", "--set")) else None
        raise UsageError(f"{where}: {exc}" if where else str(exc)) from None
    try:
        target = Target.parse(args.target)
        knob = Knob(args.vary, size_quantum=base_cfg.memory.page_size)
        if not knob.numeric:
            raise UsageError(f"--vary: '{args.vary}' is a {knob.kind}, not a number")
        if ".." not in args.range_:
            raise UsageError(f"--range: expected LO..HI such as 1Gbit/s..400Gbit/s, got '{args.range_}'")
        lo_text, hi_text = (s.strip() for s in args.range_.split("..", 1))
        lo, hi = knob.parse(lo_text), knob.parse(hi_text)
    except KnobError as exc:
        raise UsageError(f"--vary {args.vary}: {exc}" if not str(exc).startswith(args.vary) else f"--range: {exc}") \
            from None
    except PlanError as exc:
        raise UsageError(str(exc)) from None

    if not args.force:
        # the bisection probes inside [LO, HI]; a run's cost grows monotonically with a knob's value or
        # against it, so its two ends bound every probe's estimate
        from ..cost import CostError, check
        for end in (lo_text, hi_text):
            try:
                check(config_from_dict(tree, list(args.overrides) + [f"{args.vary}={end}"], source=args.config))
            except ConfigError as exc:
                raise UsageError(f"--range: {args.vary}={end}: {exc}") from None
            except CostError as exc:
                raise UsageError(f"plan: at {args.vary}={end}, {exc}") from None

    def evaluate(extra):
        cfg = config_from_dict(tree, list(args.overrides) + list(extra), source=args.config)
        return simulate(cfg, backend=args.backend, seed=args.seed).summary

    def probe(r):  # each probe as it finishes, before the table (stderr keeps a refusal to its one line)
        state = "converged" if r.converged else f"NOT converged ({r.stop_reason})" if r.converged is False else ""
        print(f"{PROG} plan: probe {args.vary}={knob.label(r.value)}: {r.field or target.name} = {r.shown()}"
              f"{'; ' + state if state and r.metric is not None else ''}; "
              f"{'meets' if r.met else 'misses'} the target", flush=True)

    try:
        result = plan(evaluate, target, knob, lo, hi, tol=args.tol, scale=args.scale, on_run=probe)
    except PlanError as exc:
        raise UsageError(f"plan: {exc}") from None
    sys.stdout.write(format_plan(result, knob, target))
    if args.csv:
        import csv
        try:
            with open(args.csv, "w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(["run", args.vary, result.field, "converged", "stop_reason", "total_time_s", "bytes_sent",
                            "met", "error"])
                for i, r in enumerate(result.runs):
                    w.writerow([i, r.value, r.metric, r.converged, r.stop_reason or "",
                                "" if r.total_time_s is None else r.total_time_s,
                                "" if r.bytes_sent is None else r.bytes_sent, r.met, r.error or ""])
        except OSError as exc:
            raise UsageError(f"--csv: cannot write '{args.csv}': {exc.strerror}") from None
    return 0
