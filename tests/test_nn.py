"""fastmm.nn: fused dense-layer forward/backward against numpy references,
finite-difference gradients, thread-count independence, layers and training."""
import io
import math

import numpy as np
import pytest

import fastmm
import fastmm.nn as nn
from fastmm.nn import _fastpath, _ops
from fastmm.driver import _context
from conftest import assert_ran, forced_threads, out_layouts, small_mnk

ACTS = ["identity", "relu", "leaky_relu", "sigmoid", "tanh", "gelu",
        "gelu_tanh", "softmax"]
DTYPES = [np.float32, np.float64]
# (batch, in, out): batch 1, primes, m != n, k == 1, wider than a tile
SHAPES = [(1, 1, 1), (1, 7, 5), (13, 17, 11), (31, 2, 37), (64, 33, 3),
          (97, 61, 53)]
SLOPE = 0.07
_erf = np.vectorize(math.erf)


def ref_act(z, name, slope=SLOPE):
    """The activation in float64, written the plain way."""
    if name == "identity":
        return z
    if name == "relu":
        return np.where(z > 0, z, 0.0)
    if name == "leaky_relu":
        return np.where(z > 0, z, slope * z)
    if name == "sigmoid":
        return 1 / (1 + np.exp(-z))
    if name == "tanh":
        return np.tanh(z)
    if name == "gelu":
        return 0.5 * z * (1 + _erf(z / math.sqrt(2)))
    if name == "gelu_tanh":
        u = math.sqrt(2 / math.pi) * (z + 0.044715 * z ** 3)
        return 0.5 * z * (1 + np.tanh(u))
    if name == "softmax":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    raise AssertionError(name)


def ref_grad_z(z, dy, name, slope=SLOPE):
    """dL/dz from dL/dy, in float64, by the textbook derivatives."""
    if name == "identity":
        return dy
    if name == "relu":
        return dy * (z > 0)
    if name == "leaky_relu":
        return dy * np.where(z > 0, 1.0, slope)
    if name == "sigmoid":
        s = ref_act(z, name)
        return dy * s * (1 - s)
    if name == "tanh":
        return dy * (1 - np.tanh(z) ** 2)
    if name == "gelu":
        phi = np.exp(-z * z / 2) / math.sqrt(2 * math.pi)
        return dy * (0.5 * (1 + _erf(z / math.sqrt(2))) + z * phi)
    if name == "gelu_tanh":
        c = math.sqrt(2 / math.pi)
        t = np.tanh(c * (z + 0.044715 * z ** 3))
        return dy * (0.5 * (1 + t)
                     + 0.5 * z * (1 - t * t) * c * (1 + 3 * 0.044715 * z * z))
    if name == "softmax":
        y = ref_act(z, name)
        return y * (dy - (dy * y).sum(axis=1, keepdims=True))
    raise AssertionError(name)


