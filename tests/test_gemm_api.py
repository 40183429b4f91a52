"""fastmm.gemm follows scipy.linalg.blas.?gemm: C := alpha*op(A)*op(B) + beta*C."""
import numpy as np
import pytest
from numpy.testing import assert_allclose

import fastmm
from conftest import assert_close, assert_ran, forced_threads, random, reference

blas = pytest.importorskip("scipy.linalg.blas")

DTYPES = [np.float32, np.float64]


def scipy_gemm(dtype):
    return blas.sgemm if dtype == np.float32 else blas.dgemm


def op(x, trans):
    return x.T if trans else x


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a", [0, 1, 2])
@pytest.mark.parametrize("trans_b", [0, 1, 2])
def test_same_as_scipy(kernel, dtype, trans_a, trans_b):
    m, n, k = 17, 13, 21
    a = random((k, m) if trans_a else (m, k), dtype, 1)
    b = random((n, k) if trans_b else (k, n), dtype, 2)
    c0 = random((m, n), dtype, 3)
    ref_ab = reference(op(a, trans_a), op(b, trans_b))
    for alpha, beta in [(1.0, 0.0), (0.5, 1.0), (-2.0, -0.5), (1.0, 1.0), (3.0, 0.0)]:
        want = scipy_gemm(dtype)(alpha, a, b, beta, c0.copy(), trans_a, trans_b)
        got = fastmm.gemm(alpha, a, b, beta, c0, trans_a=trans_a, trans_b=trans_b)
        assert got.dtype == want.dtype == dtype and got.shape == want.shape
        ref = alpha * ref_ab + beta * np.asarray(c0, np.longdouble)
        assert_close(got, ref, op(a, trans_a), op(b, trans_b), alpha, beta, c0)
        assert_close(want, ref, op(a, trans_a), op(b, trans_b), alpha, beta, c0)
    # no c: alpha * op(A) @ op(B) whatever beta says
    got = fastmm.gemm(2.0, a, b, trans_a=trans_a, trans_b=trans_b)
    want = scipy_gemm(dtype)(2.0, a, b, trans_a=trans_a, trans_b=trans_b)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert_close(got, 2 * ref_ab, op(a, trans_a), op(b, trans_b), alpha=2.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_beta_zero_never_reads_c(dtype):
    a = random((40, 30), dtype, 1)
    b = random((30, 50), dtype, 2)
    ref = reference(a, b)
    for order in "CF":
        for overwrite in (False, True):
            c = np.full((40, 50), np.nan, dtype, order=order)
            got = fastmm.gemm(1.0, a, b, 0.0, c, overwrite_c=overwrite)
            assert not np.isnan(got).any()
            assert_close(got, ref, a, b)
            c[...] = np.inf
            got = fastmm.gemm(1.0, a, b, 0.0, c, overwrite_c=overwrite)
            assert_close(got, ref, a, b)
    # the packed driver on two threads, with edge tiles
    a = random((301, 257), dtype, 3)
    b = random((257, 203), dtype, 4)
    with forced_threads(2) as seen:
        c = np.full((301, 203), np.nan, dtype)
        got = fastmm.gemm(1.0, a, b, 0.0, c, overwrite_c=True)
    assert_ran(seen, "packed", 2)
    assert got is c
    assert_close(c, reference(a, b), a, b)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(6, 5, 4), (300, 280, 260)],
                         ids=["unpacked", "packed"])
def test_alpha_zero_never_reads_a_b(dtype, shape):
    # BLAS: alpha == 0 means A and B are not read, so NaN and Inf there cannot
    # reach C.  The rule itself is tested; some BLAS builds (OpenBLAS's
    # Skylake-X and Zen kernels among them) read A anyway and return NaN.
    m, k, n = shape
    a = np.full((m, k), np.nan, dtype)
    b = np.full((k, n), np.inf, dtype)
    c0 = random((m, n), dtype, 3)
    got = fastmm.gemm(0.0, a, b, 0.5, c0)
    assert np.array_equal(got, (0.5 * c0).astype(dtype))
    assert np.array_equal(fastmm.gemm(0.0, a, b, 0.0, c0), np.zeros((m, n), dtype))
    assert np.array_equal(fastmm.gemm(0.0, a, b), np.zeros((m, n), dtype))
    assert np.array_equal(fastmm.gemm(0.0, a, b, 1.0, c0), c0)
    assert np.array_equal(fastmm.gemm(-0.0, a.T, b.T, 2.0, c0, trans_a=True,
                                      trans_b=True), 2 * c0)


@pytest.mark.parametrize("name, value", [
    ("beta", np.ones(4)), ("alpha", np.ones((2, 2))), ("beta", [1.0]),
    ("alpha", 1j), ("beta", np.complex64(2)), ("alpha", "2"), ("beta", None),
])
def test_alpha_beta_must_be_real_scalars(name, value):
    a = random((4, 3), np.float64)
    b = random((3, 4), np.float64)
    args = {"alpha": 1.0, "beta": 0.5, name: value}
    with pytest.raises(TypeError, match=f"{name} must be a real scalar"):
        fastmm.gemm(args["alpha"], a, b, args["beta"], np.ones((4, 4)))


