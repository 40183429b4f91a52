"""Shared fixtures and the accuracy oracle for fastmm's tests.

The oracle: a product computed in long double, and the classical forward
error bound of a length-k dot product, |C - C_ref| <= k * eps * (|A| @ |B|)
(elementwise; eps of the result dtype), which every correct summation order
satisfies and a wrong element, a missed k block or a stale tile violates.
"""
import contextlib

import numpy as np
import pytest

import fastmm
from fastmm.driver import _context, _threads


def select_kernel(name):
    """Use kernel family ``name`` (None: the default) on every path; the
    unpacked small-product path must follow the packed one."""
    chosen = _context.select_kernel(name)
    from fastmm.driver import _unpacked
    assert _unpacked.small_kernel() == chosen
    return chosen


# The tests' shapes were chosen on either side of the unpacked path's m*n*k
# limit as the rows measured so far set it (128^3 .. 192^3); a row that keeps
# larger products unpacked (sapphirerapids: 256^3) would send shapes meant for
# the packed driver elsewhere.  Tests of the configuration itself see the
# row's own routing.
TEST_SMALL_MNK_CAP = 192 ** 3
ROW_ROUTING_MODULES = ("test_config", "test_tune")


@pytest.fixture(autouse=True)
def _routing_cap(request):
    if request.module.__name__.rsplit(".", 1)[-1] in ROW_ROUTING_MODULES:
        yield
        return
    from fastmm import _linalg
    with small_mnk(min(_linalg.routing()["small_mnk"], TEST_SMALL_MNK_CAP)):
        yield


@pytest.fixture(params=_context.available_kernels())
def kernel(request):
    """Run the test once per kernel family this CPU supports."""
    name = select_kernel(request.param)
    assert name == request.param
    try:
        yield name
    finally:
        select_kernel(None)


@pytest.fixture(params=[1, 2], ids=lambda n: f"threads{n}")
def nthreads(request):
    """Run the test with fastmm limited to 1 and to 2 threads."""
    with fastmm.threads(request.param):
        yield request.param


@contextlib.contextmanager
def forced_threads(n):
    """fastmm uses n threads for every product of this Python thread inside
    the block, however small (the thresholds that keep small products serial
    are off).  Yields the dict _threads.record fills: path -> largest team."""
    with fastmm.threads(n), _threads.parallel_threshold(0), \
            _threads.record() as seen:
        yield seen


def assert_ran(seen, path, n):
    """The recorded path (or one of a tuple of paths) ran with exactly n
    threads (1 in a serial build)."""
    want = n if _threads.HAVE_OPENMP else 1
    paths = path if isinstance(path, tuple) else (path,)
    assert any(seen.get(p) == want for p in paths), (
        f"expected the {path!r} path on {want} threads, recorded {seen}")


@pytest.fixture(scope="session")
def mkl():
    """The MKL peer of fastmm's benchmarks (fastmm/bench/_peers.py), or a skip."""
    from fastmm.bench import _peers
    peer = _peers.load_mkl()
    if peer is None:
        pytest.skip("MKL not installed (pip install 'fastmm[mkl]')")
    return peer


def rng(seed=0):
    return np.random.default_rng(seed)


def random(shape, dtype, seed=0):
    """Values in [-1, 1) with a spread of magnitudes, as dtype."""
    g = rng(seed)
    x = g.uniform(-1.0, 1.0, size=shape) * np.exp2(g.integers(-3, 3, size=shape))
    return x.astype(dtype)


def reference(a, b):
    """a @ b with np.matmul's shape rules, far more accurate than the result:
    in float64 for float32 data (its k * eps64 error is invisible at float32's
    eps), in long double otherwise."""
    a, b = np.asarray(a), np.asarray(b)
    if np.result_type(a, b) == np.float32:
        return np.matmul(a.astype(np.float64), b.astype(np.float64))
    return np.matmul(np.asarray(a, np.longdouble), np.asarray(b, np.longdouble))


