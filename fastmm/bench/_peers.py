"""Peer libraries for ``python -m fastmm bench --peers`` and the asv suite.

One peer so far: Intel MKL, from the ``mkl`` wheel (``pip install
'fastmm[mkl]'``), called through ctypes so that fastmm neither links nor
requires it; :func:`load_mkl` returns None where it is not installed.

MKL runs on its GNU threading layer: its OpenMP code then runs on libgomp,
the runtime fastmm's threads come from, and a parallel region of either
library started from the same Python thread reuses the one libgomp team, so
no second pool of workers is left spinning while the other library runs.
MKL's default (INTEL) layer loads libiomp5 beside libgomp: two OpenMP
runtimes, two pools, and libiomp5's idle workers spin for KMP_BLOCKTIME
(200 ms) after each call, so on a 2-core machine they take the core that
fastmm's second thread needs in a process that runs both (the asv suite;
the bench times MKL in a process of its own).  Measured on 2 cores, CPU time the process burned
while sleeping 0.3 s after a 2-thread 512^2 product: INTEL layer 0.20 s
after MKL's; GNU layer 0.005 s after MKL's, ~0.01 s after fastmm's.
SEQUENTIAL would time MKL on one thread only, and the wheel's TBB
layer does not find libtbb and ends the process.  INTEL is the fallback
where libgomp cannot be loaded: MKL ends the process (it does not raise)
when a layer's runtime is missing.  A ``MKL_THREADING_LAYER`` set in the
environment is respected; :meth:`Mkl.describe` names the layer in effect.
"""
import contextlib
import ctypes
import ctypes.util
import functools
import glob
import os
import re
import sys

import numpy as np

MKL_NOT_FOUND = ("--peers mkl: MKL not found (pip install 'fastmm[mkl]' or "
                 "pip install mkl); continuing without it")

# cblas.h and mkl_service.h enumerations
_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
_LAYERS = {0: "intel", 1: "sequential", 2: "pgi", 3: "gnu", 4: "tbb"}
_GNU, _INTEL, _CURRENT, _LP64 = 3, 0, -1, 0
_INT_MAX = 2 ** 31 - 1                    # MKL_INT is a C int in the LP64 interface


def mkl_candidates():
    """Paths where libmkl_rt may be, most specific first: the files of the
    installed ``mkl`` distribution (the wheel puts them in <prefix>/lib,
    recorded as site-packages/../../), then <sys.prefix>/lib (conda), then
    the dynamic loader's search (a system install)."""
    paths = []
    try:
        from importlib.metadata import PackageNotFoundError, distribution
        files = distribution("mkl").files or []
        paths += [os.path.normpath(f.locate()) for f in files
                  if f.name.startswith("libmkl_rt.so")]
    except (ImportError, PackageNotFoundError):
        pass
    paths += sorted(glob.glob(os.path.join(sys.prefix, "lib", "libmkl_rt.so*")))
    system = ctypes.util.find_library("mkl_rt")
    if system:
        paths.append(system)
    return paths


def find_mkl(candidates=None):
    """The first of ``candidates`` (default :func:`mkl_candidates`) that
    exists, not loaded; None when there is none."""
    for path in mkl_candidates() if candidates is None else candidates:
        # a bare name comes from ctypes.util.find_library: the loader finds it
        if os.path.exists(path) or os.sep not in path:
            return path
    return None


def load_mkl(candidates=None):
    """:func:`find_mkl`'s library loaded as an :class:`Mkl`; None when there
    is none.

    A library that is found but cannot serve as the peer raises OSError or
    RuntimeError.
    """
    path = find_mkl(candidates)
    return None if path is None else _open(path)


@functools.lru_cache(maxsize=None)
def _open(path):
    return Mkl(path)


def _choose_threading_layer():
    """GNU where libgomp loads (see the module docstring), else INTEL; None
    leaves MKL_THREADING_LAYER from the environment in charge."""
    if os.environ.get("MKL_THREADING_LAYER"):
        return None
    try:
        ctypes.CDLL("libgomp.so.1")
    except OSError:
        return _INTEL
    return _GNU


