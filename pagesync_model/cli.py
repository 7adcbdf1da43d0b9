"""Command line: ``pagesync-sim CONFIG.yaml [options]`` runs one simulated mirror; ``pagesync-sim
SUBCOMMAND ...`` runs one of SUBCOMMANDS (each listed by ``--help``).

`ArgParser` and `write_output` are the pieces every subcommand's parser shares. Bad input (a missing or
malformed file, an unknown key, a value without its unit, an unknown variant or backend, ...) gives one
line on stderr naming what is wrong and where, and exit status 2;
so does a run whose estimated cost is beyond what the machine can do (pagesync_model/cost.py),
unless ``--force``.
"""
import argparse
import sys
from pathlib import Path

from . import __version__

PROG = "pagesync-sim"


class UsageError(Exception):
    """Bad command-line input: printed as one line, exit status 2."""


class ArgParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are a UsageError: one line, not usage + message."""

    def error(self, message):
        raise UsageError(message)


def _fail(message):
    print(f"{PROG}: {message}", file=sys.stderr)
    return 2


def build_parser():
    """The parser of a simulation run, its --help listing the subcommands too."""
    from .policies import VARIANTS
    from .results import JSON_FORMATS
    width = max(len(name) for name in SUBCOMMANDS)
    epilog = "subcommands (pagesync-sim SUBCOMMAND --help for each):\n" + "".join(
        f"  {name.ljust(width)}  {line}\n" for name, (_, line) in SUBCOMMANDS.items())
    p = ArgParser(prog=PROG, usage=f"{PROG} CONFIG.yaml [options]\n       {PROG} {{{','.join(SUBCOMMANDS)}}} ...",
                  description="Simulate mirroring the memory of a running machine to a partner "
                              "(Stratus pagesync and other pre-copy algorithms).",
                  epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="scenario YAML file, e.g. configs/stratus.yaml")
    p.add_argument("--json", metavar="PATH", help="write the full result as JSON ('-' for stdout)")
    p.add_argument("--json-format", choices=None, default="pagesync", dest="json_format",
                   help=" or ".join(f"{name} ({line})" for name, (_, line) in JSON_FORMATS.items()))
    p.add_argument("--csv", metavar="PATH", help="write the per-pass records as CSV ('-' for stdout)")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                   help="override a config value, e.g. --set link.bandwidth=10Gbit/s (repeatable)")
    p.add_argument("--seed", type=int, help="seed of the write streams (overrides sim.seed)")
    p.add_argument("--backend", default="auto", help="kernel backend: auto, cython or numpy (default auto)")
    p.add_argument("--variant", choices=None, help=f"algorithm variant: {', '.join(VARIANTS)} (default from the "
                                                   "config, normally correct)")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.add_argument("--plot", metavar="FILE", help="draw the passes (pages, durations, time line) as .png or .svg")
    p.add_argument("--force", action="store_true", help="run even when the estimated cost (quanta, page writes, "
                                                        "model state) is beyond what this machine does in an hour")
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    return p


def admit(cfg, notices, force, where, drivers=None):
    """Before a loaded config runs: print the loader's notices (one line each on stderr) and, unless
    ``force``, refuse a run whose estimated cost is beyond this machine (UsageError naming ``where``;
    ``drivers`` as `cost.check` takes it)."""
    from .cost import CostError, check
    for line in notices:
        print(f"{PROG}: notice: {line}", file=sys.stderr)
    if not force:
        try:
            check(cfg, drivers)
        except CostError as exc:
            raise UsageError(f"{where}: {exc}") from None


def write_output(path, text):
    """Write ``text`` to the file ``path``, or to stdout for '-'; raises UsageError naming the file
    when it cannot be written."""
    if path == "-":
        sys.stdout.write(text)
        return
    try:
        with open(path, "w") as f:
            f.write(text)
    except OSError as exc:
        raise UsageError(f"cannot write '{path}': {exc.strerror}") from None


class Progress:
    """Simulated time, passes and dirty pages of a long run on one line of a terminal's stderr, at most
    every ``every`` wall seconds; the caller uses it only when stderr is a terminal (never in pipes,
    files, JSON or CSV)."""

    def __init__(self, stream, time_limit, every=0.5):
        import time
        self.stream, self.limit, self.every = stream, time_limit, every
        self.clock = time.monotonic
        self.last = self.clock()
        self.shown = False

    def __call__(self, t_s, passes, dirty_pages):
        now = self.clock()
        if now - self.last < self.every:
            return
        self.last = now
        self.shown = True
        self.stream.write(f"\r{PROG}: simulated {t_s:.1f} s of {self.limit:g} s, {passes} passes, last harvest "
                          f"{dirty_pages} dirty pages\x1b[K")
        self.stream.flush()

    def close(self):
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def run_main(argv):
    from .config import ConfigError, load_config
    from .bounds import MAX_SEED
    from .kernels import BACKEND_NAMES, BackendError
    from .results import JSON_FORMATS, format_table
    from .sim.engine import VARIANTS, VariantError, simulate

    args = build_parser().parse_args(argv)
    if args.backend not in BACKEND_NAMES:
        raise UsageError(f"--backend: unknown backend '{args.backend}' (choose from {', '.join(BACKEND_NAMES)})")
    if args.variant is not None and args.variant not in VARIANTS:
        raise UsageError(f"--variant: unknown variant '{args.variant}' (choose from {', '.join(VARIANTS)})")
    if args.json_format not in JSON_FORMATS:
        raise UsageError(f"--json-format: unknown format '{args.json_format}' (choose from "
                         f"{', '.join(JSON_FORMATS)})")
    if args.seed is not None and not 0 <= args.seed <= MAX_SEED:
        raise UsageError(f"--seed: must be in [0, {MAX_SEED}], got {args.seed}")
    notices = []
    try:
        cfg = load_config(args.config, args.overrides, notices=notices)
    except ConfigError as exc:
        where = args.config if not str(exc).startswith(("cannot open", "--set")) else None
        raise UsageError(f"{where}: {exc}" if where else str(exc)) from None
    admit(cfg, notices, args.force, args.config)
    progress = Progress(sys.stderr, cfg.sim.time_limit) if not args.quiet and sys.stderr.isatty() else None
    try:
        result = simulate(cfg, backend=args.backend, variant=args.variant, seed=args.seed, progress=progress)
    except BackendError as exc:
        raise UsageError(f"--backend: {exc}") from None
    except VariantError as exc:
        raise UsageError(f"{'--variant' if args.variant else 'sim.variant'}: {exc}") from None
    except MemoryError:
        raise UsageError(f"{args.config}: not enough memory to hold the state of {cfg.memory.size} bytes of "
                         "simulated memory") from None
    finally:
        if progress is not None:
            progress.close()
    if args.json:
        write_output(args.json, JSON_FORMATS[args.json_format][0](result))
    if args.csv:
        write_output(args.csv, result.to_csv())
    if args.plot:
        from .plots import PlotError, plot_run, save_figure
        try:
            save_figure(plot_run(result), args.plot)
        except (PlotError, OSError) as exc:
            raise UsageError(f"--plot: {exc}") from None
    if not args.quiet and "-" not in (args.json, args.csv):
        sys.stdout.write(format_table(result))
    return 0


def trace_main(argv):
    """``pagesync-sim trace record|stats``: record a real program's page writes, or summarise a trace."""
    from .trace import TraceError, print_stats, plot_stats, record
    from .units import UnitError, parse_duration

    p = ArgParser(prog=f"{PROG} trace", description="Record which pages a real program writes, or summarise "
                                                   "a recorded trace.")
    sub = p.add_subparsers(dest="action", required=True, parser_class=ArgParser)
    r = sub.add_parser("record", help="run CMD under the write tracer and save its trace (.npz)")
    r.add_argument("--interval", default="10ms", help="scan interval, e.g. 10ms (default 10ms)")
    r.add_argument("-o", "--output", required=True, metavar="OUT", help="trace file to write (.npz)")
    r.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    st = sub.add_parser("stats", help="print a trace's statistics and save their plot")
    st.add_argument("file", help="trace file (.npz)")
    st.add_argument("--plot", metavar="PNG", help="where to save the working-set and skew plot "
                                                   "(default: beside the trace, FILE.stats.png)")
    st.add_argument("--no-plot", action="store_true", help="print only")
    args = p.parse_args(argv)
    try:
        if args.action == "record":
            cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
            if not cmd:
                raise UsageError("trace record: no command given (use: trace record -o OUT -- CMD ARGS...)")
            try:
                interval = parse_duration(args.interval)
            except UnitError as exc:
                raise UsageError(f"--interval: {exc}") from None
            if not isinstance(interval, float) or interval <= 0:
                raise UsageError(f"--interval: must be a positive time such as 10ms, got '{args.interval}'")
            summary = record(cmd, args.output, interval, stdin=None, stdout=None, stderr=None)
            # the target's fate first: a shell or make running us must see it in our status
            if summary.signal:
                fate = (f"{cmd[0]} was killed by {summary.signal} (exit status {summary.exit_status}); "
                        "the interval it died in is lost; ")
            elif summary.returncode:
                fate = f"{cmd[0]} exited with status {summary.returncode}; "
            else:
                fate = ""
            print(f"{PROG}: {fate}recorded {summary.n_intervals} intervals, {summary.n_distinct_pages} distinct "
                  f"pages, {summary.n_page_writes} page writes in {summary.duration_s:.3f} s -> {args.output}",
                  file=sys.stderr)
            return summary.exit_status
        print_stats(args.file, sys.stdout)
        if not args.no_plot:
            png = args.plot or str(Path(args.file).with_suffix("")) + ".stats.png"
            plot_stats(args.file, png)
            print(f"plot saved to {png}", file=sys.stderr)
        return 0
    except TraceError as exc:
        raise UsageError(str(exc)) from None


