"""``pagesync-sim rollout CLUSTER.yaml``: a rolling maintenance as a Monte Carlo over seeds
(docs/evacuate.md#rolling-maintenance). Prints the distribution of the rollout's duration, failed and
retried migrations and worst downtime; ``--json`` writes it with every seed's figures. Bad input: one
line, exit 2.
"""
import sys

from ..cli import PROG, ArgParser, UsageError

__all__ = ["main", "format_rollout"]


def _fmt(field, v):
    if v is None:
        return "-"
    if field == "duration_s":
        return f"{v:.1f} s"
    if field == "max_downtime_s":
        return f"{v * 1e3:.1f} ms"
    return f"{v:g}"


def format_rollout(r):
    """The text of a RolloutResult."""
    c = r.cluster
    shared = ", ".join(c.shared) if c.shared else "nothing"
    lim = "no limit" if not c.concurrency else f"{c.concurrency} at once per host"
    lines = [f"rollout {c.name}: {c.hosts} hosts, {c.batch} at a time ({c.batches} batches; sharing {shared}), "
             f"{lim}, {c.order}, maintenance {c.maintenance:g} s, retries {c.retries}; fluid model",
             f"{len(r.runs)} seeds" + (f" (interrupted: {r.ran} of {r.tasks} tasks this time)" if r.interrupted else ""),
             "", f"{'':<22}  {'median':>12}  {'p90':>12}  {'max':>12}",
             f"{'-' * 22}  {'-' * 12}  {'-' * 12}  {'-' * 12}"]
    labels = {"duration_s": "rollout duration", "failed": "failed migrations", "retried": "retried migrations",
              "max_downtime_s": "worst downtime"}
    if "fault_failed" in r.distribution:
        labels["fault_failed"] = "failed by a fault"
    if (r.distribution.get("lost") or {}).get("max"):
        labels["lost"] = "lost in post-copy"
    for f, label in labels.items():
        d = r.distribution[f]
        lines.append(f"{label:<22}  {_fmt(f, d['median']):>12}  {_fmt(f, d['p90']):>12}  {_fmt(f, d['max']):>12}")
    ff = r.distribution.get("fault_failure")
    if ff and ff["p_run"] is not None:
        lines += ["", f"faults ({len(c.faults)} stated, {len(c.random_faults)} from rates): a migration failed by a "
                      f"fault in {ff['p_run']:.1%} of the runs; {ff['p_attempt']:.2%} of the migration attempts"]
    return "\n".join(lines) + "\n"


def main(argv):
    from ..config import ConfigError
    from .cluster import load_cluster
    from .run import RolloutError, run_rollout, write_json

    p = ArgParser(prog=f"{PROG} rollout", description="A rolling maintenance of a cluster's hosts, a batch at a "
                                                      "time, as a Monte Carlo over seeds on Dask.")
    p.add_argument("cluster", help="cluster file, e.g. configs/clusters/rollout-1000.yaml")
    p.add_argument("--json", metavar="PATH", help="write the result as JSON ('-' for stdout)")
    p.add_argument("--out", metavar="PREFIX", help="journal the tasks in PREFIX.journal (for --resume) and write "
                                                   "PREFIX.json")
    p.add_argument("--resume", action="store_true", help="keep the tasks PREFIX.journal holds, run the rest")
    p.add_argument("--seeds", type=int, metavar="N", help="Monte Carlo runs instead of rollout.seeds")
    p.add_argument("--scheduler", default="local", help="local (a LocalCluster, default), inprocess, or a Dask "
                                                        "scheduler address tcp://HOST:PORT")
    p.add_argument("--workers", type=int, metavar="N", help="LocalCluster worker processes (default: the cores)")
    p.add_argument("--quiet", action="store_true", help="no progress, print nothing but errors")
    args = p.parse_args(argv)
    if args.resume and not args.out:
        raise UsageError("--resume needs --out PREFIX (the journal to resume)")
    if args.seeds is not None and not 1 <= args.seeds <= 100_000:
        raise UsageError(f"--seeds: must be in [1, 100000], got {args.seeds}")
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers: must be >= 1, got {args.workers}")
    if args.scheduler not in ("local", "inprocess") and not args.scheduler.startswith(("tcp://", "tls://")):
        raise UsageError(f"--scheduler: '{args.scheduler}' is not local, inprocess or an address tcp://HOST:PORT")
    try:
        cluster = load_cluster(args.cluster)
    except ConfigError as exc:
        where = args.cluster if not str(exc).startswith("cannot open") else None
        raise UsageError(f"{where}: {exc}" if where else str(exc)) from None
    if args.seeds is not None:
        cluster.seeds = args.seeds
    try:
        result = run_rollout(cluster, args.out, args.scheduler, args.workers, args.resume,
                             progress=not args.quiet and sys.stderr.isatty())
    except RolloutError as exc:
        raise UsageError(str(exc)) from None
    except (OSError, TimeoutError) as exc:
        raise UsageError(f"--scheduler: cannot reach '{args.scheduler}': {exc}") from None
    if args.out:
        write_json(result, args.out + ".json")
    if args.json:
        write_json(result, args.json)
    if not args.quiet and args.json != "-":
        sys.stdout.write(format_rollout(result))
    return 130 if result.interrupted else 0
