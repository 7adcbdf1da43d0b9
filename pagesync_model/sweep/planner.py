"""The inverse planner: the value of one knob at which a summary field crosses a target.

``plan(cfg_data, Target.parse('downtime<=100ms'), Knob('link.bandwidth'), lo, hi)`` runs both ends of
the range, refuses (PlanError) when the target is met at neither or at both, then bisects: each run
halves the bracket between the end that meets the target and the end that does not, in log space
when the range spans a decade or more (bandwidths, sizes), until the bracket is within ``tol``
(relative) of the answer. The answer is the bracket end that meets the target, so it is a value that
was actually run and met it. It assumes the field is monotonic in the knob over the range; when it
is not, the answer is still a crossing with a run on each side, but not necessarily the only one.
"""
import dataclasses
import math
import re

from ..units import UnitError, parse_duration, parse_size

OPS = {"<=": lambda a, b: a <= b, "<": lambda a, b: a < b, ">=": lambda a, b: a >= b, ">": lambda a, b: a > b}
_TARGET = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(<=|>=|<|>)\s*([^<>=\s].*?)\s*$")


class PlanError(ValueError):
    """A target that cannot be read, or a range in which there is no boundary to find; one line."""


@dataclasses.dataclass(frozen=True)
class Target:
    """``field op value``: e.g. Target('downtime', '<=', '100ms'). The field is resolved against a run's
    summary (``downtime`` finds ``downtime_s``); the value is read with the field's unit (durations
    for ``*_s``, sizes for ``bytes*``, else a number; '5%' is 0.05)."""
    name: str
    op: str
    raw: str

    @classmethod
    def parse(cls, text):
        """Read 'FIELD<=VALUE' (or <, >=, >). Raises PlanError quoting the text."""
        m = _TARGET.match(text or "")
        if not m:
            raise PlanError(f"--target: cannot read '{text}' (expected FIELD<=VALUE such as downtime<=100ms; "
                            "operators <=, <, >=, >)")
        return cls(*m.groups())

    def field(self, summary):
        """The summary key this target names; raises PlanError listing the numeric fields."""
        for name in (self.name, self.name + "_s"):
            if name in summary and not isinstance(summary[name], (list, dict, str)):
                return name
        numeric = [k for k, v in summary.items() if v is None or isinstance(v, (int, float))]
        raise PlanError(f"--target: '{self.name}' is not a numeric summary field (fields: {', '.join(numeric)})")

    def threshold(self, field):
        """The target value in the field's base unit; raises PlanError quoting it."""
        raw = self.raw
        try:
            return float(raw)
        except ValueError:
            pass
        try:
            if raw.endswith("%"):
                return float(raw[:-1]) / 100.0
            if field.endswith("_s"):
                value = parse_duration(raw)
                if isinstance(value, float):
                    return value
                raise UnitError(f"give '{raw}' in seconds (ms, us, ...), not cycles")
            if "bytes" in field:
                return float(parse_size(raw))
        except (UnitError, ValueError) as exc:
            raise PlanError(f"--target: {field}: {exc}") from None
        raise PlanError(f"--target: {field}: cannot read '{raw}' as a number")

    def __str__(self):
        return f"{self.name} {self.op} {self.raw}"


@dataclasses.dataclass
class PlanRun:
    """One run of the planner: the knob ``value`` (base units), the field's ``metric`` (None when the
    run has none, e.g. no downtime because it never converged), ``converged``, ``met``, ``error``, and the
    run's ``stop_reason``, ``total_time_s`` and ``bytes_sent``."""
    value: float
    metric: object
    converged: object
    met: bool
    error: str = None
    stop_reason: str = None
    total_time_s: float = None
    bytes_sent: int = None
    field: str = None

    def shown(self, field=None):
        """The run's value of ``field`` (default its own) as the table shows it: the error, the value, or
        why there is none."""
        field = field or self.field
        if self.error:
            return self.error
        if self.metric is None and self.converged is False:
            return f"none: NOT converged ({self.stop_reason})"
        return "none" if self.metric is None else _fmt(field, self.metric)


@dataclasses.dataclass
class PlanResult:
    """The answer: ``value`` meets the target, ``other`` (the other end of the final bracket) does
    not; ``field`` and ``threshold`` are the resolved target, ``runs`` every run in order, ``log``
    whether the bisection ran in log space."""
    value: float
    other: float
    field: str
    threshold: float
    runs: list
    log: bool