def _lazy(module, function="main"):
    """A subcommand implemented in its own module, imported only when used."""
    def run(argv):
        import importlib
        return getattr(importlib.import_module(module), function)(argv)
    return run


# name -> (entry point taking the rest of argv, the line --help shows). A new subcommand is its
# module's entry point and one line here.
SUBCOMMANDS = {
    "ask": (_lazy("pagesync_model.ask"), "answer a planner's question: memory, dirty rate, link, preset -> "
                                         "converges?, time, bytes, downtime"),
    "trace": (trace_main, "record which pages a real program writes (record), or summarise a trace (stats)"),
    "sweep": (_lazy("pagesync_model.sweep.cli", "sweep_main"),
              "run a parameter sweep (a base config times axes) and tabulate or plot it"),
    "plan": (_lazy("pagesync_model.sweep.cli", "plan_main"),
             "find the value of one config key at which a summary field meets a target"),
    "evacuate": (_lazy("pagesync_model.evacuate.cli"), "drain a host: its VMs' migrations at once over shared links, "
                                                       "per platform limits and order (--plan searches them)"),
    "rollout": (_lazy("pagesync_model.rollout.cli"), "a rolling maintenance of a cluster's hosts, a batch at a time "
                                                     "(fluid model), as a Monte Carlo over seeds on Dask"),
    "live": (_lazy("pagesync_model.live.cli", "main"),
             "mirror a live Linux process's memory to a receiver (mirror, receive)"),
}


def main(argv=None):
    """Entry point of ``pagesync-sim``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in SUBCOMMANDS:
            return SUBCOMMANDS[argv[0]][0](argv[1:])
        return run_main(argv)
    except UsageError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return _fail("interrupted")


if __name__ == "__main__":
    sys.exit(main())
