"""Low-precision products (fastmm._lowp) against numpy, same data, same
thread count: int8 -> int32 (``dtype=np.int32``), ml_dtypes.bfloat16 ->
float32, and ``precision="bf16"`` on float32 operands.

numpy has no fast low-precision product: its baseline here is its float32
``np.dot`` of the same shape (what one would run instead), so
``track_speedup`` is "x numpy float32"; ``track_vs_float32`` is the same
against fastmm's own float32 product.  numpy's int32 matmul (no BLAS,
0.2-2 GOP/s) has a class of its own on a few rows (Int8NumpyInt);
Bfloat16 also times ml_dtypes' own matmul of its operands
(``time_ml_dtypes``, ``track_vs_ml_dtypes``).
Skipped (NotImplementedError) on commits without fastmm._lowp; the
bfloat16 classes are listed only where ml_dtypes is installed (``pip
install 'fastmm[bf16]'``, or add ``"ml_dtypes": [""]`` to asv.conf.json's
matrix).
Bfloat16MKL times MKL's cblas_gemm_bf16bf16f32 where the mkl wheel is
installed (MKL's cblas_gemm_s8u8s32 is not a peer: see
fastmm/bench/_peers.py's Mkl.prepare_lowp).
"""
import numpy as np

from .common import (SEED, THREADS, Product, best_times, fastmm, grid,
                     installed, parse_shape, random_array, require,
                     require_mkl, rounded)

# "m x k x n": square, and dense-layer (m, k) activations @ (k, n) weights
LOWP_SHAPES = grid(["1024x1024x1024"],
                   ["1024x1024x1024", "256x1024x1024", "4096x512x512"])


def require_lowp():
    """NotImplementedError (asv: skip) unless this commit has fastmm._lowp."""
    require("matmul")
    try:
        import fastmm._lowp  # noqa: F401
    except ImportError:
        raise NotImplementedError("no fastmm._lowp at this commit")


def require_bfloat16():
    """ml_dtypes.bfloat16, or NotImplementedError (asv: skip)."""
    try:
        import ml_dtypes
    except ImportError:
        raise NotImplementedError("ml_dtypes not installed")
    return ml_dtypes.bfloat16


def int8_array(shape, seed):
    """Uniform int8 over its whole range, seeded like common.random_array."""
    rng = np.random.default_rng([SEED, seed])
    return rng.integers(-128, 128, shape, dtype=np.int8)


def check_int32(got, a8, b8, who="fastmm"):
    """AssertionError unless ``got`` is a8 @ b8 modulo 2**32 bit for bit
    (the exact sums from float64, exact below 2**53)."""
    exact = (a8.astype(np.float64) @ b8.astype(np.float64)).astype(np.int64)
    want = ((exact + 2 ** 31) % 2 ** 32 - 2 ** 31).astype(np.int32)
    if got.dtype != np.int32 or not np.array_equal(got, want):
        raise AssertionError(f"{who}'s int8 product is not numpy's int32 one")


def check_bf16(got, a, b, who="fastmm"):
    """AssertionError unless ``got`` is within float32 accumulation error,
    (k + 2) 2**-24 |A| @ |B|, of the exact product of the bfloat16 values
    ``a`` and ``b`` (any float dtype holding them), plus 2**-8 |C| when
    ``got`` itself is bfloat16 (ml_dtypes' matmul, in some versions)."""
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    exact = a64 @ b64
    bound = (a64.shape[-1] + 2) * 2.0 ** -24 * (np.abs(a64) @ np.abs(b64))
    if got.dtype.itemsize == 2:
        bound += 2.0 ** -8 * np.abs(exact)
    got = np.asarray(got, np.float64)
    if not np.all(np.abs(got - exact) <= bound + np.finfo(np.float32).tiny):
        raise AssertionError(f"{who}'s bfloat16 product is out of bound")