def error_bound(a, b, k=None):
    """k * (|A| @ |B|), to be multiplied by eps (float64 is ample for a bound)."""
    a = np.abs(np.asarray(a, np.float64))
    b = np.abs(np.asarray(b, np.float64))
    if k is None:
        k = a.shape[-1]
    return max(k, 1) * np.matmul(a, b)


def assert_close(c, ref, a, b, alpha=1.0, beta=0.0, c0=None, dtype=None):
    """c == alpha * a @ b + beta * c0 within k * eps * (|alpha||A||B| + |beta||C0|).

    ``ref`` is the exact-ish value (long double) to compare with.  The bound
    uses the eps of c's dtype (or ``dtype``), plus 2 for the alpha/beta
    roundings, so it holds for every summation order and any FMA use.
    """
    c = np.asarray(c)
    dtype = np.dtype(dtype or c.dtype)
    eps = np.finfo(dtype).eps
    k = np.shape(a)[-1]
    bound = abs(alpha) * error_bound(a, b, k + 2)
    if c0 is not None and beta != 0:
        bound = bound + (k + 2) * abs(beta) * np.abs(np.asarray(c0, np.longdouble))
    bound = eps * bound + np.finfo(dtype).tiny
    assert c.shape == np.shape(ref), (c.shape, np.shape(ref))
    err = np.abs(np.asarray(c, np.longdouble) - np.asarray(ref, np.longdouble))
    bad = ~(err <= bound)     # NaN counts as bad
    if bad.any():
        idx = tuple(np.argwhere(bad)[0])
        pytest.fail(f"{bad.sum()} of {bad.size} elements out of bound; first at "
                    f"{idx}: got {c[idx]!r}, expected {ref[idx]!r}, "
                    f"bound {bound[idx]!r}")


def layouts(x):
    """Views of the same values as x (2-D) in many memory layouts.

    Yields (name, view) with view == x elementwise: C order, Fortran order,
    a transposed view, negative strides, a non-contiguous slice of a larger
    array, an odd element offset.
    """
    m, n = x.shape
    yield "C", np.ascontiguousarray(x)
    yield "F", np.asfortranarray(x)
    yield "T", np.ascontiguousarray(x.T).T
    big = np.zeros((m + 3, n + 2), x.dtype)
    big[:m, :n] = x[::-1, ::-1]
    yield "negative", big[:m, :n][::-1, ::-1]
    big = np.zeros((2 * m + 1, 3 * n + 1), x.dtype)
    big[1::2, 1::3][:m, :n] = x
    yield "strided", big[1::2, 1::3][:m, :n]
    flat = np.zeros(m * n + 1, x.dtype)
    off = flat[1:].reshape(m, n)    # starts one element into its buffer
    off[...] = x
    yield "offset", off
    buf = np.zeros(m * n * x.itemsize + 1, np.uint8)
    unaligned = buf[1:].view(x.dtype).reshape(m, n)   # not itemsize-aligned
    unaligned[...] = x
    yield "unaligned", unaligned


def out_layouts(shape, dtype):
    """Uninitialised-looking (NaN-filled) output arrays of ``shape`` in several layouts."""
    m, n = shape
    yield "C", np.full((m, n), np.nan, dtype)
    yield "F", np.full((m, n), np.nan, dtype, order="F")
    big = np.full((m + 2, 2 * n + 1), np.nan, dtype)
    yield "strided", big[1:m + 1, ::2][:, :n]
    big = np.full((m, n), np.nan, dtype)
    yield "negative", big[::-1, ::-1]


@contextlib.contextmanager
def small_mnk(limit):
    """The unpacked path's m*n*k limit set to ``limit`` (other routing
    thresholds kept), for tests whose shapes were chosen on either side of
    it, whatever this CPU's configuration row says; restored after."""
    from fastmm import _linalg
    saved = _linalg.routing()
    _linalg.set_routing(**dict(saved, small_mnk=limit))
    try:
        yield
    finally:
        _linalg.set_routing(**saved)
