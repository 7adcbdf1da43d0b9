"""Build pagesync-sim: the Cython kernels in _ext/ become pagesync_model._cykernels.

The extension is mandatory: a failed compile fails the install, so a silently slow numpy-only install
cannot happen. PAGESYNC_DEBUG=1 turns Cython's bounds and wraparound checks back on.
"""
import glob
import os
import shutil

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_py import build_py


class build_py_with_presets(build_py):
    """Also install the platform presets (configs/*.yaml) as pagesync_model/presets/, which
    ``pagesync-sim ask --preset`` reads when the package runs outside a checkout."""

    def run(self):
        super().run()
        target = os.path.join(self.build_lib, "pagesync_model", "presets")
        os.makedirs(target, exist_ok=True)
        for path in glob.glob(os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "*.yaml")):
            shutil.copy(path, target)


DEBUG = os.environ.get("PAGESYNC_DEBUG", "") not in ("", "0")

directives = {
    "language_level": "3",
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "cdivision": not DEBUG,
    "initializedcheck": DEBUG,
}

extensions = [
    Extension(
        "pagesync_model._cykernels",
        ["_ext/kernels.pyx"],
        include_dirs=[numpy.get_include(), "_ext"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        # -ffp-contract=off: a*b + c rounds twice, as the numpy twin does (no fused multiply-add)
        extra_compile_args=(["-O3"] if not DEBUG else ["-O0", "-g"]) + ["-ffp-contract=off"],
    ),
    # The write tracer: a plain shared object loaded with LD_PRELOAD (no PyInit, never imported);
    # pagesync_model.trace.record finds it next to the package.
    Extension(
        "pagesync_model._pagesync_trace",
        ["_ext/tracer/pagesync_trace.c"],
        include_dirs=["_ext/tracer"],
        libraries=["pthread"],
        extra_compile_args=["-O2", "-Wall"],
    ),
    # The live mirror's hot loops (PAGEMAP_SCAN of another process, process_vm_readv -> socket,
    # page checksums); loaded with ctypes by pagesync_model.live.
    Extension(
        "pagesync_model._pagesync_live",
        ["_ext/live/pagesync_live.c"],
        include_dirs=["_ext/tracer"],
        extra_compile_args=["-O2", "-Wall"],
    ),
]

setup(ext_modules=cythonize(extensions, compiler_directives=directives), cmdclass={"build_py": build_py_with_presets})
