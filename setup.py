"""Build fastmm's Cython extensions, with OpenMP when the compiler has it.

No machine-specific or fast-math compiler flags: the wheel must run on any
x86-64 and keep IEEE semantics.  SIMD kernels get their instruction sets from
per-function target attributes in fastmm/kernels/*.h instead.
"""
import os
import shutil
import sys
import tempfile
import warnings

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

OPENMP_PROBE = r"""
#include <omp.h>
int main(void) {
    int n = 0;
    #pragma omp parallel reduction(+:n)
    n += 1;
    return n > 0 ? 0 : 1;
}
"""

# The compiled modules, by folder: the drivers (the loops, no ISA code), the
# numpy-facing front ends, the dense-layer ops.  Kernels are C headers
# (fastmm/kernels/) compiled into the modules that include them.
MODULES = ["driver/_threads", "driver/_packed", "driver/_unpacked",
           "_linalg", "_blas", "_lowp", "nn/_ops", "nn/_fastpath"]


def openmp_flags(compiler):
    """Flags for OpenMP, or [] (serial build, with a warning) when it fails."""
    if os.environ.get("FASTMM_DISABLE_OPENMP"):
        warnings.warn("fastmm: FASTMM_DISABLE_OPENMP set; building serial")
        return []
    flags = ["/openmp"] if compiler.compiler_type == "msvc" else ["-fopenmp"]
    tmp = tempfile.mkdtemp()
    try:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(OPENMP_PROBE)
        objs = compiler.compile([src], output_dir=tmp, extra_postargs=flags)
        compiler.link_executable(objs, os.path.join(tmp, "probe"),
                                 extra_postargs=flags)
        return flags
    except Exception:
        warnings.warn("fastmm: the C compiler has no OpenMP; building a serial "
                      "(single-threaded) fastmm")
        return []
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class BuildExt(build_ext):
    def build_extensions(self):
        flags = openmp_flags(self.compiler)
        for ext in self.extensions:
            ext.extra_compile_args += flags
            ext.extra_link_args += flags
        super().build_extensions()


def extensions():
    cflags = [] if sys.platform == "win32" else ["-O3", "-std=gnu11",
                                                 "-Wno-unused-function"]
    return [
        # headers are included by their path under fastmm/ ("driver/_scratch.h",
        # "kernels/dispatch.h"), whichever folder the including file is in
        Extension("fastmm." + name.replace("/", "."), [f"fastmm/{name}.pyx"],
                  include_dirs=["fastmm", numpy.get_include()],
                  define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
                  extra_compile_args=list(cflags), extra_link_args=[])
        for name in MODULES
    ]


setup(
    ext_modules=cythonize(extensions(), language_level=3,
                          compiler_directives={"boundscheck": False,
                                               "wraparound": False}),
    cmdclass={"build_ext": BuildExt},
)