def use_log(lo, hi, scale="auto"):
    """Whether to bisect in log space: 'log', 'linear', or 'auto' (both ends > 0 and a decade apart)."""
    if scale == "log":
        if not (lo > 0 and hi > 0):
            raise PlanError("--scale log needs both ends of the range > 0")
        return True
    if scale == "linear":
        return False
    return lo > 0 and hi > 0 and max(lo, hi) / min(lo, hi) >= 10


def plan(evaluate, target, knob, lo, hi, tol=0.01, scale="auto", max_runs=60, on_run=None):
    """Bisect ``knob`` between ``lo`` and ``hi`` (base units) for the boundary of ``target``.

    ``evaluate(overrides)`` runs a config with the given overrides and returns a result summary dict
    (it may raise; the error is recorded and the run counts as not meeting the target). ``tol`` is the
    relative width of the final bracket; ``max_runs`` caps the runs; ``on_run(PlanRun)`` is told of
    each run. Returns a PlanResult. Raises PlanError when the target is met at neither end or at both.
    """
    if not tol > 0:
        raise PlanError(f"--tol: must be > 0, got {tol}")
    lo, hi = knob.snap(lo), knob.snap(hi)
    if lo == hi:
        raise PlanError(f"--range: both ends are {knob.label(lo)}")
    log = use_log(lo, hi, scale)
    runs = []
    resolved = {}

    def run(value):
        try:
            summary = evaluate([knob.override(value)])
            error = None
        except Exception as exc:  # noqa: BLE001 -- a failing run does not meet the target
            summary, error = {}, f"{type(exc).__name__}: {exc}".splitlines()[0]
        if summary and "field" not in resolved:
            resolved["field"] = target.field(summary)
            resolved["threshold"] = target.threshold(resolved["field"])
        metric = summary.get(resolved.get("field")) if summary else None
        met = metric is not None and not (isinstance(metric, float) and math.isnan(metric)) and \
            OPS[target.op](metric, resolved["threshold"])
        r = PlanRun(value, metric, summary.get("converged"), bool(met), error, summary.get("stop_reason"),
                    summary.get("total_time_s"), summary.get("bytes_sent"), resolved.get("field"))
        runs.append(r)
        if on_run:
            on_run(r)
        return r

    a, b = run(lo), run(hi)
    if "field" not in resolved:
        raise PlanError(f"both ends failed: {a.error}")
    field = resolved["field"]

    def show(r):
        return r.shown(field)
    if a.met and b.met:
        raise PlanError(f"target {target} is already met at both ends of the range ({field} = {show(a)} at "
                        f"{knob.label(lo)}, {show(b)} at {knob.label(hi)}): widen the range to find the boundary")
    if not a.met and not b.met:
        raise PlanError(f"target {target} is unreachable in range: {field} = {show(a)} at {knob.label(lo)} and "
                        f"{show(b)} at {knob.label(hi)}")
    good, bad = (lo, hi) if a.met else (hi, lo)
    while len(runs) < max_runs and abs(good - bad) > tol * abs(good):
        mid = math.sqrt(good * bad) if log else (good + bad) / 2
        mid = knob.snap(mid)
        if mid in (good, bad):  # an int or size knob cannot be split further
            break
        if run(mid).met:
            good = mid
        else:
            bad = mid
    return PlanResult(good, bad, field, resolved["threshold"], runs, log)


def _fmt(field, value):
    from ..units import format_bytes, format_duration
    if isinstance(value, bool) or value is None:
        return str(value)
    if field.endswith("_s"):
        return format_duration(value)
    if "bytes" in field:
        return format_bytes(value)
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def format_plan(result, knob, target):
    """The planner's runs as a readable table and its answer, as the CLI prints them."""
    head = ("run", knob.key, result.field, "converged", "meets target")
    rows = [(str(i), knob.label(r.value), r.shown(result.field), str(r.converged),
             "yes" if r.met else "no") for i, r in enumerate(result.runs)]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in rows]
    side = "at least" if result.value > result.other else "at most"
    lines += ["", f"{knob.key} = {knob.label(result.value)} ({side}) meets {target} "
                  f"(boundary between {knob.label(min(result.value, result.other))} and "
                  f"{knob.label(max(result.value, result.other))}; {len(result.runs)} runs, "
                  f"{'log' if result.log else 'linear'} bisection)"]
    return "\n".join(lines) + "\n"