def data(m, k, n, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((m, k)).astype(dtype)
    w = (rng.standard_normal((k, n)) / math.sqrt(k)).astype(dtype)
    # a different bias in every column, so a bias applied along the wrong
    # axis or to the wrong tile shows
    b = (np.linspace(-1, 1, n) + 0.1 * rng.standard_normal(n)).astype(dtype)
    dy = rng.standard_normal((m, n)).astype(dtype)
    return x, w, b, dy


def tol(dtype, k):
    return 30 * (k + 2) * np.finfo(dtype).eps


def assert_close(a, ref, dtype, k, err_msg=""):
    assert a.dtype == dtype
    t = tol(dtype, k)
    scale = max(1.0, float(np.abs(ref).max(initial=0)))
    # assert_allclose's own test, without its slow bookkeeping when it passes
    if a.shape == np.shape(ref) and np.all(np.abs(a - ref)
                                           <= t * scale + t * np.abs(ref)):
        return
    np.testing.assert_allclose(a, ref, rtol=t, atol=t * scale,
                               err_msg=err_msg)


def extra(name):
    return {"slope": SLOPE} if name == "leaky_relu" else {}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_matches_numpy(shape, act, dtype):
    m, k, n = shape
    x, w, b, _ = data(m, k, n, dtype)
    z = x.astype(np.float64) @ w.astype(np.float64) + b
    y = nn.linear(x, w, b, activation=act, **extra(act))
    assert y.shape == (m, n)
    assert_close(y, ref_act(z, act), dtype, k)
    # without a bias
    y = nn.linear(x, w, activation=act, **extra(act))
    assert_close(y, ref_act(z - b, act), dtype, k)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("shape", SHAPES)
def test_backward_matches_numpy(shape, act, dtype):
    m, k, n = shape
    x, w, b, dy = data(m, k, n, dtype, seed=1)
    z64 = x.astype(np.float64) @ w.astype(np.float64) + b
    g = ref_grad_z(z64, dy.astype(np.float64), act)
    z = nn.linear(x, w, b)
    y = nn.activate(z, act, **extra(act))
    dx, dw, db = nn.linear_backward(x, w, dy, y=y, z=z, activation=act,
                                    **extra(act))
    assert (dx.shape, dw.shape, db.shape) == ((m, k), (k, n), (n,))
    assert_close(dx, g @ w.T.astype(np.float64), dtype, max(m, n, k))
    assert_close(dw, x.T.astype(np.float64) @ g, dtype, max(m, n, k))
    assert_close(db, g.sum(axis=0), dtype, max(m, n, k))
    if act not in ("gelu", "gelu_tanh", "identity"):
        # from y alone, as forward left it
        y = nn.linear(x, w, b, act, **extra(act))
        dx2, dw2, db2 = nn.linear_backward(x, w, dy, y=y, activation=act,
                                           **extra(act))
        assert_close(dx2, g @ w.T.astype(np.float64), dtype, max(m, n, k))
        assert_close(db2, g.sum(axis=0), dtype, max(m, n, k))


# ---- the packed driver's fused epilogue ----
# Every SHAPES entry is routed to the unpacked path, where the epilogue runs
# after the product.  These (batch, in, out) reach the packed driver (none
# of m == 1, n == 1, m*n*k <= 128**3, m <= 64, k <= 16), which applies bias
# and activation per tile on the last k block.  With the avx512 kernels
# (MR = 12, NR = 32 float32 / 16 float64) neither m nor n is a multiple of
# MR or NR, before or after the swap a column-major out takes (C^T = B^T A^T,
# bias along rows), so edge tiles go through the driver's private tile;
# k = 1100 exceeds KC (at most 1024: float32 on the sapphirerapids row), so
# two or three k blocks run and the epilogue must wait for the last.
PACKED_SHAPES = [(200, 1100, 130), (130, 160, 150)]


def _packed_out(name, shape, dtype):
    """out=None ("new") or a NaN-filled out of conftest.out_layouts: an
    epilogue that reads C before the product wrote it, or a tile it misses,
    leaves a NaN."""
    return None if name == "new" else dict(out_layouts(shape, dtype))[name]


def _packed_bias(name, b):
    """None, b, or b as a reversed strided view (bias_stride != 1)."""
    if name == "strided bias":
        strided = np.zeros(2 * len(b), b.dtype)[::-2]
        strided[...] = b
        return strided
    return None if name == "no bias" else b


# (bias, out) on 1 thread: every out layout with a bias; no bias and a
# strided bias into a row-major and a Fortran out (the swapped driver, bias
# along rows), and a strided bias into a strided out
PACKED_CASES = ([("bias", out) for out in ("new", "C", "F", "strided",
                                           "negative")]
                + [(bias, out) for bias in ("no bias", "strided bias")
                   for out in ("new", "F")]
                + [("strided bias", "strided")])
# on 2 threads (C's rows split, so a thread's tiles start at other rows and
# columns): the vectorized row-major tile, the swapped driver's bias along
# rows, the private tile with the scalar epilogue
PACKED_CASES_2 = [("bias", "new"), ("bias", "F"),
                  ("strided bias", "strided")]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("shape", PACKED_SHAPES,
                         ids=lambda s: "x".join(map(str, s)))
def test_forward_packed_epilogue(shape, act, dtype):
    """act(x @ w + b) through the packed driver's epilogue (softmax: its row
    pass after the packed product) against float64 numpy, on 1 thread
    (PACKED_CASES) and 2 (PACKED_CASES_2, which must match 1 bit for bit)."""
    m, k, n = shape
    if k == 1100:
        assert k > _context.kernel_info()[np.dtype(dtype).name]["KC"]
    x, w, b, _ = data(m, k, n, dtype, seed=12)
    z = x.astype(np.float64) @ w.astype(np.float64)
    refs = {"no bias": ref_act(z, act)}
    refs["bias"] = refs["strided bias"] = ref_act(z + b, act)
    first = {}
    for nt, cases in ((1, PACKED_CASES), (2, PACKED_CASES_2)):
        for bias_name, out_name in cases:
            where = f"{nt} threads, {bias_name}, out {out_name}"
            out = _packed_out(out_name, (m, n), dtype)
            # PACKED_SHAPES lie past the unpacked path's 128^3 (a row may
            # take more unpacked)
            with forced_threads(nt) as seen, small_mnk(128 ** 3):
                y = nn.linear(x, w, _packed_bias(bias_name, b), act, out=out,
                              **extra(act))
            assert_ran(seen, "packed", nt)
            assert "small" not in seen, (where, seen)
            assert out is None or y is out, where
            assert_close(y, refs[bias_name], dtype, k, err_msg=where)
            if nt == 1:
                first[bias_name, out_name] = y.copy()
            else:
                np.testing.assert_array_equal(y, first[bias_name, out_name],
                                              err_msg=where)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS)
