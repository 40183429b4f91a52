"""fastmm.cuda against CuPy's cuBLAS, on device data (asv suite and script).

Skipped (NotImplementedError in setup, asv's convention) without a real GPU,
numba-cuda or CuPy; numba's simulator does not count.  TF32 is off for
CuPy (CUPY_TF32=0, NVIDIA_TF32_OVERRIDE=0, set before CuPy loads), so both
sides compute in full float32.  Operands are device arrays made in setup;
kernels are compiled, warmed up and checked against a reference there.
Each timing is a block of back-to-back calls (at least ~20 ms, so launch
costs count as they would in a loop) ending in a device synchronize; the
best of REPEATS blocks is kept.  Host <-> device copies are timed on their
own (time_transfer_*), never inside a product's timing.

Families:
  CudaGemm      C = A @ B, square n x n
  CudaLinear    y = act(x @ w + b): fastmm.cuda.linear (bias and activation
                fused into the GEMM's store) against cuBLAS's GEMM followed
                by one CuPy elementwise kernel doing bias + activation

    python benchmarks/bench_cuda.py [--json FILE]   # tables: TFLOP/s, ratio
    python benchmarks/bench_cuda.py --variants      # GEMM kernel variants

--variants times the GEMM kernel's build options (tile, shared-memory
stages, register cap: fastmm/cuda/_kernels.py's TILES, STAGES and
MAX_REGISTERS) at 4096^3 and 8192^3 against cuBLAS, with each variant's
registers, spills and relative error, to choose the defaults on a GPU.
"""
import os

os.environ.setdefault("CUPY_TF32", "0")
os.environ.setdefault("NVIDIA_TF32_OVERRIDE", "0")

import time           # noqa: E402

import numpy as np    # noqa: E402

try:
    from .common import installed, rounded
except ImportError:          # run as a script: python benchmarks/bench_cuda.py
    from common import installed, rounded

SIZES = {"float32": [1024, 2048, 4096, 8192], "float64": [1024, 2048, 4096]}
DTYPES = ["float32", "float64"]
# (batch rows, in_features, out_features): bench_nn.py's two CPU shapes,
# then transformer-sized MLP layers
LINEAR_SHAPES = [(4096, 256, 256), (256, 784, 512), (8192, 1024, 4096),
                 (8192, 4096, 1024)]
ACTIVATIONS = ["relu", "gelu"]
REPEATS = 5
BLOCK_SECONDS = 0.02

# bias + activation as one CuPy kernel (y holds x @ w on entry): the
# unfused baseline's second pass over y
_EPILOGUES = {
    "relu": "T v = y + b; y = v > (T)0 ? v : (T)0",
    "gelu": "T v = y + b; y = (T)0.5 * v * ((T)1 + erf(v * "
            "(T)0.7071067811865476))",
}


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


def per_call_seconds(fn, sync, repeats=REPEATS):
    """Best time per call of fn over repeats blocks of back-to-back calls,
    each block long enough (BLOCK_SECONDS) for launch costs to show."""
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    once = max(time.perf_counter() - t0, 1e-6)
    calls = max(1, min(1000, int(BLOCK_SECONDS / once)))
    best = float("inf")
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        sync()
        best = min(best, (time.perf_counter() - t0) / calls)
    return best


def _sync_all(cuda, cupy):
    def sync():
        cupy.cuda.Device().synchronize()
        cuda.synchronize()
    return sync


def _check(got, ref, scale, k, dtype, what):
    """Never time a wrong answer: |got - ref| within a k-proportional bound
    (scale: |a| @ |b|, which bounds the rounding error)."""
    eps = np.finfo(dtype).eps
    bad = ~(np.abs(got - ref) <= 4 * (k + 2) * eps * scale)
    assert not bad.any(), f"{what} is wrong ({bad.sum()} elements)"


