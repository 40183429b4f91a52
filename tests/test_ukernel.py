"""Every micro-kernel against the contract in fastmm/kernels/ukernel.h.

Each test runs once per kernel family this CPU supports and per dtype, calling
the kernel directly (fastmm.driver._context.run_ukernel) on packed panels, or through
fastmm.matmul with that family selected for the edge tiles the driver builds.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastmm
from fastmm.driver import _context, _packed

KERNELS = _context.available_kernels()
DTYPES = [np.float32, np.float64]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(params=KERNELS)
def kernel_name(request):
    """Select one kernel family for the test; restore the default afterwards."""
    assert _context.select_kernel(request.param) == request.param
    try:
        yield request.param
    finally:
        _context.select_kernel(None)


@pytest.fixture(params=DTYPES, ids=["float32", "float64"])
def dtype(request):
    return np.dtype(request.param)


def tile_shape(dtype):
    """(MR, NR) of the selected kernel family for dtype."""
    info = _context.kernel_info()["float32" if dtype == np.float32 else "float64"]
    return info["MR"], info["NR"]


def run(name, alpha, a, b, beta, c):
    """C := alpha * A @ B + beta * C through the kernel; A is MR x k, B k x NR."""
    a_packed = np.ascontiguousarray(a.T)    # a_packed[p, i] = A[i, p]
    b_packed = np.ascontiguousarray(b)      # b_packed[p, j] = B[p, j]
    return _context.run_ukernel(name, a.shape[1], alpha, a_packed, b_packed,
                             beta, c)


def random(shape, dtype, seed):
    g = np.random.default_rng(seed)
    x = g.uniform(-1, 1, shape) * np.exp2(g.integers(-4, 4, shape))
    return x.astype(dtype)


def assert_within_bound(c, a, b, alpha=1.0, beta=0.0, c0=None):
    """|C - (alpha A B + beta C0)| <= (k + 2) eps (|alpha| |A||B| + |beta| |C0|)."""
    dtype = c.dtype
    k = a.shape[1]
    a64, b64 = a.astype(np.longdouble), b.astype(np.longdouble)
    ref = alpha * (a64 @ b64)
    bound = abs(alpha) * (np.abs(a64) @ np.abs(b64))
    if beta != 0:
        ref = ref + beta * c0.astype(np.longdouble)
        bound = bound + abs(beta) * np.abs(c0.astype(np.longdouble))
    bound = (k + 2) * np.finfo(dtype).eps * bound + np.finfo(dtype).tiny
    err = np.abs(c.astype(np.longdouble) - ref)
    assert np.all(err <= bound), f"max excess {np.max(err - bound)}"


# ---- the kernel alone, on packed panels ---------------------------------

def test_edge_row_kernels(kernel_name, dtype):
    # the last strip of an A block with fewer than MR rows: the edge-row
    # kernel reads the MR-row panel layout but reads and writes only the
    # first `rows` rows of C (the driver hands it C itself)
    mr, nr = tile_shape(dtype)
    if not _context.has_edge_rows(kernel_name, dtype.name):
        with pytest.raises(ValueError, match="no edge-row kernel"):
            _context.run_ukernel(kernel_name, 1, 1, np.zeros((1, mr), dtype),
                                np.zeros((1, nr), dtype), 0,
                                np.zeros((mr, nr), dtype), rows=1)
        pytest.skip(f"{kernel_name} has no edge-row kernel")
    k = 70                     # past the kernel's C prefetch point (64)
    a = random((mr, k), dtype, 1)
    b = random((k, nr), dtype, 2)
    for rows in range(1, mr + 1):
        for beta in (0.0, -0.5):
            c0 = random((mr, nr), dtype, 3)
            c = c0.copy()
            if beta == 0:
                c[:rows] = np.nan          # never read when beta == 0
            _context.run_ukernel(kernel_name, k, 1.5, np.ascontiguousarray(a.T),
                                b, beta, c, rows=rows)
            assert_within_bound(c[:rows], a[:rows], b, 1.5, beta, c0[:rows])
            np.testing.assert_array_equal(c[rows:], c0[rows:])
    with pytest.raises(ValueError, match="rows"):
        _context.run_ukernel(kernel_name, k, 1, np.ascontiguousarray(a.T), b,
                            0, c, rows=mr + 1)


def test_identity_products(kernel_name, dtype):
    mr, nr = tile_shape(dtype)
    for k in (mr, nr):
        a = random((mr, k), dtype, 1)
        b = random((k, nr), dtype, 2)
        c = np.empty((mr, nr), dtype)
        if k == nr:     # A · I == A, exactly: every other term is a zero
            eye = np.eye(nr, dtype=dtype)
            np.testing.assert_array_equal(run(kernel_name, 1, a, eye, 0, c), a)
        if k == mr:     # I · B == B
            eye = np.eye(mr, dtype=dtype)
            np.testing.assert_array_equal(run(kernel_name, 1, eye, b, 0, c), b)


@pytest.mark.parametrize("k", [1, 2, 7, 64, 255, 700])
def test_random_panels(kernel_name, dtype, k):
    mr, nr = tile_shape(dtype)
    a = random((mr, k), dtype, k)
    b = random((k, nr), dtype, k + 1)
    c = run(kernel_name, 1, a, b, 0, np.empty((mr, nr), dtype))
    assert_within_bound(c, a, b)


@pytest.mark.parametrize("alpha", [1.0, -0.5, 3.25])
@pytest.mark.parametrize("beta", [0.0, 1.0, -1.0, 0.375])
def test_alpha_beta(kernel_name, dtype, alpha, beta):
    mr, nr = tile_shape(dtype)
    k = 33
    a = random((mr, k), dtype, 3)
    b = random((k, nr), dtype, 4)
    c0 = random((mr, nr), dtype, 5)
    c = run(kernel_name, alpha, a, b, beta, c0.copy())
    assert_within_bound(c, a, b, alpha, beta, c0)


def test_row_stride_of_c(kernel_name, dtype):
    """C is a tile of a wider matrix: only its MR x NR window changes."""
    mr, nr = tile_shape(dtype)
    k = 9
    a = random((mr, k), dtype, 6)
    b = random((k, nr), dtype, 7)
    big = random((mr + 2, nr + 5), dtype, 8)
    before = big.copy()
    window = big[1:mr + 1, 2:nr + 2]
    run(kernel_name, 1, a, b, 1, window)
    assert_within_bound(window, a, b, 1, 1, before[1:mr + 1, 2:nr + 2])
    outside = np.ones(big.shape, bool)
    outside[1:mr + 1, 2:nr + 2] = False
    np.testing.assert_array_equal(big[outside], before[outside])


@pytest.mark.parametrize("fill", [np.nan, np.inf, -np.inf])
def test_beta_zero_does_not_read_c(kernel_name, dtype, fill):
    mr, nr = tile_shape(dtype)
    k = 5
    a = random((mr, k), dtype, 9)
    b = random((k, nr), dtype, 10)
    c = run(kernel_name, 2.0, a, b, 0.0, np.full((mr, nr), fill, dtype))
    assert np.isfinite(c).all()
    assert_within_bound(c, a, b, alpha=2.0)


def elementwise_reference(a, b):
    """A @ B with every product formed (no zero skipping), as numpy.dot does."""
    with np.errstate(invalid="ignore", over="ignore"):
        return (a.astype(np.float64)[:, :, None] * b.astype(np.float64)).sum(1)


@pytest.mark.parametrize("case", ["nan_in_a", "inf_in_a_times_zero",
                                  "inf_in_b", "inf_minus_inf", "nan_in_b"])
def test_nan_inf_propagate(kernel_name, dtype, case):
    mr, nr = tile_shape(dtype)
    k = 6
    a = np.abs(random((mr, k), dtype, 11)) + 0.5    # positive: signs predictable
    b = np.abs(random((k, nr), dtype, 12)) + 0.5
    if case == "nan_in_a":
        a[1, 2] = np.nan
    elif case == "inf_in_a_times_zero":
        a[2, 3] = np.inf
        b[3, ::2] = 0           # inf * 0 is NaN: the kernel must not skip zeros
    elif case == "inf_in_b":
        b[4, nr - 1] = np.inf
    elif case == "inf_minus_inf":
        a[0, 0] = np.inf
        a[0, 1] = -np.inf
    else:
        b[0, 3] = np.nan
    c = run(kernel_name, 1, a, b, 0, np.zeros((mr, nr), dtype))
    ref = elementwise_reference(a, b)
    np.testing.assert_array_equal(np.isnan(c), np.isnan(ref))
    np.testing.assert_array_equal(np.isinf(c), np.isinf(ref))
    np.testing.assert_array_equal(np.sign(c[np.isinf(c)]),
                                  np.sign(ref[np.isinf(ref)]))
    finite = np.isfinite(ref)
    assert (np.isnan(ref) | np.isinf(ref)).any()
    np.testing.assert_allclose(c[finite], ref[finite],
                               rtol=k * np.finfo(dtype).eps * 4)


def test_run_ukernel_rejects_bad_shapes(dtype):
    name = KERNELS[0]
    with pytest.raises(ValueError):
        _context.run_ukernel(name, 4, 1, np.zeros((4, 3), dtype),
                          np.zeros((4, 3), dtype), 0, np.zeros((3, 3), dtype))


# ---- the kernel inside the driver: every edge-tile shape -----------------

def test_edge_tiles_through_matmul(kernel_name, dtype):
    """Every m <= MR, n <= NR, alone and as the ragged edge of a larger C."""
    mr, nr = tile_shape(dtype)
    k = 19
    a_full = random((2 * mr + mr, k), dtype, 13)
    b_full = random((k, 2 * nr + nr), dtype, 14)
    for m in range(1, mr + 1):
        for n in range(1, nr + 1):
            for mm, nn in ((m, n), (2 * mr + m, 2 * nr + n)):
                a, b = a_full[:mm], b_full[:, :nn]
                c = fastmm.matmul(a, b)
                assert c.shape == (mm, nn)
                assert_within_bound(c, a, b)


def test_edge_tiles_across_k_blocks(kernel_name, dtype):
    """Edge tiles accumulate correctly over several KC blocks (beta = 1 path)."""
    mr, nr = tile_shape(dtype)
    kc = _context.kernel_info()["float32" if dtype == np.float32 else "float64"]["KC"]
    k = 2 * kc + 3
    for m, n in ((3 * mr + 1, 5 * nr + nr - 1), (4 * mr, 4 * nr), (mr - 1, 1)):
        a = random((m, k), dtype, m)
        b = random((k, n), dtype, n)
        out = np.full((m, n), np.nan, dtype)
        c = fastmm.matmul(a, b, out=out)
        assert c is out
        assert_within_bound(c, a, b)
        # column-major C takes the transposed route through the kernels
        out_f = np.full((m, n), np.nan, dtype, order="F")
        assert_within_bound(fastmm.matmul(a, b, out=out_f), a, b)


def _layouts(x):
    """Copies of x: C order, Fortran order, a reversed strided view."""
    yield np.array(x, order="C")
    yield np.array(x, order="F")
    big = np.zeros((2 * x.shape[0], 2 * x.shape[1]), x.dtype)
    view = big[::-2, ::-2]
    view[...] = x
    yield view


@pytest.mark.parametrize("nthreads", [1, 2])
def test_edge_tiles_through_the_packed_driver(kernel_name, dtype, nthreads):
    """Ragged m, n and k around MR, NR and KC, every packing path (row- and
    column-major A and B, strided), C in either order, straight into the
    packed driver whatever matmul's routing would pick."""
    mr, nr = tile_shape(dtype)
    kc = _context.kernel_info()["float32" if dtype == np.float32 else "float64"]["KC"]
    shapes = [(1, 1, 1), (mr - 1, 3, nr + 1), (mr + 1, kc + 1, 2 * nr - 1),
              (3 * mr + 5, 5, nr), (2 * mr, 2 * kc + 7, 3 * nr + 3)]
    for m, k, n in shapes:
        a0 = random((m, k), dtype, m + k)
        b0 = random((k, n), dtype, k + n)
        c0 = random((m, n), dtype, m + n)
        for alpha, beta in ((1.0, 0.0), (-2.0, 0.5)):
            for a, b, c in zip(_layouts(a0), _layouts(b0), _layouts(c0)):
                if beta == 0:
                    c[...] = np.nan     # must not be read
                _packed.run_packed(alpha, a, b, beta, c, nthreads)
                assert_within_bound(c, a0, b0, alpha, beta, c0)


