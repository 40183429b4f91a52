"""Low-precision products (fastmm/_lowp_api.py on kernels/lowp.h) against
numpy, for every kernel family this CPU runs and 1 to 3 threads:

- int8/uint8 operands with ``dtype=np.int32``: equal to numpy's
  ``np.matmul(a, b, dtype=np.int32)`` bit for bit, wrapping modulo 2**32
  included;
- ml_dtypes.bfloat16 operands: within float32 accumulation error
  ((k + 2) * 2**-24 * |A| @ |B|) of the exact product of the bfloat16
  values, then rounded once to the result dtype;
- ``precision="bf16"`` on float32 operands: the same, of the operands
  rounded to bfloat16 (nearest even), hence within (k + 2) * 2**-8 * |A| @ |B|
  of the unrounded product;
- everything else: numpy's result, or numpy's exception.

Only the tests of ml_dtypes.bfloat16 operands need ml_dtypes.
"""
import functools

import numpy as np
import pytest

import fastmm
from fastmm.driver import _context
from fastmm import _lowp
from conftest import (assert_ran, forced_threads, layouts, random,
                      select_kernel)

I8, U8, I32, F32 = np.int8, np.uint8, np.int32, np.float32
INT_KINDS = [(I8, I8), (U8, I8), (I8, U8), (U8, U8)]
INT_IDS = ["s8s8", "u8s8", "s8u8", "u8u8"]
# MR x NR = 12 x 32; int8 k groups of 4 in blocks of 1024, bfloat16 k pairs
# in blocks of 512: shapes on both sides of each edge
MR, NR, I8_KC, BF_KC = 12, 32, 1024, 512
# the AVX2 bfloat16 kernel's wide panels (one element a lane) take k blocks
# of this many
BF_WIDE_KC = 384
SHAPES = [(1, 1, 1), (1, 5, 1), (MR, 4, NR), (MR - 1, 7, NR - 1),
          (MR + 1, 9, NR + 1), (2 * MR + 1, 3, 2 * NR + 1),
          (2 * MR, I8_KC, 2 * NR), (MR + 1, I8_KC + 3, NR + 1),
          (5, 2 * I8_KC + 1, 3), (0, 5, 3), (4, 0, 3), (3, 5, 0)]
BF_SHAPES = [(1, 1, 1), (MR, 2, NR), (MR - 1, 7, NR - 1), (MR + 1, 9, NR + 1),
             (2 * MR + 1, BF_KC, 2 * NR + 1), (MR + 1, BF_KC + 1, NR + 1),
             (5, 2 * BF_KC + 3, 3), (MR + 1, BF_WIDE_KC + 1, NR + 1),
             (7, 2 * BF_WIDE_KC, 40), (0, 5, 3), (4, 0, 3)]


def shape_id(s):
    return "x".join(map(str, s))


def ints(shape, dtype, seed=0):
    """Uniform over dtype's whole range (its extremes included)."""
    info = np.iinfo(dtype)
    g = np.random.default_rng(seed)
    return g.integers(info.min, info.max, size=shape, endpoint=True,
                      dtype=dtype)


def check_int(a, b, **kwargs):
    """fastmm.matmul(a, b, dtype=np.int32) is numpy's, bit for bit; returns it."""
    want = np.matmul(a, b, dtype=I32)
    got = fastmm.matmul(a, b, dtype=I32, **kwargs)
    assert type(got) is type(want)
    assert got.dtype == I32 and got.shape == want.shape
    np.testing.assert_array_equal(got, want, strict=True)
    return got


def assert_same_as_numpy(x1, x2, **kwargs):
    """fastmm.matmul gives numpy's result (type, dtype, shape, values) or
    raises numpy's exception type."""
    try:
        want = np.matmul(x1, x2, **kwargs)
    except Exception as e:                     # numpy's is the reference
        with pytest.raises(type(e)):
            fastmm.matmul(x1, x2, **kwargs)
        return
    got = fastmm.matmul(x1, x2, **kwargs)
    assert type(got) is type(want)
    assert got.dtype == want.dtype and np.shape(got) == np.shape(want)
    np.testing.assert_array_equal(got, want)


def round_bf16(x):
    """float32 x rounded to the nearest bfloat16 (ties to even), as float32:
    numpy alone, so precision="bf16" is checked without ml_dtypes."""
    u = np.ascontiguousarray(x, F32).view(np.uint32)
    r = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1)))
    r &= np.uint32(0xFFFF0000)
    return np.where(np.isnan(x), np.float32(np.nan), r.view(F32))


def check_bf16_product(c, a, b, out_rounding=0.0):
    """c == a @ b (a, b: exactly representable in bfloat16) within float32
    accumulation, (k + 2) * 2**-24 * |A| @ |B|, plus ``out_rounding`` times
    |a @ b| for a result rounded to a narrower type at the end."""
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    k = a64.shape[-1] if a64.ndim else 1
    ref = np.matmul(a64, b64)
    mag = np.matmul(np.abs(a64), np.abs(b64))
    bound = ((k + 2) * 2.0 ** -24 * (1 + out_rounding) * mag
             + out_rounding * np.abs(ref) + np.finfo(F32).tiny)
    err = np.abs(np.asarray(c, np.float64) - ref)
    bad = ~(err <= bound)
    assert not bad.any(), (f"{bad.sum()} of {bad.size} out of bound, worst "
                           f"{np.max(err / bound):.3g} x")


