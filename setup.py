"""Build fastmm's Cython extensions, with OpenMP when the compiler has it.

No machine-specific or fast-math compiler flags: the wheel must run on any
x86-64 and keep IEEE semantics.  SIMD kernels get their instruction sets from
per-function target attributes in fastmm/kernels/*.h instead.
"""
import glob
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

# The compiled modules, by folder: the drivers (the loops, no ISA code; the
# packed kernels in force live in driver/_context), the numpy-facing front
# ends, the dense-layer ops.  Kernels are C headers
# (fastmm/kernels/) compiled into the modules that include them.
MODULES = ["driver/_threads", "driver/_context", "driver/_packed",
           "driver/_unpacked", "_linalg", "_blas", "_lowp", "nn/_ops",
           "nn/_fastpath"]


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
    def finalize_options(self):
        super().finalize_options()
        # independent extensions: compile them side by side (pip gives no -j)
        if self.parallel is None:
            self.parallel = os.cpu_count() or 1

    def build_extensions(self):
        # Cython runs here, not when setup.py is loaded: making the sdist
        # then runs no Cython, and the sdist carries the .pyx sources only.
        exts = {ext.name: ext for ext in self.extensions}
        for generated in cythonize(list(self.extensions), language_level=3,
                                   nthreads=self.parallel,
                                   compiler_directives={"boundscheck": False,
                                                        "wraparound": False}):
            exts[generated.name].sources = generated.sources
        flags = openmp_flags(self.compiler)
        for ext in self.extensions:
            ext.extra_compile_args += flags
            ext.extra_link_args += flags
        super().build_extensions()

    def build_extension(self, ext):
        if not self.reuse_inplace(ext):
            super().build_extension(ext)

    def reuse_inplace(self, ext):
        """Copy the module `pip install -e` built earlier, if still current.

        An editable install builds into a new temporary directory each time,
        so setuptools would compile every module again on every
        `pip install -e`.  The module left in the source tree is current
        when no source, C header or setup.py is newer than it (cythonize has
        just rewritten the C of any changed .pyx or .pxd).
        """
        if not self.editable_mode or self.force \
                or os.environ.get("FASTMM_DISABLE_OPENMP"):
            return False
        build_py = self.get_finalized_command("build_py")
        built = self.get_ext_fullpath(ext.name)
        inplace = os.path.join(
            build_py.get_package_dir(ext.name.rpartition(".")[0]),
            os.path.basename(built))
        headers = glob.glob(os.path.join(
            build_py.get_package_dir(ext.name.split(".")[0]), "**", "*.h"),
            recursive=True)
        inputs = list(ext.sources) + list(ext.depends) + headers + [__file__]
        if not os.path.exists(inplace) or max(map(os.path.getmtime, inputs)) \
                > os.path.getmtime(inplace):
            return False
        self.mkpath(os.path.dirname(built))
        self.copy_file(inplace, built)
        return True


def extensions():
    cflags = [] if sys.platform == "win32" else ["-O3", "-std=gnu11",
                                                 "-Wno-unused-function"]
    # Cython does not track the C headers a module includes: without these,
    # `build_ext` keeps a module whose kernels or driver header changed
    headers = sorted(glob.glob(os.path.join("fastmm", "**", "*.h"),
                               recursive=True))
    # The unpacked driver's kernels are intrinsics whose loops unroll by
    # pragma, so -O3 adds nothing there but code: the module took 50 s to
    # compile at -O3 (three times the code of -O2; the longest module by
    # far, so the critical path of every build, asv's per commit included)
    # and 29 s with these flags, at the same speed on every small, stack and
    # matrix-vector case measured.  The matrix-vector loops, which GCC
    # vectorises itself, keep -O3 by attribute (FMM_AUTOVEC, small.h).
    per_module = {"driver/_unpacked": [
        "-O2", "-ftree-vectorize", "-fvect-cost-model=dynamic",
        "-fversion-loops-for-strides", "-funswitch-loops"]}
    return [
        # headers are included by their path under fastmm/ ("driver/_scratch.h",
        # "kernels/dispatch.h"), whichever folder the including file is in
        Extension("fastmm." + name.replace("/", "."), [f"fastmm/{name}.pyx"],
                  include_dirs=["fastmm", numpy.get_include()],
                  define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
                  extra_compile_args=cflags + (per_module.get(name, [])
                                               if cflags else []),
                  extra_link_args=[], depends=headers)
        for name in MODULES
    ]


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt})