def test_backward_packed(act, dtype):
    """dx = g @ w.T (200 x 130 @ 130 x 1100) and dw = x.T @ g (1100 x 200 @
    200 x 130) both take the packed path; db is the pass over dy."""
    m, k, n = PACKED_SHAPES[0]
    x, w, b, dy = data(m, k, n, dtype, seed=13)
    with forced_threads(1) as seen:
        z = nn.linear(x, w, b)
    assert_ran(seen, "packed", 1)
    y = nn.activate(z, act, **extra(act))
    # the derivative at the z backward is given, so that a z within
    # rounding of a kink (relu at 0) cannot flip the reference
    g = ref_grad_z(z.astype(np.float64), dy.astype(np.float64), act)
    want = (g @ w.T.astype(np.float64), x.T.astype(np.float64) @ g,
            g.sum(axis=0))
    for nt in (1, 2):
        with forced_threads(nt) as seen:
            got = nn.linear_backward(x, w, dy, y=y, z=z, activation=act,
                                     **extra(act))
        assert_ran(seen, "packed", nt)
        assert "small" not in seen, seen
        for name, a, ref in zip(("dx", "dw", "db"), got, want):
            assert a.shape == ref.shape, name
            assert_close(a, ref, dtype, max(m, n, k),
                         err_msg=f"{name}, {nt} threads")


@pytest.mark.parametrize("act", ACTS)
def test_finite_differences(act):
    """dL/dx, dL/dw, dL/db of L = sum(r * act(x @ w + b)), central
    differences in float64."""
    m, k, n = 4, 5, 3
    x, w, b, r = data(m, k, n, np.float64, seed=2)

    def loss(x_, w_, b_):
        return float((r * nn.linear(x_, w_, b_, act, **extra(act))).sum())

    z = nn.linear(x, w, b)
    dx, dw, db = nn.linear_backward(x, w, r, z=z, activation=act,
                                    **extra(act))
    h = 1e-6
    for arr, grad in ((x, dx), (w, dw), (b, db)):
        num = np.empty_like(arr)
        for idx in np.ndindex(arr.shape):
            keep = arr[idx]
            arr[idx] = keep + h
            up = loss(x, w, b)
            arr[idx] = keep - h
            down = loss(x, w, b)
            arr[idx] = keep
            num[idx] = (up - down) / (2 * h)
        np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", DTYPES)
def test_any_strides_no_copies_needed(dtype):
    m, k, n = 23, 19, 29
    x, w, b, dy = data(m, k, n, dtype, seed=3)
    w_torch = np.ascontiguousarray(w.T)          # PyTorch's (out, in) layout
    x_strided = np.zeros((2 * m, k + 3), dtype)[::2, 1:k + 1]
    x_strided[...] = x
    b_strided = np.zeros(2 * n, dtype)[::-2]
    b_strided[...] = b
    ref = ref_act(x.astype(np.float64) @ w + b, "relu")
    out = np.zeros((n, m), dtype).T              # column-major out
    y = nn.linear(x_strided, w_torch.T, b_strided, "relu", out=out)
    assert y is out
    assert_close(out, ref, dtype, k)
    y = nn.linear(x_strided, w_torch.T, b_strided, "relu")
    dx, dw, db = nn.linear_backward(x_strided, w_torch.T, dy[:, ::-1][:, ::-1],
                                    y=y, activation="relu")
    g = dy * (ref > 0)
    assert_close(dx, g @ w.T, dtype, n)
    assert_close(dw, x.T @ g, dtype, m)
    assert_close(db, g.sum(0), dtype, m)


def test_out_overlapping_an_input():
    x, w, b, _ = data(6, 6, 6, np.float64, seed=4)
    ref = ref_act(x @ w + b, "tanh")
    nn.linear(x, w, b, "tanh", out=x)
    assert_close(x, ref, np.float64, 6)


@pytest.mark.parametrize("m,k,n", [(0, 2, 3), (0, 1, 70), (3, 0, 0), (3, 2, 0)])
def test_empty_out_with_zero_strides(m, k, n):
    # numpy 2 gives np.empty((0, 3)) strides (0, 0): linear once took that
    # for "one element would hold several results" where np.matmul and
    # fastmm.matmul accept it (found by differential fuzzing)
    x = np.ones((m, k), np.float32)
    w = np.ones((k, n), np.float32)
    out = np.lib.stride_tricks.as_strided(np.empty(1, np.float32), (m, n),
                                          (0, 0))
    assert fastmm.matmul(x, w, out=out) is out
    for nt in (1, 2):
        with fastmm.threads(nt):
            assert nn.linear(x, w, None, "relu", out=out) is out
            assert nn.linear(x, w, np.zeros(n, np.float32), out=out) is out


def test_out_overlapping_weights_or_bias():
    """out sharing memory with w or b (not only x) is computed into a
    temporary first, on the general path and not the fast one."""
    for overlap in ("w", "b"):
        store = np.random.default_rng(5).standard_normal(80)
        w = store[:36].reshape(6, 6)
        b = store[36:42]
        x = np.random.default_rng(6).standard_normal((6, 6))
        ref = ref_act(x @ w + b, "relu")
        out = w if overlap == "w" else store[40:76].reshape(6, 6)
        assert _fastpath.try_forward(x, w, b, "relu", 0.01, out) is None
        assert nn.linear(x, w, b, "relu", out=out) is out
        assert_close(out, ref, np.float64, 6)


