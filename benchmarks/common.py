"""Shared pieces of the asv suite: seeded data, shape lists, thread pinning.

Every benchmark class times fastmm and numpy on the same data at the same
thread count, and its ``track_*`` benchmarks report fastmm's GFLOP/s and its
speedup over numpy measured side by side in one call, so results taken on a
busy machine still compare like with like.

The pattern a new benchmark file follows (bench_gemm.py is the example):

    from .common import DTYPES, THREADS, Product, fastmm, random_array, require

    class Linear(Product):
        params = [["256x1024x4096"], DTYPES, THREADS]
        param_names = ["shape", "dtype", "threads"]

        def setup(self, shape, dtype, threads):
            require("nn")                  # skipped on commits without fastmm.nn
            m, k, n = parse_shape(shape)
            x = random_array((m, k), dtype, seed=1)
            ...                            # weights, bias, outputs
            self.prepare(lambda: fastmm.nn.linear(x, w, b, out=out_f),
                         lambda: np.add(x @ w, b, out=out_n),
                         2.0 * m * k * n, threads, check=(x, w, out_f, out_n))

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

``Product.teardown`` restores the thread counts ``prepare`` pinned.

Grids: by default each family runs a few representative cases, so that
``asv continuous --quick`` over two commits fits in a few minutes on two
cores; ``FASTMM_ASV_FULL=1`` in the environment of ``asv run`` turns on the
full grids (every size, both dtypes, every transpose; a few times longer).
A new parameter list goes through ``grid(default, full)``.
``track_*`` values are rounded to 3 significant digits (``rounded``): the
run-to-run noise is larger than that.

Against MKL (where the ``mkl`` wheel is installed), a class of its own per
family, since a setup that skips skips every benchmark of its class:
``setup`` calls ``require_mkl()`` (NotImplementedError, asv's skip, without
MKL) and then ``prepare_mkl``; its ``time_mkl``, ``track_gflops_mkl`` and
``track_speedup_mkl`` (x MKL) call ``mkl_op``, ``mkl_gflops()`` and
``speedup_mkl()``.  MKL is loaded by fastmm's bench peers (fastmm/bench/_peers.py,
fastmm/_peers.py before), so commits before those modules skip these.

Classes whose peer or extra is not installed at all (MKL, ml_dtypes, a GPU
stack, Dask outside the full grids) are deleted from their module after
it defines them (``if not installed(...): del ...``): asv then does not list
them, where a skipping ``setup`` would still cost a process start (~0.3 s)
for every parameter combination, twice the suite's useful work in a
default ``asv continuous`` environment, which has none of them.
"""
import importlib
import importlib.util
import math
import os
import time

import numpy as np

try:
    import fastmm
except ImportError:          # a commit that does not build or import
    fastmm = None

try:
    from threadpoolctl import threadpool_limits
except ImportError:
    threadpool_limits = None

SEED = 20251121

FULL = os.environ.get("FASTMM_ASV_FULL", "0") not in ("", "0")


def grid(default, full):
    """``full`` when FASTMM_ASV_FULL is set (and not 0), else ``default``."""
    return full if FULL else default


def rounded(value, digits=3):
    """``value`` to ``digits`` significant digits, for track_* results."""
    if not value or not math.isfinite(value):
        return value
    return round(value, digits - 1 - math.floor(math.log10(abs(value))))


DTYPES = grid(["float32"], ["float32", "float64"])


def _cpu_count():
    """CPUs this process may use (fastmm's own count where it has one)."""
    for module in ("fastmm.driver._threads", "fastmm._threads"):  # new, old
        try:
            return importlib.import_module(module).cpu_count()
        except (ImportError, AttributeError):
            pass
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# 1 thread, and every CPU the process may use (when that is more than 1)
THREADS = sorted({1, _cpu_count()})

SQUARE_SIZES = grid([256, 1024], [64, 256, 1024, 2048])
# dense-layer products "m x k x n": (m, k) activations @ (k, n) weights
NN_SHAPES = grid(["32x1024x1024", "4096x512x512", "512x512x10"],
                 ["1x1024x4096", "32x1024x1024", "64x4096x1024",
                  "256x1024x4096", "4096x512x512", "4096x1024x1024",
                  "512x512x10", "4096x1024x10", "1000x64x64"])
