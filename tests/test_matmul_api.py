"""fastmm.matmul is a drop-in np.matmul: same results, types, shapes, errors.

Every case calls both and compares.  float32/float64 results may differ from
numpy's BLAS by rounding (checked against the k * eps bound); every other
dtype must match numpy bit for bit, since fastmm hands it to numpy.
"""
import fractions
import operator

import numpy as np
import pytest

import fastmm
from fastmm.driver import _threads
from conftest import assert_close, assert_ran, random, reference, small_mnk

FAST = (np.float32, np.float64)
DTYPES = [np.bool_, np.int8, np.uint8, np.int32, np.int64, np.uint64,
          np.float16, np.float32, np.float64, np.longdouble,
          np.complex64, np.complex128, object]

SHAPE_PAIRS = [
    ((3, 4), (4, 5)), ((4,), (4, 5)), ((3, 4), (4,)), ((4,), (4,)),
    ((2, 3, 4), (4, 5)), ((3, 4), (2, 4, 5)), ((2, 1, 3, 4), (5, 4, 2)),
    ((2, 3, 4), (4,)), ((4,), (2, 4, 5)), ((1, 1, 1), (1, 1)),
    ((0, 3), (3, 2)), ((3, 0), (0, 2)), ((0,), (0,)), ((2, 0, 3), (3, 4)),
]


def values(shape, dtype, seed=0):
    if dtype is object:
        x = np.empty(shape, object)
        flat = random(shape, np.float64, seed).ravel()
        x.ravel()[...] = [fractions.Fraction(int(v * 64), 7) for v in flat]
        return x
    if np.dtype(dtype).kind in "biu":
        g = np.random.default_rng(seed)
        hi = 2 if dtype is np.bool_ else 5
        return g.integers(0, hi, size=shape).astype(dtype)
    x = random(shape, np.float64, seed)
    if np.dtype(dtype).kind == "c":
        x = x + 1j * random(shape, np.float64, seed + 1)
    return x.astype(dtype)


def assert_same(got, want, a=None, b=None):
    """got matches np.matmul's result ``want``: type, dtype, shape, values."""
    assert type(got) is type(want), (type(got), type(want))
    if isinstance(want, np.ndarray) or np.ndim(want) == 0:
        assert np.asarray(got).dtype == np.asarray(want).dtype
        assert np.shape(got) == np.shape(want)
    dt = np.asarray(want).dtype
    if dt.type in FAST and a is not None:
        assert_close(np.asarray(got), reference(a, b), a, b)
    else:
        assert np.array_equal(np.asarray(got), np.asarray(want)), (got, want)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shapes", SHAPE_PAIRS, ids=str)
def test_same_as_numpy(dtype, shapes):
    a = values(shapes[0], dtype, 1)
    b = values(shapes[1], dtype, 2)
    assert_same(fastmm.matmul(a, b), np.matmul(a, b), a, b)