def test_alpha_beta_accept_numpy_and_0d_scalars():
    a = random((4, 3), np.float64)
    b = random((3, 4), np.float64)
    c = random((4, 4), np.float64, 2)
    want = fastmm.gemm(2.0, a, b, 0.5, c)
    for alpha, beta in [(np.float32(2), np.float64(0.5)), (np.array(2.0), np.array(0.5)),
                        (2, np.int64(1) / 2), (True + 1, 0.5)]:
        assert np.array_equal(fastmm.gemm(alpha, a, b, beta, c), want)


@pytest.mark.parametrize("dtype", DTYPES)
def test_k_zero_and_empty(dtype):
    c0 = random((3, 4), dtype, 1)
    got = fastmm.gemm(1.0, np.empty((3, 0), dtype), np.empty((0, 4), dtype), 2.0, c0)
    assert np.array_equal(got, (2 * c0).astype(dtype))
    got = fastmm.gemm(1.0, np.empty((3, 0), dtype), np.empty((0, 4), dtype))
    assert got.shape == (3, 4) and got.dtype == dtype and (got == 0).all()
    got = fastmm.gemm(1.0, np.empty((0, 5), dtype), np.ones((5, 4), dtype))
    assert got.shape == (0, 4) and got.dtype == dtype
    got = fastmm.gemm(1.0, np.ones((3, 5), dtype), np.ones((5, 0), dtype))
    assert got.shape == (3, 0) and got.dtype == dtype


@pytest.mark.parametrize("dtype", DTYPES)
def test_overwrite_c(dtype):
    a = random((9, 7), dtype, 1)
    b = random((7, 8), dtype, 2)
    c0 = random((9, 8), dtype, 3)
    ref = 1.5 * reference(a, b) - 0.5 * np.asarray(c0, np.longdouble)

    def views():
        yield "C", c0.copy()
        yield "F", np.asfortranarray(c0)
        big = np.zeros((18, 24), dtype)
        v = big[::2, ::3]
        v[...] = c0
        yield "strided", v
        w = np.zeros((9, 8), dtype)[::-1]
        w[...] = c0
        yield "negative", w

    for name, c in views():
        got = fastmm.gemm(1.5, a, b, -0.5, c, overwrite_c=True)
        assert got is c, name
        assert_close(c, ref, a, b, 1.5, -0.5, c0)
    for name, c in views():
        got = fastmm.gemm(1.5, a, b, -0.5, c, overwrite_c=False)
        assert got is not c and not np.shares_memory(got, c), name
        assert np.array_equal(c, c0), name      # untouched
        assert_close(got, ref, a, b, 1.5, -0.5, c0)
    # scipy updates a Fortran-ordered c of its dtype in place too
    f = np.asfortranarray(c0)
    assert scipy_gemm(dtype)(1.5, a, b, -0.5, f, overwrite_c=True) is f

    # not suitable: read-only, another dtype, a list, a broadcast view
    ro = c0.copy()
    ro.flags.writeable = False
    got = fastmm.gemm(1.5, a, b, -0.5, ro, overwrite_c=True)
    assert got is not ro and np.array_equal(ro, c0)
    assert_close(got, ref, a, b, 1.5, -0.5, c0)
    ci = c0.astype(np.int64)
    got = fastmm.gemm(1.5, a, b, -0.5, ci, overwrite_c=True)
    assert got is not ci and np.array_equal(ci, c0.astype(np.int64))
    got = fastmm.gemm(1.0, a, b, 1.0, c0.tolist(), overwrite_c=True)
    assert isinstance(got, np.ndarray)
    row = np.zeros(8, dtype)
    bc = np.broadcast_to(row, (9, 8))
    got = fastmm.gemm(1.0, a, b, 1.0, bc, overwrite_c=True)
    assert got is not bc and (row == 0).all()
    assert_close(got, reference(a, b), a, b)


@pytest.mark.parametrize("dtype", DTYPES)
def test_c_overlapping_inputs(dtype):
    # k past KC, so C is written while parts of A or B are still unread
    from fastmm.driver import _context
    k = _context.kernel_info()[np.dtype(dtype).name]["KC"] + 5
    a = random((20, k), dtype, 1)
    b = random((k, k), dtype, 2)
    ref = 2 * reference(a, b) + np.asarray(a, np.longdouble)
    x = a.copy()
    assert fastmm.gemm(2.0, x, b, 1.0, x, overwrite_c=True) is x
    assert_close(x, ref, a, b, 2.0, 1.0, a)
    x = a.copy()
    got = fastmm.gemm(2.0, x.T, b, 1.0, x, trans_a=True, overwrite_c=True)
    assert got is x
    assert_close(x, ref, a, b, 2.0, 1.0, a)
    y0 = random((k, 8), dtype, 3)
    y = y0.copy()
    ref = 2 * reference(b, y0) + np.asarray(y0, np.longdouble)
    assert fastmm.gemm(2.0, b, y, 1.0, y, overwrite_c=True) is y
    assert_close(y, ref, b, y0, 2.0, 1.0, y0)
    y = y0.copy()
    got = fastmm.gemm(2.0, b, y, 0.0, y, overwrite_c=True)
    assert got is y
    assert_close(y, 2 * reference(b, y0), b, y0, 2.0)