@pytest.fixture(params=[True, False], ids=["amx", "no-amx"])
def lowp_kernel(kernel, request):
    """The kernel fixture (every family this CPU runs) and the low-precision
    kernels that family must bring: AMX with avx512 where the CPU and OS run
    it, else VNNI/BF16 with avx512 where the CPU has them, AVX2 with avx512
    or avx2 where not, the portable ones with generic.  Where AMX would be
    chosen, once more with it refused (the AVX-512 kernels); elsewhere that
    run would repeat the first, and is skipped."""
    from fastmm._config import cpu_features
    amx_here = kernel == "avx512" and _lowp.amx_available()
    if not request.param and not amx_here:
        pytest.skip("AMX is not what this family would run here")
    _lowp.allow_amx(request.param, kernel)
    try:
        names = _lowp.lowp_kernels()
        feats = set(cpu_features())
        amx = amx_here and request.param
        vnni = kernel == "avx512" and "avx512_vnni" in feats
        bf16 = kernel == "avx512" and "avx512_bf16" in feats
        simd = "avx2" if kernel in ("avx512", "avx2") else "generic"
        assert names == {
            "int8": "amx-int8" if amx else "avx512-vnni" if vnni else simd,
            "bfloat16": "amx-bf16" if amx else "avx512-bf16" if bf16 else simd}
        yield names
    finally:
        _lowp.allow_amx(True, kernel)


# ---- int8 / uint8 -> int32 ----------------------------------------------------

@pytest.mark.parametrize("kinds", INT_KINDS, ids=INT_IDS)
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_int8_equals_numpy(lowp_kernel, kinds, shape):
    m, k, n = shape
    a, b = ints((m, k), kinds[0], 1), ints((k, n), kinds[1], 2)
    with forced_threads(1) as seen:
        check_int(a, b)
    if m and n and k:
        assert_ran(seen, "lowp", 1)


@pytest.mark.parametrize("kinds", INT_KINDS, ids=INT_IDS)
def test_int8_layouts(lowp_kernel, kinds):
    m, k, n = 13, I8_KC + 7, 35
    a, b = ints((m, k), kinds[0], 3), ints((k, n), kinds[1], 4)
    want = np.matmul(a, b, dtype=I32)
    for name, av in layouts(a):
        got = fastmm.matmul(av, b, dtype=I32)
        assert np.array_equal(got, want), f"A {name}"
    for name, bv in layouts(b):
        got = fastmm.matmul(a, bv, dtype=I32)
        assert np.array_equal(got, want), f"B {name}"
    got = fastmm.matmul(np.asfortranarray(a)[::-1], b[:, ::-1], dtype=I32)
    assert np.array_equal(got, want[::-1, ::-1])


@pytest.mark.parametrize("kinds", INT_KINDS, ids=INT_IDS)
@pytest.mark.parametrize("nt", [1, 2, 3])
@pytest.mark.parametrize("mkn", [(80, I8_KC + 5, 40), (5, 37, 200)],
                         ids=["rows", "columns"])
def test_int8_threads(lowp_kernel, kinds, nt, mkn):
    # 80 rows split by rows (>= 2 MR per thread); 5 rows by columns
    m, k, n = mkn
    a, b = ints((m, k), kinds[0], 5), ints((k, n), kinds[1], 6)
    with forced_threads(nt) as seen:
        check_int(a, b)
    assert_ran(seen, "lowp", nt)


BATCH_SHAPES = [((3, 1, 13, 40), (2, 40, 33)), ((2, 13, 40), (40, 33)),
                ((40,), (40, 33)), ((13, 40), (40,)), ((40,), (40,)),
                ((2, 13, 40), (40,)), ((40,), (3, 40, 5)),
                ((1, 13, 0), (4, 0, 3)), ((0, 3, 4), (4, 5))]


@pytest.mark.parametrize("kinds", INT_KINDS, ids=INT_IDS)
@pytest.mark.parametrize("shapes", BATCH_SHAPES,
                         ids=[f"{shape_id(a)}@{shape_id(b)}"
                              for a, b in BATCH_SHAPES])
def test_int8_stacks_broadcasting_vectors(kinds, shapes):
    a, b = ints(shapes[0], kinds[0], 7), ints(shapes[1], kinds[1], 8)
    with forced_threads(2):
        got = check_int(a, b)
    assert np.ndim(got) == np.ndim(np.matmul(a, b))


def int_outs(shape):
    """(name, out, base): int32 outputs of ``shape`` in several layouts,
    filled with a sentinel; ``base`` is the whole buffer."""
    m, n = shape
    fill = np.iinfo(I32).min + 7
    c = np.full((m, n), fill, I32)
    yield "C", c, c
    f = np.full((m, n), fill, I32, order="F")
    yield "F", f, f
    big = np.full((m + 3, 3 * n + 2), fill, I32)
    yield "strided", big[1:m + 1, 1::3][:, :n], big
    neg = np.full((m, n), fill, I32)
    yield "negative", neg[::-1, ::-1], neg


@pytest.mark.parametrize("kinds", INT_KINDS, ids=INT_IDS)
def test_int8_out(kinds):
    m, k, n = 14, 70, 37
    a, b = ints((m, k), kinds[0], 9), ints((k, n), kinds[1], 10)
    want = np.matmul(a, b, dtype=I32)
    for name, out, base in int_outs((m, n)):
        before = base.copy()
        with forced_threads(2) as seen:
            got = fastmm.matmul(a, b, out=out, dtype=I32)
        assert got is out, name
        assert np.array_equal(out, want), name
        assert_ran(seen, "lowp", 2)
        out[...] = before.flat[0]           # nothing else of base was written
        assert np.array_equal(base, before), name
    # positional out, and out as a 1-tuple, as np.matmul takes them
    out = np.empty((m, n), I32)
    assert fastmm.matmul(a, b, out, dtype=I32) is out
    assert np.array_equal(out, want)
    assert fastmm.matmul(a, b, out=(out,), dtype=I32) is out


