"""fastmm.matmul / fastmm.gemm against numpy, same data, same thread count.

numpy's baseline is np.dot for 2-D operands (its cheapest call into BLAS)
and np.matmul for stacks.  Both write into preallocated outputs.
SquareMKL and NeuralNetMKL time the same products against MKL's cblas_?gemm
where the mkl wheel is installed, and skip elsewhere.
"""
import numpy as np

from .common import (DTYPES, NN_SHAPES, SMALL_SIZES, SQUARE_SIZES,
                     STACK_SHAPES, THREADS, TRANSPOSES, Product, fastmm,
                     installed, parse_shape, random_array, require,
                     require_mkl)


def _matmul_case(bench, shape_a, shape_b, dtype, threads, mkl=False):
    """Set ``bench`` up to compare fastmm.matmul with numpy on a @ b, and
    with MKL too when ``mkl``."""
    require("matmul")
    peer = require_mkl() if mkl else None
    a = random_array(shape_a, dtype, seed=1)
    b = random_array(shape_b, dtype, seed=2)
    numpy_fn = np.matmul if a.ndim > 2 or b.ndim > 2 else np.dot
    out_f = np.empty(np.matmul(a[..., :1, :], b).shape[:-2]
                     + (shape_a[-2], shape_b[-1]), dtype)
    out_n = np.empty_like(out_f)
    batch = out_f.size // (shape_a[-2] * shape_b[-1])
    flops = 2.0 * batch * shape_a[-2] * shape_a[-1] * shape_b[-1]
    bench.prepare(lambda: fastmm.matmul(a, b, out=out_f),
                  lambda: numpy_fn(a, b, out=out_n),
                  flops, threads, check=(a, b, out_f, out_n))
    if peer is not None:
        bench.prepare_mkl(peer, a, b, np.empty_like(out_f), out_n, threads)


class Square(Product):
    """n x n @ n x n."""
    params = [SQUARE_SIZES, DTYPES, THREADS]
    param_names = ["n", "dtype", "threads"]

    def setup(self, n, dtype, threads):
        _matmul_case(self, (n, n), (n, n), dtype, threads)

    def time_fastmm(self, n, dtype, threads):
        self.fastmm_op()

    def time_numpy(self, n, dtype, threads):
        self.numpy_op()

    def track_gflops(self, n, dtype, threads):
        return self.fastmm_gflops()
    track_gflops.unit = "GFLOP/s"

    def track_speedup(self, n, dtype, threads):
        return self.speedup()
    track_speedup.unit = "x numpy"


class NeuralNet(Product):
    """Dense-layer shapes 'm x k x n': (m, k) activations @ (k, n) weights."""
    params = [NN_SHAPES, DTYPES, THREADS]
    param_names = ["mxkxn", "dtype", "threads"]

    def setup(self, shape, dtype, threads):
        m, k, n = parse_shape(shape)
        _matmul_case(self, (m, k), (k, n), dtype, threads)

    def time_fastmm(self, shape, dtype, threads):
        self.fastmm_op()

    def time_numpy(self, shape, dtype, threads):
        self.numpy_op()

    def track_gflops(self, shape, dtype, threads):
        return self.fastmm_gflops()
    track_gflops.unit = "GFLOP/s"

    def track_speedup(self, shape, dtype, threads):
        return self.speedup()
    track_speedup.unit = "x numpy"


class SquareMKL(Product):
    """Square's products, fastmm against MKL (skipped without MKL)."""
    params = [SQUARE_SIZES, DTYPES, THREADS]
    param_names = ["n", "dtype", "threads"]

    def setup(self, n, dtype, threads):
        _matmul_case(self, (n, n), (n, n), dtype, threads, mkl=True)

    def time_mkl(self, n, dtype, threads):
        self.mkl_op()

    def track_gflops_mkl(self, n, dtype, threads):
        return self.mkl_gflops()
    track_gflops_mkl.unit = "GFLOP/s"

    def track_speedup_mkl(self, n, dtype, threads):
        return self.speedup_mkl()
    track_speedup_mkl.unit = "x MKL"


