"""The sweep file: a base config plus axes, expanded into runs.

```yaml
base: ../stratus.yaml        # a config file (relative to this file) or an inline mapping of sections
set: [sim.time_limit=2min]   # optional: overrides applied to every run
axes:                        # the runs are the cross product, first axis outermost
  link.bandwidth: {log: [10Gbit/s, 200Gbit/s], num: 5}     # evenly in log space, ends included
  workload.rate: {linear: [10k/s, 50k/s], num: 5}          # evenly spaced
  memory.size: [64GiB, 128GiB, 256GiB]                     # a list (any field: choices, bools too)
seeds: 3                     # repetitions: seeds 1..3, or a list [1, 7, 42]; omitted: the base's sim.seed
plot: {field: downtime_s, x: link.bandwidth, y: memory.size, limit: 300ms}   # what --plot draws
```

Every axis key and value is checked before anything runs; problems raise SweepError with the file
and the YAML path ('s.yaml: axes.link.bandwidth[1]: cannot read ...').
"""
import dataclasses
import hashlib
import itertools
import json
import os

from ..config import ConfigError, config_from_dict, load_config, load_tree, parse_yaml
from .knobs import Knob, KnobError

TOP_KEYS = ("base", "set", "axes", "seeds", "plot")
PLOT_KEYS = ("field", "x", "y", "kind", "limit")


class SweepError(ValueError):
    """A malformed sweep file or option; one line, naming the file and the YAML path."""


@dataclasses.dataclass(frozen=True)
class Run:
    """One run of a sweep: its position ``index``, a stable ``run_id`` (from the axis values and the
    seed, so --resume recognises it in an older table), the axis ``values`` in base units, the
    ``overrides`` that set them, and the ``seed``."""
    index: int
    run_id: str
    values: dict
    overrides: tuple
    seed: int


@dataclasses.dataclass
class Sweep:
    """A parsed sweep: ``base`` (the config tree as YAML read it), ``base_overrides`` (the ``set:``
    list), ``source`` (the base config's name in errors), ``axes`` (key -> list of base-unit values),
    ``knobs`` (key -> Knob), ``seeds`` (list, or None for the base's own seed), ``plot`` defaults."""
    path: str
    base: dict
    base_overrides: tuple
    source: str
    axes: dict
    knobs: dict
    seeds: list
    plot: dict

    @property
    def axis_keys(self):
        return list(self.axes)

    def runs(self):
        """Every Run, in order: the cross product of the axes (first outermost), seeds innermost."""
        seeds = self.seeds if self.seeds is not None else [None]
        out = []
        combos = itertools.product(*(self.axes[k] for k in self.axes)) if self.axes else [()]
        for values in combos:
            for seed in seeds:
                assignment = dict(zip(self.axes, values))
                overrides = tuple(self.knobs[k].override(v) for k, v in assignment.items())
                out.append(Run(len(out), run_id(overrides, seed), assignment, overrides, seed))
        return out

    def size(self):
        n = len(self.seeds) if self.seeds is not None else 1
        for values in self.axes.values():
            n *= len(values)
        return n