@pytest.mark.parametrize("nt", [1, 2])
def test_edge_rows_write_only_inside_out(lowp_kernel, nt):
    # every strip height below MR over whole NR-column panels: the kernels
    # write C's first rows directly, so the rows after out's last one, in
    # the same buffer, must keep their values (int8, and bf16 via precision)
    k, n = 70, 2 * NR
    for r in range(1, MR):
        m = MR + r
        a, b = ints((m, k), I8, r), ints((k, n), I8, r + 1)
        base = np.full((m + MR + 1, n), -7, I32)
        out = base[1:m + 1]
        with forced_threads(nt) as seen:
            fastmm.matmul(a, b, out=out, dtype=I32)
        assert_ran(seen, "lowp", nt)
        np.testing.assert_array_equal(out, np.matmul(a, b, dtype=I32))
        assert (base[0] == -7).all() and (base[m + 1:] == -7).all()
        af, bf = random((m, 2 * k), F32, r), random((2 * k, n), F32, r + 1)
        fbase = np.full((m + MR + 1, n), 5.0, F32)
        fout = fbase[1:m + 1]
        with forced_threads(nt):
            fastmm.matmul(af, bf, out=fout, precision="bf16")
        check_bf16_product(fout, round_bf16(af), round_bf16(bf))
        assert (fbase[0] == 5).all() and (fbase[m + 1:] == 5).all()


def test_out_is_written_in_place():
    """An out= of the result's dtype receives the product directly: no
    temporary of its size is allocated and copied over it (numpy's arrays
    are traced by tracemalloc), for int8, bfloat16 precision and a 1-D
    operand."""
    import tracemalloc
    a, b = ints((64, 256), I8, 3), ints((256, 512), I8, 4)
    af, bf = random((64, 256), F32, 5), random((256, 512), F32, 6)
    cases = [(a, b, np.empty((64, 512), I32), dict(dtype=I32)),
             (af, bf, np.empty((64, 512), F32), dict(precision="bf16")),
             (a[0], ints((256, 8192), I8, 7), np.empty(8192, I32),
              dict(dtype=I32))]
    for x, y, out, kw in cases:
        want = fastmm.matmul(x, y, **kw)
        out[...] = 0
        tracemalloc.start()
        try:
            got = fastmm.matmul(x, y, out=out, **kw)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert got is out
        assert np.array_equal(out, want)
        assert peak < out.nbytes // 2, (kw, peak, out.nbytes)


