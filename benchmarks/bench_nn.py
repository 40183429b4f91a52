"""Dense-layer benchmarks: fastmm.nn against the same layer in numpy.

asv suite (``asv run``), or standalone for a side-by-side table:

    python benchmarks/bench_nn.py

Each class times fastmm and its numpy baseline at the same thread count
(fastmm via fastmm.set_num_threads, numpy's BLAS via threadpoolctl) and
reports the ratio numpy / fastmm as track_speedup (> 1: fastmm is faster),
each the best of blocks of calls timed apart (benchmarks/common.py's
best_times).  float32, seeded data.
"""
import numpy as np

try:
    from .common import best_times, grid, rounded, settle_pools
except ImportError:          # run as a script: python benchmarks/bench_nn.py
    from common import best_times, grid, rounded, settle_pools

try:
    from threadpoolctl import threadpool_limits
except ImportError:          # pragma: no cover - a dependency of fastmm
    threadpool_limits = None

ALL_SHAPES = [(4096, 256, 256), (256, 784, 512)]     # (batch, in, out)
SHAPES = grid(ALL_SHAPES[1:], ALL_SHAPES)            # asv's (common.grid)
THREADS = [1, 2]


def _fastmm_nn():
    """fastmm.nn, or NotImplementedError (asv: skip) at commits without it."""
    try:
        import fastmm
        import fastmm.nn as nn
    except ImportError as e:
        raise NotImplementedError(f"fastmm.nn unavailable: {e}")
    return fastmm, nn


def _ratio(numpy_f, fastmm_f):
    """(numpy time / fastmm time, numpy time, fastmm time), each the best of
    blocks timed by common.best_times (see there why not interleaved)."""
    t_np, t_fm = best_times([numpy_f, fastmm_f])
    return t_np / t_fm, t_np, t_fm


def numpy_forward(x, w, b):
    return np.maximum(x @ w + b, 0)


def numpy_backward(x, w, dy, y):
    g = dy * (y > 0)
    return g @ w.T, x.T @ g, g.sum(0)


class _Pinned:
    """Seeded float32 layer data and both libraries pinned to ``threads``."""
    params = (SHAPES, THREADS)
    param_names = ["shape", "threads"]

    def setup(self, shape, threads):
        self.fastmm, self.nn = _fastmm_nn()
        if threadpool_limits is None:
            raise NotImplementedError("threadpoolctl is required")
        m, k, n = shape
        rng = np.random.default_rng(0)
        self.x = rng.standard_normal((m, k), dtype=np.float32)
        self.w = (rng.standard_normal((k, n), dtype=np.float32)
                  / np.float32(np.sqrt(k)))
        self.b = rng.standard_normal(n, dtype=np.float32)
        self.dy = rng.standard_normal((m, n), dtype=np.float32)
        self.y = np.maximum(self.x @ self.w + self.b, 0)
        self._threads = self.fastmm.get_num_threads()
        self.fastmm.set_num_threads(threads)
        self._limits = threadpool_limits(threads, user_api="blas")
        settle_pools(threads)

    def teardown(self, shape, threads):
        # asv calls teardown after a skipped (NotImplementedError) setup too
        if getattr(self, "_limits", None) is not None:
            self._limits.restore_original_limits()
        if getattr(self, "_threads", None) is not None:
            self.fastmm.set_num_threads(self._threads)


class LinearForward(_Pinned):
    """relu(x @ w + b): fused epilogue vs numpy's three passes."""

    def time_fastmm(self, shape, threads):
        self.nn.linear(self.x, self.w, self.b, "relu")

    def time_numpy(self, shape, threads):
        numpy_forward(self.x, self.w, self.b)

    def track_speedup(self, shape, threads):
        return rounded(_ratio(lambda: numpy_forward(self.x, self.w, self.b),
                              lambda: self.nn.linear(self.x, self.w, self.b,
                                                     "relu"))[0])
    track_speedup.unit = "x (numpy time / fastmm time)"


# numpy's passes for the fused activations other than relu (gelu_tanh: the
# tanh form, which numpy can write without scipy's erf)
NUMPY_ACTIVATIONS = {
    "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
    "tanh": np.tanh,
    "gelu_tanh": lambda z: 0.5 * z * (1 + np.tanh(
        np.float32(0.7978845608028654) * (z + np.float32(0.044715) * z ** 3))),
}


class LinearForwardActivations(_Pinned):
    """act(x @ w + b) for sigmoid, tanh and gelu_tanh: the write-back's
    vectorised polynomials against numpy's ufunc passes (the fused tile loops
    once compiled to scalar code for AVX2 and ran behind numpy)."""
    params = (sorted(NUMPY_ACTIVATIONS), SHAPES, THREADS)
    param_names = ["activation", "shape", "threads"]

    def setup(self, activation, shape, threads):
        super().setup(shape, threads)

    def teardown(self, activation, shape, threads):
        super().teardown(shape, threads)

    def _numpy(self, activation):
        return NUMPY_ACTIVATIONS[activation](self.x @ self.w + self.b)

    def time_fastmm(self, activation, shape, threads):
        self.nn.linear(self.x, self.w, self.b, activation)

    def time_numpy(self, activation, shape, threads):
        self._numpy(activation)

    def track_speedup(self, activation, shape, threads):
        return rounded(_ratio(
            lambda: self._numpy(activation),
            lambda: self.nn.linear(self.x, self.w, self.b, activation))[0])
    track_speedup.unit = "x (numpy time / fastmm time)"


