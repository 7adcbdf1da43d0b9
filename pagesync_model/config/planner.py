"""Planner inputs in a config: a whole-VM dirty rate (``workload.dirty_rate``, or a measurement
tool's report named by ``workload.dirty_rate_file``) becomes the per-CPU write rate the engine runs
(``workload.rate``), and a memory size that is not a whole number of pages is rounded up.

Both are applied to the config tree before it is validated (`resolve`), so every reader of
``workload.rate`` (the engine, the fluid models, the cost guard) sees the derived rate, and the
effective config carries both: reloading it derives the same rate again and checks that it agrees.

How a dirty rate D (distinct pages per second over a window of T seconds, QEMU's definition, see
pagesync_model/dirtyrate.py) becomes writes, per kind of workload, on W = workload.working_set pages:
- ``uniform``: the total rate r solving W (1 - exp(-r T / W)) = D T;
- ``hotcold``: the same for two uniform writers (hot_share of r on the hot pages, the rest cold);
- ``sequential`` with stride 1: r = D (a sweep dirties a new page with every write until it wraps);
- fluid and closed-form policies (analytic, simgrid), which count every write as a dirtied page:
  r = D;
each split evenly over ``cpus.count`` CPUs. Refused: ``zipf`` and ``trace`` kinds, ``groups`` and
``phases`` (which part of the VM would take which share is not said: give their rates instead), and
a rate that no writer reaches on W pages (D T >= W).
"""
from __future__ import annotations

import copy
import os
from typing import Any, Callable, Optional

from pagesync_model.dirtyrate import (DirtyRateError, parse_dirty_rate, read_dirty_rate_file,
                                      writes_for_distinct)
from pagesync_model.schema import Config, ConfigError
from pagesync_model.units import UnitError, format_bandwidth, format_bytes, parse_size

__all__ = ["resolve", "layer", "round_memory", "PLANNER_KEYS"]

PLANNER_KEYS = ("dirty_rate", "dirty_rate_file")


def layer(tree: dict, keys: set) -> None:
    """Let the later of two layers of a config win between ``workload.rate`` and a planner's dirty rate:
    ``keys`` are the workload keys the later layer (the file over its bases, ``--set`` over the file)
    gives; when it gives one side only, the other side is dropped from the merged ``tree``. Both in one
    layer stay, for `resolve` to refuse unless they agree."""
    w = tree.get("workload")
    if not isinstance(w, dict):
        return
    rate, dirty = "rate" in keys, bool(keys & set(PLANNER_KEYS))
    if dirty and not rate:
        w.pop("rate", None)
    elif rate and not dirty:
        for k in PLANNER_KEYS:
            w.pop(k, None)


def _given(section: dict, key: str) -> bool:
    return key in section and section[key] not in (None, "")