SMALL_SIZES = grid([4, 16, 64], [2, 4, 8, 16, 32, 64, 96])
# stacks "b x n": (b, n, n) @ (b, n, n)
STACK_SHAPES = grid(["10000x8"], ["10000x4", "10000x8", "1000x32", "100x64",
                                  "64x128"])
# "NN" is Square's case; "NT" (x @ w.T) is a dense layer's
TRANSPOSES = grid(["NT"], ["NN", "TN", "NT", "TT"])


def parse_shape(text):
    """'32x1024x1024' -> (32, 1024, 1024)."""
    return tuple(int(x) for x in text.split("x"))


def require(*names):
    """Raise NotImplementedError (asv: skip) unless fastmm has ``names``.

    Dotted names reach submodules: ``require("nn.linear")``.
    """
    if fastmm is None:
        raise NotImplementedError("fastmm does not import at this commit")
    for name in names:
        obj = fastmm
        for part in name.split("."):
            if not hasattr(obj, part):
                raise NotImplementedError(f"fastmm.{name} not at this commit")
            obj = getattr(obj, part)


def require_mkl():
    """fastmm's MKL peer, or NotImplementedError (asv: skip) where MKL is not
    installed or this commit's fastmm has no MKL peer (fastmm.bench._peers,
    fastmm._peers before the bench moved into fastmm/bench/)."""
    require()
    for module in ("fastmm.bench._peers", "fastmm._peers"):
        try:
            load_mkl = importlib.import_module(module).load_mkl
            break
        except ImportError:
            pass
    else:
        raise NotImplementedError("no MKL peer in fastmm at this commit")
    try:
        mkl = load_mkl()
    except (OSError, RuntimeError) as e:
        raise NotImplementedError(f"MKL cannot be used: {e}")
    if mkl is None:
        raise NotImplementedError("MKL not installed (pip install mkl)")
    return mkl


def installed(*names):
    """True when every name is installed, without importing or loading it:
    ``"mkl"`` is the MKL library (the peers' search path, no ``dlopen``),
    any other name an importable module."""
    for name in names:
        if name == "mkl":
            try:
                find_mkl = importlib.import_module(
                    "fastmm.bench._peers").find_mkl
            except (ImportError, AttributeError):   # older commits
                return False
            if find_mkl() is None:
                return False
        elif importlib.util.find_spec(name) is None:
            return False
    return True


def random_array(shape, dtype, seed=0):
    """Uniform [-1, 1) data, the same for a given (shape, dtype, seed).

    Generating writes every element, so the pages are touched before timing.
    """
    rng = np.random.default_rng([SEED, seed])
    return rng.uniform(-1.0, 1.0, shape).astype(dtype)