@pytest.mark.parametrize("kinds", INT_KINDS, ids=INT_IDS)
def test_int8_out_overlapping_an_input(kinds):
    # out's bytes are A's (or B's): the result must be that of the inputs
    # as they were before the call
    m, k, n = 13, 36, 9                     # 4 * n == k: A fills out exactly
    buf = np.zeros((m, n), I32)
    a = buf.view(kinds[0])                  # (m, 4 n) = (m, k), same bytes
    a[...] = ints((m, k), kinds[0], 11)
    b = ints((k, n), kinds[1], 12)
    want = np.matmul(a.copy(), b, dtype=I32)
    assert fastmm.matmul(a, b, out=buf, dtype=I32) is buf
    assert np.array_equal(buf, want)
    # B inside out, with a step: out is (k, k/4) int32, B its bytes' view
    buf = np.zeros((k, k // 4), I32)
    b = buf.view(kinds[1])[:, :n]
    b[...] = ints((k, n), kinds[1], 13)
    a = ints((k, k), kinds[0], 14)
    want = np.matmul(a, b.copy(), dtype=I32)
    out = buf[:, :n]
    assert fastmm.matmul(a, b, out=out, dtype=I32) is out
    assert np.array_equal(out, want)


# ---- hypothesis: random shapes, strides and kernels ------------------------------

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402


@st.composite
def strided(draw, x):
    """x's values in a view with random steps, offset and reversals (C, F
    and transposed layouts: test_int8_layouts)."""
    m, n = x.shape
    sm, sn = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    off = draw(st.integers(0, 3))
    base = np.zeros((off + sm * m + 1, off + sn * n + 1), x.dtype)
    v = base[off:, off:][::sm, ::sn][:m, :n]
    if draw(st.booleans()):
        v = v[::-1]
    if draw(st.booleans()):
        v = v[:, ::-1]
    v[...] = x
    return v


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.integers(0, 40), st.integers(0, 40),
       st.sampled_from([0, 1, 3, 4, 5, 63, I8_KC - 1, I8_KC + 5]),
       st.sampled_from(range(len(INT_KINDS))),
       st.sampled_from(_context.available_kernels()), st.sampled_from([1, 2]))
def test_hypothesis_int8(data, m, n, k, kinds, kname, nt):
    ta, tb = INT_KINDS[kinds]
    a = data.draw(strided(ints((m, k), ta, m + 7 * n)))
    b = data.draw(strided(ints((k, n), tb, k + 5 * m)))
    out = data.draw(strided(np.zeros((m, n), I32))) if data.draw(
        st.booleans()) else None
    select_kernel(kname)
    try:
        with forced_threads(nt):
            got = fastmm.matmul(a, b, out=out, dtype=I32)
    finally:
        select_kernel(None)
    if out is not None:
        assert got is out
    assert got.dtype == I32
    assert np.array_equal(got, np.matmul(a, b, dtype=I32))


# k = 2**17 + 3 terms of at least 128 * 128 = 2**14 each: every sum passes
# 2**31 and wraps; 13 x 33 crosses the MR x NR tile on both sides, and
# k spans 129 k blocks whose partial sums wrap as well
WRAP_K = 2 ** 17 + 3
EXTREME = {I8: -128, U8: 255}


def test_int8_wraps_like_numpy():
    for ta, tb in INT_KINDS:
        x, y = EXTREME[ta], EXTREME[tb]
        a = np.full((2, WRAP_K), x, ta)
        b = np.full((WRAP_K, 3), y, tb)
        exact = WRAP_K * x * y                     # Python int: no overflow
        wrapped = (exact + 2 ** 31) % 2 ** 32 - 2 ** 31
        assert exact != wrapped
        assert np.all(np.matmul(a, b, dtype=I32) == wrapped)
        check_int(a, b)


@functools.lru_cache(maxsize=None)
def _wrapping_case(ta, tb):
    """Random operands near the extremes whose int32 sums all wrap, and their
    product modulo 2**32 (numpy's int32 matmul, as test_int8_wraps_like_numpy
    checks; computed here from float64 sums, exact below 2**53, since
    numpy's integer matmul takes seconds at this size), once per kind pair."""
    g = np.random.default_rng(15)
    lo_a, lo_b = EXTREME[ta], EXTREME[tb]
    k = WRAP_K + 2 ** 14      # terms >= 125**2 here
    a = (lo_a - np.sign(lo_a) * g.integers(0, 4, (13, k))).astype(ta)
    b = (lo_b - np.sign(lo_b) * g.integers(0, 4, (k, 33))).astype(tb)
    exact = (a.astype(np.float64) @ b.astype(np.float64)).astype(np.int64)
    assert np.all(np.abs(exact) > 2 ** 31)       # every element wrapped
    return a, b, ((exact + 2 ** 31) % 2 ** 32 - 2 ** 31).astype(I32)


@pytest.mark.parametrize("kinds", INT_KINDS, ids=INT_IDS)
def test_int8_wrapping_random(lowp_kernel, kinds):
    a, b, want = _wrapping_case(*kinds)
    with forced_threads(2):
        got = fastmm.matmul(a, b, dtype=I32)
    assert np.array_equal(got, want)


def test_int8_other_dtypes_are_numpys():
    a, b = ints((9, 40), I8, 16), ints((40, 7), I8, 17)
    u = ints((40, 7), U8, 18)
    with forced_threads(1) as seen:
        # no dtype: numpy's int8 (wrapping) and int16 (int8 @ uint8) results
        assert_same_as_numpy(a, b)
        assert_same_as_numpy(a, u)
        for dtype in (np.int64, np.int16, np.float32, np.float64, np.uint32,
                      np.uint8, np.bool_):
            assert_same_as_numpy(a, b, dtype=dtype)
    assert "lowp" not in seen, seen
    # int8 with float32: numpy's float32 product (exact here: small ints)
    f = np.arange(280, dtype=F32).reshape(40, 7) / 8
    assert_same_as_numpy(a, f)
    assert_same_as_numpy(f.T, a.T)


@pytest.mark.parametrize("dtype", [np.int16, np.int64, np.uint16, np.int32,
                                   np.float32, np.bool_])
def test_other_operands_with_int32_dtype_are_numpys(dtype):
    a = (ints((9, 40), I8, 19) % 5).astype(dtype)
    b = (ints((40, 7), I8, 20) % 5).astype(dtype)
    big = np.full((4, 4), 2 ** 40 if dtype == np.int64 else 3, dtype)
    with forced_threads(1) as seen:
        assert_same_as_numpy(a, b, dtype=I32)
        assert_same_as_numpy(big, big, dtype=I32)
        assert_same_as_numpy(a, ints((40, 7), I8, 21), dtype=I32)
    assert "lowp" not in seen, seen


def test_int8_bad_calls_are_numpys():
    a, b = ints((9, 40), I8, 22), ints((40, 7), I8, 23)
    assert_same_as_numpy(a, b[:39], dtype=I32)           # shape mismatch
    assert_same_as_numpy(a[0, 0], b, dtype=I32)          # 0-d operand
    assert_same_as_numpy(a[None, None], b[None], dtype=I32)
    assert_same_as_numpy(np.ones((2, 9, 40), I8), np.ones((3, 40, 7), I8),
                         dtype=I32)                      # no broadcast
    # out of another dtype or shape: numpy casts, or raises
    for out in (np.empty((9, 7), np.int64), np.empty((9, 7), np.int16),
                np.empty((9, 7), F32), np.empty((9, 8), I32)):
        want_out, got_out = out.copy(), out.copy()
        try:
            want = np.matmul(a, b, out=want_out, dtype=I32)
        except Exception as e:
            with pytest.raises(type(e)):
                fastmm.matmul(a, b, out=got_out, dtype=I32)
            continue
        got = fastmm.matmul(a, b, out=got_out, dtype=I32)
        assert got is got_out and want is want_out
        assert np.array_equal(got, want)
    ro = np.empty((9, 7), I32)
    ro.flags.writeable = False
    with pytest.raises(ValueError):
        fastmm.matmul(a, b, out=ro, dtype=I32)


# ---- precision="bf16" on float32 operands (no ml_dtypes needed) --------------

def test_round_bf16_helper():
    # the test's own rounding: nearest, ties to even, overflow to inf
    x = np.array([1.0, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -8 + 2 ** -20,
                  np.finfo(F32).max, -np.inf, 0.0, -0.0], F32)
    want = np.array([1.0, 1.0, 1 + 2 ** -6, 1 + 2 ** -7, np.inf, -np.inf,
                     0.0, -0.0], F32)
    assert np.array_equal(round_bf16(x), want)
    ml_dtypes = pytest.importorskip("ml_dtypes")
    y = random((300,), F32, 24)
    assert np.array_equal(round_bf16(y),
                          y.astype(ml_dtypes.bfloat16).astype(F32))


@pytest.mark.parametrize("shape", BF_SHAPES, ids=shape_id)
def test_precision_bf16(lowp_kernel, shape):
    m, k, n = shape
    a, b = random((m, k), F32, 25), random((k, n), F32, 26)
    with forced_threads(1) as seen:
        c = fastmm.matmul(a, b, precision="bf16")
    assert c.dtype == F32 and c.shape == (m, n)
    if m and n and k:
        assert_ran(seen, "lowp", 1)
    # the exact product of the operands rounded to bfloat16, to float32
    # accumulation error ...
    check_bf16_product(c, round_bf16(a), round_bf16(b))
    # ... hence within (k + 2) 2**-8 |A| @ |B| of the unrounded product
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    err = np.abs(c - a64 @ b64)
    assert np.all(err <= (k + 2) * 2.0 ** -8 * (np.abs(a64) @ np.abs(b64))
                  + np.finfo(F32).tiny)


def test_precision_bf16_is_coarser_than_float32():
    # not a float32 product in disguise: operands are really rounded
    a = np.full((3, 4), 1 + 2 ** -10, F32)
    c = fastmm.matmul(a, a.T, precision="bf16")
    assert np.array_equal(c, np.full((3, 3), 4.0, F32))
    assert np.array_equal(fastmm.matmul(a, a.T, precision="highest"),
                          np.matmul(a, a.T))


def test_precision_bf16_layouts_stacks_vectors(lowp_kernel):
    m, k, n = 13, BF_KC + 5, 35
    a, b = random((m, k), F32, 27), random((k, n), F32, 28)
    want = fastmm.matmul(a, b, precision="bf16")
    for name, av in layouts(a):
        assert np.array_equal(fastmm.matmul(av, b, precision="bf16"),
                              want), f"A {name}"
    for name, bv in layouts(b):
        assert np.array_equal(fastmm.matmul(a, bv, precision="bf16"),
                              want), f"B {name}"
    for sa, sb in BATCH_SHAPES:
        x, y = random(sa, F32, 29), random(sb, F32, 30)
        got = fastmm.matmul(x, y, precision="bf16")
        want = np.matmul(x, y)
        assert type(got) is type(want) and got.dtype == F32
        assert np.shape(got) == np.shape(want)
        check_bf16_product(got, round_bf16(x), round_bf16(y))


@pytest.mark.parametrize("nt", [1, 2, 3])
@pytest.mark.parametrize("mkn", [(80, BF_KC + 5, 40), (5, 37, 200)],
                         ids=["rows", "columns"])
def test_precision_bf16_threads(lowp_kernel, nt, mkn):
    m, k, n = mkn
    a, b = random((m, k), F32, 31), random((k, n), F32, 32)
    with forced_threads(nt) as seen:
        c = fastmm.matmul(a, b, precision="bf16")
    assert_ran(seen, "lowp", nt)
    check_bf16_product(c, round_bf16(a), round_bf16(b))
    with forced_threads(1):     # the same sums, whatever the split
        assert np.array_equal(c, fastmm.matmul(a, b, precision="bf16"))


def test_precision_bf16_out():
    m, k, n = 14, 30, 37
    a, b = random((m, k), F32, 33), random((k, n), F32, 34)
    want = fastmm.matmul(a, b, precision="bf16")
    big = np.full((m + 2, 2 * n + 1), np.nan, F32)
    for out in (np.empty((m, n), F32), np.empty((m, n), F32, order="F"),
                big[1:m + 1, ::2][:, :n], np.empty((m, n), F32)[::-1, ::-1]):
        assert fastmm.matmul(a, b, out=out, precision="bf16") is out
        assert np.array_equal(out, want)
    assert np.isnan(big[0]).all() and np.isnan(big[1:m + 1, 1::2]).all()
    # out is an operand: the product of the operands as they were
    sq = random((k, k), F32, 35)
    want = fastmm.matmul(sq, sq, precision="bf16")
    assert fastmm.matmul(sq, sq, out=sq, precision="bf16") is sq
    assert np.array_equal(sq, want)


def test_precision_bf16_nan_inf():
    k = 40
    a, b = random((13, k), F32, 36), random((k, 35), F32, 37)
    a[0, 3] = np.nan
    # a NaN whose payload lies in the low 16 bits: truncation would make it Inf
    a[1, 5] = np.uint32(0x7F800001).view(F32)
    a[2, 7] = np.inf
    a[3, 9] = -np.inf
    b[9, 4] = 0.0                             # -inf * 0 = NaN
    a[4, 0] = np.finfo(F32).max               # rounds to inf in bfloat16
    c = fastmm.matmul(a, b, precision="bf16")
    with np.errstate(invalid="ignore"):
        ref = round_bf16(a).astype(np.float64) @ round_bf16(b).astype(np.float64)
    assert np.array_equal(np.isnan(c), np.isnan(ref))
    assert np.array_equal(np.isinf(c), np.isinf(ref))
    assert np.isnan(c[:2]).all() and np.isinf(c[2]).all()
    assert np.isnan(c[3, 4]) and np.isinf(c[4]).all()
    fin = np.isfinite(ref)
    assert np.allclose(c[fin], ref[fin], rtol=0, atol=k * 2.0 ** -20 * 64)


@pytest.mark.parametrize("nt", [1, 2])
def test_amx_products_run_on_tiles(kernel, nt):
    # where AMX is chosen, int8 and bfloat16 products configure the tiles
    # (the calling thread's share counts); refused, or absent, they do not
    bf16 = bf16_type()
    a8, b8 = ints((30, 70), I8, 1), ints((70, 40), I8, 2)
    a16, b16 = bf16_random((30, 70), 3), bf16_random((70, 40), 4)
    amx = kernel == "avx512" and _lowp.amx_available()
    for allowed in (True, False):
        _lowp.allow_amx(allowed, kernel)
        try:
            with forced_threads(nt) as seen:
                before = _lowp.amx_parts()
                check_int(a8, b8)
                check_bf16_product(fastmm.matmul(a16, b16, dtype=F32),
                                   a16, b16)
                ran = _lowp.amx_parts() - before
            assert_ran(seen, "lowp", nt)
        finally:
            _lowp.allow_amx(True, kernel)
        assert ran == (2 if amx and allowed else 0)


def test_precision_bf16_subnormals(lowp_kernel):
    # README: AVX512-BF16 treats subnormal inputs and results as zero (the
    # instruction's rule); the portable kernel keeps them
    a = np.array([[2.0 ** -130, 2.0 ** -60]], F32)
    b = np.array([[1.0], [2.0 ** -70]], F32)
    c = fastmm.matmul(a, b, precision="bf16")
    exact = np.float32(2.0 ** -130 + 2.0 ** -130)
    if lowp_kernel["bfloat16"] == "generic":
        assert c[0, 0] == exact
    else:
        assert c[0, 0] in (0.0, exact)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_precision_highest_is_plain_matmul(dtype):
    a, b = random((37, 45), dtype, 38), random((45, 29), dtype, 39)
    want = fastmm.matmul(a, b)
    assert np.array_equal(fastmm.matmul(a, b, precision="highest"), want)
    assert np.array_equal(fastmm.matmul(a, b, precision=None), want)
    out = np.empty_like(want)
    assert fastmm.matmul(a, b, out=out, precision="highest") is out
    assert np.array_equal(out, want)


def test_precision_bad_calls():
    a = random((5, 6), F32, 40)
    with pytest.raises(ValueError, match="precision"):
        fastmm.matmul(a, a.T, precision="x")
    with pytest.raises(ValueError, match="precision"):
        fastmm.matmul(a, a.T, precision="BF16")
    for x, y in [(a.astype(np.float64), a.T.astype(np.float64)),
                 (a, a.T.astype(np.float64)), (a.astype(np.float16), a.T)]:
        with pytest.raises(TypeError, match="bf16"):
            fastmm.matmul(x, y, precision="bf16")
    # int8 operands once ignored it (exact int32 or numpy's int8 product)
    i8 = np.ones((5, 6), I8)
    for kw in ({}, {"dtype": np.int32}):
        with pytest.raises(TypeError, match="bf16"):
            fastmm.matmul(i8, i8.T, precision="bf16", **kw)
    with pytest.raises(TypeError, match="bf16"):
        fastmm.matmul(a, a.T, precision="bf16", dtype=np.float64)
    # numpy's own errors stay numpy's
    with pytest.raises(ValueError):
        fastmm.matmul(a, a, precision="bf16")
    with pytest.raises(ValueError):
        fastmm.matmul(a, np.float32(2), precision="bf16")


# ---- ml_dtypes.bfloat16 operands ----------------------------------------------

def bf16_type():
    return pytest.importorskip("ml_dtypes").bfloat16


def bf16_random(shape, seed):
    return random(shape, F32, seed).astype(bf16_type())


@pytest.mark.parametrize("shape", BF_SHAPES, ids=shape_id)
def test_bf16_values(lowp_kernel, shape):
    bf16 = bf16_type()
    m, k, n = shape
    a, b = bf16_random((m, k), 41), bf16_random((k, n), 42)
    with forced_threads(1) as seen:
        c32 = fastmm.matmul(a, b, dtype=F32)
        c = fastmm.matmul(a, b)
    if m and n and k:
        assert_ran(seen, "lowp", 1)
    assert c32.dtype == F32 and c32.shape == (m, n)
    check_bf16_product(c32, a, b)
    # the default result is the float32 one rounded once (nearest even)
    assert c.shape == (m, n) and c.dtype in (bf16, F32)
    assert np.array_equal(np.asarray(c, F32), c32.astype(c.dtype).astype(F32))
    check_bf16_product(c, a, b, out_rounding=2.0 ** -8)


def test_bf16_result_dtype_follows_np_matmul():
    # np.matmul(bfloat16, bfloat16) is float32 (ml_dtypes registers no
    # bfloat16 matmul loop); dtype=bfloat16, which numpy refuses, is
    # fastmm's way to ask for a bfloat16 result
    bf16 = bf16_type()
    a, b = bf16_random((5, 6), 43), bf16_random((6, 7), 44)
    for x, y in ((a, b), (a[0], b)):
        want = np.matmul(x, y)
        got = fastmm.matmul(x, y)
        assert type(got) is type(want) and got.dtype == want.dtype
        assert got.shape == want.shape
        check_bf16_product(got, x.astype(F32), y.astype(F32))
    got = fastmm.matmul(a, b, dtype=bf16)
    assert got.dtype == bf16
    check_bf16_product(got.astype(F32), a.astype(F32), b.astype(F32),
                       out_rounding=2.0 ** -8)


def test_bf16_dtype_and_out():
    bf16 = bf16_type()
    m, k, n = 14, 70, 37
    a, b = bf16_random((m, k), 45), bf16_random((k, n), 46)
    want = fastmm.matmul(a, b, dtype=F32)
    check_bf16_product(want, a, b)
    # a float32 out: the float32 result; a bfloat16 out: it rounded once
    for dtype in (F32, bf16):
        big = np.zeros((m + 2, 2 * n + 1), dtype)
        for out in (np.empty((m, n), dtype), np.empty((m, n), dtype, order="F"),
                    big[1:m + 1, ::2][:, :n],
                    np.empty((m, n), dtype)[::-1, ::-1]):
            with forced_threads(2) as seen:
                assert fastmm.matmul(a, b, out=out) is out
            assert_ran(seen, "lowp", 2)
            assert np.array_equal(out, want.astype(dtype))
        assert not big[0].any() and not big[1:m + 1, 1::2].any()
    # float64 result, or float64 out: numpy's (exact here: float64 sums)
    assert_same_as_numpy(a, b, dtype=np.float64)
    # out overlapping an operand: a's bytes are out's
    buf = np.zeros((m, k // 2), F32)
    a2 = buf.view(bf16)
    a2[...] = a
    bs = bf16_random((k, k // 2), 47)
    want = fastmm.matmul(a.copy(), bs, dtype=F32)
    assert fastmm.matmul(a2, bs, out=buf) is buf
    assert np.array_equal(buf, want)


def test_bf16_layouts_stacks_vectors(lowp_kernel):
    m, k, n = 13, BF_KC + 5, 35
    a, b = bf16_random((m, k), 48), bf16_random((k, n), 49)
    want = fastmm.matmul(a, b, dtype=F32)
    for name, av in layouts(a):
        assert np.array_equal(fastmm.matmul(av, b, dtype=F32), want), f"A {name}"
    for name, bv in layouts(b):
        assert np.array_equal(fastmm.matmul(a, bv, dtype=F32), want), f"B {name}"
    for sa, sb in BATCH_SHAPES:
        x, y = bf16_random(sa, 50), bf16_random(sb, 51)
        got = fastmm.matmul(x, y, dtype=F32)
        want = np.matmul(x, y, dtype=F32)
        assert type(got) is type(want) and got.dtype == F32
        assert np.shape(got) == np.shape(want)
        check_bf16_product(got, x, y)


@pytest.mark.parametrize("nt", [2, 3])
def test_bf16_threads(lowp_kernel, nt):
    a, b = bf16_random((80, BF_KC + 5), 52), bf16_random((BF_KC + 5, 40), 53)
    with forced_threads(nt) as seen:
        c = fastmm.matmul(a, b, dtype=F32)
    assert_ran(seen, "lowp", nt)
    check_bf16_product(c, a, b)


def test_bf16_nan_inf(lowp_kernel):
    bf16 = bf16_type()
    k = 40
    a, b = bf16_random((13, k), 54), bf16_random((k, 35), 55)
    a[0, 3] = np.nan
    a[1, 5] = np.inf
    a[2, 9] = -np.inf
    b[9, 4] = 0                                # -inf * 0 = NaN
    b[20, 33] = np.nan
    c = fastmm.matmul(a, b, dtype=F32)
    with np.errstate(invalid="ignore"):
        ref = a.astype(np.float64) @ b.astype(np.float64)
    assert np.array_equal(np.isnan(c), np.isnan(ref))
    assert np.array_equal(np.isinf(c), np.isinf(ref))
    assert np.array_equal(c[np.isinf(ref)], ref[np.isinf(ref)])
    assert np.isnan(c[0]).all() and np.isnan(c[:, 33]).all()
    assert np.isinf(c[1, :4]).all() and np.isnan(c[2, 4])
    fin = np.isfinite(ref)
    assert np.allclose(c[fin], ref[fin], rtol=0, atol=(k + 2) * 2.0 ** -24 * 64)
    got = fastmm.matmul(a, b)                  # and through the default dtype
    assert np.array_equal(np.isnan(np.asarray(got, F32)), np.isnan(ref))
    assert got.dtype in (bf16, F32)


def test_bf16_mixed_with_other_dtypes_is_numpys():
    bf16 = bf16_type()
    a = bf16_random((5, 6), 56)
    for other in (np.float32, np.float64, np.int8):
        b = random((6, 7), F32, 57).astype(other)
        with forced_threads(1) as seen:
            assert_same_as_numpy(a, b)
            assert_same_as_numpy(b.T, a.T)
        assert "lowp" not in seen, (other, seen)
    assert bf16 is not None


# ---- python -m fastmm bench --families lowp, and the MKL peer -----------------

def test_bench_lowp_case_and_tables(monkeypatch, capsys):
    from fastmm.bench import _harness
    monkeypatch.setattr(_harness, "NUMPY_INT_SECONDS", 1e-4)
    case = _harness.make_case("lowp", "40x70 @ 70x50", (40, 70), (70, 50), 40,
                              "int8/bf16", 1, seed=0)
    res = _harness.check_case(fastmm, case)
    # the timing process's work, in this process
    timer = lambda library, batch, samples: _harness.time_library(
        fastmm, library, batch, samples)
    _harness.time_cases([case], [res], 2, timer=timer)
    assert res["error"] is None and isinstance(res["stable"], bool)
    timed = ["int8", "bf16p", "f32", "np_int", "np_f32"]
    if _harness.bfloat16_type() is not None:
        timed += ["bf16", "np_bf16"]
    for key in timed:
        assert res[key] > 0 and res[key + "_s"] > 0, key
    assert 16 <= res["np_int_rows"] <= 40
    res.update(family="lowp", label="40x70 @ 70x50", size=40,
               dtype="int8/bf16", threads=1, peak=None, stable=True)
    wrong = dict(res, error="int8: 1 of 2000 elements differ")
    _harness.print_lowp_table([res, wrong])
    _harness.print_lowp_summary([res, wrong], [1])
    out = capsys.readouterr().out
    assert "int8/f32" in out and "int8 / numpy int32" in out
    assert "bf16 / ml_dtypes bf16" in out
    assert "WRONG RESULT: int8: 1 of 2000" in out
    assert f"{res['int8'] / res['f32']:.2f}x" in out


def test_bench_lowp_checks_catch_wrong_results():
    from fastmm.bench import _harness
    a8, b8 = ints((9, 30), I8, 60), ints((30, 7), I8, 61)
    good = np.matmul(a8, b8, dtype=I32)
    assert _harness.check_int32(good, a8, b8) is None
    bad = good.copy()
    bad[3, 4] += 1
    assert "1 of 63" in _harness.check_int32(bad, a8, b8)
    a, b = random((9, 30), F32, 62), random((30, 7), F32, 63)
    ar, a_bits = _harness.round_to_bf16(a)
    br, _ = _harness.round_to_bf16(b)
    assert np.array_equal(ar, round_bf16(a))
    assert np.array_equal(a_bits.astype(np.uint32) << 16, ar.view(np.uint32))
    c = fastmm.matmul(a, b, precision="bf16")
    assert _harness.check_bf16(c, ar, br) is None
    assert _harness.check_bf16(np.matmul(a, b), ar, br) is not None
    # ml_dtypes' own product may round its result to bfloat16: 2**-8 more
    exact = ar.astype(np.float64) @ br.astype(np.float64)
    rounded = round_bf16(exact.astype(F32))
    assert _harness.check_bf16(rounded, ar, br, result_rounded=True) is None
    assert _harness.check_bf16(exact * (1 + 2.0 ** -6), ar, br,
                               result_rounded=True) is not None


def test_bench_lowp_family_is_asked_for_by_name():
    from fastmm.bench import _harness
    from fastmm.__main__ import main
    assert "lowp" in _harness.FAMILIES and "lowp" not in _harness.DEFAULT_FAMILIES
    cases = _harness.family_cases("lowp", quick=True)
    assert [c[0] for c in cases] == ["1024", "256x1024 @ 1024x1024"]
    assert len(_harness.family_cases("lowp")) == 4
    with pytest.raises(SystemExit):
        main(["bench", "--families", "lowp,nope"])


def test_mkl_peer_int8_is_not_used(mkl):
    # see Mkl.prepare_lowp: its int8 sums were wrong where this was written
    a, b = ints((37, 300), I8, 64), ints((300, 45), I8, 65)
    with pytest.raises(NotImplementedError, match="s8u8s32"):
        mkl.prepare_lowp(a, b, np.zeros((37, 45), I32))


def test_mkl_peer_bf16(mkl):
    a, b = random((37, 300), F32, 66), random((300, 45), F32, 67)
    ar, a_bits = round_bf16(a), round_bf16(a).view(np.uint32) >> 16
    br, b_bits = round_bf16(b), round_bf16(b).view(np.uint32) >> 16
    out = np.zeros((37, 45), F32)
    mkl.prepare_lowp(a_bits.astype(np.uint16), b_bits.astype(np.uint16), out)()
    check_bf16_product(out, ar, br)
    with pytest.raises(TypeError):
        mkl.prepare_lowp(a, b, out)


@pytest.mark.parametrize("nt", [1, 2])
def test_precision_bf16_rounds_special_values_like_the_reference(nt):
    # float32 is rounded while packing, in integer lanes where rows are
    # contiguous (B: 16 columns at a time, A: 8 elements of k at a time) and
    # one by one at the ends: ties to even, NaN kept a NaN, overflow to inf,
    # everywhere.  I @ B and A @ I with I exact in bfloat16 show the packed
    # operand; 0 * NaN and 0 * inf spread NaN the same way on both sides.
    k, n = 19, 2 * NR + 5
    x = random((k, n), F32, 31)
    special = [1 + 2 ** -8, 1 + 3 * 2 ** -8, -(1 + 2 ** -8 + 2 ** -20),
               np.finfo(F32).max, -np.inf, np.inf, np.nan, -0.0, 3.0e38]
    # (no subnormals: vdpbf16ps reads them as zero, see kernels/lowp.h)
    for i, v in enumerate(special):
        x[i % k, (7 * i) % n] = v
        x[(i + 3) % k, n - 1 - i] = v
        x[k - 1 - i % 3, (5 * i) % n] = v
    eye = np.eye(k, dtype=F32)
    xt = np.ascontiguousarray(x.T)
    with forced_threads(nt):
        got_b = fastmm.matmul(eye, x, precision="bf16")
        got_a = fastmm.matmul(xt, eye, precision="bf16")
    want = (eye.astype(np.float64) @ round_bf16(x).astype(np.float64)
            ).astype(F32)
    assert np.array_equal(got_b, want, equal_nan=True)
    assert np.array_equal(got_a, want.T, equal_nan=True)