class CudaGemm:
    params = [sorted(set(SIZES["float32"] + SIZES["float64"])), DTYPES]
    param_names = ["n", "dtype"]
    timeout = 300

    def setup(self, n, dtype):
        if n not in SIZES[dtype]:
            raise NotImplementedError(f"{dtype} stops at {SIZES[dtype][-1]}")
        self.cuda, self.cupy, self.fc = _backends()
        self.sync = _sync_all(self.cuda, self.cupy)
        cp = self.cupy
        rng = cp.random.default_rng(n)
        self.da = rng.standard_normal((n, n), dtype=np.float64).astype(dtype)
        self.db = rng.standard_normal((n, n), dtype=np.float64).astype(dtype)
        self.dc = cp.empty((n, n), dtype)
        # numba device views of the same CuPy buffers: no copy
        self.na, self.nb, self.nc = (self.cuda.as_cuda_array(x)
                                     for x in (self.da, self.db, self.dc))
        self.fastmm_op()
        # reference: the float64 product of the same operands; bound from
        # |a| @ |b|, both on the GPU (cuBLAS in float64)
        a64, b64 = self.da.astype(np.float64), self.db.astype(np.float64)
        ref = cp.asnumpy(a64 @ b64)
        scale = cp.asnumpy(cp.abs(a64) @ cp.abs(b64))
        _check(cp.asnumpy(self.dc), ref, scale, n, dtype, "fastmm.cuda")
        self.cublas_op()
        _check(cp.asnumpy(self.dc), ref, scale, n, dtype, "cuBLAS")
        self.flops = 2.0 * n ** 3

    def fastmm_op(self):
        self.fc.matmul(self.na, self.nb, out=self.nc)

    def cublas_op(self):
        self.cupy.matmul(self.da, self.db, out=self.dc)

    def time_fastmm(self, n, dtype):
        self.fastmm_op()
        self.sync()

    def time_cublas(self, n, dtype):
        self.cublas_op()
        self.sync()

    def track_ratio_to_cublas(self, n, dtype):
        """cuBLAS time / fastmm.cuda time (fastmm's share of cuBLAS's
        throughput), same process, best block of each."""
        t_f = per_call_seconds(self.fastmm_op, self.sync)
        t_c = per_call_seconds(self.cublas_op, self.sync)
        return rounded(t_c / t_f)
    track_ratio_to_cublas.unit = "ratio"


class CudaLinear:
    params = [[str(s) for s in LINEAR_SHAPES], ACTIVATIONS, DTYPES[:1]]
    param_names = ["shape", "activation", "dtype"]
    timeout = 300

    def setup(self, shape, activation, dtype):
        self.cuda, self.cupy, self.fc = _backends()
        self.sync = _sync_all(self.cuda, self.cupy)
        cp = self.cupy
        m, k, n = (int(v) for v in shape.strip("()").split(","))
        rng = cp.random.default_rng(m + k + n)
        self.x = rng.standard_normal((m, k), dtype=np.float64).astype(dtype)
        self.w = (rng.standard_normal((k, n), dtype=np.float64)
                  / np.sqrt(k)).astype(dtype)
        self.b = rng.standard_normal(n, dtype=np.float64).astype(dtype)
        self.y_f = cp.empty((m, n), dtype)
        self.y_c = cp.empty((m, n), dtype)
        self.nx, self.nw, self.nb, self.ny = (
            self.cuda.as_cuda_array(v) for v in (self.x, self.w, self.b,
                                                 self.y_f))
        self.act = activation
        self.epilogue = cp.ElementwiseKernel("T b", "T y",
                                             _EPILOGUES[activation],
                                             f"fastmm_bench_{activation}")
        self.fastmm_op()
        self.cublas_op()
        # the two must agree to a product's rounding (the activations are
        # 1-Lipschitz), bound from |x| @ |w| + |b|
        scale = cp.asnumpy(cp.abs(self.x) @ cp.abs(self.w) + cp.abs(self.b))
        _check(cp.asnumpy(self.y_f), cp.asnumpy(self.y_c).astype(np.float64),
               2 * scale, k, dtype, "fastmm.cuda.linear")
        self.flops = 2.0 * m * k * n

    def fastmm_op(self):
        self.fc.linear(self.nx, self.nw, self.nb, activation=self.act,
                       out=self.ny)

    def cublas_op(self):
        self.cupy.matmul(self.x, self.w, out=self.y_c)
        self.epilogue(self.b, self.y_c)

    def time_fastmm_fused(self, shape, activation, dtype):
        self.fastmm_op()
        self.sync()

    def time_cublas_then_epilogue(self, shape, activation, dtype):
        self.cublas_op()
        self.sync()

    def track_ratio_to_cublas(self, shape, activation, dtype):
        """(cuBLAS GEMM + bias/activation kernel) time / fastmm.cuda's fused
        layer time: above 1, the fused layer is faster."""
        t_f = per_call_seconds(self.fastmm_op, self.sync)
        t_c = per_call_seconds(self.cublas_op, self.sync)
        return rounded(t_c / t_f)
    track_ratio_to_cublas.unit = "ratio"


class CudaTransfer:
    """Host <-> device copies of one operand, timed apart from the GEMMs."""
    params = [SIZES["float64"], DTYPES]
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


# (tiles (BM, BN, BK, TM, TN), stages, register cap; 0: none) per dtype
VARIANTS = {
    "float32": [((128, 128, 8, 8, 8), 1, 128), ((128, 128, 8, 8, 8), 2, 128),
                ((128, 128, 8, 8, 8), 1, 0), ((128, 128, 8, 8, 8), 2, 0),
                ((128, 128, 16, 8, 8), 2, 128), ((128, 128, 16, 8, 8), 2, 0),
                ((128, 64, 8, 8, 8), 2, 0), ((64, 128, 8, 8, 8), 2, 0),
                ((128, 64, 16, 8, 8), 2, 0), ((64, 64, 8, 4, 4), 2, 0)],
    "float64": [((64, 64, 8, 4, 4), 1, 128), ((64, 64, 8, 4, 4), 2, 128),
                ((64, 64, 8, 4, 4), 2, 0), ((128, 64, 8, 8, 4), 2, 0),
                ((64, 64, 16, 4, 4), 2, 0)],
}


