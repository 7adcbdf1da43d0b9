"""Shared fixtures: small machines that simulate in well under a second on either backend."""
import sys

import pytest

from pagesync_model.config import config_from_dict
from pagesync_model.kernels import cython_available

BACKENDS = ["numpy"] + (["cython"] if cython_available() else [])

SMALL = {
    "memory": {"size": "64MiB", "kernel_size": "4MiB", "processes": 8},
    "cpus": {"count": 4, "tlb_entries": 64},
    "workload": {"kind": "hotcold", "rate": "20k/s", "working_set": "32MiB", "hot_fraction": 0.05,
                 "hot_share": 0.9},
    "link": {"bandwidth": "1GB/s", "latency": "2us", "per_copy": "1us"},
    "stratus": {"passes": 5, "threshold": 64},
}


def small_config(*overrides, base=None):
    """A Config for a 64 MiB machine, with 'dotted.key=value' overrides."""
    return config_from_dict(base or SMALL, overrides)


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


def load_experiment(folder, module):
    """experiments/<folder>/<module>.py as a module of its own name (several experiments have a run.py:
    a plain import would hand every test the first one loaded)."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "experiments" / folder / f"{module}.py"
    name = f"experiment_{folder}_{module}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    sys.path.insert(0, str(path.parent))  # its own imports of sibling files
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(path.parent))
    return mod


def compile_traced_program(tmp_path_factory, source, name):
    """Compile the C test program ``source`` into a fresh folder, and the tracer library if the package
    build has not (its path then goes in the returned environment as PAGESYNC_TRACE_LIB)."""
    import subprocess
    from pathlib import Path
    from pagesync_model.trace import TraceError
    from pagesync_model.trace.record import library_path
    root = Path(__file__).resolve().parents[1]
    d = tmp_path_factory.mktemp(name)
    exe = d / name
    subprocess.run(["gcc", "-O1", "-o", str(exe), str(source)], check=True)
    env = {}
    try:
        library_path()
    except TraceError:
        lib = d / "_pagesync_trace.so"
        subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-I", str(root / "_ext" / "tracer"),
                        "-o", str(lib), str(root / "_ext" / "tracer" / "pagesync_trace.c"),
                        "-lpthread"], check=True)
        env["PAGESYNC_TRACE_LIB"] = str(lib)
    return exe, env


def traced_program(build, monkeypatch):
    """The program ``build`` (compile_traced_program's result) with its environment set for the test,
    or the test skipped where this kernel cannot record (the reason `trace.probe` gives)."""
    from pagesync_model.trace import probe
    exe, env = build
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    reason = probe()
    if reason is not None:
        pytest.skip(f"recording unsupported here: {reason}")
    return exe