def run_id(overrides, seed):
    """A short stable digest of a run's overrides and seed."""
    text = json.dumps({"set": sorted(overrides), "seed": seed}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def load_sweep(path):
    """Read and check the sweep file at ``path``; returns a Sweep. Raises SweepError."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise SweepError(f"cannot open '{path}': {exc.strerror}") from None
    try:
        data = parse_yaml(text, path)
    except ConfigError as exc:
        raise SweepError(f"{path}: {exc}") from None
    return sweep_from_dict(data, path)


def _fail(path, where, message):
    return SweepError(f"{path}: {where}: {message}" if where else f"{path}: {message}")


def sweep_from_dict(data, path="<sweep>"):
    """Check the sweep mapping ``data`` (as read from YAML; ``path`` names it in errors and anchors a
    relative ``base``) and return a Sweep. Raises SweepError."""
    if not isinstance(data, dict):
        raise _fail(path, "", "a sweep file is a mapping with 'base:' and 'axes:'")
    for key in data:
        if key not in TOP_KEYS:
            raise _fail(path, key, f"unknown key (expected {', '.join(TOP_KEYS)})")
    if "base" not in data:
        raise _fail(path, "base", "missing: give a config file or an inline config mapping")
    base = data["base"]
    here = os.path.dirname(os.path.abspath(path)) if not path.startswith("<") else os.getcwd()
    sets = data.get("set") or []
    if isinstance(sets, str):
        sets = [sets]
    if not isinstance(sets, list) or not all(isinstance(s, str) for s in sets):
        raise _fail(path, "set", "expected a list of 'dotted.key=value' strings")
    try:
        if isinstance(base, str):
            source = os.path.normpath(os.path.join(here, base))
            cfg = load_config(source, sets)
            tree = load_tree(source)
        elif isinstance(base, dict):
            source = f"{path}: base"
            cfg = config_from_dict(base, sets, source=source)
            tree = base
        else:
            raise _fail(path, "base", f"expected a config file name or a mapping, got '{base}'")
    except ConfigError as exc:
        where = exc.source if exc.source and not str(exc).startswith(("cannot open", "--set")) else None
        raise SweepError(f"{where}: {exc}" if where else f"{path}: {exc}") from None
    quantum = cfg.memory.page_size

    axes_raw = data.get("axes") or {}
    if not isinstance(axes_raw, dict):
        raise _fail(path, "axes", "expected a mapping of dotted config keys to values or ranges")
    axes, knobs = {}, {}
    for key, spec in axes_raw.items():
        where = f"axes.{key}"
        try:
            knob = Knob(key, size_quantum=quantum)
        except KnobError as exc:
            raise _fail(path, where, str(exc)) from None
        knobs[key] = knob
        axes[key] = _axis_values(path, where, knob, spec)
    seeds = _seeds(path, data.get("seeds"))
    plot = data.get("plot") or {}
    if not isinstance(plot, dict) or any(k not in PLOT_KEYS for k in plot):
        raise _fail(path, "plot", f"expected a mapping with keys among {', '.join(PLOT_KEYS)}")
    for k in ("x", "y"):
        if plot.get(k) is not None and plot[k] not in axes:
            raise _fail(path, f"plot.{k}", f"'{plot[k]}' is not an axis (axes: {', '.join(axes) or 'none'})")
    return Sweep(path, tree, tuple(sets), source, axes, knobs, seeds, plot)


def _axis_values(path, where, knob, spec):
    if isinstance(spec, list):
        if not spec:
            raise _fail(path, where, "an empty list")
        values = []
        for i, raw in enumerate(spec):
            try:
                values.append(knob.snap(knob.parse(raw)) if knob.numeric else knob.parse(raw))
            except KnobError as exc:
                raise _fail(path, f"{where}[{i}]", str(exc).split(": ", 1)[-1]) from None
        return values
    if isinstance(spec, dict):
        modes = [m for m in ("linear", "log") if m in spec]
        extra = [k for k in spec if k not in ("linear", "log", "num")]
        if len(modes) != 1 or extra or "num" not in spec:
            raise _fail(path, where, "a range is {linear: [FROM, TO], num: N} or {log: [FROM, TO], num: N}")
        if not knob.numeric:
            raise _fail(path, where, f"a range needs a numeric key; '{knob.key}' is a {knob.kind} (give a list)")
        ends = spec[modes[0]]
        if not isinstance(ends, list) or len(ends) != 2:
            raise _fail(path, f"{where}.{modes[0]}", f"expected [FROM, TO], got '{ends}'")
        try:
            lo, hi = (knob.parse(e) for e in ends)
            return knob.spread(lo, hi, spec["num"], modes[0] == "log")
        except KnobError as exc:
            raise _fail(path, where, str(exc).split(": ", 1)[-1]) from None
    raise _fail(path, where, f"expected a list of values or a range mapping, got '{spec}'")


def _seeds(path, raw):
    if raw is None:
        return None
    if isinstance(raw, int) and not isinstance(raw, bool):
        if raw < 1:
            raise _fail(path, "seeds", f"must be >= 1 repetitions, got '{raw}'")
        return list(range(1, raw + 1))
    if isinstance(raw, list) and raw and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                             for s in raw):
        if len(set(raw)) != len(raw):
            raise _fail(path, "seeds", "repeats a seed")
        return list(raw)
    raise _fail(path, "seeds", f"expected a count >= 1 or a list of seeds >= 0, got '{raw}'")
