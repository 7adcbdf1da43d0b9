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

A run's identity (``run_id``) is a digest of its whole effective config (every field after units,
defaults and overrides, with the seed it runs with) and the model version, so two spellings of one
value are one run, and a row written before the base config or ``set:`` changed is not mistaken for
a run of the new sweep. Two runs of one sweep with the same identity are refused, naming both
spellings; so is a cross product of more than MAX_RUNS runs unless forced.
"""
import dataclasses
import hashlib
import itertools
import json
import math
import os

from .. import __version__
from ..config import (ConfigError, ConfigSection, apply_override, config_from_dict, load_config, load_tree,
                      parse_yaml, read_config_text)
from .knobs import Knob, KnobError

TOP_KEYS = ("base", "set", "axes", "seeds", "plot")
PLOT_KEYS = ("field", "x", "y", "kind", "limit")
# more runs than this is almost always a typo in a 'num:' (and expanding them alone takes hours)
MAX_RUNS = 100_000


class SweepError(ValueError):
    """A malformed sweep file or option; one line, naming the file and the YAML path."""


@dataclasses.dataclass(frozen=True)
class Run:
    """One run of a sweep: its position ``index``, a stable ``run_id`` (a digest of the effective
    config and seed, so --resume recognises it in an older journal), the axis ``values`` in base
    units, the ``overrides`` that set them, and the ``seed``."""
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
    spellings: dict = None  # key -> how each axis value was written, for messages
    _runs: list = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def axis_keys(self):
        return list(self.axes)

    def runs(self):
        """Every Run, in order: the cross product of the axes (first outermost), seeds innermost.
        Raises SweepError if two runs have the same effective config and seed (the message names the
        axis values that collide, as written)."""
        if self._runs is not None:
            return self._runs
        seeds = self.seeds if self.seeds is not None else [None]
        keys = list(self.axes)
        out, seen = [], {}
        for positions in itertools.product(*(range(len(self.axes[k])) for k in keys)):
            assignment = {k: self.axes[k][i] for k, i in zip(keys, positions)}
            overrides = tuple(self.knobs[k].override(v) for k, v in assignment.items())
            config = self._effective(overrides)
            for seed in seeds:
                rid = run_id(config, seed)
                if rid in seen:
                    raise self._collision(seen[rid], (len(out), positions, seed))
                seen[rid] = (len(out), positions, seed)
                out.append(Run(len(out), rid, assignment, overrides, seed))
        self._runs = out
        return out

    def _effective(self, overrides):
        """The canonical effective config of the base with ``set:`` and ``overrides`` applied: the
        typed values of every field, or, when the config is invalid (the run will record the error),
        the tree as written with the error."""
        try:
            cfg = config_from_dict(self.base, list(self.base_overrides) + list(overrides), source=self.source)
        except ConfigError as exc:
            return {"invalid": str(exc), "tree": _tree_with(self.base, list(self.base_overrides) + list(overrides))}
        return canonical(cfg)

    def _collision(self, first, second):
        """The SweepError for two runs with one identity, naming the axis entries (as written) that
        differ; ``first`` and ``second`` are (run index, axis positions, seed)."""
        (ia, pa, sa), (ib, pb, sb) = first, second
        parts = []
        for k, i, j in zip(self.axes, pa, pb):
            if i == j:
                continue
            a, b = self.spellings[k][i], self.spellings[k][j]
            if a.startswith("value ") and b.startswith("value "):  # two points of one range
                both = f"values {i + 1} and {j + 1} of {a.split(' of ', 1)[1]}"
            else:
                both = f"{a} and {b}"
            same = self.axes[k][i] == self.axes[k][j]
            if same:
                both += f" are both {self.knobs[k].label(self.axes[k][i])}"
            elif k == "sim.seed" and self.seeds is not None:
                both += " are replaced by the seeds: list"
            parts.append(f"axes.{k}: {both}")
        if sa != sb:
            parts.append(f"seeds {sa} and {sb}")
        what = "; ".join(parts) if parts else "two entries"
        return _fail(self.path, "", f"{what}: runs {ia} and {ib} would be the same run (equal effective "
                                    "config and seed); remove one")

    def size(self):
        n = len(self.seeds) if self.seeds is not None else 1
        for values in self.axes.values():
            n *= len(values)
        return n

    def check_size(self, limit=None):
        """Raise SweepError if the cross product has more than ``limit`` (default MAX_RUNS) runs."""
        limit = MAX_RUNS if limit is None else limit
        n = self.size()
        if n > limit:
            factors = [f"{len(v)} {k}" for k, v in self.axes.items()]
            if self.seeds is not None:
                factors.append(f"{len(self.seeds)} seeds")
            raise _fail(self.path, "axes", f"{' x '.join(factors)} = {n:,} runs, more than {limit:,}; "
                                           "check each 'num:' (--force runs it anyway)")

    def spec_hash(self):
        """A digest of what the sweep computes: the axis keys and every run's identity in order. Any
        change to the base config, ``set:``, the axes, the seeds or the model version changes it."""
        text = json.dumps({"axes": list(self.axes), "runs": [r.run_id for r in self.runs()]})
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _plain(value):
    """A typed config value as JSON that is equal exactly when the values are: floats as their repr
    (exact, and 1e9 and 1000000000.0 agree), sections of a list field as their own mappings."""
    if isinstance(value, ConfigSection):
        return canonical(value)
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return repr(value)


# Fields added after runs were journalled, at the value that leaves a run as it was (no planner's dirty
# rate given): left out of the identity, so the journals and tables of earlier runs stay valid.
_NEUTRAL = {"workload.dirty_rate": "", "workload.dirty_rate_file": "", "workload.dirty_rate_window": repr(1.0)}


def canonical(section):
    """A config section as {dotted field: canonical value}, for hashing."""
    out = {k: _plain(v) for k, v in section.flat().items()}
    return {k: v for k, v in out.items() if k not in _NEUTRAL or v != _NEUTRAL[k]}


def _copy(tree):
    return {k: _copy(v) if isinstance(v, dict) else v for k, v in tree.items()}


def _tree_with(base, overrides):
    """The config tree with ``overrides`` applied as far as they apply, as JSON-safe data."""
    tree = _copy(base) if isinstance(base, dict) else {}
    for text in overrides:
        try:
            apply_override(tree, text)
        except ConfigError:
            pass  # the run records this error; the identity only needs to be stable
    return json.loads(json.dumps(tree, sort_keys=True, default=repr))


def run_id(config, seed):
    """A short stable digest of a run: its canonical effective ``config`` (see ``canonical``), the
    seed it runs with (``seed``, or the config's sim.seed when None) and the model version."""
    config = dict(config)
    if "sim.seed" in config:
        # the run's seed replaces sim.seed: a base that only differs there is the same run
        config["sim.seed"] = config["sim.seed"] if seed is None else seed
    text = json.dumps({"config": config, "seed": seed if seed is not None else config.get("sim.seed"),
                       "model": __version__}, sort_keys=True)
    # 64 bits: a chance collision among even MAX_RUNS runs is ~1e-9, and it would be refused, not merged
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_sweep(path, overrides=()):
    """Read and check the sweep file at ``path``, with ``overrides`` ('dotted.key=value', the command
    line's ``--set``) applied after its ``set:``; returns a Sweep. Raises SweepError."""
    try:
        text = read_config_text(path)  # the config reader's bounds: a device or a huge file is refused
    except ConfigError as exc:
        raise SweepError(str(exc)) from None
    try:
        data = parse_yaml(text, path)
    except ConfigError as exc:
        raise SweepError(f"{path}: {exc}") from None
    return sweep_from_dict(data, path, overrides)


def _fail(path, where, message):
    return SweepError(f"{path}: {where}: {message}" if where else f"{path}: {message}")


def sweep_from_dict(data, path="<sweep>", overrides=()):
    """Check the sweep mapping ``data`` (as read from YAML; ``path`` names it in errors and anchors a
    relative ``base``, wherever the file is and whatever the working directory) and return a Sweep;
    ``overrides`` follow its ``set:``. Raises SweepError."""
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
    sets = list(sets) + list(overrides)
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
    axes, knobs, spellings = {}, {}, {}
    for key, spec in axes_raw.items():
        where = f"axes.{key}"
        try:
            knob = Knob(key, size_quantum=quantum)
        except KnobError as exc:
            raise _fail(path, where, str(exc)) from None
        knobs[key] = knob
        axes[key] = _axis_values(path, where, knob, spec)
        spellings[key] = _spellings(spec, len(axes[key]))
    seeds = _seeds(path, data.get("seeds"))
    plot = data.get("plot") or {}
    if not isinstance(plot, dict) or any(k not in PLOT_KEYS for k in plot):
        raise _fail(path, "plot", f"expected a mapping with keys among {', '.join(PLOT_KEYS)}")
    for k in ("x", "y"):
        if plot.get(k) is not None and plot[k] not in axes:
            raise _fail(path, f"plot.{k}", f"'{plot[k]}' is not an axis (axes: {', '.join(axes) or 'none'})")
    return Sweep(path, tree, tuple(sets), source, axes, knobs, seeds, plot, spellings)


def _spellings(spec, count):
    """Each axis value as the sweep file gives it: "[2] '64MiB'" for a list entry, "value 3 of
    {linear: [1, 3], num: 5}" for a range."""
    if isinstance(spec, list):
        return [f"[{i}] '{raw}'" for i, raw in enumerate(spec)]
    mode = "log" if "log" in spec else "linear"
    ends = ", ".join(str(e) for e in spec[mode])
    return [f"value {i + 1} of {{{mode}: [{ends}], num: {count}}}" for i in range(count)]


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