class _Lowp(Product):
    """A low-precision product beside numpy's and fastmm's float32 ones."""

    def prepare_lowp(self, op, a32, b32, threads):
        """Pin threads; ``op`` is the timed low-precision product; numpy's
        op is np.dot on the float32 operands ``a32``, ``b32``, and
        ``self.float32_op`` fastmm's product of them."""
        out_n, out_f = np.zeros((2,) + (a32.shape[0], b32.shape[1]), np.float32)
        self.float32_op = lambda: fastmm.matmul(a32, b32, out=out_f)
        self.prepare(op, lambda: np.dot(a32, b32, out=out_n),
                     2.0 * a32.shape[0] * a32.shape[1] * b32.shape[1], threads)
        self.float32_op()

    def time_fastmm(self, shape, threads):
        self.fastmm_op()

    def time_numpy(self, shape, threads):
        self.numpy_op()

    def track_gflops(self, shape, threads):
        return self.fastmm_gflops()
    track_gflops.unit = "GFLOP/s"

    def track_speedup(self, shape, threads):
        return self.speedup()
    track_speedup.unit = "x numpy float32"

    def track_vs_float32(self, shape, threads):
        """fastmm float32's time / this product's, measured back to back."""
        t_f32, t_lowp = best_times([self.float32_op, self.fastmm_op])
        return rounded(t_f32 / t_lowp)
    track_vs_float32.unit = "x fastmm float32"


class Int8(_Lowp):
    """int8 @ int8 -> int32 (fastmm.matmul(a, b, dtype=np.int32))."""
    params = [LOWP_SHAPES, THREADS]
    param_names = ["mxkxn", "threads"]

    def setup(self, shape, threads):
        require_lowp()
        m, k, n = parse_shape(shape)
        a8, b8 = int8_array((m, k), 1), int8_array((k, n), 2)
        out = np.zeros((m, n), np.int32)
        self.prepare_lowp(lambda: fastmm.matmul(a8, b8, out=out, dtype=np.int32),
                          random_array((m, k), "float32", seed=1),
                          random_array((k, n), "float32", seed=2), threads)
        check_int32(out, a8, b8)

    def track_gflops(self, shape, threads):
        return self.fastmm_gflops()
    track_gflops.unit = "GOP/s"


class Bfloat16(_Lowp):
    """ml_dtypes.bfloat16 operands into a float32 out."""
    params = [LOWP_SHAPES, THREADS]
    param_names = ["mxkxn", "threads"]

    def setup(self, shape, threads):
        require_lowp()
        bf16 = require_bfloat16()
        m, k, n = parse_shape(shape)
        a32 = random_array((m, k), "float32", seed=1)
        b32 = random_array((k, n), "float32", seed=2)
        a, b = a32.astype(bf16), b32.astype(bf16)
        out = np.zeros((m, n), np.float32)
        self.prepare_lowp(lambda: fastmm.matmul(a, b, out=out), a32, b32,
                          threads)
        check_bf16(out, a, b)
        # ml_dtypes' own matmul, what a user gets without fastmm
        out_ml = np.zeros((m, n), np.matmul(a[:1], b).dtype)
        self.ml_dtypes_op = lambda: np.matmul(a, b, out=out_ml)
        self.ml_dtypes_op()
        check_bf16(out_ml, a, b, who="ml_dtypes")

    def time_ml_dtypes(self, shape, threads):
        self.ml_dtypes_op()

    def track_vs_ml_dtypes(self, shape, threads):
        """ml_dtypes' matmul time / fastmm's, measured back to back."""
        t_ml, t_fastmm = best_times([self.ml_dtypes_op, self.fastmm_op])
        return rounded(t_ml / t_fastmm)
    track_vs_ml_dtypes.unit = "x ml_dtypes matmul"