def round_memory(tree: dict, notices: Optional[list]) -> None:
    """Round ``memory.size`` up to a whole number of pages, with a notice, when both it and
    ``memory.page_size`` can be read (anything else is left for the schema to report)."""
    mem = tree.get("memory")
    if not isinstance(mem, dict) or "size" not in mem:
        return
    try:
        size = parse_size(mem["size"])
        page = parse_size(mem.get("page_size", "4KiB"))
    except (UnitError, ValueError):
        return
    if size <= 0 or page <= 0 or page & (page - 1) or size % page == 0:
        return
    rounded = -(-size // page) * page
    if notices is not None:
        notices.append(f"memory.size: {mem['size']} is not a whole number of {format_bytes(page)} pages; "
                       f"rounded up to {rounded} bytes ({rounded // page} pages)")
    mem["size"] = f"{rounded}B"


def resolve(tree: dict, source: str, build: Callable[[dict], Config], notices: Optional[list] = None) -> Config:
    """Build the Config of ``tree`` (read from ``source``) with ``build``, deriving ``workload.rate``
    from a planner's dirty rate when one is given. Raises ConfigError."""
    round_memory(tree, notices)
    w = tree.get("workload")
    if not isinstance(w, dict):
        return build(tree)
    given = [k for k in PLANNER_KEYS if _given(w, k)]
    if not given:
        try:
            return build(tree)
        except ConfigError as exc:
            if exc.path == "workload.rate" and str(exc).endswith("required value is missing"):
                exc.message += " (page writes per second per CPU; or give workload.dirty_rate, the whole guest's)"
            raise
    key = f"workload.{given[0]}"
    if len(given) > 1:
        raise ConfigError("workload.dirty_rate_file", "give workload.dirty_rate or workload.dirty_rate_file, "
                                                      "not both")
    for part in ("groups", "phases"):
        if w.get(part):
            raise ConfigError(key, f"a whole-VM dirty rate cannot say how it splits among workload.{part}: give "
                                   f"each {part[:-1]}'s rate (workload.{part}[].rate) instead")
    rate_given = "rate" in w
    trial = copy.deepcopy(tree)
    if not rate_given:
        trial["workload"]["rate"] = "1/s"   # a placeholder: validate everything else first
    cfg = build(trial)
    per_cpu, window = _per_cpu_rate(cfg, key, source, "dirty_rate_window" in w)
    text = f"{per_cpu!r}/s"
    if rate_given and w["rate"] != text:
        raise ConfigError("workload.rate", f"give workload.rate or {key}, not both (the dirty rate "
                                           f"gives {text}, workload.rate is {w['rate']})")
    w["rate"] = text
    if window != cfg.workload.dirty_rate_window:
        w["dirty_rate_window"] = f"{window!r}s"   # the report's calc-time: the run measures over it too
    return build(tree)


def _per_cpu_rate(cfg: Config, key: str, source: str, window_given: bool) -> tuple[float, float]:
    from pagesync_model.bounds import MAX_WRITE_RATE
    from pagesync_model.policies import REGISTRY

    wl, page = cfg.workload, cfg.memory.page_size
    window = wl.dirty_rate_window
    if wl.dirty_rate:
        bytes_s = parse_dirty_rate(wl.dirty_rate, page)   # validated by the field already
        origin = wl.dirty_rate
    else:
        path = wl.dirty_rate_file
        if not os.path.isabs(path) and source and not source.startswith("<"):
            path = os.path.join(os.path.dirname(source), path)
        try:
            measured = read_dirty_rate_file(path)
        except DirtyRateError as exc:
            raise ConfigError(key, str(exc)) from None
        bytes_s, origin = measured.bytes_per_s, measured.source
        if measured.window_s is not None:
            if window_given and abs(measured.window_s - window) > 1e-9 * window:
                raise ConfigError("workload.dirty_rate_window", f"the report measured over {measured.window_s:g} s "
                                  f"and workload.dirty_rate_window is {window:g} s: remove one")
            window = measured.window_s
    if bytes_s <= 0:
        raise ConfigError(key, f"{origin}: the dirty rate is 0: give workload.rate for an idle guest "
                               "(the smallest, 1/s), or a measurement of the running guest")
    ncpu = cfg.cpus.count
    distinct = bytes_s / page * window          # distinct pages per window
    ws = max(1, wl.working_set // page)
    kind = wl.kind
    if REGISTRY.get(cfg.policy).kind != "page":
        writes = bytes_s / page * window
    elif kind == "uniform":
        writes = _invert(distinct, ws, 0, 0.0, key, origin, window, page)
    elif kind == "hotcold":
        hot = min(max(int(round(ws * wl.hot_fraction)), 1), ws) if wl.hot_share > 0 else 0
        writes = _invert(distinct, ws, hot, wl.hot_share, key, origin, window, page)
    elif kind == "sequential" and wl.stride == 1:
        if distinct >= ws:
            _unreachable(key, origin, window, page, distinct, ws)
        writes = distinct
    else:
        what = "a sequential sweep with a stride" if kind == "sequential" else f"workload.kind '{kind}'"
        raise ConfigError(key, f"cannot turn a dirty rate into the writes of {what}: use kind uniform or "
                               "hotcold (or sequential with stride 1), or give workload.rate")
    per_cpu = writes / window / ncpu
    if per_cpu > MAX_WRITE_RATE:
        raise ConfigError(key, f"{origin} needs {per_cpu:.3g} page writes/s per CPU on the "
                               f"{format_bytes(wl.working_set)} working set, more than the {MAX_WRITE_RATE:g} a "
                               "CPU can issue: give a larger workload.working_set or more CPUs")
    return per_cpu, window


def _invert(distinct, ws, hot, share, key, origin, window, page):
    try:
        return writes_for_distinct(distinct, ws, hot, share)
    except DirtyRateError as exc:
        _unreachable(key, origin, window, page, distinct, int(str(exc)))


def _unreachable(key, origin, window, page, distinct, reach):
    raise ConfigError(key, f"{origin} is {distinct:.0f} distinct pages per {window:g} s window, but the "
                           f"working set it lands on can hold only {reach} ({format_bytes(reach * page)}): no "
                           f"writer dirties that many; give workload.working_set larger than "
                           f"{format_bytes(distinct * page)} (or check the units: "
                           f"{format_bandwidth(distinct * page / window, 'byte')} is asked)")