def _openmp_runtime(layer):
    """The OpenMP runtime MKL's threading ``layer`` runs on, already loaded
    by MKL (libgomp for gnu, libiomp5 for intel), with ``omp_set_num_threads``
    and ``omp_get_max_threads``; None for the others or where it cannot be
    opened."""
    name = {"gnu": "libgomp.so.1", "intel": "libiomp5.so"}.get(layer)
    if name is None:
        return None
    try:
        omp = ctypes.CDLL(name)
    except OSError:
        return None
    omp.omp_set_num_threads.argtypes = [ctypes.c_int]
    omp.omp_set_num_threads.restype = None
    omp.omp_get_max_threads.restype = ctypes.c_int
    return omp


def _operand(x):
    """``(x, transpose flag, leading dimension, matrix stride)`` for reading
    ``x`` (a matrix, or a stack of them along axis 0) through row-major cblas
    in place: as stored when its rows are contiguous, as its transpose when
    its columns are; otherwise a C-contiguous copy.  Counts are in elements.
    """
    for _ in range(2):
        item = x.itemsize
        rows, cols = x.shape[-2:]
        rs, cs = x.strides[-2:]
        # a dimension of length 1 has no stride worth trusting (numpy reports
        # anything), so its partner takes the smallest legal leading dimension
        layouts = ((_NO_TRANS, cols == 1 or cs == item,
                    rs if rows > 1 else cols * item, cols, rows),
                   (_TRANS, rows == 1 or rs == item,
                    cs if cols > 1 else rows * item, rows, cols))
        for trans, contiguous, ld_bytes, width, height in layouts:
            ld, extra = divmod(ld_bytes, item)
            if not (contiguous and extra == 0 and ld >= max(1, width)):
                continue
            if x.ndim == 2 or x.shape[0] == 1:
                stride = ld * height
            else:
                stride, extra = divmod(x.strides[0], item)
                if extra or stride < ld * height:      # overlapping matrices
                    continue
            if x.ctypes.data % item == 0:
                return x, trans, ld, stride
        x = np.ascontiguousarray(x)
    raise AssertionError("a C-contiguous copy is always readable")