@pytest.mark.parametrize("da", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("db", DTYPES, ids=lambda d: np.dtype(d).name)
def test_dtype_promotion(da, db):
    a = values((3, 4), da, 1)
    b = values((4, 2), db, 2)
    try:
        want = np.matmul(a, b)
    except Exception as e:
        with pytest.raises(type(e)):
            fastmm.matmul(a, b)
        return
    got = fastmm.matmul(a, b)
    assert got.dtype == want.dtype
    if want.dtype.type in FAST:
        assert_close(got, reference(a.astype(want.dtype), b.astype(want.dtype)), a, b)
    else:
        assert np.array_equal(got, want)


def test_scalar_result():
    for dtype in DTYPES:
        v = values(5, dtype, 3)
        got, want = fastmm.matmul(v, v), np.matmul(v, v)
        assert type(got) is type(want), dtype
        assert_same(got, want, v, v)
    v = random(5, np.float64)
    out = np.full((), np.nan)
    assert fastmm.matmul(v, v, out=out) is out
    assert_close(out, reference(v, v), v, v)
    assert fastmm.matmul(v, v, out=(out,)) is out


@pytest.mark.parametrize("dtype", FAST)
def test_out_positional_keyword_tuple(dtype):
    a = random((6, 5), dtype, 1)
    b = random((5, 4), dtype, 2)
    ref = reference(a, b)
    for how in ("positional", "keyword", "tuple", "tuple-positional"):
        out = np.full((6, 4), np.nan, dtype)
        if how == "positional":
            res = fastmm.matmul(a, b, out)
        elif how == "keyword":
            res = fastmm.matmul(a, b, out=out)
        elif how == "tuple":
            res = fastmm.matmul(a, b, out=(out,))
        else:
            res = fastmm.matmul(a, b, (out,))
        assert res is out, how
        assert_close(out, ref, a, b)
    assert isinstance(fastmm.matmul(a, b, out=None), np.ndarray)
    assert isinstance(fastmm.matmul(a, b, out=(None,)), np.ndarray)


@pytest.mark.parametrize("rdtype, odtype", [
    (np.float32, np.float64), (np.float64, np.float32), (np.int64, np.float64),
    (np.float32, np.complex64), (np.float64, np.longdouble), (np.float32, np.float16)])
def test_out_of_another_dtype_casts_like_numpy(rdtype, odtype):
    a = values((5, 3), rdtype, 1)
    b = values((3, 4), rdtype, 2)
    want = np.matmul(a, b, out=np.zeros((5, 4), odtype))
    out = np.full((5, 4), 7, odtype)
    assert fastmm.matmul(a, b, out=out) is out
    if np.dtype(rdtype).type in FAST:
        tol = np.finfo(odtype).eps if np.dtype(odtype).kind == "f" else 1e-6
        assert np.allclose(out, want, rtol=8 * max(tol, np.finfo(rdtype).eps), atol=1e-6)
    else:
        assert np.array_equal(out, want)


def test_ufunc_keywords():
    a = random((2, 3, 4), np.float64, 1)
    b = random((2, 4, 5), np.float64, 2)
    for kw in [dict(dtype=np.float32), dict(dtype=np.float64), dict(casting="unsafe"),
               dict(order="F"), dict(subok=False),
               dict(axes=[(-2, -1), (-2, -1), (-2, -1)]),
               dict(axes=[(1, 2), (1, 2), (2, 1)]),
               dict(dtype=np.float32, casting="same_kind")]:
        want = np.matmul(a, b, **kw)
        got = fastmm.matmul(a, b, **kw)
        assert got.dtype == want.dtype and got.shape == want.shape, kw
        assert got.flags.f_contiguous == want.flags.f_contiguous, kw
        eps = np.finfo(want.dtype).eps
        assert np.allclose(got, want, rtol=16 * eps, atol=16 * eps), kw
    with pytest.raises(TypeError):
        np.matmul(a, b, dtype=np.int32)          # numpy refuses the cast...
    with pytest.raises(TypeError):
        fastmm.matmul(a, b, dtype=np.int32)      # ... and so does fastmm


def test_lists_and_tuples():
    for x, y in [([[1.5, 2], [3, 4]], [[1, 0.5], [2, 1]]), ([[1, 2], [3, 4]], [1, 2]),
                 ([1, 2, 3], (4, 5, 6)), ([[True, False]], [[True], [True]]),
                 ((1.0, 2.0), np.array([[1.0], [2.0]], np.float32)),
                 (np.array([[1, 2]], np.float32), [[1.5], [2.5]])]:
        want = np.matmul(x, y)
        got = fastmm.matmul(x, y)
        assert type(got) is type(want)
        assert np.asarray(got).dtype == np.asarray(want).dtype
        assert np.array_equal(got, want)


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
def test_subclasses():
    a = random((3, 4), np.float64, 1)
    b = random((4, 2), np.float64, 2)
    # np.matrix: result stays a matrix
    ma, mb = np.asmatrix(a), np.asmatrix(b)
    got, want = fastmm.matmul(ma, mb), np.matmul(ma, mb)
    assert type(got) is type(want) is np.matrix
    assert np.allclose(got, want)
    # masked arrays: numpy's masked result (numpy's own masked matmul
    # needs operands whose masks broadcast: square ones)
    sq = random((4, 4), np.float64, 3)
    xa = np.ma.masked_array(a[:, :3].T @ a[:, :3], mask=np.eye(3) > 0)
    xb = np.ma.masked_array(sq[:3, :3])
    got, want = fastmm.matmul(xa, xb), np.matmul(xa, xb)
    assert type(got) is type(want)
    assert np.array_equal(np.ma.getmaskarray(got), np.ma.getmaskarray(want))
    assert np.allclose(got.filled(0), want.filled(0))

    class Sub(np.ndarray):
        pass
    sa = a.view(Sub)
    assert type(fastmm.matmul(sa, b)) is type(np.matmul(sa, b)) is Sub

    class Duck:
        def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
            return ("handled", ufunc.__name__)
    assert fastmm.matmul(Duck(), a) == np.matmul(Duck(), a) == ("handled", "matmul")
    assert fastmm.matmul(a, Duck()) == ("handled", "matmul")


def test_non_native_and_unaligned_inputs():
    a = random((5, 6), np.float64, 1)
    b = random((6, 3), np.float64, 2)
    ref = reference(a, b)
    be = a.astype(">f8")
    assert_close(fastmm.matmul(be, b), ref, a, b)
    assert fastmm.matmul(be, b).dtype == np.matmul(be, b).dtype
    buf = np.zeros(a.nbytes + 1, np.uint8)
    un = buf[1:].view(np.float64).reshape(a.shape)
    un[...] = a
    assert_close(fastmm.matmul(un, b), ref, a, b)
    out = np.zeros(a.shape[0] * b.shape[1] * 8 + 3, np.uint8)[3:].view(np.float64)
    out = out.reshape(5, 3)
    assert fastmm.matmul(a, b, out=out) is out
    assert_close(out, ref, a, b)


def _unaligned(x, offset=1):
    """A copy of x whose data starts `offset` bytes past an aligned address,
    as arrays unpickled from a received buffer (Dask's transfers) do."""
    buf = np.zeros(x.nbytes + offset, np.uint8)
    u = buf[offset:].view(x.dtype).reshape(x.shape)
    u[...] = x
    assert not u.flags.aligned
    return u


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_unaligned_operands_take_the_packed_kernels(dtype):
    # unaligned float operands went to np.matmul (OpenBLAS, ignoring
    # fastmm's thread count): every block a Dask worker received did
    a = random((130, 300), dtype, 1)
    b = random((300, 90), dtype, 2)
    ua, ub = _unaligned(a), _unaligned(b, 3)
    with fastmm.threads(1), _threads.record() as seen, small_mnk(128 ** 3):
        c = fastmm.matmul(ua, ub)
    assert_ran(seen, "packed", 1)
    assert_close(c, reference(a, b), a, b)
    sa = _unaligned(np.stack([a, a[::-1]]))
    with fastmm.threads(1), _threads.record() as seen:
        c = fastmm.matmul(sa, b)
    assert seen, "the stack took numpy's path"
    assert_close(c[1], reference(a[::-1], b), a, b)
    # gemm read them in place, unaligned; now from an aligned copy
    c0 = _unaligned(random((130, 90), dtype, 3))
    want = reference(a, b) + 2 * c0
    got = fastmm.gemm(1.0, ua, ub, 2.0, c0)
    assert got.flags.aligned
    assert_close(got, want, a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_out_with_extra_batch_axes(dtype):
    # numpy broadcasts the operands to an out with more leading axes
    a = values((2, 3), dtype, 1)
    b = values((3, 4), dtype, 2)
    want = np.matmul(a, b, out=np.zeros((5, 2, 4), dtype))
    out = np.full((5, 2, 4), 9, dtype)
    assert fastmm.matmul(a, b, out=out) is out
    if dtype in FAST:
        assert_close(out, reference(np.broadcast_to(a, (5, 2, 3)), b), a, b)
    else:
        assert np.array_equal(out, want)


def test_broadcast_out_rejected_like_numpy():
    # an out with a zero stride would receive several results in one element
    a = random((3, 4), np.float64, 1)
    b = random((4, 5), np.float64, 2)
    out = np.broadcast_to(np.zeros(5), (3, 5))
    with pytest.raises(ValueError):
        np.matmul(a, b, out=out)
    with pytest.raises(ValueError):
        fastmm.matmul(a, b, out=out)


def _error(f, *args, **kwargs):
    try:
        f(*args, **kwargs)
    except Exception as e:
        return e
    return None


a23 = np.ones((2, 3))
RO = np.ones((2, 2))
RO.flags.writeable = False

# (x1, x2, extra positional args, kwargs, shapes the message must name)
BAD = [
    (a23, np.ones((4, 2)), (), {}, ["(2, 3)", "(4, 2)"]),
    (a23, np.ones(2), (), {}, ["(2, 3)", "(2,)"]),
    (np.ones(3), np.ones(4), (), {}, ["(3,)", "(4,)"]),
    (np.ones((2, 2, 3)), np.ones((3, 3, 2)), (), {}, ["(2, 2, 3)", "(3, 3, 2)"]),
    (np.ones((2, 2, 3), np.float32), np.ones((3, 3, 2)), (), {},
     ["(2, 2, 3)", "(3, 3, 2)"]),
    (np.ones((4, 2, 2, 3)), np.ones((3, 3, 2)), (), {},     # batch ndims differ
     ["(4, 2, 2, 3)", "(3, 3, 2)"]),
    (np.ones((1, 2, 3)), np.ones((5, 0, 3, 2)), (), {"out": np.empty((5, 1, 2, 2))},
     ["(5, 1, 2, 2)"]),
    (np.float64(2.0), a23, (), {}, ["()", "(2, 3)"]),
    (a23, 2.0, (), {}, ["(2, 3)", "()"]),
    (np.array(2.0), np.array(3.0), (), {}, ["()"]),
    (a23, np.ones((3, 2)), (np.empty((3, 3)),), {}, ["(3, 3)"]),
    (a23, np.ones((3, 2)), (), {"out": np.empty((2, 3, 2))}, ["(2, 3, 2)"]),
    (a23, np.ones((3, 2)), (), {"out": np.empty(2)}, ["(2,)"]),
    (a23, np.ones((3, 2)), (), {"out": np.empty((2, 2), np.float32)[:, :1]}, ["(2, 1)"]),
    (a23, np.ones((3, 2)), (), {"out": np.empty((2, 2), np.int64)}, []),
    (a23.astype(np.float32), np.ones((3, 2), np.float32), (),
     {"out": np.empty((2, 2), np.int32)}, []),
    (a23, np.ones((3, 2)), (), {"out": RO}, []),
    (a23, np.ones((3, 2)), (), {"out": [[0.0, 0.0], [0.0, 0.0]]}, []),
    (a23, np.ones((3, 2)), (), {"out": (np.empty((2, 2)), np.empty((2, 2)))}, []),
    (a23, np.ones((3, 2)), (np.empty((2, 2)),), {"out": np.empty((2, 2))}, []),
    (a23, np.ones((3, 2)), (None, None), {}, []),
    (a23, np.ones((3, 2)), (), {"bogus": 1}, []),
    (a23, np.ones((3, 2)), (), {"dtype": np.int8}, []),
    (np.array(["a", "b"]), np.array(["c", "d"]), (), {}, []),
    (a23, "abc", (), {}, []),
    ([[1.0, 2.0], [3.0]], a23, (), {}, []),
    (None, a23, (), {}, []),
]


@pytest.mark.parametrize("x1, x2, args, kwargs, names", BAD,
                         ids=[str(i) for i in range(len(BAD))])
def test_errors_match_numpy(x1, x2, args, kwargs, names):
    want = _error(np.matmul, x1, x2, *args, **kwargs)
    assert want is not None, "numpy accepted this case"
    got = _error(fastmm.matmul, x1, x2, *args, **kwargs)
    assert type(got) is type(want), (got, want)
    for name in names:
        assert name in str(got), (name, str(got))


def test_error_leaves_out_untouched():
    out = np.full((3, 3), 5.0)
    with pytest.raises(ValueError):
        fastmm.matmul(a23, np.ones((3, 2)), out=out)
    assert (out == 5).all()


def test_operator_module_and_method_forms():
    # fastmm.matmul is usable wherever np.matmul is passed as a function
    a = random((4, 3), np.float32, 1)
    b = random((3, 2), np.float32, 2)
    got = list(map(fastmm.matmul, [a, a], [b, b]))
    for g in got:
        assert_close(g, reference(a, b), a, b)
    assert operator.matmul(a, b).dtype == fastmm.matmul(a, b).dtype


def test_show_config(capsys):
    from fastmm import _config
    from fastmm.driver import _context
    fastmm.show_config()
    text = capsys.readouterr().out
    cfg = _config.config()
    assert cfg["version"] == fastmm.__version__
    assert cfg["num_threads"] == fastmm.get_num_threads()
    assert cfg["kernel"]["name"] in cfg["kernels_supported"]
    assert set(cfg["kernels_supported"]) <= set(cfg["kernels_compiled"])
    assert cfg["kernels_supported"] == _context.available_kernels()
    assert "generic" in cfg["kernels_compiled"]
    for dt in ("float32", "float64"):
        blk = cfg["kernel"][dt]
        assert blk["MR"] > 0 and blk["NR"] > 0
        assert blk["MC"] % blk["MR"] == 0 and blk["NC"] % blk["NR"] == 0
        assert blk["KC"] > 0
    assert fastmm.__version__ in text
    assert cfg["kernel"]["name"] in text
    assert f"threads:     {cfg['num_threads']}" in text
    with fastmm.threads(1):
        assert _config.config()["num_threads"] == 1


def test_read_only_and_same_object_inputs():
    a = random((7, 7), np.float64, 1)
    a.flags.writeable = False
    assert_close(fastmm.matmul(a, a), reference(a, a), a, a)
    assert_close(fastmm.matmul(a, a.T), reference(a, a.T), a, a.T)


# ---- hypothesis: random shapes, broadcasting, 1-D operands --------------------

from hypothesis import given, settings, strategies as st  # noqa: E402


@st.composite
def operand_shapes(draw):
    """Shape pairs np.matmul accepts, and near misses it rejects."""
    m, n, k = (draw(st.integers(0, 6)) for _ in range(3))
    nb = draw(st.integers(0, 3))
    batch = [draw(st.integers(0, 3)) for _ in range(nb)]
    def side():
        # drop leading axes, or turn some into 1 (broadcast), independently
        cut = draw(st.integers(0, nb))
        return [1 if draw(st.booleans()) else d for d in batch[cut:]]
    sa = tuple(side()) + ((m, k) if draw(st.integers(0, 4)) else (k,))
    sb = tuple(side()) + ((k, n) if draw(st.integers(0, 4)) else (k,))
    if len(sa) == 1:
        sa = sa[-1:]
    if len(sb) == 1:
        sb = sb[-1:]
    if draw(st.integers(0, 9)) == 0:              # a near miss: k differs
        sb = sb[:-2] + (k + 1,) + sb[-1:] if len(sb) >= 2 else (k + 1,)
    if draw(st.integers(0, 9)) == 0 and nb:       # a near miss: batches clash
        sa = (batch[0] + 2,) + sa
    return sa, sb


@settings(max_examples=200, deadline=None)
@given(operand_shapes(), st.sampled_from([np.float32, np.float64, np.int64]),
       st.sampled_from([np.float32, np.float64]), st.booleans())
def test_hypothesis_same_as_numpy(shapes, da, db, with_out):
    sa, sb = shapes
    a = values(sa, da, 1)
    b = values(sb, db, 2)
    try:
        want = np.matmul(a, b)
    except Exception as e:
        got = _error(fastmm.matmul, a, b)
        assert type(got) is type(e), (got, e)
        return
    if with_out:
        out = np.full(np.shape(want), np.nan, np.asarray(want).dtype)
        got = fastmm.matmul(a, b, out=out)
        assert got is out
    else:
        got = fastmm.matmul(a, b)
        assert type(got) is type(want)
    assert np.shape(got) == np.shape(want)
    assert np.asarray(got).dtype == np.asarray(want).dtype
    assert_close(np.asarray(got), reference(a, b), a, b)