def test_fast_path_takes_a_ready_out_only():
    """linear(..., out=) skips the general checks (~10 us) only for an out
    it can write as it is: of the result's type and shape, aligned,
    writeable, one element per result, sharing no memory with an operand."""
    x, w, b, _ = data(5, 4, 3, np.float32, seed=7)
    ref = ref_act(x @ w + b, "sigmoid")
    big = np.full((5, 8), -7.0, np.float32)
    out = big[:, 1:7:2]                            # strided, not contiguous
    assert _fastpath.try_forward(x, w, b, "sigmoid", 0.01, out) is out
    assert_close(out, ref, np.float32, 4)
    assert (big[:, ::2] == -7).all() and (big[:, 7] == -7).all()
    ro = np.empty((5, 3), np.float32)
    ro.flags.writeable = False
    zero = np.broadcast_to(np.empty((1, 3), np.float32), (5, 3))
    for bad in (ro, zero, np.empty((5, 3)), np.empty((3, 5), np.float32),
                np.empty((5, 3), ">f4"), x[:, :3]):
        assert _fastpath.try_forward(x, w, b, "sigmoid", 0.01, bad) is None


def test_degenerate_sizes():
    b = np.arange(4, dtype=np.float32) - 1.5
    # k == 0: the product is zero, the epilogue still applies
    y = nn.linear(np.zeros((3, 0), np.float32), np.zeros((0, 4), np.float32),
                  b, "relu")
    np.testing.assert_array_equal(y, np.tile(np.maximum(b, 0), (3, 1)))
    y = nn.linear(np.zeros((0, 5)), np.ones((5, 4)), b, "softmax")
    assert y.shape == (0, 4)
    dx, dw, db = nn.linear_backward(np.zeros((0, 5)), np.ones((5, 4)),
                                    np.zeros((0, 4)), y=y, activation="relu")
    assert dx.shape == (0, 5)
    np.testing.assert_array_equal(dw, 0)
    np.testing.assert_array_equal(db, 0)


def test_special_values():
    x = np.array([[np.nan, 1.0]], np.float32)
    w = np.eye(2, dtype=np.float32)
    assert np.isnan(nn.linear(x, w, activation="relu")[0, 0])
    big = np.array([[1000.0, 999.0, -1000.0]])
    p = nn.linear(big, np.eye(3), activation="softmax")
    assert np.all(np.isfinite(p))
    np.testing.assert_allclose(p.sum(1), 1.0)
    np.testing.assert_allclose(p, ref_act(big, "softmax"))
    s = nn.linear(np.array([[-100.0, 100.0]], np.float32),
                  np.eye(2, dtype=np.float32), activation="sigmoid")
    assert s[0, 0] >= 0 and s[0, 1] == 1


def test_threads_identical():
    """Fixed per-element order in the GEMM and a fixed row-block order for db:
    the thread count must not change the results."""
    m, k, n = 2000, 48, 500
    x, w, b, dy = data(m, k, n, np.float32, seed=5)
    results = []
    for t in (1, 2):
        with fastmm.threads(t):
            y = nn.linear(x, w, b, "relu")
            results.append((y,) + nn.linear_backward(x, w, dy, y=y,
                                                     activation="relu"))
    for a, b_ in zip(*results):
        np.testing.assert_allclose(a, b_, rtol=1e-6, atol=1e-6)
    # db depends only on dy and y, through fastmm's own reduction: bitwise
    y = results[0][0]
    dbs = []
    for t in (1, 2):
        with fastmm.threads(t):
            dbs.append(nn.linear_backward(x, w, dy, y=y, activation="relu")[2])
    np.testing.assert_array_equal(dbs[0], dbs[1])


def test_dtype_promotion():
    x, w, b, _ = data(5, 4, 3, np.float32)
    assert nn.linear(x, w, b).dtype == np.float32
    assert nn.linear(x, w.astype(np.float64), b).dtype == np.float64
    assert nn.linear(x.astype(np.int64), w, b).dtype == np.float64
    big_endian = x.astype(">f4")
    np.testing.assert_array_equal(nn.linear(big_endian, w, b),
                                  nn.linear(x, w, b))


