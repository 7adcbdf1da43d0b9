"""Inputs that would exhaust the machine: each is refused at once with one line naming what is wrong
and where (exit status 2), or, for a valid config whose run is beyond the machine, by the cost guard.

Cases that hang or eat memory on an unbounded loader run the CLI in a forked child with a deadline
and an address-space cap, so a regression fails the test instead of stalling the suite.
"""
import json
import math
import os
import resource
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pagesync_model.cli import main
from pagesync_model.config import SCHEMA, ConfigError, config_from_dict, load_config, parse_yaml
from pagesync_model.schema import SectionList
from pagesync_model.sim.engine import simulate
from pagesync_model.trace import Trace, TraceError, read_trace, write_trace
from pagesync_model.trace import format as trace_format

from conftest import load_experiment

ROOT = Path(__file__).resolve().parents[1]
BASE = """\
memory: {size: 64MiB, kernel_size: 4MiB, processes: 8}
cpus: {count: 2, tlb_entries: 64}
workload: {rate: 1k/s, working_set: 16MiB}
link: {bandwidth: 1GB/s}
"""
DEADLINE = 60      # s; the fixed code answers each case in well under a second


def _vm_bytes():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


def run_cli(argv, stdin_bytes=None):
    """(exit status, stderr) of ``main(argv)`` in a forked child (see `run_forked`)."""
    return run_forked(lambda: main(list(argv)), stdin_bytes, label=argv)


def run_forked(fn, stdin_bytes=None, label=None):
    """(exit status, stderr) of ``fn()`` (its return value is the status) in a forked child allowed
    DEADLINE seconds and 1 GiB more address space than this process has; a traceback in the child
    gives status 99."""
    err_r, err_w = os.pipe()
    in_r, in_w = os.pipe()
    cap = _vm_bytes() + (1 << 30)
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            os.close(in_w)
            os.close(err_r)
            os.dup2(in_r, 0)
            os.dup2(err_w, 2)
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
            sys.stderr = os.fdopen(2, "w", buffering=1)
            sys.stdout = open(os.devnull, "w")
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
            code = fn()
        except BaseException:
            traceback.print_exc()
            code = 99
        finally:
            sys.stderr.flush()
            os._exit(code)
    os.close(err_w)
    os.close(in_r)
    if stdin_bytes:
        os.write(in_w, stdin_bytes)
    os.close(in_w)
    chunks, end = [], time.monotonic() + DEADLINE
    while True:
        left = end - time.monotonic()
        if left <= 0:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(err_r)
            pytest.fail(f"{label or fn} still running after {DEADLINE} s")
        ready, _, _ = select.select([err_r], [], [], left)
        if ready:
            data = os.read(err_r, 65536)
            if not data:
                break
            chunks.append(data)
    os.close(err_r)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), b"".join(chunks).decode(errors="replace")