def best_times(funcs, repeats=6, sample=2e-3, settle=None):
    """Best seconds per call of each ``func()``, each timed in blocks of its own.

    The same method as fastmm/bench/_harness.py's, kept here, not imported:
    asv measures old commits too, whose fastmm may lack it or time otherwise.

    Each sample loops one function for ~``sample`` seconds; two rounds of
    blocks, so load that drifts hits both alike.  Not interleaved call by
    call: OpenBLAS's and libgomp's idle workers spin for up to ~0.1 s after
    a call and, on a machine with few cores, take the cores the other
    library's threads need (16 ms instead of 0.1 ms for a 256^2 product).
    ``settle`` seconds of sleep before each block (default: 0.15 when
    fastmm runs more than one thread) let the other pool park first.
    """
    if settle is None:
        multi = fastmm is not None and hasattr(fastmm, "get_num_threads") \
            and fastmm.get_num_threads() > 1
        settle = 0.15 if multi else 0.0
    inner = [0] * len(funcs)
    best = [math.inf] * len(funcs)
    for samples in (repeats - repeats // 2, repeats // 2):
        for i, func in enumerate(funcs):
            time.sleep(settle)
            func()
            if not inner[i]:
                t0 = time.perf_counter()
                func()
                once = time.perf_counter() - t0
                inner[i] = max(1, int(sample / max(once, 1e-9)))
                best[i] = once
            for _ in range(samples):
                t0 = time.perf_counter()
                for _ in range(inner[i]):
                    func()
                best[i] = min(best[i], (time.perf_counter() - t0) / inner[i])
    return best


def check_close(got, want, k, a, b, who="fastmm"):
    """AssertionError unless ``who``'s ``got`` is within the k*eps bound.

    A benchmark whose answer is wrong must fail, not report a speed.
    """
    eps = np.finfo(want.dtype).eps
    bound = 2 * k * eps * np.matmul(np.abs(a), np.abs(b)) + np.finfo(want.dtype).tiny
    err = np.abs(np.asarray(got, np.float64) - want)
    if not (np.all(np.isfinite(got)) and np.all(err <= bound)):
        raise AssertionError(f"{who}'s result differs from numpy's beyond "
                             "the k*eps bound")


def settle_pools(threads):
    """After setup's calls, let idle BLAS/OpenMP workers park before timing
    starts (see best_times): a spinning pool steals the second core."""
    if threads > 1:
        time.sleep(0.15)


class Product:
    """Base of every fastmm-vs-numpy benchmark: pinned threads, both ops.

    It defines no benchmarks itself; subclasses add one-line ``time_*``
    methods calling ``fastmm_op`` / ``numpy_op`` and ``track_*`` methods
    returning ``fastmm_gflops()`` / ``speedup()``.
    """
    timeout = 180

    def prepare(self, fastmm_op, numpy_op, flops, threads, check=None):
        """Pin threads, run both ops once (warm-up), then, with
        ``check=(a, b, fastmm_out, numpy_out)``, verify fastmm's output
        against numpy's within the k*eps bound of a @ b."""
        self.pin(threads)
        self.fastmm_op, self.numpy_op, self.flops = fastmm_op, numpy_op, flops
        fastmm_op()
        numpy_op()
        if check is not None:
            a, b, got, want = check
            check_close(got, want, a.shape[-1], a, b)
        settle_pools(threads)

    def prepare_mkl(self, mkl, a, b, out, want, threads):
        """After ``prepare``: MKL pinned to ``threads`` too, its call writing
        a @ b into ``out`` made and run once, and ``out`` checked against
        numpy's ``want`` like fastmm's."""
        self._mkl, self._mkl_saved = mkl, mkl.get_num_threads()
        mkl.set_num_threads(threads)
        self.mkl_op = mkl.prepare(a, b, out)
        self.mkl_op()
        check_close(out, want, a.shape[-1], a, b, who="MKL")
        settle_pools(threads)

    def pin(self, threads):
        """fastmm and numpy's BLAS both to ``threads`` until teardown."""
        if threads > _cpu_count():
            raise NotImplementedError(f"{threads} threads > CPUs available")
        self._saved_threads = None
        self._blas_limits = None
        if hasattr(fastmm, "set_num_threads"):
            self._saved_threads = fastmm.get_num_threads()
            fastmm.set_num_threads(threads)
        elif threads != 1:
            raise NotImplementedError("no fastmm.set_num_threads at this commit")
        if threadpool_limits is not None:
            self._blas_limits = threadpool_limits(threads, user_api="blas")

    def teardown(self, *params):
        # the reverse of setup: threadpoolctl's "blas" limit reached MKL too
        if getattr(self, "_mkl", None) is not None:
            self._mkl.set_num_threads(self._mkl_saved)
        if getattr(self, "_blas_limits", None) is not None:
            self._blas_limits.restore_original_limits()
        if getattr(self, "_saved_threads", None) is not None:
            fastmm.set_num_threads(self._saved_threads)

    def fastmm_gflops(self):
        return rounded(self.flops / best_times([self.fastmm_op])[0] / 1e9)

    def speedup(self):
        """numpy's time / fastmm's time, measured back to back."""
        t_numpy, t_fastmm = best_times([self.numpy_op, self.fastmm_op])
        return rounded(t_numpy / t_fastmm)

    def mkl_gflops(self):
        return rounded(self.flops / best_times([self.mkl_op])[0] / 1e9)

    def speedup_mkl(self):
        """MKL's time / fastmm's time, measured back to back."""
        t_mkl, t_fastmm = best_times([self.mkl_op, self.fastmm_op])
        return rounded(t_mkl / t_fastmm)
