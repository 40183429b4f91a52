"""The GEMM driver's correctness: every kernel, layout, size class and thread count.

Each result is checked against a long double product within the k * eps *
(|A| @ |B|) bound (conftest.assert_close); exact identities and NaN/Inf
patterns are checked exactly.
"""
import mmap
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st, HealthCheck

import fastmm
from fastmm.driver import _context, _packed, _threads
from fastmm import _linalg
from conftest import (assert_close, assert_ran, forced_threads, layouts,
                      out_layouts, random, reference, select_kernel,
                      small_mnk)

DTYPES = [np.float32, np.float64]


def blocks(dtype):
    return _context.kernel_info()["float32" if dtype == np.float32 else "float64"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_identity_is_exact(kernel, dtype):
    # A @ I == A and I @ B == B bit for bit: one nonzero term per element
    a = random((37, 23), dtype, 1)
    eye = np.eye(23, dtype=dtype)
    assert np.array_equal(fastmm.matmul(a, eye), a)
    assert np.array_equal(fastmm.matmul(eye, a.T), a.T)
    out = np.full((23, 37), np.nan, dtype, order="F")
    assert np.array_equal(fastmm.matmul(eye, a.T, out=out), a.T)


def _sizes(dtype):
    """A sparse sample of 0..600: 1, primes, and one either side of the
    micro-tile and cache-block edges of the current kernel."""
    b = blocks(dtype)
    mr, nr, kc = b["MR"], b["NR"], b["KC"]
    return [
        (1, 1, 1), (1, 600, 1), (600, 1, 7), (2, 3, 600), (3, 2, 1),
        (mr - 1 or 1, nr + 1, 5), (mr + 1, nr - 1, 13), (2 * mr, 2 * nr, 31),
        (mr * 3 + 1, nr * 2 + 3, kc - 1), (17, 19, kc), (13, 11, kc + 1),
        (7, 29, 2 * kc + 3), (97, 101, 103), (127, 131, 67), (257, 31, 263),
        (599, 5, 3), (5, 601, 4), (211, 223, 227),
        (2, b["NC"] + 3, 3), (b["MC"] + 1, 3, 2), (5, b["NC"] + 1, kc + 2),
        (7, 9, 4001), (4001, 3, 5), (1, 1, 3001),    # deep, tall, long dot
    ]


@pytest.mark.parametrize("dtype", DTYPES)
def test_sizes(kernel, nthreads, dtype):
    for i, (m, n, k) in enumerate(_sizes(dtype)):
        a = random((m, k), dtype, i)
        b = random((k, n), dtype, i + 100)
        c = fastmm.matmul(a, b)
        assert c.dtype == dtype and c.shape == (m, n)
        assert_close(c, reference(a, b), a, b)


@pytest.mark.parametrize("dtype", DTYPES)
def test_layouts(kernel, dtype):
    m, n, k = 23, 19, 29
    a0 = random((m, k), dtype, 1)
    b0 = random((k, n), dtype, 2)
    ref = reference(a0, b0)
    for la, a in layouts(a0):
        for lb, b in layouts(b0):
            c = fastmm.matmul(a, b)
            assert_close(c, ref, a0, b0)
        for lo, out in out_layouts((m, n), dtype):
            res = fastmm.matmul(a, b0, out=out)
            assert res is out, (la, lo)
            assert_close(out, ref, a0, b0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_out_strides_leave_gaps_untouched(dtype):
    # writing through a strided out must touch exactly its elements
    a = random((9, 7), dtype, 1)
    b = random((7, 5), dtype, 2)
    big = np.full((20, 17), -7.0, dtype)
    out = big[1:19:2, 2:17:3]
    fastmm.matmul(a, b, out=out)
    assert_close(out, reference(a, b), a, b)
    mask = np.ones(big.shape, bool)
    mask[1:19:2, 2:17:3] = False
    assert (big[mask] == -7.0).all()


@pytest.mark.parametrize("shape", [(4, 2000, 600), (600, 8, 600), (12, 1000, 400),
                                   (190, 170, 150)])
@pytest.mark.parametrize("nt", [1, 2, 3, 4])
def test_thread_grids(kernel, shape, nt):
    # shapes that make the driver split columns (one row strip), rows (one
    # column panel), or both, among nt threads; each has enough flops for 4
    # threads.  More threads than cores is legal and must stay correct.
    m, n, k = shape
    for dtype in DTYPES:
        a = random((m, k), dtype, 3)
        b = random((k, n), dtype, 4)
        with forced_threads(nt) as seen:
            c = fastmm.matmul(a, b)
            f = fastmm.matmul(a, np.asfortranarray(b),
                              out=np.empty((m, n), dtype, order="F"))
        route = _linalg.routing()
        unpacked = (m * n * k <= route["small_mnk"]
                    or m <= route["skinny_m"]
                    and (k <= 256 or k * n <= route["skinny_kn"])
                    or n <= route["narrow_n"])
        assert_ran(seen, "small" if unpacked else "packed", nt)
        # the packed driver itself, whatever matmul would route these to
        p = np.full((m, n), np.nan, dtype)
        with fastmm.threads(nt), _threads.record() as seen:
            _packed.run_packed(1.0, a, b, 0.0, p, nthreads=nt)
        assert_ran(seen, "packed", nt)
        ref = reference(a, b)
        assert_close(p, ref, a, b)
        assert_close(c, ref, a, b)
        assert_close(f, ref, a, b)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nt", [1, 2])
def test_packed_rows_over_several_a_blocks(dtype, nt):
    """m past MC: the rows go in A blocks of even size (one either side of
    each multiple of MC, and a remainder under one MR strip), through the
    packed driver itself, with the rows beside C left untouched."""
    b_ = blocks(dtype)
    mc, mr, nr = b_["MC"], b_["MR"], b_["NR"]
    for i, m in enumerate([mc + 1, 2 * mc - 1, 2 * mc + 1, 2 * mc + mr + 3]):
        n, k = nr + 3, 20
        a = random((m, k), dtype, 50 + i)
        b = random((k, n), dtype, 60 + i)
        big = np.full((m + 2, n), -3.0, dtype)
        with fastmm.threads(nt), _threads.record() as seen:
            _packed.run_packed(1.0, a, b, 0.0, big[1:-1], nthreads=nt)
        assert_ran(seen, "packed", nt)
        assert_close(big[1:-1], reference(a, b), a, b)
        assert (big[0] == -3.0).all() and (big[-1] == -3.0).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_stacks(nthreads, dtype):
    # many small products run one per thread; few large ones share threads;
    # length-1 and missing batch axes broadcast (zero batch strides)
    cases = [((64, 40, 40), (40, 40)), ((2, 150, 150), (150, 150)),
             ((3, 1, 5, 9), (4, 9, 7)), ((2, 3, 4, 3, 5), (5, 2)),
             ((5, 6), (2, 3, 6, 4)), ((1, 7, 3), (5, 1, 3, 2))]
    for i, (sa, sb) in enumerate(cases):
        a = random(sa, dtype, i)
        b = random(sb, dtype, i + 50)
        c = fastmm.matmul(a, b)
        assert c.dtype == dtype
        assert_close(c, reference(a, b), a, b)
        # the same with a broadcast_to view (explicit zero strides)
        shape = np.broadcast_shapes(sa[:-2], sb[:-2]) + sb[-2:]
        bb = np.broadcast_to(b, shape)
        assert_close(fastmm.matmul(a, bb), reference(a, b), a, b)
        # and through a transposed, non-contiguous stack
        at = random(sa[:-2] + sa[-2:][::-1], dtype, i + 9).swapaxes(-1, -2)
        assert_close(fastmm.matmul(at, b), reference(at, b), at, b)


@pytest.mark.parametrize("dtype", DTYPES)
def test_vectors(dtype):
    a = random((31, 17), dtype, 1)
    v = random(17, dtype, 2)
    w = random(31, dtype, 3)
    assert_close(fastmm.matmul(a, v), reference(a, v), a, v)
    assert_close(fastmm.matmul(w, a), reference(w, a), w, a)
    s = fastmm.matmul(v, v)
    assert type(s) is type(np.matmul(v, v)) and np.ndim(s) == 0
    assert_close(np.asarray(s), reference(v, v), v, v)
    stack = random((4, 31, 17), dtype, 4)
    assert_close(fastmm.matmul(stack, v), reference(stack, v), stack, v)
    assert_close(fastmm.matmul(v[::-2], a[::-1][:9]), reference(v[::-2], a[::-1][:9]),
                 v[::-2], a[::-1][:9])


@pytest.mark.parametrize("dtype", DTYPES)
def test_mixed_precision(dtype):
    other = np.float64 if dtype == np.float32 else np.float32
    a = random((13, 11), dtype, 1)
    b = random((11, 7), other, 2)
    c = fastmm.matmul(a, b)
    assert c.dtype == np.float64
    assert_close(c, reference(a, b), a, b)


@pytest.mark.parametrize("dtype", DTYPES)
def test_k_zero_and_empty(kernel, dtype):
    a = np.empty((5, 0), dtype)
    b = np.empty((0, 3), dtype)
    c = fastmm.matmul(a, b)
    assert c.dtype == dtype and c.shape == (5, 3) and (c == 0).all()
    out = np.full((5, 3), np.nan, dtype)
    assert fastmm.matmul(a, b, out=out) is out and (out == 0).all()
    assert fastmm.matmul(np.empty(0, dtype), np.empty(0, dtype)) == 0
    for sa, sb, sc in [((0, 4), (4, 3), (0, 3)), ((4, 5), (5, 0), (4, 0)),
                       ((0, 0), (0, 0), (0, 0)), ((2, 0, 4), (4, 3), (2, 0, 3)),
                       ((0, 2, 3), (3, 4), (0, 2, 4)), ((0,), (0, 3), (3,))]:
        c = fastmm.matmul(np.ones(sa, dtype), np.ones(sb, dtype))
        assert c.shape == sc and c.dtype == dtype
        assert np.array_equal(c, np.matmul(np.ones(sa, dtype), np.ones(sb, dtype)))


def _classify(x):
    x = np.asarray(x)
    return np.isnan(x), np.isposinf(x), np.isneginf(x)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_inf_propagate(kernel, dtype):
    # a zero in B facing an Inf or NaN in A still yields NaN (no skipping)
    m, n, k = 13, 21, 9
    a = random((m, k), dtype, 1)
    b = random((k, n), dtype, 2)
    a[0, 3] = np.inf
    b[3, :5] = 0            # inf * 0 = NaN
    b[3, 5:] = np.abs(b[3, 5:]) + 1
    a[1, :] = 0
    b[0, 7] = np.nan        # 0 * NaN = NaN for the whole column 7
    a[2, 4] = -np.inf
    a[3, 4] = np.inf
    a[3, 5] = -np.inf       # +inf + -inf = NaN where both terms are finite-signed
    b[4, 9] = b[5, 9] = 1.0
    exact = (np.asarray(a, np.longdouble)[:, :, None]
             * np.asarray(b, np.longdouble)[None, :, :]).sum(axis=1)
    for lb, bv in list(layouts(b))[:3]:
        c = fastmm.matmul(a, bv)
        for got, want, dot in zip(_classify(c), _classify(exact), _classify(np.dot(a, b))):
            assert np.array_equal(got, want), lb
            assert np.array_equal(got, dot), lb
        fin = np.isfinite(exact)
        assert np.allclose(c[fin], exact[fin].astype(dtype), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", DTYPES)
def test_overlapping_out(dtype, nthreads):
    # k past KC: the driver writes C after the first k block, while later
    # blocks of the operands are still unread, so aliasing must be handled
    k = blocks(dtype)["KC"] + 7
    a = random((20, k), dtype, 1)
    b = random((k, k), dtype, 2)
    ref = reference(a, b)
    x = a.copy()
    assert fastmm.matmul(x, b, out=x) is x
    assert_close(x, ref, a, b)
    sq = random((k, k), dtype, 3)
    y0 = random((k, 8), dtype, 4)
    y = y0.copy()
    assert fastmm.matmul(sq, y, out=y) is y
    assert_close(y, reference(sq, y0), sq, y0)
    # out is a transposed view of an input, and a shifted window of one
    w = a.copy()
    assert fastmm.matmul(sq, w.T, out=w.T).base is w
    assert_close(w.T, reference(sq, a.T), sq, a.T)
    buf = np.zeros((21, k), dtype)
    buf[:20] = a
    fastmm.matmul(buf[:20], b, out=buf[1:])
    assert_close(buf[1:], ref, a, b)


def test_repeat_is_bitwise_identical(nthreads):
    for dtype in DTYPES:
        a = random((203, 171), dtype, 1)
        b = random((171, 229), dtype, 2)
        first = fastmm.matmul(a, b)
        for _ in range(3):
            assert np.array_equal(fastmm.matmul(a, b).view(np.uint8),
                                  first.view(np.uint8))


def test_result_independent_of_thread_count():
    # the driver promises every element is computed in one fixed order
    for dtype in DTYPES:
        a = random((203, 171), dtype, 1)
        b = random((171, 229), dtype, 2)
        with forced_threads(1) as seen:
            one = fastmm.matmul(a, b)
        assert_ran(seen, "packed", 1)
        for nt in (2, 3, 4):
            with forced_threads(nt) as seen:
                assert np.array_equal(fastmm.matmul(a, b), one)
            assert_ran(seen, "packed", nt)


# ---- 64-bit index arithmetic ------------------------------------------------

BIG = 2 ** 31 + 3          # elements: past what a 32-bit index can address


@pytest.mark.parametrize("dtype", DTYPES)
def test_strides_past_2_31_elements(dtype, tmp_path):
    # Operands and outputs whose strides and offsets exceed 2**31 elements,
    # laid over one sparse file mapping: only the touched pages exist, so the
    # test needs a few MiB of memory and disk however large the span.
    from numpy.lib.stride_tricks import as_strided
    item = np.dtype(dtype).itemsize
    nbytes = (BIG + 4096) * item
    path = tmp_path / "sparse.bin"
    try:
        with open(path, "wb") as f:
            f.truncate(nbytes)
        with open(path, "r+b") as f:
            mem = mmap.mmap(f.fileno(), nbytes)
    except (OSError, OverflowError, ValueError) as e:
        pytest.skip(f"cannot map {nbytes} bytes: {e}")
    buf = np.frombuffer(mem, dtype)
    m, n, k = 2, 2, 5
    a0 = random((m, k), dtype, 1)
    b0 = random((k, n), dtype, 2)
    ref = reference(a0, b0)
    # regions interleave but never overlap: offsets 0, 500, 700, 2000, 3000
    a = as_strided(buf, (m, k), (BIG * item, item))
    a[...] = a0
    b = as_strided(buf[3000:], (k, n), (item, BIG * item))
    b[...] = b0
    assert_close(fastmm.matmul(a, b), ref, a0, b0)
    assert_close(fastmm.matmul(b.T, a.T), ref.T, b0.T, a0.T)
    out = as_strided(buf[500:], (m, n), (BIG * item, item))
    assert fastmm.matmul(a, b, out=out) is out
    assert_close(out.copy(), ref, a0, b0)
    outf = as_strided(buf[700:], (m, n), (item, BIG * item))   # C^T path
    assert fastmm.matmul(a, b, out=outf) is outf
    assert_close(outf.copy(), ref, a0, b0)
    stack = as_strided(buf[2000:], (2, m, k), (BIG * item, k * item, item))
    stack[...] = a0
    assert_close(fastmm.matmul(stack, b), reference(stack.copy(), b0),
                 stack.copy(), b0)
    c = fastmm.gemm(0.5, a, b.T, 0.0, None, trans_b=True)
    assert_close(c, 0.5 * ref, a0, b0, alpha=0.5)


# ---- hypothesis ---------------------------------------------------------------

def _view(draw, x):
    """x (2-D) re-laid out as drawn: order, transposition, strides, offset."""
    m, n = x.shape
    sm = draw(st.sampled_from([1, 2, 3]))
    sn = draw(st.sampled_from([1, 2]))
    rev_m = draw(st.booleans())
    rev_n = draw(st.booleans())
    order = draw(st.sampled_from(["C", "F"]))
    off = draw(st.integers(0, 2))
    base = np.zeros((m * sm + off, n * sn + off), x.dtype, order=order)
    v = base[off:, off:][::sm, ::sn][:m, :n]
    if rev_m:
        v = v[::-1]
    if rev_n:
        v = v[:, ::-1]
    v[...] = x
    return v


@st.composite
def products(draw):
    dtype = draw(st.sampled_from(DTYPES))
    m = draw(st.integers(0, 40))
    n = draw(st.integers(0, 40))
    k = draw(st.integers(0, 40))
    seed = draw(st.integers(0, 2 ** 16))
    a = _view(draw, random((m, k), dtype, seed))
    b = _view(draw, random((k, n), dtype, seed + 1))
    out = None
    if draw(st.booleans()):
        out = _view(draw, np.full((m, n), np.nan, dtype))
    return a, b, out


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(products(), st.sampled_from(_context.available_kernels()))
def test_hypothesis_matmul(case, kname):
    a, b, out = case
    select_kernel(kname)
    try:
        ref = reference(a, b)
        c = fastmm.matmul(a, b, out=out)
        if out is not None:
            assert c is out
        assert c.dtype == a.dtype
        assert_close(c, ref, a, b)
    finally:
        select_kernel(None)


@settings(max_examples=100, deadline=None)
@given(products(), st.floats(-2, 2, width=32), st.sampled_from([0.0, 1.0, -0.5]),
       st.booleans(), st.booleans())
def test_hypothesis_gemm(case, alpha, beta, trans_a, trans_b):
    a, b, c0 = case
    if c0 is not None and beta != 0:
        c0[...] = random(c0.shape, c0.dtype, 7)
    a_in = a.T if trans_a else a        # op(a_in) == a
    b_in = b.T if trans_b else b
    c = fastmm.gemm(alpha, a_in, b_in, beta, c0, trans_a=trans_a, trans_b=trans_b)
    assert c.shape == (a.shape[0], b.shape[1]) and c.dtype == a.dtype
    ref = alpha * reference(a, b)
    if c0 is not None and beta != 0:
        ref = ref + beta * np.asarray(c0, np.longdouble)
    assert_close(c, ref, a, b, alpha=alpha, beta=beta, c0=c0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_subnormals_are_kept(kernel, dtype):
    # no flush-to-zero / denormals-are-zero: a subnormal times 1 stays
    tiny = np.finfo(dtype).smallest_subnormal * 3
    a = np.eye(20, dtype=dtype) * tiny
    b = np.ones((20, 17), dtype)
    c = fastmm.matmul(a, b)
    assert np.array_equal(c, np.full((20, 17), tiny, dtype))
    assert np.array_equal(fastmm.matmul(b.T, a), np.full((17, 20), tiny, dtype))


def test_kernel_selection():
    names = _context.available_kernels()
    assert names and names[-1] == "generic"
    assert set(names) <= set(_context.compiled_kernels())
    assert _context.kernel_info()["name"] == names[0]        # best by default
    with pytest.warns(RuntimeWarning, match="unknown kernel"):
        assert _context.select_kernel("no-such-kernel") == names[0]
    _context.select_kernel(None)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, FASTMM_KERNEL="generic", PYTHONPATH=root)
    out = subprocess.run([sys.executable, "-c",
                          "from fastmm.driver import _context; print(_context.kernel_info()['name'])"],
                         env=env, cwd=root, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "generic"


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_in_threaded_product(dtype):
    a = random((190, 170), dtype, 1)
    b = random((170, 150), dtype, 2)
    a[100, 3] = np.nan
    a[:, 5:7] = np.abs(a[:, 5:7]) + 0.5
    b[5, 140] = np.inf
    b[6, 140] = -np.inf        # column 140: inf - inf = NaN in every row
    with forced_threads(2) as seen, small_mnk(128 ** 3):
        c = fastmm.matmul(a, b)
    assert_ran(seen, "packed", 2)
    want = np.isnan(np.dot(a.astype(np.float64), b.astype(np.float64)))
    assert np.array_equal(np.isnan(c), want)
    assert want[100].all() and want[:, 140].all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_batched_and_vector_layouts(dtype):
    # negative batch strides, permuted out axes, strided 1-D operands and outs
    a = random((4, 5, 6), dtype, 1)[::-1]
    b = random((4, 6, 3), dtype, 2)[:, ::-1]
    out = np.full((3, 5, 4), np.nan, dtype).transpose(2, 1, 0)
    assert fastmm.matmul(a, b, out=out) is out
    assert_close(out, reference(a, b), a, b)
    v = random(12, dtype, 3)[::-2]
    m = random((5, 6), dtype, 4)
    o = np.full(10, np.nan, dtype)[::-2]
    assert fastmm.matmul(m, v, out=o) is o
    assert_close(o, reference(m, v), m, v)
    w = random(5, dtype, 5)
    o = np.full(12, np.nan, dtype)[1::2]
    assert fastmm.matmul(w, m, out=o) is o
    assert_close(o, reference(w, m), w, m)
    o = np.full((4, 5, 2), np.nan, dtype)[..., 0]
    assert fastmm.matmul(a, v, out=o) is o
    assert_close(o, reference(a, v), a, v)
    u = random(6, dtype, 6)
    o = np.full((4, 3), np.nan, dtype, order="F")
    assert fastmm.matmul(u, b, out=o) is o
    assert_close(o, reference(u, b), u, b)
    # out is a window of the left operand of a stack
    x = random((4, 6, 7), dtype, 7)
    x0 = x.copy()
    sq = random((4, 6, 6), dtype, 8)
    fastmm.matmul(x[..., :6], sq, out=x[..., 1:])
    assert_close(x[..., 1:], reference(x0[..., :6], sq), x0[..., :6], sq)


@pytest.mark.parametrize("m,k,n,path", [
    (32, 1024, 1024, "packed"),   # deep and large B: the packed driver
    (8, 1024, 300, "packed"),     # ... however few the rows
    (64, 300, 1024, "packed"),
    (32, 256, 4096, "small"),     # one unpacked B panel deep
    (64, 512, 512, "small"),      # B of skinny_kn elements
    (65, 60, 60, "small"),        # m*n*k <= small_mnk, whatever B
])
def test_skinny_products_route_by_the_depth_and_size_of_b(m, k, n, path):
    # m <= skinny_m took the unpacked path whatever B was: 1.2-2x slower
    # than the packed driver once B outgrew the unpacked path's panels
    _linalg.set_routing(64 ** 3, 64, 16, 16, 512 * 512)
    try:
        for dtype in DTYPES:
            a = random((m, k), dtype, 1)
            b = random((k, n), dtype, 2)
            with fastmm.threads(1), _threads.record() as seen:
                c = fastmm.matmul(a, b)
            assert_ran(seen, path, 1)
            assert_close(c, reference(a, b), a, b)
    finally:
        fastmm.config.apply()


@pytest.mark.parametrize("nt", [1, 2, 3, 4])
def test_packed_short_m_chunks(kernel, nt):
    # m <= MC with n >= short_n: each thread packs its own chunks of B (no
    # shared panel, no barrier).  Forced on for every shape here (short_n =
    # 1) and compared with the shared-panel loops (short_n huge; on one
    # thread: more threads take the chunks whatever short_n) and the
    # reference: k over two KC blocks (beta = 1 on the second), m and n off
    # the tile edges, fewer column panels than threads, a strided and a
    # column-major B, beta != 0, and the fused bias + activation write-back.
    # m = None: MC + 7 rows, past MC yet still one A block (up to 2 MC).
    shapes = [(5, 1100, 70), (37, 600, 200), (1, 40, 9), (13, 33, 31),
              (None, 600, 40)]
    saved = _packed.short_n()
    try:
        for m_, k, n in shapes:
            for dtype in DTYPES:
                m = m_ or blocks(dtype)["MC"] + 7
                a = random((m, k), dtype, m)
                b = random((k, 2 * n), dtype, n)[:, ::2]
                c0 = random((m, n), dtype, k)
                got = {}
                for mode in (1, 1 << 30):
                    _packed.set_short_n(mode)
                    # strided, column-major, and row-major B packed with the
                    # row prefetch (any stride, 3 rows ahead: past the end
                    # of k's short blocks too)
                    for i, (bb, pf) in enumerate(((b, 0), (
                            np.asfortranarray(b), 0), (b.copy(), 3))):
                        _packed.set_pack_prefetch(pf, 0)
                        p = c0.copy()
                        with fastmm.threads(nt), _threads.record() as seen:
                            _packed.run_packed(1.5, a, bb, 0.5, p, nthreads=nt)
                        assert_ran(seen, "packed", nt)
                        got[mode, i] = p
                ref = 1.5 * reference(a, b) + 0.5 * c0
                for p in got.values():
                    assert_close(p, ref, a, b)
        # the fused write-back on the packed path
        x = random((20, 300), np.float32, 1)
        w = random((300, 70), np.float32, 2)
        bias = random((70,), np.float32, 3)
        _packed.set_short_n(1)
        _linalg.set_routing(0, 0, 0, 0, 0)
        with forced_threads(nt) as seen:
            y = fastmm.nn.linear(x, w, bias, activation="relu")
        assert_ran(seen, "packed", nt)
        want = np.maximum(reference(x, w) + bias, 0)
        assert_close(y, want, x, w)
    finally:
        _packed.set_short_n(saved)
        fastmm.config.apply()


def test_pack_prefetch_setting():
    # the config row's pack_prefetch is what the packed driver runs with
    row = fastmm.config.current()["row"]
    assert _packed.pack_prefetch() == tuple(row.pack_prefetch)
    for bad in ((-1, 0), (65, 0), (4, -1)):
        with pytest.raises(ValueError, match="prefetch"):
            _packed.set_pack_prefetch(*bad)
    assert _packed.pack_prefetch() == tuple(row.pack_prefetch)


@pytest.mark.parametrize("nt", [1, 2])
def test_packed_short_last_strip_is_split(kernel, nt):
    # A kernel family with split_rows > 0 (AVX2: 2) runs a last strip of at
    # most that many rows together with the full strip before it as two
    # halves on the edge-row kernel (6 + 1 -> 4 + 3, 6 + 2 -> 4 + 4).  The
    # strips must tile the block exactly, and the products with m = MR q + r
    # must match the reference for row- and column-major A, a strided C,
    # beta != 0, k over two KC blocks, and any thread count, bit for bit.
    for dtype in DTYPES:
        info = blocks(dtype)
        mr, split = info["MR"], info["split_rows"]
        for mc in range(1, 4 * mr + 1):
            parts = _packed.strips(mc, dtype)
            tops = [t for t, _ in parts]
            assert tops == sorted(tops) and tops[0] == 0
            assert all(t + h == t2 for (t, h), (t2, _) in zip(parts, parts[1:]))
            assert parts[-1][0] + parts[-1][1] == mc
            assert all(0 < h <= mr for _, h in parts)
            last = mc - (len(parts) - 1) * mr
            if split and len(parts) >= 2 and last <= split:
                whole = mr + last
                assert [h for _, h in parts[-2:]] == [(whole + 1) // 2,
                                                      whole // 2]
            else:
                assert [h for _, h in parts[:-1]] == [mr] * (len(parts) - 1)
        if kernel == "avx2":
            assert split == 2
        k = info["KC"] + 9
        for q in (1, 2, 3):
            for r in range(1, max(split, 1) + 1):
                m = q * mr + r
                a = random((m, k), dtype, m)
                b = random((k, 37), dtype, q)
                c0 = random((m, 37), dtype, r)
                ref = 1.5 * reference(a, b) + 0.5 * c0
                results = []
                for aa in (a, np.asfortranarray(a)):
                    for strided in (False, True):
                        big = np.zeros((m, 2 * 37), dtype)
                        p = big[:, ::2] if strided else c0.copy()
                        p[...] = c0
                        with _threads.record() as seen:
                            _packed.run_packed(1.5, aa, b, 0.5, p,
                                               nthreads=nt)
                        assert_ran(seen, "packed", nt)
                        assert_close(p, ref, a, b)
                        if strided:
                            assert not big[:, 1::2].any()
                        results.append(p.copy())
                for p in results[1:]:
                    assert np.array_equal(p, results[0])