def assert_refused(rc, err, *needles):
    assert rc == 2, err
    assert err.startswith("pagesync-sim: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


@pytest.fixture
def base(tmp_path):
    path = tmp_path / "base.yaml"
    path.write_text(BASE)
    return path


def laughs(levels=9, mapping=False):
    """A value whose aliases expand to 10**levels scalars (the "billion laughs")."""
    if mapping:
        text = "{l0: &l0 {" + ", ".join(f"k{i}: lol" for i in range(10)) + "}"
        for n in range(1, levels):
            text += f", l{n}: &l{n} {{" + ", ".join(f"k{i}: *l{n - 1}" for i in range(10)) + "}"
        return text + "}"
    text = "[&l0 [" + ",".join(["lol"] * 10) + "]"
    for n in range(1, levels):
        text += f", &l{n} [" + ",".join([f"*l{n - 1}"] * 10) + "]"
    return text + "]"


# -- the examples of the issue, through the command line ---------------------------------------

@pytest.mark.parametrize("text,needle", [
    (BASE.replace("size: 64MiB", "size: " + laughs()), "aliases expand the document beyond"),
    (BASE + "dma: " + laughs(mapping=True) + "\n", "aliases expand the document beyond"),
    (BASE.replace("{count: 2,", "{count: &c [*c],"), "refers to a node that contains it"),
    (BASE + "sim: {seed: " + "[" * 100000 + "]" * 100000 + "}\n", "nested more than 32 levels deep"),
    (BASE + "#" * (2 << 20) + "\n", "more than the 262144 a config may have"),
    (BASE.replace("count: 2", "count: " + "9" * 5000),
     "cpus.count: must be <= 8192, got '999999999999999999999999...(5000 characters)'"),
    (BASE.replace("count: 2", "count: 1e20"), "cpus.count: must be <= 8192, got '1e20'"),
], ids=["laughs-list", "laughs-map", "recursive-alias", "deep", "huge-file", "5000-digits", "cpus-1e20"])
def test_hostile_yaml(tmp_path, text, needle):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    assert_refused(*run_cli([str(path), "--quiet"]), needle)


@pytest.mark.parametrize("sets,needle", [
    (["workload.rate=1e30/s"], "workload.rate: must be <= 20G/s, got '1e30/s'"),
    (["workload.kind=sequential", "workload.stride=100000000000000000000"],
     "workload.stride: must be <= 4294967296, got '100000000000000000000'"),
    (["workload.kind=sequential", "workload.stride=1e20"], "workload.stride: must be <= 4294967296, got '1e20'"),
    (["cpus.count=100000"], "cpus.count: must be <= 8192, got '100000'"),
    (["cpus.clock=1e-20Hz"], "cpus.clock: must be >= 1MHz, got '1e-20Hz'"),
    (["memory.processes=1000000000"], "memory.processes: must be <= 4194304, got '1000000000'"),
    (["sim.warmup=1e6s"], "sim.warmup: must be <= 3600s, got '1e6s'"),
    (["memory.size=1e999999999GiB"], "memory.size: must be <= 4PiB, got '1e999999999GiB'"),
    (["cpus.count=" + "9" * 5000], "cpus.count: must be <= 8192, got '999999999999999999999999...(5000 characters)'"),
    # the fields at fault, not the ones a cross-field check happens to hold
    (["memory.page_size=1GiB", "memory.size=4GiB", "workload.working_set=1GiB"],
     "memory.page_size: 1GiB pages do not divide memory.block (2MiB, its default)"),
    (["cpus.clock=1MHz", "tracking.pte_harvest=2000cycles"],
     "tracking.pte_harvest: must be <= 1ms, got '2000cycles' (2ms at a 1MHz clock)"),
], ids=["rate-1e30", "stride-int", "stride-1e20", "cpus-1e5", "clock-1e-20", "processes-1e9", "warmup-1e6",
        "size-exponent", "set-5000-digits", "page-size-blamed", "clock-named"])
def test_hostile_values(base, sets, needle):
    argv = [str(base), "--quiet"]
    for s in sets:
        argv += ["--set", s]
    assert_refused(*run_cli(argv), needle)


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_device_as_config(device):
    assert_refused(*run_cli([device]), f"cannot open '{device}': it is a character device, not a config file")


def test_device_as_config_through_the_real_entry_point():
    out = subprocess.run([sys.executable, "-m", "pagesync_model", "/dev/zero"], capture_output=True, text=True,
                         timeout=DEADLINE)
    assert_refused(out.returncode, out.stderr, "it is a character device")


def test_a_fifo_nobody_writes_to_does_not_hang(tmp_path):
    fifo = tmp_path / "c.yaml"
    os.mkfifo(fifo)
    assert_refused(*run_cli([str(fifo)]), "memory.size: required value is missing")


def test_config_from_a_pipe(base):
    rc, err = run_cli(["/dev/stdin", "--quiet"], stdin_bytes=base.read_bytes())
    assert (rc, err) == (0, "")


def test_quantum_of_1ns_is_refused_with_its_estimate(base):
    rc, err = run_cli([str(base), "--set", "sim.quantum=1ns"])
    # 64 MiB at 1 GB/s is 0.067 s a pass; 4 passes + the full copy + the blackout = 0.403 s, in steps of
    # 3 cycles at 3 GHz
    seconds = 6 * 64 * 2**20 / 1e9
    assert_refused(rc, err, f"up to {seconds * 3e9 / 3:.3g} quanta", "quanta limit 1e+08", "sim.quantum", "--force")


def test_force_runs_what_the_guard_refuses(base):
    # qemu has no last pass, so the estimate runs to the time limit; this migration ends in milliseconds
    sets = ["--set", "policy=qemu", "--set", "sim.time_limit=2e5s", "--set", "qemu.max_bandwidth=1GB/s"]
    assert_refused(*run_cli([str(base), "--quiet", *sets]), "quanta limit 1e+08", "--force")
    assert run_cli([str(base), "--quiet", "--force", *sets]) == (0, "")


def test_seed_out_of_range(base):
    assert_refused(*run_cli([str(base), "--seed", str(2**64)]), "--seed: must be in [0, 18446744073709551615]")


# -- traces: headers checked before anything is inflated ---------------------------------------

def small_trace():
    return Trace.from_vpn_sets([{10, 11}, {10}, {10, 12}], [1_000_000, 2_000_000, 3_000_000])


def rewrite_member(src, dst, name, header_shape=None, data=None, dtype=None):
    """Copy the trace archive ``src`` to ``dst`` with member ``name``.npy replaced: its .npy header
    declaring ``header_shape`` and ``dtype``, followed by ``data`` (bytes, or a callable writing the
    data to the member's file object)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            if info.filename != f"{name}.npy":
                zout.writestr(info.filename, zin.read(info))
                continue
            with zout.open(info.filename, "w", force_zip64=True) as f:
                np.lib.format.write_array_header_1_0(
                    f, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
                        "shape": header_shape})
                data(f) if callable(data) else f.write(data)


def test_trace_declaring_a_huge_shape(tmp_path):
    good, bad = tmp_path / "t.npz", tmp_path / "bad.npz"
    write_trace(good, small_trace())
    rewrite_member(good, bad, "pages", (10**12,), b"\0" * 16, np.uint32)
    with pytest.raises(TraceError, match=r"'pages' declares shape \(1000000000000,\) of uint32"):
        read_trace(bad)


def test_zip_bomb(tmp_path, monkeypatch):
    # 16 MiB of zeros deflate ~1000 times; past the (lowered) size that matters it is a bomb
    monkeypatch.setattr(trace_format, "BOMB_MIN_BYTES", 1 << 20)
    good, bad = tmp_path / "t.npz", tmp_path / "bomb.npz"
    write_trace(good, small_trace())
    n = 4 << 20

    def zeros(f):
        for _ in range(16):
            f.write(bytes(1 << 20))
    rewrite_member(good, bad, "pages", (n,), zeros, np.uint32)
    info = zipfile.ZipFile(bad).getinfo("pages.npy")
    assert info.file_size > 500 * info.compress_size
    with pytest.raises(TraceError, match="zip bomb"):
        read_trace(bad)


def test_trace_larger_than_allowed(tmp_path, monkeypatch):
    monkeypatch.setattr(trace_format, "MAX_TRACE_BYTES", 1000)
    path = tmp_path / "t.npz"
    write_trace(path, Trace.from_vpn_sets([range(i, i + 100) for i in range(10)], range(1, 11)))
    with pytest.raises(TraceError, match="inflates to more than 1000B"):
        read_trace(path)


def test_trace_that_is_a_fifo(tmp_path):
    fifo = tmp_path / "t.npz"
    os.mkfifo(fifo)

    def read():
        try:
            read_trace(fifo)
        except TraceError as exc:
            print(exc, file=sys.stderr)
            return 2
        return 0
    assert run_forked(read) == (2, f"{fifo}: not a pagesync trace (not a regular file)\n")


def test_trace_with_a_huge_shape_through_the_cli(tmp_path, base):
    good, bad = tmp_path / "t.npz", tmp_path / "bad.npz"
    write_trace(good, small_trace())
    rewrite_member(good, bad, "page_vpn", (10**12,), b"\0" * 24, np.uint64)
    rc, err = run_cli([str(base), "--set", "workload.kind=trace", "--set", f"workload.trace={bad}"])
    assert_refused(rc, err, "workload.trace:", "declares shape (1000000000000,)")


# -- every numeric field is bounded; the presets and experiments pass the guard -----------------

def test_every_numeric_field_has_an_upper_bound():
    def fields():
        for path, field in SCHEMA.fields():
            yield path, field
            if isinstance(field, SectionList):
                for name, member in field.section.members.items():
                    yield f"{path}[].{name}", member
    unbounded = [path for path, f in fields()
                 if f.kind.name not in ("choice", "bool", "str", "list") and f.check is None
                 and f.lt is None and f.le is None]
    assert unbounded == []


def _sweep_configs():
    from pagesync_model.sweep.spec import load_sweep
    for path in sorted((ROOT / "configs" / "sweeps").glob("*.yaml")):
        sweep = load_sweep(str(path))
        for run in sweep.runs():
            yield f"{path.name} {run.overrides}", config_from_dict(
                sweep.base, list(sweep.base_overrides) + list(run.overrides), source=sweep.source)


def _experiment_configs():
    cf = load_experiment("closed_form", "run")
    for label, over in cf.CASES:
        yield f"closed_form {label}", config_from_dict(cf.BASE, over)
    rt = load_experiment("real_traces", "run")
    for name in rt.TRACES:
        for policy in rt.POLICIES:
            for link in rt.LINKS:
                yield f"real_traces {name} {policy} {link}", rt.config(name, policy, link)
    compare = json.loads((ROOT / "experiments" / "qemu_validation" / "compare.json").read_text())
    for i, run in enumerate(compare["runs"]):
        yield f"qemu_validation run {i}", config_from_dict(run["sim_config"])


def test_presets_sweeps_and_experiments_pass_the_guard():
    from pagesync_model import cost
    checked = 0
    presets = ((p.name, load_config(p)) for p in sorted((ROOT / "configs").glob("*.yaml")))
    for label, cfg in [*presets, *_sweep_configs(), *_experiment_configs()]:
        assert cost.estimate(cfg).over() == [], label
        checked += 1
    assert checked > 60


@pytest.mark.parametrize("policy,sets", [
    ("stratus", ()),
    ("qemu", ("qemu.max_bandwidth=1GB/s",)),
    ("xen-legacy", ()),
    ("xen-v2", ()),
    ("stratus", ("workload.phases=[{duration: 5ms, rate: 300k/s}, {duration: 5ms}]", "dma.rate=10k/s")),
])
def test_estimate_bounds_the_real_run(policy, sets):
    """The estimate is an upper bound of what a run does, measured on the run itself."""
    from pagesync_model import cost
    cfg = config_from_dict(yaml.safe_load(BASE), [f"policy={policy}", "workload.kind=hotcold",
                                                  "workload.rate=200k/s", "sim.time_limit=2s", *sets])
    est = cost.estimate(cfg)
    d = simulate(cfg, backend="numpy").to_dict()
    assert d["total_time_s"] <= est.simulated_s
    assert d["simulator"]["quanta"] <= est.quanta
    assert d["workload_writes"] <= est.writes
    assert est.pages == d["memory_pages"] == 64 * 2**20 // 4096


# -- random input never gives a traceback ------------------------------------------------------

MINIMAL = yaml.safe_load(BASE)
EXPONENTS = st.builds(lambda m, e: f"{m}e{e}", st.integers(-10**6, 10**6), st.integers(-400, 400))
# integers past Python's 4300-digit str() limit are made by map, which hypothesis never prints whole
NUMBERS = st.one_of(st.integers(), st.integers(30, 4400).map(lambda n: 10**n - 1), st.floats(allow_nan=True),
                    EXPONENTS)
NUMERALS = st.one_of(st.integers(-10**9, 10**9).map(str), st.integers(0, 5000).map(lambda n: "9" * n),
                     st.floats(allow_nan=True).map(repr), EXPONENTS)
UNITS = st.sampled_from(["", "B", "GiB", "PiB", "ms", "s", "h", "cycles", "GHz", "Hz", "/s", "G/s", "Gbit/s", "%"])
VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), NUMBERS, st.text(max_size=30),
              st.builds(lambda n, u: f"{n}{u}", NUMERALS, UNITS)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)
PATHS = [p for p, _ in SCHEMA.fields()]


def _one_line_or_config(fn):
    from pagesync_model import cost
    try:
        cfg = fn()
    except ConfigError as exc:
        assert str(exc) and "\n" not in str(exc)
        return None
    cost.estimate(cfg)
    return cfg


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(PATHS), VALUES), min_size=1, max_size=4))
def test_random_field_values_load_or_give_one_line(assignments):
    data = json.loads(json.dumps(MINIMAL))
    for path, value in assignments:
        *sections, key = path.split(".")
        here = data
        for s in sections:
            here = here.setdefault(s, {})
        here[key] = value
    _one_line_or_config(lambda: config_from_dict(data))


YAML_CHARS = st.sampled_from(list("[]{}:,-&*!|>'\"#?%@` \n\t") + ["a", "b", "1", "e9", "0x", ".inf", "GiB",
                                                                     "memory", "size", "cpus", "count"])


SCALARS = st.one_of(st.builds(lambda n, u: f"{n}{u}", NUMERALS, UNITS),
                    st.lists(YAML_CHARS, max_size=20).map("".join))


def _field_line(path, scalar):
    *sections, key = path.split(".")
    lines = [f"{'  ' * i}{s}:" for i, s in enumerate(sections)]
    return "\n".join(lines + [f"{'  ' * len(sections)}{key}: {scalar}"]) + "\n"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.lists(YAML_CHARS, max_size=60).map("".join),
                 st.builds(lambda p, s: BASE + _field_line(p, s), st.sampled_from(PATHS), SCALARS)))
def test_random_yaml_documents_load_or_give_one_line(text):
    _one_line_or_config(lambda: config_from_dict(parse_yaml(text)))