def variants():
    """Each VARIANTS entry's GEMM throughput and share of cuBLAS."""
    cuda, cupy, fc = _backends()
    from fastmm.cuda import _kernels as K
    saved = (dict(K.TILES), K.STAGES, K.MAX_REGISTERS)
    try:
        for dtype, sizes in (("float32", [4096, 8192]), ("float64", [4096])):
            for n in sizes:
                bench = CudaGemm()
                bench.setup(n, dtype)
                t_c = per_call_seconds(bench.cublas_op, bench.sync)
                print(f"{dtype} {n}^3: cuBLAS "
                      f"{bench.flops / t_c / 1e12:.2f} TFLOP/s", flush=True)
                ref = bench.dc.copy()
                for tiles, stages, regs in VARIANTS[dtype]:
                    K.TILES[dtype], K.STAGES, K.MAX_REGISTERS = \
                        tiles, stages, regs
                    K.gemm_kernel.cache_clear()
                    bench.fastmm_op()
                    err = float(cupy.abs(bench.dc - ref).max()
                                / cupy.abs(ref).max())
                    t = per_call_seconds(bench.fastmm_op, bench.sync)
                    kern = K.gemm_kernel(dtype, False, False, False, True,
                                         True, False, "identity", tiles)
                    res = [next(iter(v.values()), "?") if isinstance(v, dict)
                           else v for v in (kern.get_regs_per_thread(),
                                            kern.get_local_mem_per_thread())]
                    print(f"  {tiles} stages {stages} cap {regs}: "
                          f"{bench.flops / t / 1e12:6.2f} TFLOP/s, "
                          f"{t_c / t:5.2f} of cuBLAS, {res[0]} registers, "
                          f"{res[1]} B local, rel. diff {err:.1e}",
                          flush=True)
                del bench
    finally:
        K.TILES.clear()
        K.TILES.update(saved[0])
        K.STAGES, K.MAX_REGISTERS = saved[1:]
        K.gemm_kernel.cache_clear()


def _row(bench, label):
    t_f = per_call_seconds(bench.fastmm_op, bench.sync)
    t_c = per_call_seconds(bench.cublas_op, bench.sync)
    row = {"case": label, "fastmm_tflops": bench.flops / t_f / 1e12,
           "cublas_tflops": bench.flops / t_c / 1e12, "ratio": t_c / t_f,
           "fastmm_ms": t_f * 1e3, "cublas_ms": t_c * 1e3}
    print(f"{label:<34} {row['fastmm_tflops']:>9.2f} "
          f"{row['cublas_tflops']:>9.2f} {row['ratio']:>6.2f} "
          f"{row['fastmm_ms']:>9.3f} {row['cublas_ms']:>9.3f}", flush=True)
    return row


def main(argv=None):
    import argparse
    import json
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", help="also write the rows to this file")
    p.add_argument("--variants", action="store_true",
                   help="time the GEMM kernel's build options instead")
    args = p.parse_args(argv)
    try:
        cuda, cupy, fc = _backends()
    except NotImplementedError as e:
        print(f"skipped: {e}")
        return
    if args.variants:
        variants()
        return
    from fastmm.cuda import _kernels
    props = cupy.cuda.runtime.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) \
        else props["name"]
    print(f"device: {name}, CUPY_TF32={os.environ['CUPY_TF32']}, "
          f"float32 tile {_kernels.TILES['float32']}, "
          f"stages {_kernels.STAGES}")
    head = (f"{'case':<34} {'fastmm':>9} {'cuBLAS':>9} {'ratio':>6} "
            f"{'fastmm ms':>9} {'cuBLAS ms':>9}")
    rows = []
    print("GEMM, TFLOP/s (ratio: cuBLAS time / fastmm time)\n" + head)
    for dtype in DTYPES:
        for n in SIZES[dtype]:
            bench = CudaGemm()
            bench.setup(n, dtype)
            rows.append(_row(bench, f"gemm {n}^3 {dtype}"))
            del bench
    print("dense layer y = act(x @ w + b), float32; cuBLAS side: GEMM + "
          "one bias/activation kernel\n" + head)
    for shape in LINEAR_SHAPES:
        for act in ACTIVATIONS:
            bench = CudaLinear()
            bench.setup(str(shape), act, "float32")
            rows.append(_row(bench, f"linear {shape} {act}"))
            del bench
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": name, "rows": rows}, f, indent=1)


# listed by asv only where a GPU stack is installed (common.py); setup still
# skips where it is installed but finds no device
if not installed("cupy", "numba") \
        or os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    del CudaGemm, CudaLinear, CudaTransfer

if __name__ == "__main__":
    main()