def test_result_dtype():
    f32 = random((3, 4), np.float32)
    f64 = random((4, 2), np.float64)
    assert fastmm.gemm(1.0, f32, f32.T).dtype == np.float32
    assert fastmm.gemm(1.0, f32, f64).dtype == np.float64
    assert fastmm.gemm(1.0, f32, f32.T, 1.0, np.zeros((3, 3))).dtype == np.float64
    assert fastmm.gemm(1.0, f32, f32.T, 1.0, np.zeros((3, 3), np.float32)).dtype \
        == np.float32
    got = fastmm.gemm(1.0, [[1, 2]], [[3], [4]])
    assert got.dtype == np.float64 and got.tolist() == [[11.0]]
    assert fastmm.gemm(1.0, f32.astype(np.int8), f32.T.astype(np.float16)).dtype \
        == np.float32
    assert np.array_equal(fastmm.gemm(1.0, [[True]], [[True]]), [[1.0]])


def test_operands_off_the_fast_paths():
    """gemm decides dtypes, scalars and C's shape without numpy calls for
    float32/float64 ndarrays and Python floats and ints; everything else
    (byte-swapped arrays, subclasses, lists, numpy scalars, ints past 2**53)
    takes the general rules, with the same answers."""
    rng = np.random.default_rng(3)
    a = rng.standard_normal((3, 4)).astype(np.float32)
    b = rng.standard_normal((4, 5)).astype(np.float32)
    c = rng.standard_normal((3, 5))
    ref = a.astype(np.float64) @ b.astype(np.float64)
    swapped = a.astype(a.dtype.newbyteorder())
    got = fastmm.gemm(1.0, swapped, b)
    assert got.dtype == np.float32 and got.dtype.isnative
    assert_allclose(got, ref, rtol=1e-5)
    got = fastmm.gemm(1.0, a, b, 0.5, c.astype(c.dtype.newbyteorder()))
    assert got.dtype == np.float64 and got.dtype.isnative
    assert_allclose(got, ref + 0.5 * c, rtol=1e-5)
    got = fastmm.gemm(1.0, a, b, 0.5, c.tolist())
    assert got.dtype == np.float64
    assert_allclose(got, ref + 0.5 * c, rtol=1e-5)
    class Sub(np.ndarray):
        pass
    got = fastmm.gemm(1.0, a.view(Sub), b.view(Sub), 2, c.view(Sub))
    assert type(got) is np.ndarray and got.dtype == np.float64
    assert_allclose(got, ref + 2 * c, rtol=1e-5)
    with pytest.raises(ValueError, match=r"c has shape \(15,\)"):
        fastmm.gemm(1.0, a, b, 1.0, c.ravel().view(Sub))
    big = 2**60
    got = fastmm.gemm(big, a, b, True, c.astype(np.float32))
    assert got.dtype == np.float32
    assert_allclose(got, float(big) * ref + c, rtol=1e-5)
    with pytest.raises(TypeError, match="alpha must be a real scalar"):
        fastmm.gemm(2**1100, a, b)


def test_errors():
    a = np.ones((2, 3))
    for bad_a, bad_b in [(np.ones(3), a.T), (a, np.ones(3)), (np.ones((1, 2, 3)), a.T),
                         (np.float64(1), a)]:
        with pytest.raises(ValueError):
            fastmm.gemm(1.0, bad_a, bad_b)
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 3\)"):
        fastmm.gemm(1.0, a, a)
    with pytest.raises(ValueError, match=r"\(3, 3\)"):
        fastmm.gemm(1.0, a, a.T, 1.0, np.ones((3, 3)))
    with pytest.raises(TypeError):
        fastmm.gemm(1.0, a.astype(complex), a.T)
    with pytest.raises(TypeError):
        fastmm.gemm(1.0, a.astype(object), a.T)
    with pytest.raises(TypeError):
        fastmm.gemm(1.0, a, a.T, 1.0, np.ones((2, 2), complex))
    with pytest.raises(TypeError):
        fastmm.gemm(None, a, a.T)
    with pytest.raises((TypeError, ValueError)):     # scipy: ValueError
        fastmm.gemm("x", a, a.T)


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_in_c_propagates_when_beta_nonzero(dtype):
    a = random((5, 4), dtype, 1)
    b = random((4, 3), dtype, 2)
    c = random((5, 3), dtype, 3)
    c[2, 1] = np.nan
    got = fastmm.gemm(1.0, a, b, 0.5, c)
    want = scipy_gemm(dtype)(1.0, a, b, 0.5, c.copy())
    assert np.array_equal(np.isnan(got), np.isnan(want))
    assert np.isnan(got).sum() == 1
