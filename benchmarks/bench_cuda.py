"""fastmm.cuda against CuPy's cuBLAS GEMM, on device data (asv suite).

Skipped (NotImplementedError in setup, asv's convention) without a real GPU,
numba-cuda or CuPy; numba's simulator does not count.  TF32 is off for
CuPy (CUPY_TF32=0, NVIDIA_TF32_OVERRIDE=0, set before CuPy loads), so both
sides compute in full float32.  Operands are device arrays made in setup;
kernels are compiled and warmed up there; every timed body ends with a
device synchronize.  Host <-> device copies are timed on their own
(time_transfer_*), never inside a GEMM timing.

    python benchmarks/bench_cuda.py           # table: GFLOP/s and ratio
"""
import os

os.environ.setdefault("CUPY_TF32", "0")
os.environ.setdefault("NVIDIA_TF32_OVERRIDE", "0")

import numpy as np    # noqa: E402

try:
    from .common import installed, rounded
except ImportError:          # run as a script: python benchmarks/bench_cuda.py
    from common import installed, rounded

SIZES = [1024, 2048, 4096]
DTYPES = ["float32", "float64"]
REPEATS = 5


def _backends():
    """(numba.cuda, cupy, fastmm.cuda) or NotImplementedError."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        raise NotImplementedError("numba's CUDA simulator is not a GPU")
    try:
        import cupy
        import fastmm.cuda as fc
        from numba import cuda
    except ImportError as e:
        raise NotImplementedError(f"needs CuPy and numba-cuda: {e}")
    if not fc.is_available() or cupy.cuda.runtime.getDeviceCount() == 0:
        raise NotImplementedError("no CUDA GPU")
    return cuda, cupy, fc


def _operands(n, dtype, cupy):
    rng = np.random.default_rng(n)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    return a, b, cupy.asarray(a), cupy.asarray(b)


def _best_seconds(fn, sync, repeats=REPEATS):
    """Best wall time of fn() over repeats, each ending in a device sync."""
    import time
    best = float("inf")
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


class CudaGemm:
    params = [SIZES, DTYPES]
    param_names = ["n", "dtype"]
    timeout = 300

    def setup(self, n, dtype):
        self.cuda, self.cupy, self.fc = _backends()
        self.a, self.b, self.da, self.db = _operands(n, dtype, self.cupy)
        self.dc = self.cupy.empty((n, n), dtype)
        # numba device views of the same CuPy buffers: no copy
        self.na, self.nb, self.nc = (self.cuda.as_cuda_array(x)
                                     for x in (self.da, self.db, self.dc))
        for _ in range(2):    # compile the kernel, warm both libraries
            self.fc.matmul(self.na, self.nb, out=self.nc)
            self.cupy.matmul(self.da, self.db, out=self.dc)
        self.sync()
        ref = self.a.astype(np.float64) @ self.b.astype(np.float64) \
            if n <= 2048 else None
        if ref is not None:   # never time a wrong answer
            got = self.cupy.asnumpy(self.dc)
            self.fc.matmul(self.na, self.nb, out=self.nc)
            mine = self.cupy.asnumpy(self.dc)
            tol = 4 * n * np.finfo(dtype).eps * (np.abs(self.a)
                                                 @ np.abs(self.b))
            assert (np.abs(mine - ref) <= tol).all(), "fastmm.cuda is wrong"
            assert (np.abs(got - ref) <= tol).all(), "cuBLAS is wrong"

    def sync(self):
        self.cupy.cuda.Device().synchronize()
        self.cuda.synchronize()

    def time_fastmm(self, n, dtype):
        self.fc.matmul(self.na, self.nb, out=self.nc)
        self.sync()

    def time_cublas(self, n, dtype):
        self.cupy.matmul(self.da, self.db, out=self.dc)
        self.sync()

    def track_ratio_to_cublas(self, n, dtype):
        """fastmm.cuda throughput / cuBLAS throughput, same run, best of
        REPEATS each."""
        t_f = _best_seconds(
            lambda: self.fc.matmul(self.na, self.nb, out=self.nc), self.sync)
        t_c = _best_seconds(
            lambda: self.cupy.matmul(self.da, self.db, out=self.dc),
            self.sync)
        return rounded(t_c / t_f)
    track_ratio_to_cublas.unit = "ratio"


class CudaTransfer:
    """Host <-> device copies of one operand, timed apart from the GEMMs."""
    params = [SIZES, DTYPES]
    param_names = ["n", "dtype"]

    def setup(self, n, dtype):
        self.cuda, self.cupy, self.fc = _backends()
        self.a = np.random.default_rng(0).standard_normal((n, n)).astype(
            dtype)
        self.d = self.cuda.to_device(self.a)

    def time_transfer_host_to_device(self, n, dtype):
        self.cuda.to_device(self.a)
        self.cuda.synchronize()

    def time_transfer_device_to_host(self, n, dtype):
        self.d.copy_to_host()


def main():
    try:
        cuda, cupy, fc = _backends()
    except NotImplementedError as e:
        print(f"skipped: {e}")
        return
    print(f"device: {cupy.cuda.runtime.getDeviceProperties(0)['name']}, "
          f"CUPY_TF32={os.environ['CUPY_TF32']}")
    print(f"{'n':>6} {'dtype':>8} {'fastmm GF/s':>12} {'cuBLAS GF/s':>12} "
          f"{'ratio':>6} {'H2D ms':>8}")
    for dtype in DTYPES:
        for n in SIZES:
            bench = CudaGemm()
            bench.setup(n, dtype)
            t_f = _best_seconds(lambda: bench.time_fastmm(n, dtype),
                                bench.sync)
            t_c = _best_seconds(lambda: bench.time_cublas(n, dtype),
                                bench.sync)
            tr = CudaTransfer()
            tr.setup(n, dtype)
            t_h2d = _best_seconds(
                lambda: tr.time_transfer_host_to_device(n, dtype),
                cuda.synchronize)
            flops = 2.0 * n ** 3
            print(f"{n:>6} {dtype:>8} {flops / t_f / 1e9:>12.0f} "
                  f"{flops / t_c / 1e9:>12.0f} {t_c / t_f:>6.2f} "
                  f"{t_h2d * 1e3:>8.2f}")


# listed by asv only where a GPU stack is installed (common.py); setup still
# skips where it is installed but finds no device
if not installed("cupy", "numba") \
        or os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    del CudaGemm, CudaTransfer

if __name__ == "__main__":
    main()