class NeuralNetMKL(Product):
    """NeuralNet's products, fastmm against MKL (skipped without MKL)."""
    params = [NN_SHAPES, DTYPES, THREADS]
    param_names = ["mxkxn", "dtype", "threads"]

    def setup(self, shape, dtype, threads):
        m, k, n = parse_shape(shape)
        _matmul_case(self, (m, k), (k, n), dtype, threads, mkl=True)

    def time_mkl(self, shape, dtype, threads):
        self.mkl_op()

    def track_gflops_mkl(self, shape, dtype, threads):
        return self.mkl_gflops()
    track_gflops_mkl.unit = "GFLOP/s"

    def track_speedup_mkl(self, shape, dtype, threads):
        return self.speedup_mkl()
    track_speedup_mkl.unit = "x MKL"


class Small(Product):
    """Tiny n x n @ n x n, where call overhead dominates."""
    params = [SMALL_SIZES, DTYPES]
    param_names = ["n", "dtype"]

    def setup(self, n, dtype):
        _matmul_case(self, (n, n), (n, n), dtype, 1)

    def time_fastmm(self, n, dtype):
        self.fastmm_op()

    def time_numpy(self, n, dtype):
        self.numpy_op()

    def track_gflops(self, n, dtype):
        return self.fastmm_gflops()
    track_gflops.unit = "GFLOP/s"

    def track_speedup(self, n, dtype):
        return self.speedup()
    track_speedup.unit = "x numpy"


class Stack(Product):
    """Stacks 'b x n' of small matrices: (b, n, n) @ (b, n, n)."""
    params = [STACK_SHAPES, DTYPES, THREADS]
    param_names = ["bxn", "dtype", "threads"]

    def setup(self, shape, dtype, threads):
        b, n = parse_shape(shape)
        _matmul_case(self, (b, n, n), (b, n, n), dtype, threads)

    def time_fastmm(self, shape, dtype, threads):
        self.fastmm_op()

    def time_numpy(self, shape, dtype, threads):
        self.numpy_op()

    def track_gflops(self, shape, dtype, threads):
        return self.fastmm_gflops()
    track_gflops.unit = "GFLOP/s"

    def track_speedup(self, shape, dtype, threads):
        return self.speedup()
    track_speedup.unit = "x numpy"


class Transposed(Product):
    """fastmm.gemm with op(A), op(B) in {X, X.T}, n = 512, in place, against
    np.dot on the transposed views (numpy hands them to BLAS uncopied)."""
    params = [TRANSPOSES, DTYPES, THREADS]
    param_names = ["op", "dtype", "threads"]
    n = 512

    def setup(self, op, dtype, threads):
        require("gemm")
        n = self.n
        a = random_array((n, n), dtype, seed=1)
        b = random_array((n, n), dtype, seed=2)
        ta, tb = op[0] == "T", op[1] == "T"
        op_a, op_b = (a.T if ta else a), (b.T if tb else b)
        out_f = np.zeros((n, n), dtype)
        out_n = np.zeros((n, n), dtype)
        self.prepare(lambda: fastmm.gemm(1.0, a, b, 0.0, out_f, trans_a=ta,
                                         trans_b=tb, overwrite_c=True),
                     lambda: np.dot(op_a, op_b, out=out_n),
                     2.0 * n ** 3, threads, check=(op_a, op_b, out_f, out_n))

    def time_fastmm(self, op, dtype, threads):
        self.fastmm_op()

    def time_numpy(self, op, dtype, threads):
        self.numpy_op()

    def track_gflops(self, op, dtype, threads):
        return self.fastmm_gflops()
    track_gflops.unit = "GFLOP/s"

    def track_speedup(self, op, dtype, threads):
        return self.speedup()
    track_speedup.unit = "x numpy"


if not installed("mkl"):     # listed only where they can run (common.py)
    del SquareMKL, NeuralNetMKL