class LinearBackward(_Pinned):
    """relu layer's dx, dw, db: one pass + two transposed-view GEMMs vs
    numpy's g = dy * (y > 0); g @ w.T; x.T @ g; g.sum(0)."""

    def time_fastmm(self, shape, threads):
        self.nn.linear_backward(self.x, self.w, self.dy, y=self.y,
                                activation="relu")

    def time_numpy(self, shape, threads):
        numpy_backward(self.x, self.w, self.dy, self.y)

    def track_speedup(self, shape, threads):
        return rounded(_ratio(
            lambda: numpy_backward(self.x, self.w, self.dy, self.y),
            lambda: self.nn.linear_backward(self.x, self.w, self.dy, y=self.y,
                                            activation="relu"))[0])
    track_speedup.unit = "x (numpy time / fastmm time)"


class QuantizedForward(_Pinned):
    """A quantized relu layer's forward (int8: rows quantized, exact int32
    products, dequantize + bias + relu fused in the write-back; bf16) beside
    the float32 layer's fused forward."""
    params = (["int8", "bf16"], SHAPES, THREADS)
    param_names = ["mode", "shape", "threads"]

    def setup(self, mode, shape, threads):
        super().setup(shape, threads)
        if not hasattr(self.nn, "quantize"):
            raise NotImplementedError("fastmm.nn.quantize unavailable")
        layer = self.nn.Dense(*self.w.shape, "relu")
        layer.W[...] = self.w
        layer.b[...] = self.b
        self.layer = self.nn.quantize(self.nn.Sequential([layer]),
                                      mode).layers[0]

    def teardown(self, mode, shape, threads):
        super().teardown(shape, threads)

    def time_quantized(self, mode, shape, threads):
        self.layer.forward(self.x)

    def time_float32(self, mode, shape, threads):
        self.nn.linear(self.x, self.w, self.b, "relu")

    def track_vs_float32(self, mode, shape, threads):
        t_f32, t_q = best_times([
            lambda: self.nn.linear(self.x, self.w, self.b, "relu"),
            lambda: self.layer.forward(self.x)])
        return rounded(t_f32 / t_q)
    track_vs_float32.unit = "x (float32 layer time / quantized layer time)"


def main():
    _, nn = _fastmm_nn()
    from fastmm.driver import _context
    print(f"kernel: {_context.kernel_info()['name']}; float32; best of "
          f"blocks timed apart; speedup = numpy time / fastmm time")
    print(f"{'benchmark':<16}{'shape (m,k->n)':<18}{'threads':>8}"
          f"{'fastmm ms':>11}{'numpy ms':>10}{'speedup':>9}")
    for cls, numpy_f, fastmm_f in (
            (LinearForward,
             lambda s: numpy_forward(s.x, s.w, s.b),
             lambda s: s.nn.linear(s.x, s.w, s.b, "relu")),
            (LinearBackward,
             lambda s: numpy_backward(s.x, s.w, s.dy, s.y),
             lambda s: s.nn.linear_backward(s.x, s.w, s.dy, y=s.y,
                                            activation="relu"))):
        for shape in ALL_SHAPES:
            for threads in THREADS:
                bench = cls()
                bench.setup(shape, threads)
                try:
                    r, t_np, t_fm = _ratio(lambda: numpy_f(bench),
                                           lambda: fastmm_f(bench))
                finally:
                    bench.teardown(shape, threads)
                m, k, n = shape
                print(f"{cls.__name__:<16}{f'{m}x{k}->{n}':<18}{threads:>8}"
                      f"{t_fm * 1e3:>11.3f}{t_np * 1e3:>10.3f}{r:>8.2f}x")
    for act in sorted(NUMPY_ACTIVATIONS):
        for shape in ALL_SHAPES:
            for threads in THREADS:
                bench = LinearForwardActivations()
                bench.setup(act, shape, threads)
                try:
                    r, t_np, t_fm = _ratio(
                        lambda: bench._numpy(act),
                        lambda: bench.nn.linear(bench.x, bench.w, bench.b,
                                                act))
                finally:
                    bench.teardown(act, shape, threads)
                m, k, n = shape
                print(f"{act:<16}{f'{m}x{k}->{n}':<18}{threads:>8}"
                      f"{t_fm * 1e3:>11.3f}{t_np * 1e3:>10.3f}{r:>8.2f}x")


if __name__ == "__main__":
    main()