@pytest.mark.parametrize("nthreads", [1, 2])
def test_edge_rows_write_only_inside_c(kernel_name, dtype, nthreads):
    """Every strip height below MR, with whole NR-column panels: the driver
    hands the edge-row kernel C itself (no private tile), so the rows just
    past C's last one, in the same buffer, must stay as they were."""
    mr, nr = tile_shape(dtype)
    n, k = 2 * nr, 37
    for r in range(1, mr):
        m = mr + r
        a = random((m, k), dtype, r)
        b = random((k, n), dtype, r + 1)
        big = random((m + mr + 2, n), dtype, r + 2)
        before = big.copy()
        c = big[1:m + 1]
        _packed.run_packed(-1.5, a, b, 0.5, c, nthreads)
        assert_within_bound(c, a, b, -1.5, 0.5, before[1:m + 1])
        np.testing.assert_array_equal(big[0], before[0])
        np.testing.assert_array_equal(big[m + 1:], before[m + 1:])


# ---- choosing a kernel ----------------------------------------------------

def _import_with_kernel(value):
    env = dict(os.environ, FASTMM_KERNEL=value,
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    code = ("import warnings, fastmm\n"
            "from fastmm.driver import _context\n"
            "print(_context.kernel_info()['name'])\n")
    return subprocess.run([sys.executable, "-W", "always", "-c", code], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def _unsupported_kernels():
    return [k for k in _context.compiled_kernels() if k not in KERNELS]


@pytest.mark.parametrize("value", ["no-such-kernel"] + _unsupported_kernels())
def test_unavailable_kernel_falls_back_with_warning(value):
    proc = _import_with_kernel(value)
    assert proc.returncode == 0, proc.stderr
    assert "RuntimeWarning" in proc.stderr and repr(value) in proc.stderr
    assert proc.stdout.strip() == KERNELS[0]


def test_kernel_env_picks_a_supported_kernel():
    proc = _import_with_kernel(KERNELS[-1])
    assert proc.returncode == 0, proc.stderr
    assert "RuntimeWarning" not in proc.stderr
    assert proc.stdout.strip() == KERNELS[-1]


def test_select_kernel_warns_and_falls_back():
    try:
        with pytest.warns(RuntimeWarning, match="unavailable"):
            assert _context.select_kernel("no-such-kernel") == KERNELS[0]
    finally:
        _context.select_kernel(None)


# ---- streaming kernels: the same arithmetic, panels prefetched ahead -----

STREAMING = [(name, dt) for name in KERNELS for dt in ("float32", "float64")
             if _context.has_stream(name, dt)]


@pytest.mark.skipif(not STREAMING, reason="no streaming kernel runs here")
@pytest.mark.parametrize("name,dt", STREAMING)
def test_streaming_kernels_give_the_plain_kernels_bits(name, dt):
    # the prefetches may not change a single FMA: every k around the
    # prefetch distance and the C prefetch point, every beta path
    dtype = np.dtype(dt)
    mr, nr = _context.kernel_shapes(name)[dt]
    for k in (1, 2, 7, 23, 24, 25, 63, 64, 65, 129, 700):
        a = np.ascontiguousarray(random((mr, k), dtype, k).T)
        b = random((k, nr), dtype, k + 1)
        for alpha, beta in ((1.0, 0.0), (-0.5, 1.0), (2.0, 0.375)):
            c0 = random((mr, nr), dtype, 3)
            plain = c0.copy()
            stream = c0.copy()
            if beta == 0:
                plain[:] = stream[:] = np.nan      # never read
            _context.run_ukernel(name, k, alpha, a, b, beta, plain)
            _context.run_ukernel(name, k, alpha, a, b, beta, stream,
                                 stream=True)
            np.testing.assert_array_equal(stream, plain)
            assert_within_bound(stream, np.ascontiguousarray(a.T), b, alpha,
                                beta, c0)


def test_streaming_kernel_requests_are_checked(dtype):
    for name in KERNELS:
        mr, nr = _context.kernel_shapes(name)[dtype.name]
        args = (1, 1, np.zeros((1, mr), dtype), np.zeros((1, nr), dtype), 0,
                np.zeros((mr, nr), dtype))
        if not _context.has_stream(name, dtype.name):
            with pytest.raises(ValueError, match="no streaming kernel"):
                _context.run_ukernel(name, *args, stream=True)
        with pytest.raises(ValueError,
                           match="no streaming kernel for edge rows"):
            _context.run_ukernel(name, *args, rows=1, stream=True)
