"""Backend-neutral access to the page kernels (PTE harvest, bitmaps, writes, copies).

The compiled Cython module (``pagesync_model._cykernels``) and its numpy twin
(``pagesync_model.kernels.numpy_kernels``) implement the same functions with the same
signatures and identical results; CONTRACT.md beside this file is their specification.

The backend is chosen once: ``PAGESYNC_BACKEND`` (``auto``, ``cython`` or ``numpy``) picks the
default at import; ``get_backend(name)`` returns a specific one. ``auto`` means the compiled
module when it imported, else numpy. Every result records the backend's name.
"""
import importlib
import os

__all__ = ["BACKEND_NAMES", "KERNEL_NAMES", "BackendError", "Backend", "get_backend", "default_backend_name",
           "cython_available"]

BACKEND_NAMES = ("auto", "cython", "numpy")
KERNEL_NAMES = (
    "harvest", "apply_writes", "apply_writes_mapped", "block_index", "bitmap_set_range", "bitmap_set_frames",
    "bitmap_popcount", "bitmap_extract_runs", "bitmap_take_pages", "build_copy_list", "deliver_runs", "find_mismatch",
    "gen_random", "gen_sequential", "cpu_debt_step", "rate_step", "charge_tracking", "cpu_rate_step",
    "random_write_step", "copy_loop", "xen_batches",
    "qemu_turn",
)


class BackendError(ValueError):
    """An unknown backend name, or the compiled backend asked for but not built."""


class Backend:
    """The kernels of one backend as attributes, plus its ``name``."""

    def __init__(self, name, module):
        self.name = name
        self.module = module
        for kernel in KERNEL_NAMES:
            setattr(self, kernel, getattr(module, kernel))

    def __repr__(self):
        return f"<kernel backend {self.name}>"


def _import_cython():
    try:
        return importlib.import_module("pagesync_model._cykernels"), None
    except ImportError as exc:  # not built, or built for another interpreter
        return None, exc


_CY, _CY_ERROR = _import_cython()
_CACHE = {}


def cython_available():
    """True when the compiled kernels imported."""
    return _CY is not None


def default_backend_name():
    """The backend ``auto`` resolves to under the current ``PAGESYNC_BACKEND``."""
    env = os.environ.get("PAGESYNC_BACKEND", "auto").strip().lower() or "auto"
    if env not in BACKEND_NAMES:
        raise BackendError(f"PAGESYNC_BACKEND: unknown backend '{env}' (choose from {', '.join(BACKEND_NAMES)})")
    if env == "auto":
        return "cython" if _CY is not None else "numpy"
    return env


def get_backend(name="auto"):
    """Return the kernels of backend ``name`` ('auto', 'cython' or 'numpy').

    Raises BackendError for an unknown name, or for 'cython' when the extension is not built.
    """
    name = (name or "auto").lower()
    if name not in BACKEND_NAMES:
        raise BackendError(f"unknown backend '{name}' (choose from {', '.join(BACKEND_NAMES)})")
    if name == "auto":
        name = default_backend_name()
    if name not in _CACHE:
        if name == "cython":
            if _CY is None:
                raise BackendError(f"the compiled kernels are not built ({_CY_ERROR}); reinstall with a C compiler "
                                   "or use --backend numpy")
            _CACHE[name] = Backend("cython", _CY)
        else:
            _CACHE[name] = Backend("numpy", importlib.import_module("pagesync_model.kernels.numpy_kernels"))
    return _CACHE[name]