class Mkl:
    """MKL's GEMM and thread count, loaded from ``path`` (libmkl_rt)."""

    name = "mkl"
    label = "MKL"

    def __init__(self, path):
        lib = ctypes.CDLL(path)
        self.path = path
        for fn in ("MKL_Set_Interface_Layer", "MKL_Set_Threading_Layer",
                   "MKL_Get_Max_Threads"):
            getattr(lib, fn).restype = ctypes.c_int
        lib.MKL_Set_Interface_Layer.argtypes = [ctypes.c_int]
        lib.MKL_Set_Threading_Layer.argtypes = [ctypes.c_int]
        lib.MKL_Set_Num_Threads.argtypes = [ctypes.c_int]
        lib.MKL_Set_Num_Threads_Local.argtypes = [ctypes.c_int]
        lib.MKL_Set_Num_Threads_Local.restype = ctypes.c_int
        # both layers are fixed by the first MKL call in the process: when
        # something loaded MKL before us, these return what it chose
        if lib.MKL_Set_Interface_Layer(_LP64) != _LP64:
            raise RuntimeError(f"{path}: MKL already runs its ILP64 interface "
                               "in this process; the peer passes 32-bit ints")
        layer = _choose_threading_layer()
        self.threading_layer = _LAYERS.get(lib.MKL_Set_Threading_Layer(
            _CURRENT if layer is None else layer), "unknown")
        self._omp = _openmp_runtime(self.threading_layer)
        buf = ctypes.create_string_buffer(256)
        lib.MKL_Get_Version_String(buf, len(buf))
        self.version = buf.value.decode(errors="replace")
        i, f, p = ctypes.c_int, ctypes.c_float, ctypes.c_void_p
        self._gemm, self._batch = {}, {}
        for dtype, prefix, real in ((np.float32, "s", f), (np.float64, "d", ctypes.c_double)):
            gemm = getattr(lib, f"cblas_{prefix}gemm")
            gemm.restype = None
            gemm.argtypes = [i, i, i, i, i, i, real, p, i, p, i, real, p, i]
            self._gemm[np.dtype(dtype)] = gemm, real
            # strided batches arrived in MKL 2020; older ones time no stacks
            batch = getattr(lib, f"cblas_{prefix}gemm_batch_strided", None)
            if batch is not None:
                batch.restype = None
                batch.argtypes = [i, i, i, i, i, i, real, p, i, i, p, i, i,
                                  real, p, i, i, i]
                self._batch[np.dtype(dtype)] = batch
        self._lib = lib

    def describe(self):
        """One line: version, library path, threading layer, kernels."""
        kernels = self.kernel_library()
        return (f"{self.version.split(' for ')[0]} ({self.path}; threading "
                f"layer {self.threading_layer}"
                + (f"; kernels {kernels})" if kernels else ")"))

    def kernel_library(self):
        """The file of kernels MKL chose for this CPU (libmkl_avx512,
        libmkl_avx2, ... or libmkl_def, its generic path, which MKL 2026.2
        took on an AMD Zen 4), as mapped after a first product; None where
        that cannot be read.  It tells whether MKL ran at its best here."""
        self.matmul(np.ones((1, 1)), np.ones((1, 1)))
        try:
            with open("/proc/self/maps") as maps:
                names = {os.path.basename(line.split()[-1]) for line in maps
                         if "/libmkl_" in line}
        except OSError:
            return None
        kernels = sorted(n for n in names
                         if re.fullmatch(r"libmkl_(def|mc\d?|avx\d*)\.so[.\d]*", n))
        return ", ".join(kernels) or None

    def get_num_threads(self):
        return self._lib.MKL_Get_Max_Threads()

    def set_num_threads(self, n):
        """MKL's thread count for calls from this thread.  Set thread-locally,
        as threadpoolctl's ``user_api="blas"`` does: a thread-local count,
        which threadpoolctl leaves behind, would hide a global one.

        The OpenMP runtime of MKL's threading layer gets the same count:
        ``cblas_gemm_bf16bf16f32`` ignores MKL's own counts and opens as many
        threads as OpenMP's default (measured, MKL 2026.2 on an AMD Zen 3: two
        threads under MKL_Set_Num_Threads(1), one under OMP_NUM_THREADS=1),
        so "MKL on one thread" timed two.  fastmm's own regions name their
        thread count, so this leaves fastmm as it was."""
        self._lib.MKL_Set_Num_Threads_Local(int(n))
        if self._omp is not None:
            self._omp.omp_set_num_threads(int(n))

    @contextlib.contextmanager
    def threads(self, n):
        saved = self.get_num_threads()
        saved_omp = None if self._omp is None else self._omp.omp_get_max_threads()
        self.set_num_threads(n)
        try:
            yield
        finally:
            self.set_num_threads(saved)
            if saved_omp is not None:
                self._omp.omp_set_num_threads(saved_omp)

    def prepare_lowp(self, a, b, out):
        """:meth:`prepare` for the low-precision products of ``python -m
        fastmm bench --families lowp``: 2-D bfloat16 ``a`` and ``b`` (the
        ml_dtypes type, or its uint16 bits) into a C-contiguous float32
        ``out`` with ``cblas_gemm_bf16bf16f32``; operands are copied to C
        order here, once.  int8 operands raise NotImplementedError:
        ``cblas_gemm_s8u8s32`` gave sums that differ from numpy's in many
        columns on the machine this was written on (MKL 2026.2, its generic
        path on an AMD Zen 4), so it is not a peer until that is understood.
        """
        if a.dtype in (np.int8, np.uint8):
            raise NotImplementedError(
                "MKL peer: cblas_gemm_s8u8s32 is not used (its sums differed "
                "from numpy's where this was written)")
        if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
            raise ValueError("MKL peer: 2-D operands of matching inner size")
        if not all(x.dtype.itemsize == 2 and (x.dtype.kind == "u" or
                                              x.dtype.name == "bfloat16")
                   for x in (a, b)):
            raise TypeError(f"MKL peer: bfloat16 operands (or their uint16 "
                            f"bits), not {a.dtype} and {b.dtype}")
        m, k, n = a.shape[0], a.shape[1], b.shape[1]
        if (not isinstance(out, np.ndarray) or out.shape != (m, n)
                or out.dtype != np.float32 or not out.flags.c_contiguous):
            raise ValueError(f"MKL peer: out must be a C-contiguous float32 "
                             f"array of shape {(m, n)}")
        a_h = np.ascontiguousarray(a).view(np.uint16)
        b_h = np.ascontiguousarray(b).view(np.uint16)
        i, p, f = ctypes.c_int, ctypes.c_void_p, ctypes.c_float
        fn = self._lib.cblas_gemm_bf16bf16f32
        fn.restype = None
        fn.argtypes = [i, i, i, i, i, i, f, p, i, p, i, f, p, i]
        args = (_ROW_MAJOR, _NO_TRANS, _NO_TRANS, m, n, k, 1.0,
                a_h.ctypes.data, k, b_h.ctypes.data, n, 0.0, out.ctypes.data, n)

        def call(fn=fn, args=args, keep=(a_h, b_h)):
            fn(*args)
        return call

    def matmul(self, a, b, out=None):
        """``a @ b`` computed by MKL, in ``out`` when given; see :meth:`prepare`."""
        a, b = np.asarray(a), np.asarray(b)
        if out is None:
            out = np.empty(_result_shape(a, b), a.dtype)
        self.prepare(a, b, out)()
        return out

    def prepare(self, a, b, out):
        """A call with no arguments that writes ``a @ b`` into ``out``.

        Everything but the GEMM itself is done here, once, so that timing the
        call times MKL, not argument handling in Python.  ``a`` and ``b``:
        float32 or float64 alike; 2-D, or 3-D stacks of the same length
        (``cblas_?gemm_batch_strided``); a 1-D operand is promoted as
        np.matmul does.  A layout cblas cannot read is copied here, so the
        copy is not timed.  ``out``: C-contiguous, of the result's shape and
        dtype, sharing no memory with ``a`` or ``b``.  TypeError or
        ValueError for other operands, NotImplementedError for stacks where
        MKL lacks strided batches.
        """
        if a.dtype != b.dtype or a.dtype not in self._gemm:
            raise TypeError(f"MKL peer: float32 or float64 operands of one "
                            f"dtype, not {a.dtype} and {b.dtype}")
        shape = _result_shape(a, b)
        if (not isinstance(out, np.ndarray) or out.shape != shape
                or out.dtype != a.dtype or not out.flags.c_contiguous
                or not out.flags.writeable):
            raise ValueError(f"MKL peer: out must be a writeable C-contiguous "
                             f"{a.dtype} array of shape {shape}")
        if np.may_share_memory(out, a) or np.may_share_memory(out, b):
            raise ValueError("MKL peer: out overlaps an operand")
        a2 = a[None] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        m, k, n = a2.shape[-2], a2.shape[-1], b2.shape[-1]
        c2 = out.reshape(a2.shape[:-2] + (m, n))
        if out.size == 0 or k == 0:
            return functools.partial(out.fill, 0)
        if a2.ndim == 3 and a.dtype not in self._batch:
            raise NotImplementedError("MKL peer: this MKL has no "
                                      "cblas_?gemm_batch_strided for stacks")
        a2, trans_a, lda, stride_a = _operand(a2)
        b2, trans_b, ldb, stride_b = _operand(b2)
        gemm, real = self._gemm[a.dtype]
        head = (_ROW_MAJOR, trans_a, trans_b, m, n, k, real(1.0))
        if a2.ndim == 2:
            args = head + (a2.ctypes.data, lda, b2.ctypes.data, ldb, real(0.0),
                           c2.ctypes.data, n)
        else:
            gemm = self._batch[a.dtype]
            args = head + (a2.ctypes.data, lda, stride_a, b2.ctypes.data, ldb,
                           stride_b, real(0.0), c2.ctypes.data, n, m * n,
                           a2.shape[0])
        if max(m, n, k, lda, ldb, stride_a, stride_b, m * n, len(c2)) > _INT_MAX:
            raise ValueError("MKL peer: a dimension or stride exceeds MKL's "
                             "32-bit integers")
        keep = (a2, b2, c2)                      # the pointers' owners

        def call():
            gemm(*args)
            return keep
        return call


def _result_shape(a, b):
    """np.matmul's result shape for the operands the MKL peer takes."""
    a2 = a[None] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    if not (a2.ndim == b2.ndim and a2.ndim in (2, 3)
            and a2.shape[:-2] == b2.shape[:-2]):
        raise ValueError(f"MKL peer: 2-D operands or 3-D stacks of one length, "
                         f"not {a.shape} @ {b.shape}")
    if a2.shape[-1] != b2.shape[-2]:
        raise ValueError(f"MKL peer: shapes {a.shape} and {b.shape} do not "
                         "match for a product")
    shape = a2.shape[:-1] + b2.shape[-1:]
    if a.ndim == 1:
        shape = shape[:-2] + shape[-1:]
    if b.ndim == 1:
        shape = shape[:-1]
    return shape