def test_errors():
    x, w, b, dy = data(5, 4, 3, np.float32)
    with pytest.raises(ValueError, match="unknown activation 'swish'.*relu"):
        nn.linear(x, w, b, "swish")
    with pytest.raises(TypeError, match="activation must be"):
        nn.linear(x, w, b, 3)
    with pytest.raises(ValueError, match="inner dimensions 4 and 3"):
        nn.linear(x, w.T, b)
    with pytest.raises(ValueError, match="b has shape"):
        nn.linear(x, w, np.ones(4, np.float32))
    with pytest.raises(ValueError, match="2-D"):
        nn.linear(x[0], w, b)
    with pytest.raises(TypeError, match="real floating-point"):
        nn.linear(x.astype(complex), w, b)
    with pytest.raises(TypeError, match="dtype"):
        nn.linear(x, w, b, out=np.empty((5, 3)))
    with pytest.raises(ValueError, match="shape"):
        nn.linear(x, w, b, out=np.empty((3, 5), np.float32))
    ro = np.empty((5, 3), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        nn.linear(x, w, b, out=ro)
    with pytest.raises(ValueError, match="pre-activation"):
        nn.linear_backward(x, w, dy, y=dy, activation="gelu")
    with pytest.raises(ValueError, match="pre-activation"):
        nn.linear_backward(x, w, dy, y=dy, activation="leaky_relu", slope=-1)
    with pytest.raises(ValueError, match="needs y="):
        nn.linear_backward(x, w, dy, activation="relu")
    with pytest.raises(ValueError, match="dy has shape"):
        nn.linear_backward(x, w, dy.T, y=dy, activation="relu")
    with pytest.raises(ValueError, match="finite"):
        nn.linear(x, w, b, "leaky_relu", slope=float("nan"))


# ---- layers, losses, training ----

def test_dense_init_and_seed():
    a = nn.Dense(200, 300, "relu", seed=7)
    assert a.init == "he" and a.W.shape == (200, 300)
    assert a.W.dtype == np.float32
    assert abs(a.W.std() - math.sqrt(2 / 200)) < 0.05 * math.sqrt(2 / 200)
    np.testing.assert_array_equal(a.W, nn.Dense(200, 300, "relu", seed=7).W)
    x = nn.Dense(200, 300, "tanh", init="xavier", seed=7)
    assert np.abs(x.W).max() <= math.sqrt(6 / 500)
    with pytest.raises(ValueError, match="init"):
        nn.Dense(2, 3, init="lecun")
    with pytest.raises(ValueError, match="outputs 3 features"):
        nn.Sequential([nn.Dense(2, 3), nn.Dense(4, 5)])


def _net(dtype=np.float64, out="softmax"):
    return nn.Sequential([nn.Dense(6, 8, "relu", seed=0, dtype=dtype),
                          nn.Dense(8, 7, "gelu", seed=1, dtype=dtype),
                          nn.Dense(7, 4, out, seed=2, dtype=dtype)])


@pytest.mark.parametrize("loss_cls,out", [(nn.SoftmaxCrossEntropy, "softmax"),
                                          (nn.SoftmaxCrossEntropy, None),
                                          (nn.MeanSquaredError, "sigmoid")])
def test_network_gradients_finite_differences(loss_cls, out):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((5, 6))
    t = rng.integers(0, 4, 5) if loss_cls is nn.SoftmaxCrossEntropy \
        else rng.random((5, 4))
    net, loss = _net(out=out), loss_cls()
    act = net.output_activation
    pred = net.forward(X)
    grad, pre = loss.gradient(pred, t, act)
    net.backward(grad, preactivation=pre)
    h = 1e-6
    for layer in net.layers:
        for p, g in layer.parameters():
            num = np.empty_like(p)
            for idx in np.ndindex(p.shape):
                keep = p[idx]
                p[idx] = keep + h
                up = loss.value(net.forward(X, training=False), t, act)
                p[idx] = keep - h
                down = loss.value(net.forward(X, training=False), t, act)
                p[idx] = keep
                num[idx] = (up - down) / (2 * h)
            np.testing.assert_allclose(g, num, rtol=1e-5, atol=1e-8)


def test_sgd_momentum():
    p, g = np.array([1.0, 2.0]), np.array([0.5, -1.0])
    opt = nn.SGD(lr=0.1, momentum=0.5)
    opt.step([(p, g)])
    np.testing.assert_allclose(p, [0.95, 2.1])
    opt.step([(p, g)])   # v = 0.5 * v - lr * g
    np.testing.assert_allclose(p, [0.95 - 0.075, 2.1 + 0.15])


def test_fit_learns_and_save_load(tmp_path):
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((3, 10)) * 3
    labels = rng.integers(0, 3, 600)
    X = (centers[labels] + rng.standard_normal((600, 10))).astype(np.float32)
    net = nn.Sequential([nn.Dense(10, 16, "relu", seed=0),
                         nn.Dense(16, 3, "softmax", seed=1)])
    stream = io.StringIO()
    hist = net.fit(X, labels, epochs=5, batch_size=32, seed=0, stream=stream,
                   validation_data=(X[:100], labels[:100]))
    assert len(hist["loss"]) == 5 and len(hist["epoch_time"]) == 5
    assert hist["loss"][-1] < 0.5 * hist["loss"][0]
    assert "epoch 5/5" in stream.getvalue() and "loss" in stream.getvalue()
    accuracy = (net.predict(X).argmax(1) == labels).mean()
    assert accuracy > 0.95
    path = tmp_path / "net.npz"
    net.save(path)
    again = nn.Sequential.load(path)
    np.testing.assert_array_equal(again.predict(X), net.predict(X))
    assert repr(again) == repr(net)


@pytest.mark.parametrize("change", [
    "garbage", "truncated", "zip_method", "zip_version", "zip_encrypted",
    "deep_config", "no_config",
    "quantized", "version", "no_layers", "sizes", "huge_sizes", "dtype",
    "bias", "activation", "weight_broadcasts", "weight_dtype", "no_bias"])
def test_sequential_load_rejects_bad_files(tmp_path, change):
    # Sequential.load once trusted its file: a W that broadcasts to the
    # layer's shape loaded, sizes of 10^6 allocated their weights first, and
    # a damaged archive raised NotImplementedError or RecursionError
    import json
    from test_quantize import ZIP_DAMAGE, damage_zip
    path = tmp_path / "net.npz"
    net = nn.Sequential([nn.Dense(5, 4, "relu", seed=0),
                         nn.Dense(4, 3, "softmax", seed=1)])
    net.save(path)
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    config = json.loads(str(arrays["config"]))
    layer = config["layers"][0]
    if change == "garbage":
        path.write_bytes(b"not an npz file" * 10)
    elif change == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    elif change in ZIP_DAMAGE:
        damage_zip(path, change)
    elif change == "deep_config":
        arrays["config"] = np.array("[" * 100000)
    elif change == "no_config":
        del arrays["config"]
    elif change == "quantized":
        nn.quantize(net, "bf16").save(path)
    elif change == "version":
        config["version"] = 2
    elif change == "no_layers":
        config["layers"] = []
    elif change == "sizes":
        layer["in"] = "5"
    elif change == "huge_sizes":
        layer["in"] = layer["out"] = 10 ** 6
    elif change == "dtype":
        layer["dtype"] = "int8"
    elif change == "bias":
        layer["bias"] = "yes"
    elif change == "activation":
        layer["activation"] = "swish"
    elif change == "weight_broadcasts":
        arrays["W0"] = arrays["W0"][:1]
    elif change == "weight_dtype":
        arrays["W1"] = arrays["W1"].astype(np.float64)
    elif change == "no_bias":
        del arrays["b1"]
    if change not in ("garbage", "truncated", "quantized", *ZIP_DAMAGE):
        if "config" in arrays and change != "deep_config":
            arrays["config"] = np.array(json.dumps(config))
        np.savez(path, **arrays)
    with pytest.raises(ValueError, match=path.name):
        nn.Sequential.load(path)


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_compiled_matches_formula(nesterov):
    """The fused step (contiguous arrays) and the numpy fallback (a strided
    parameter) implement the same update."""
    rng = np.random.default_rng(6)
    p = rng.standard_normal((6, 5))
    g = rng.standard_normal((6, 5))
    strided = np.zeros((6, 10))[:, ::2]
    strided[...] = p
    a = nn.SGD(lr=0.1, momentum=0.8, nesterov=nesterov, weight_decay=0.01)
    b = nn.SGD(lr=0.1, momentum=0.8, nesterov=nesterov, weight_decay=0.01)
    v = np.zeros_like(p)
    ref = p.copy()
    for _ in range(3):
        a.step([(p, g)])
        b.step([(strided, g)])
        gd = g + 0.01 * ref
        v = 0.8 * v - 0.1 * gd
        ref += 0.8 * v - 0.1 * gd if nesterov else v
    np.testing.assert_allclose(p, ref, rtol=1e-14)
    np.testing.assert_allclose(strided, ref, rtol=1e-14)


def test_lazy_attribute():
    assert fastmm.nn is nn
    assert "nn" in fastmm.__all__


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_rows_long_strided_and_nan(dtype):
    rng = np.random.default_rng(7)
    z = (rng.standard_normal((5, 70)) * 30 + 500).astype(dtype)
    eye = np.eye(70, dtype=dtype)
    ref = ref_act(z.astype(np.float64), "softmax")
    assert_close(nn.linear(z, eye, activation="softmax"), ref, dtype, 70)
    out = np.zeros((70, 5), dtype).T        # strided rows: the plain path
    nn.linear(z, eye, activation="softmax", out=out)
    assert_close(out, ref, dtype, 70)
    z[2, 40] = np.nan
    p = nn.linear(z, eye, activation="softmax")
    assert np.isnan(p[2]).all() and np.isfinite(np.delete(p, 2, 0)).all()


# ---- non-finite data, divergence, float labels ----

def _tiny_net(out="softmax"):
    return nn.Sequential([nn.Dense(3, 4, None, seed=0),
                          nn.Dense(4, 2, out, seed=1)])


def _weights(net):
    return [p.copy() for p, _ in net.parameters()]


@pytest.mark.parametrize("what,row,value,match", [
    ("X", 3, np.nan, r"fit: X contains NaN or infinity \(first at row 3: "
                     r"X\[3, 1\] = nan\)"),
    ("X", 5, -np.inf, r"fit: X contains NaN or infinity \(first at row 5"),
    ("X", 2, 1e39, r"fit: X\[2, 1\] = 1e\+39 overflows float32"),
    ("y", 4, np.inf, r"fit: y contains NaN or infinity \(first at row 4: "
                     r"y\[4, 1\] = inf\)"),
    ("X_val", 1, np.nan, r"fit: X_val contains NaN or infinity"),
    ("y_val", 0, np.nan, r"fit: y_val contains NaN or infinity \(first "
                         r"at row 0"),
])
def test_fit_rejects_nonfinite_data(what, row, value, match):
    rng = np.random.default_rng(8)
    data_ = {"X": rng.standard_normal((8, 3)), "y": rng.random((8, 2)),
             "X_val": rng.standard_normal((4, 3)), "y_val": rng.random((4, 2))}
    data_[what][row, 1] = value
    net = _tiny_net(out="sigmoid")
    before = _weights(net)
    # np.errstate: numpy's own warning about the 1e39 cast to float32
    with pytest.raises(ValueError, match=match), np.errstate(over="ignore"):
        net.fit(data_["X"], data_["y"], epochs=2, batch_size=4,
                verbose=False, validation_data=(data_["X_val"],
                                                data_["y_val"]))
    # rejected before the first step
    for p, (q, _) in zip(before, net.parameters()):
        np.testing.assert_array_equal(p, q)


def test_fit_rejects_nonfinite_parameters():
    """Else the first epoch would report a divergence and blame the
    learning rate."""
    net = _tiny_net(out=None)
    net.layers[1].b[0] = np.nan
    with pytest.raises(ValueError, match="parameters hold NaN or infinity "
                                         "before training"):
        net.fit(np.zeros((4, 3)), np.zeros((4, 2)), verbose=False)


def test_fit_divergence_raises_and_rolls_back():
    rng = np.random.default_rng(9)
    X = rng.standard_normal((32, 3)).astype(np.float32)
    Y = rng.standard_normal((32, 2)).astype(np.float32)
    # a linear net and lr 0.5: one finite epoch or two, then overflow
    net, opt = _tiny_net(out=None), nn.SGD(lr=0.5)
    with pytest.raises(FloatingPointError,
                       match=r"fit: training diverged in epoch \d+/8.*"
                             r"lower the learning rate \(lr=0\.5\)"):
        net.fit(X, Y, epochs=8, batch_size=8, optimizer=opt, seed=0,
                verbose=False)
    finished = len(net.history["loss"])
    assert finished >= 1 and np.isfinite(net.history["loss"]).all()
    # the parameters are those at the end of the last finite epoch
    ref = _tiny_net(out=None)
    ref.fit(X, Y, epochs=finished, batch_size=8, optimizer=nn.SGD(lr=0.5),
            seed=0, verbose=False)
    for (p, _), (q, _) in zip(net.parameters(), ref.parameters()):
        np.testing.assert_array_equal(p, q)

    # diverging in the first epoch restores the initial weights
    net, opt = _tiny_net(out=None), nn.SGD(lr=1e6)
    before = _weights(net)
    with pytest.raises(FloatingPointError, match=r"epoch 1/3.*before "
                                                 r"training"):
        net.fit(X, Y, epochs=3, batch_size=8, optimizer=opt, verbose=False)
    assert net.history == {"loss": [], "epoch_time": []}
    for p, (q, _) in zip(before, net.parameters()):
        np.testing.assert_array_equal(p, q)
    # and SGD's momentum too: the same optimizer, slower, now trains
    opt.lr = 0.01
    hist = net.fit(X, Y, epochs=2, batch_size=8, optimizer=opt,
                   verbose=False)
    assert np.isfinite(hist["loss"]).all()

    # one batch per epoch: its loss is finite, the step after it is not
    before = _weights(net)
    with pytest.raises(FloatingPointError, match=r"epoch 1/1 \(a parameter "
                                                 r"became NaN or infinity"):
        net.fit(X, Y, epochs=1, batch_size=32, optimizer=nn.SGD(lr=1e300),
                verbose=False)
    for p, (q, _) in zip(before, net.parameters()):
        np.testing.assert_array_equal(p, q)


@pytest.mark.parametrize("out", ["softmax", "sigmoid", None])
def test_predict_evaluate_propagate_nan(out):
    """As numpy, PyTorch and Keras do: a non-finite input row gives a NaN
    output row and a NaN loss, other rows are untouched, nothing raises."""
    rng = np.random.default_rng(10)
    net = _tiny_net(out)
    X = rng.standard_normal((6, 3))
    clean = net.predict(X)
    X[2, 0], X[4, 1] = np.nan, np.inf
    pred = net.predict(X, batch_size=4)
    assert np.isnan(pred[[2, 4]]).all()
    np.testing.assert_array_equal(np.delete(pred, [2, 4], 0),
                                  np.delete(clean, [2, 4], 0))
    y = rng.integers(0, 2, 6) if out == "softmax" else rng.random((6, 2))
    assert math.isnan(net.evaluate(X, y))
    assert math.isfinite(net.evaluate(np.delete(X, [2, 4], 0),
                                      np.delete(y, [2, 4], 0)))


def test_float_labels_that_are_whole_numbers():
    rng = np.random.default_rng(11)
    X = rng.standard_normal((12, 3))
    labels = rng.integers(0, 2, 12)
    histories = []
    for y in (labels, labels.astype(np.float64), labels.astype(np.float32)):
        net = _tiny_net()
        histories.append(net.fit(X, y, epochs=2, batch_size=4, seed=0,
                                 verbose=False, validation_data=(X, y)))
        assert net.evaluate(X, y) == net.evaluate(X, labels)
    for h in histories[1:]:
        assert h["loss"] == histories[0]["loss"]
        assert h["val_loss"] == histories[0]["val_loss"]
    loss = nn.SoftmaxCrossEntropy()
    pred = _tiny_net().predict(X)
    assert loss(pred, labels.astype(float)) == loss(pred, labels)
    # one-hot and probability rows are still targets
    one_hot = np.eye(2)[labels]
    assert loss(pred, one_hot) == pytest.approx(loss(pred, labels))
    _tiny_net().fit(X, one_hot, epochs=1, verbose=False)


@pytest.mark.parametrize("bad,match", [
    (0.5, r"class labels must be integers; got 0\.5 at index 3"),
    (np.nan, r"class labels must be integers; got nan at index 3"),
    (-np.inf, r"class labels must be integers; got -inf at index 3"),
    (2.0, r"class labels must lie in \[0, 2\)"),
    (1e20, r"class labels must lie in \[0, 2\)"),
])
def test_float_labels_not_whole_rejected(bad, match):
    y = np.array([0.0, 1.0, 1.0, bad, 0.0])
    pred = np.full((5, 2), 0.5)
    with pytest.raises(ValueError, match=match):
        nn.SoftmaxCrossEntropy()(pred, y)
    if not np.isfinite(bad):
        match = r"fit: y contains NaN or infinity \(first at row 3"
    with pytest.raises(ValueError, match=match):
        _tiny_net().fit(np.zeros((5, 3)), y, epochs=1, verbose=False)


def test_network_backward_returns_the_input_gradient():
    # Sequential.backward returned None (its first layer skipped dL/dx)
    # while documenting dL/dinput; need_dx=False is the training shortcut
    rng = np.random.default_rng(5)
    X = rng.standard_normal((5, 6))
    t = rng.integers(0, 4, 5)
    net, loss = _net(out="softmax"), nn.SoftmaxCrossEntropy()
    grad, pre = loss.gradient(net.forward(X), t, net.output_activation)
    dx = net.backward(grad, preactivation=pre)
    assert dx is not None and dx.shape == X.shape
    h, num = 1e-6, np.empty_like(X)
    for idx in np.ndindex(X.shape):
        up, down = X.copy(), X.copy()
        up[idx] += h
        down[idx] -= h
        num[idx] = (loss.value(net.forward(up, training=False), t, "softmax")
                    - loss.value(net.forward(down, training=False), t,
                                 "softmax")) / (2 * h)
    np.testing.assert_allclose(dx, num, rtol=1e-5, atol=1e-8)
    net.forward(X)
    assert net.backward(grad, preactivation=pre, need_dx=False) is None


@pytest.mark.parametrize("act", ["sigmoid", "tanh", "gelu_tanh", "softmax"])
def test_float64_activation_polynomials_against_libm(kernel, act):
    """float64 sigmoid, tanh, gelu_tanh and softmax use Cephes' exp and tanh
    polynomials (vectorised), not libm: within 4 ulp of numpy's libm-based
    values from -800 to 800, both sides of tanh's 0.625 switch, tiny and
    subnormal inputs; exp's flush below 2^-1022 is the only absolute error.
    Contiguous rows take each kernel family's tile loop, a strided output
    the scalar one."""
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        z = np.concatenate([
            np.linspace(-800, 800, 16001), np.linspace(-1, 1, 4001),
            0.625 * (1 + np.linspace(-1e-3, 1e-3, 201)),
            -0.625 * (1 + np.linspace(-1e-3, 1e-3, 201)),
            np.geomspace(1e-300, 1e-3, 301), -np.geomspace(5e-324, 1e-3, 301),
            [0.0, -0.0, 708.3, -708.3, -708.4, -709.0, -745.2, 1e300, -1e300]])
        rows = z.reshape(1, -1)
        ref = ref_act(rows, act)
        cond = 1.0
        if act == "gelu_tanh":
            # ref_act's 1 + tanh(u) cancels for negative inputs: x * sigmoid(2u);
            # u's own rounding, different in each, is amplified |2u| times
            u = np.sqrt(2 / np.pi) * (rows + 0.044715 * rows ** 3)
            ref = rows / (1 + np.exp(-2 * u))
            cond = 1 + np.abs(2 * u)
        if act == "softmax":
            rows = rows[:, ::701].copy()            # a row softmax can hold
            ref = ref_act(rows, act)
        got = nn.activate(rows, act)
        # a strided output row takes the scalar loop (nn/_ops.pyx)
        got_strided = np.full((rows.shape[0], 2 * rows.shape[1]),
                              np.nan)[:, ::2]
        _ops.apply_activation(rows, got_strided, _ops.CODES[act], 0.01)
        eps = np.finfo(np.float64).eps
        bound = 4 * eps * cond * np.abs(ref) + 2.3e-308   # inf * 0: NaN
    for y in (got, got_strided):
        assert y.dtype == np.float64
        bad = ~(np.abs(y - ref) <= bound) & ~(y == ref)     # equal: fine
        assert not bad.any(), (rows[bad][:5], y[bad][:5], ref[bad][:5])
    # special values keep their meaning
    specials = np.array([[np.nan, np.inf, -np.inf]])
    out = nn.activate(specials, act)
    if act != "softmax":
        assert np.isnan(out[0, 0])
        want = {"sigmoid": (1.0, 0.0), "tanh": (1.0, -1.0),
                "gelu_tanh": (np.inf, np.nan)}[act]
        np.testing.assert_array_equal(out[0, 1:], want)