class PrecisionBf16(_Lowp):
    """float32 operands with precision="bf16" (rounded while packing)."""
    params = [LOWP_SHAPES, THREADS]
    param_names = ["mxkxn", "threads"]

    def setup(self, shape, threads):
        require_lowp()
        m, k, n = parse_shape(shape)
        a32 = random_array((m, k), "float32", seed=1)
        b32 = random_array((k, n), "float32", seed=2)
        out = np.zeros((m, n), np.float32)
        self.prepare_lowp(lambda: fastmm.matmul(a32, b32, out=out,
                                                precision="bf16"),
                          a32, b32, threads)
        # the bound of the operands rounded to bfloat16: k 2**-8 |A| @ |B|
        a64, b64 = a32.astype(np.float64), b32.astype(np.float64)
        if not np.all(np.abs(out - a64 @ b64)
                      <= (k + 2) * 2.0 ** -8 * (np.abs(a64) @ np.abs(b64))):
            raise AssertionError("fastmm's precision='bf16' product is out "
                                 "of bound")


class Int8NumpyInt(Product):
    """int8 -> int32 against numpy's own np.matmul(a, b, dtype=np.int32),
    on few rows: numpy's integer loop is 100-1000x slower than BLAS."""
    params = [["32x1024x1024"], [1]]
    param_names = ["mxkxn", "threads"]

    def setup(self, shape, threads):
        require_lowp()
        m, k, n = parse_shape(shape)
        a8, b8 = int8_array((m, k), 1), int8_array((k, n), 2)
        out_f, out_n = np.zeros((2, m, n), np.int32)
        self.prepare(lambda: fastmm.matmul(a8, b8, out=out_f, dtype=np.int32),
                     lambda: np.matmul(a8, b8, out=out_n, dtype=np.int32),
                     2.0 * m * k * n, threads)
        check_int32(out_f, a8, b8)
        check_int32(out_n, a8, b8, who="numpy")

    def time_fastmm(self, shape, threads):
        self.fastmm_op()

    def time_numpy(self, shape, threads):
        self.numpy_op()

    def track_speedup(self, shape, threads):
        return self.speedup()
    track_speedup.unit = "x numpy int32"


class _LowpMKL(Product):
    """fastmm's low-precision product against MKL's (skipped without MKL,
    or at commits whose MKL peer has no prepare_lowp)."""

    def prepare_lowp_mkl(self, fastmm_op, a, b, out, threads, check):
        mkl = require_mkl()
        if not hasattr(mkl, "prepare_lowp"):
            raise NotImplementedError("the MKL peer has no low-precision "
                                      "products at this commit")
        m, k, n = a.shape[0], a.shape[1], b.shape[1]
        # no numpy op in these classes: fastmm's stands in for prepare
        self.prepare(fastmm_op, fastmm_op, 2.0 * m * k * n, threads)
        self._mkl, self._mkl_saved = mkl, mkl.get_num_threads()
        mkl.set_num_threads(threads)
        self.mkl_op = mkl.prepare_lowp(a, b, out)
        self.mkl_op()
        check(out)

    def time_mkl(self, shape, threads):
        self.mkl_op()

    def track_gflops_mkl(self, shape, threads):
        return self.mkl_gflops()
    track_gflops_mkl.unit = "GOP/s"

    def track_speedup_mkl(self, shape, threads):
        return self.speedup_mkl()
    track_speedup_mkl.unit = "x MKL"


class Bfloat16MKL(_LowpMKL):
    """Bfloat16's products against MKL's cblas_gemm_bf16bf16f32."""
    params = [LOWP_SHAPES, THREADS]
    param_names = ["mxkxn", "threads"]

    def setup(self, shape, threads):
        require_lowp()
        bf16 = require_bfloat16()
        m, k, n = parse_shape(shape)
        a = random_array((m, k), "float32", seed=1).astype(bf16)
        b = random_array((k, n), "float32", seed=2).astype(bf16)
        out_f, out_m = np.zeros((2, m, n), np.float32)
        self.prepare_lowp_mkl(lambda: fastmm.matmul(a, b, out=out_f), a, b,
                              out_m, threads,
                              lambda out: check_bf16(out, a, b, who="MKL"))
        check_bf16(out_f, a, b)


# listed only where they can run (common.py)
if not installed("ml_dtypes"):
    del Bfloat16, Bfloat16MKL
elif not installed("mkl"):
    del Bfloat16MKL
