"""fastmm.cuda against numpy references, on a GPU or numba's CUDA simulator.

Which backend: a real GPU when one answers (probed through the driver with
ctypes, before numba is imported, since numba reads NUMBA_ENABLE_CUDASIM
once at import); otherwise the simulator is switched on here, unless the
caller already set NUMBA_ENABLE_CUDASIM or numba.cuda was imported earlier
(then numba's own choice stands).  Without numba-cuda the kernel tests
skip; the import and error-message tests still run.

The simulator runs each GPU thread as a Python thread, so shapes are tiny
and fastmm.cuda uses its small simulator tile there (same kernel code);
one test runs the production tile.  Sizes 1, 3, 17, 33 are not multiples of
any tile, so every edge path (partial tiles in m, n and k) is exercised.
"""
import ctypes
import importlib.util
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st


def _real_gpu_present():
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        count = ctypes.c_int(0)
        return (lib.cuInit(0) == 0
                and lib.cuDeviceGetCount(ctypes.byref(count)) == 0
                and count.value > 0)
    return False


HAVE_NUMBA_CUDA = importlib.util.find_spec("numba_cuda") is not None
if (HAVE_NUMBA_CUDA and "NUMBA_ENABLE_CUDASIM" not in os.environ
        and "numba.cuda" not in sys.modules and not _real_gpu_present()):
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    if "numba" in sys.modules:
        sys.modules["numba"].core.config.reload_config()

import fastmm                      # noqa: E402
import fastmm.cuda as fc           # noqa: E402
from fastmm.cuda import _api       # noqa: E402

needs_cuda = pytest.mark.skipif(not (HAVE_NUMBA_CUDA and fc.is_available()),
                                reason="numba-cuda not installed or no GPU")

DTYPES = [np.float32, np.float64]
rng = np.random.default_rng(1234)


def rand(shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def cuda():
    from numba import cuda as numba_cuda
    return numba_cuda


def assert_product_close(got, ref, k, dtype, scale):
    """|got - ref| within a k-proportional multiple of eps times ``scale``
    (the magnitudes |a| @ |b| that bound the rounding error)."""
    eps = np.finfo(dtype).eps
    got = np.asarray(got, dtype=np.float64)
    bound = 4 * (k + 2) * eps * np.asarray(scale) + 8 * eps * np.abs(ref)
    assert got.shape == np.shape(ref)
    bad = ~(np.abs(got - ref) <= bound)
    assert not bad.any(), (f"max error {np.nanmax(np.abs(got - ref))}, "
                           f"{bad.sum()} elements out of bound")


def ref_product(a, b):
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return a64 @ b64, np.abs(a64) @ np.abs(b64)


# --- import and availability ----------------------------------------------

def test_import_fastmm_does_not_import_numba():
    code = ("import sys, fastmm; fastmm.cuda.matmul; "
            "assert 'numba' not in sys.modules, 'numba imported'; "
            "print('ok')")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True,
                       text=True, cwd=root)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


def test_missing_numba_cuda_is_a_clear_error(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(_api.importlib.util, "find_spec",
                        lambda name, *a: None if name == "numba_cuda"
                        else real(name, *a))
    assert fc.is_available() is False
    with pytest.raises(fc.CudaUnavailableError, match="numba-cuda"):
        fc.matmul(np.ones((2, 2)), np.ones((2, 2)))
    with pytest.raises(fc.CudaUnavailableError, match="numba-cuda"):
        fastmm.matmul(np.ones((2, 2)), np.ones((2, 2)), device="cuda")


@pytest.mark.skipif(not HAVE_NUMBA_CUDA, reason="numba-cuda not installed")
def test_unavailable_gpu_is_a_clear_error(monkeypatch):
    nc = cuda()
    monkeypatch.setattr(nc, "is_available", lambda: False)
    monkeypatch.setattr(nc, "cuda_error",
                        lambda: "CUDA driver library cannot be found",
                        raising=False)
    assert fc.is_available() is False
    for call in (lambda: fc.matmul(np.ones((2, 2)), np.ones((2, 2))),
                 lambda: fc.gemm(1.0, np.ones((2, 2)), np.ones((2, 2))),
                 lambda: fc.linear(np.ones((2, 2)), np.ones((2, 2))),
                 lambda: fc.linear_backward(np.ones((2, 2)), np.ones((2, 2)),
                                            np.ones((2, 2)))):
        with pytest.raises(fc.CudaUnavailableError,
                           match="no usable CUDA GPU.*driver library cannot "
                                 "be found.*NUMBA_ENABLE_CUDASIM"):
            call()


def test_matmul_device_keyword_validated():
    with pytest.raises(ValueError, match="device"):
        fastmm.matmul(np.ones((2, 2)), np.ones((2, 2)), device="tpu")
    np.testing.assert_array_equal(
        fastmm.matmul(np.eye(2), np.ones((2, 2)), device="cpu"),
        np.ones((2, 2)))


# --- matmul -----------------------------------------------------------------

SHAPES = [(1, 1, 1), (1, 3, 17), (3, 1, 5), (17, 33, 3), (33, 17, 19),
          (16, 16, 16), (0, 3, 4), (3, 0, 4), (3, 4, 0)]


@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m,k,n", SHAPES)
def test_matmul_matches_numpy(m, k, n, dtype):
    a, b = rand((m, k), dtype), rand((k, n), dtype)
    c = fc.matmul(a, b)
    assert isinstance(c, np.ndarray) and c.dtype == dtype
    ref, scale = ref_product(a, b)
    assert_product_close(c, ref, k, dtype, scale)


@needs_cuda
@pytest.mark.parametrize("sa,sb", [((5,), (5, 3)), ((4, 5), (5,)),
                                   ((5,), (5,)), ((2, 1, 3, 5), (4, 5, 2)),
                                   ((3, 5), (2, 5, 4)), ((0, 3, 5), (5, 2))])
def test_matmul_vectors_and_batches(sa, sb):
    a, b = rand(sa, np.float64), rand(sb, np.float64)
    c = fc.matmul(a, b)
    ref = np.matmul(a, b)
    assert np.shape(c) == ref.shape
    np.testing.assert_allclose(c, ref, rtol=1e-12, atol=1e-12)
    assert np.ndim(c) == np.ndim(ref)


@needs_cuda
def test_matmul_promotes_and_validates():
    a32, b64 = rand((3, 4), np.float32), rand((4, 5), np.float64)
    c = fastmm.matmul(a32, b64, device="cuda")
    assert c.dtype == np.float64
    np.testing.assert_allclose(c, a32.astype(np.float64) @ b64, rtol=1e-12)
    with pytest.raises(ValueError, match="mismatch"):
        fc.matmul(np.ones((3, 4)), np.ones((5, 2)))
    with pytest.raises(ValueError, match="enough dimensions"):
        fc.matmul(np.float64(2.0), np.ones((2, 2)))
    with pytest.raises(TypeError, match="float32 and float64"):
        fc.matmul(np.ones((2, 2), np.int64), np.ones((2, 2), np.int64))
    with pytest.raises(ValueError, match="out has shape"):
        fc.matmul(np.ones((2, 3)), np.ones((3, 4)), out=np.empty((2, 3)))
    with pytest.raises(TypeError, match="out has dtype"):
        fc.matmul(np.ones((2, 3)), np.ones((3, 4)),
                  out=np.empty((2, 4), np.float32))


@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul_out_host_strided_and_device(dtype):
    a, b = rand((17, 9), dtype), rand((9, 33), dtype)
    ref, scale = ref_product(a, b)
    big = np.full((40, 70), np.nan, dtype)
    out = big[::2, 1::2][:17, :33]
    assert fastmm.matmul(a, b, out=out, device="cuda") is out
    assert_product_close(out, ref, 9, dtype, scale)
    assert np.isnan(big[1::2]).all()            # nothing written outside out
    d_out = cuda().device_array((17, 33), dtype)
    assert fc.matmul(a, b, out=d_out) is d_out
    assert_product_close(d_out.copy_to_host(), ref, 9, dtype, scale)


@needs_cuda
def test_device_arrays_stay_on_device(monkeypatch):
    nc = cuda()
    a, b = rand((17, 5), np.float32), rand((5, 19), np.float32)
    da, db = nc.to_device(a), nc.to_device(b)
    ref, scale = ref_product(a, b)

    def no_transfer(*args, **kwargs):
        raise AssertionError("host <-> device transfer")
    monkeypatch.setattr(nc, "to_device", no_transfer)
    monkeypatch.setattr(type(da), "copy_to_host", no_transfer)
    results = [fc.matmul(da, db), fc.gemm(2.0, da, db),
               fc.linear(da, db, activation="relu")]
    results += list(fc.linear_backward(da, db, results[0], y=results[2],
                                       activation="relu"))
    monkeypatch.undo()
    for r in results:
        assert nc.devicearray.is_cuda_ndarray(r)
    assert_product_close(results[0].copy_to_host(), ref, 5, np.float32,
                         scale)
    assert_product_close(results[1].copy_to_host(), 2 * ref, 5, np.float32,
                         2 * scale)


@needs_cuda
@pytest.mark.skipif("os.environ.get('NUMBA_ENABLE_CUDASIM') == '1'",
                    reason="the simulator has no __cuda_array_interface__")
def test_cuda_array_interface_objects():
    nc = cuda()
    a, b = rand((33, 17), np.float64), rand((17, 3), np.float64)

    class Foreign:   # stands for a CuPy array or a PyTorch CUDA tensor
        def __init__(self, d):
            self.d = d
            self.__cuda_array_interface__ = d.__cuda_array_interface__
    fa, fb = Foreign(nc.to_device(a)), Foreign(nc.to_device(b))
    c = fc.matmul(fa, fb)
    assert nc.devicearray.is_cuda_ndarray(c)
    np.testing.assert_allclose(c.copy_to_host(), a @ b, rtol=1e-12)


# --- gemm -------------------------------------------------------------------

@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False),
                                             (False, True), (True, True)])
@pytest.mark.parametrize("m,k,n", [(17, 33, 3), (1, 17, 33), (33, 3, 1)])
def test_gemm_alpha_beta_transposes(m, k, n, trans_a, trans_b, dtype):
    a = rand((k, m) if trans_a else (m, k), dtype)
    b = rand((n, k) if trans_b else (k, n), dtype)
    c = rand((m, n), dtype)
    op_a, op_b = (a.T if trans_a else a), (b.T if trans_b else b)
    ref, scale = ref_product(op_a, op_b)
    got = fc.gemm(-1.5, a, b, 0.5, c, trans_a=trans_a, trans_b=trans_b)
    assert got is not c and got.dtype == dtype
    assert_product_close(got, -1.5 * ref + 0.5 * c.astype(np.float64), k,
                         dtype, 1.5 * scale + 0.5 * np.abs(c))


@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_beta_zero_never_reads_c_alpha_zero_never_reads_ab(dtype):
    a, b = rand((17, 9), dtype), rand((9, 33), dtype)
    c = np.full((17, 33), np.nan, dtype)
    got = fc.gemm(1.0, a, b, 0.0, c)
    assert not np.isnan(got).any()
    ref, scale = ref_product(a, b)
    assert_product_close(got, ref, 9, dtype, scale)
    a[3, 4] = np.nan
    b[2, 1] = np.inf
    c = rand((17, 33), dtype)
    got = fc.gemm(0.0, a, b, 2.0, c)
    np.testing.assert_array_equal(got, 2 * c)


@needs_cuda
def test_gemm_overwrite_c_in_place_host_and_device():
    nc = cuda()
    a, b = rand((33, 17), np.float64), rand((17, 3), np.float64)
    c = rand((33, 3), np.float64)
    expect = 2 * (a @ b) + 3 * c
    c_host = c.copy()
    assert fc.gemm(2.0, a, b, 3.0, c_host, overwrite_c=True) is c_host
    np.testing.assert_allclose(c_host, expect, rtol=1e-12, atol=1e-12)
    dc = nc.to_device(c)
    assert fc.gemm(2.0, nc.to_device(a), nc.to_device(b), 3.0, dc,
                   overwrite_c=True) is dc
    np.testing.assert_allclose(dc.copy_to_host(), expect, rtol=1e-12,
                               atol=1e-12)
    # c aliasing a on the device: computed into a temporary, then stored
    sq = rand((17, 17), np.float64)
    dsq = nc.to_device(sq)
    assert fc.gemm(1.0, dsq, dsq, 1.0, dsq, overwrite_c=True) is dsq
    np.testing.assert_allclose(dsq.copy_to_host(), sq @ sq + sq, rtol=1e-12,
                               atol=1e-12)


@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_strided_operands(dtype):
    nc = cuda()
    big_a, big_b = rand((50, 40), dtype), rand((60, 45), dtype)
    a, b = big_a[1::3, ::2][:9, :17], big_b[::2, 3::2][:17, :19]
    assert a.shape == (9, 17) and b.shape == (17, 19)
    ref, scale = ref_product(a, b)
    assert_product_close(fc.gemm(1.0, a, b), ref, 17, dtype, scale)
    # strided device views are read in place
    da = nc.to_device(big_a)[1::3, ::2][:9, :17]
    db = nc.to_device(big_b)[::2, 3::2][:17, :19]
    got = fc.gemm(1.0, da, db)
    assert_product_close(got.copy_to_host(), ref, 17, dtype, scale)
    got = fc.gemm(1.0, db, da, trans_a=True, trans_b=True)
    assert_product_close(got.copy_to_host(), ref.T, 17, dtype, scale.T)


@needs_cuda
@settings(max_examples=15, deadline=None)
@given(m=st.integers(1, 40), k=st.integers(0, 40), n=st.integers(1, 40),
       trans_a=st.booleans(), trans_b=st.booleans(),
       step=st.integers(1, 3), on_device=st.booleans(),
       dtype=st.sampled_from(DTYPES))
def test_gemm_hypothesis(m, k, n, trans_a, trans_b, step, on_device, dtype):
    """Any shape, transpose and column step, host or device operands."""
    sa = (k, m) if trans_a else (m, k)
    sb = (n, k) if trans_b else (k, n)
    a = rand((sa[0], sa[1] * step), dtype)[:, ::step]
    b = rand((sb[0], sb[1] * step), dtype)[:, ::step]
    ref, scale = ref_product(a.T if trans_a else a, b.T if trans_b else b)
    if on_device:
        nc = cuda()
        a = nc.to_device(np.ascontiguousarray(
            np.repeat(a, step, axis=1)))[:, ::step]
        b = nc.to_device(np.ascontiguousarray(
            np.repeat(b, step, axis=1)))[:, ::step]
    got = fc.gemm(1.0, a, b, trans_a=trans_a, trans_b=trans_b)
    if on_device:
        got = got.copy_to_host()
    assert_product_close(got, ref, k, dtype, scale)


@needs_cuda
def test_gemm_validates():
    with pytest.raises(ValueError, match="inner dimensions"):
        fc.gemm(1.0, np.ones((3, 4)), np.ones((3, 4)))
    with pytest.raises(ValueError, match="2-D"):
        fc.gemm(1.0, np.ones(3), np.ones((3, 4)))
    with pytest.raises(ValueError, match="c has shape"):
        fc.gemm(1.0, np.ones((3, 4)), np.ones((4, 2)), 1.0, np.ones((2, 3)))
    with pytest.raises(TypeError, match="float32 and float64"):
        fc.gemm(1.0, np.ones((2, 2), np.complex128), np.ones((2, 2)))


@needs_cuda
def test_production_tile(monkeypatch):
    """The float32 128 x 128 x 8 tile with 8 x 8 per thread (256 threads),
    at sizes that cut every tile edge."""
    from fastmm.cuda import _kernels
    monkeypatch.setattr(_kernels, "SIMULATOR_TILES",
                        _kernels.TILES["float32"])
    a, b = rand((9, 13), np.float32), rand((13, 130), np.float32)
    c = rand((9, 130), np.float32)
    ref, scale = ref_product(a, b)
    assert_product_close(fc.gemm(1.0, a, b, 1.0, c), ref + c, 13,
                         np.float32, scale + np.abs(c))
    got = fc.gemm(1.0, b, a, trans_a=True, trans_b=True)
    assert_product_close(got, ref.T, 13, np.float32, scale.T)


@needs_cuda
@pytest.mark.parametrize("stages", [1, 2])
def test_gemm_kernel_stages(monkeypatch, stages):
    """One and two shared-memory copies of the tiles give the same products:
    k = 37 is nine full slabs of the simulator tile and a partial one, with
    both load orders (plain and transposed operands) and a C update."""
    from fastmm.cuda import _kernels
    monkeypatch.setattr(_kernels, "STAGES", stages)
    _kernels.gemm_kernel.cache_clear()
    built, factory = [], _kernels.gemm_kernel

    def spy(*args, **kwargs):
        kernel = factory(*args, **kwargs)
        built.append(kernel.stages)
        return kernel
    monkeypatch.setattr(_kernels, "gemm_kernel", spy)
    try:
        for dtype in DTYPES:
            for trans in (False, True):
                a, b = rand((37, 19) if trans else (19, 37), dtype), \
                    rand((21, 37) if trans else (37, 21), dtype)
                c = rand((19, 21), dtype)
                op_a, op_b = (a.T, b.T) if trans else (a, b)
                ref, scale = ref_product(op_a, op_b)
                got = fc.gemm(2.0, a, b, -1.0, c, trans_a=trans,
                              trans_b=trans)
                assert_product_close(got, 2 * ref - c.astype(np.float64),
                                     37, dtype, 2 * scale + np.abs(c))
        assert built and set(built) == {stages}
    finally:
        factory.cache_clear()


# --- dense layer ------------------------------------------------------------

def _erf(x):
    return np.vectorize(math.erf)(x)


def _act_ref(z, act):
    if act in (None, "identity"):
        return z
    if act == "relu":
        return np.maximum(z, 0)
    if act == "leaky_relu":
        return np.where(z > 0, z, 0.01 * z)
    if act == "sigmoid":
        return 1 / (1 + np.exp(-z))
    if act == "tanh":
        return np.tanh(z)
    if act == "gelu_tanh":
        return 0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi)
                                      * (z + 0.044715 * z ** 3)))
    if act in ("gelu", "gelu_erf"):
        return 0.5 * z * (1 + _erf(z / np.sqrt(2)))
    if act == "softmax":
        e = np.exp(z - z.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    raise AssertionError(act)


def _act_grad_ref(z, dy, act):
    """dL/dz by central differences of the reference activation, in
    float64 (softmax: the full Jacobian-vector product)."""
    h = 1e-6
    if act == "softmax":
        y = _act_ref(z, act)
        return y * (dy - (dy * y).sum(axis=-1, keepdims=True))
    return dy * (_act_ref(z + h, act) - _act_ref(z - h, act)) / (2 * h)


ACTS = [None, "relu", "leaky_relu", "sigmoid", "tanh", "gelu", "gelu_tanh",
        "gelu_erf", "softmax"]


@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS)
def test_linear_forward(act, dtype):
    x, w, b = rand((9, 33), dtype), rand((33, 19), dtype), rand(19, dtype)
    x[0] = 0    # a row whose pre-activation is exactly the bias
    z, scale = ref_product(x, w)
    z += b.astype(np.float64)
    y = fc.linear(x, w, b, activation=act)
    assert y.dtype == dtype and y.shape == (9, 19)
    eps = np.finfo(dtype).eps
    tol = 4 * 35 * eps * (scale + np.abs(b)) + 16 * eps
    np.testing.assert_array_less(np.abs(y - _act_ref(z, act)), tol + 1e-30)


@needs_cuda
def test_linear_shapes_and_options():
    x, w = rand((2, 3, 5), np.float64), rand((5, 4), np.float64)
    y = fc.linear(x, w, activation="gelu_tanh")
    np.testing.assert_allclose(y, _act_ref(x @ w, "gelu_tanh"), rtol=1e-12,
                               atol=1e-14)
    y = fc.linear(x[0, 0], w, activation="leaky_relu", slope=0.2)
    np.testing.assert_allclose(y, np.where(x[0, 0] @ w > 0, x[0, 0] @ w,
                                           0.2 * (x[0, 0] @ w)), rtol=1e-12)
    out = np.empty((2, 3, 4))
    assert fc.linear(x, w, out=out) is out
    np.testing.assert_allclose(out, x @ w, rtol=1e-12)
    with pytest.raises(ValueError, match="unknown activation"):
        fc.linear(x, w, activation="swish")
    with pytest.raises(ValueError, match="in_features"):
        fc.linear(x, w.T)
    with pytest.raises(ValueError, match="b has shape"):
        fc.linear(x, w, np.ones(5))


@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_writes_device_out_directly(monkeypatch, dtype):
    """A device ``out`` (3-D, or a strided 2-D view) receives the fused
    store itself: no temporary result is copied into it; an ``out`` that
    overlaps x still gets the right answer (through a temporary)."""
    from fastmm.cuda import _kernels
    nc = cuda()
    x, w, b = rand((2, 9, 33), dtype), rand((33, 19), dtype), rand(19, dtype)
    z = np.einsum("bik,kj->bij", x.astype(np.float64), w) + b
    ref = _act_ref(z, "relu")
    tol = 4 * 35 * np.finfo(dtype).eps * (np.abs(x) @ np.abs(w) + np.abs(b))

    def no_copy(*args, **kwargs):
        raise AssertionError("a second pass over the result")
    out = nc.device_array((2, 9, 19), dtype)
    big = nc.to_device(np.full((18, 38), np.nan, dtype))
    strided = big[:, 1::2]
    with monkeypatch.context() as m:
        m.setattr(_kernels, "copy_kernel", no_copy)
        assert fc.linear(x, w, b, activation="relu", out=out) is out
        assert fc.linear(x.reshape(18, 33), w, b, activation="relu",
                         out=strided) is strided
    assert (np.abs(out.copy_to_host() - ref) <= tol + 1e-30).all()
    host = big.copy_to_host()
    assert (np.abs(host[:, 1::2] - ref.reshape(18, 19))
            <= tol.reshape(18, 19) + 1e-30).all()
    assert np.isnan(host[:, 0::2]).all()     # nothing written outside out
    # out aliasing x (in_features == out_features)
    sq = rand((9, 19), dtype)
    dsq = nc.to_device(sq)
    want = sq.astype(np.float64) @ w[:19].astype(np.float64)
    assert fc.linear(dsq, w[:19], out=dsq) is dsq
    np.testing.assert_allclose(dsq.copy_to_host(), want,
                               rtol=1e-4 if dtype == np.float32 else 1e-12,
                               atol=1e-4 if dtype == np.float32 else 1e-12)


@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS)
def test_linear_backward(act, dtype):
    x, w, b = rand((17, 9), np.float64), rand((9, 3), np.float64), \
        rand(3, np.float64)
    dy = rand((17, 3), np.float64)
    z = x @ w + b
    dz = _act_grad_ref(z, dy, act or "identity")
    xs, ws, bs, dys = (v.astype(dtype) for v in (x, w, b, dy))
    ys = _act_ref(z, act).astype(dtype)
    kw = ({"z": z.astype(dtype)} if act in ("gelu", "gelu_tanh", "gelu_erf")
          else {"y": ys})
    dx, dw, db = fc.linear_backward(xs, ws, dys, activation=act, **kw)
    # and with nothing saved: recomputed from x, w, b
    dx2, dw2, db2 = fc.linear_backward(xs, ws, dys, activation=act, b=bs)
    tol = 1e-4 if dtype == np.float32 else 1e-7
    for got, ref in ((dx, dz @ w.T), (dw, x.T @ dz), (db, dz.sum(0)),
                     (dx2, dz @ w.T), (dw2, x.T @ dz), (db2, dz.sum(0))):
        assert got.dtype == dtype and got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=tol,
                                   atol=tol * np.abs(ref).max())


@needs_cuda
def test_column_sum_two_passes(monkeypatch):
    from fastmm.cuda import _kernels
    monkeypatch.setattr(_kernels, "COLSUM_ROWS", 4)    # 33 rows: 9 chunks
    x, w = rand((33, 5), np.float64), rand((5, 3), np.float64)
    dy = rand((33, 3), np.float64)
    dx, dw, db = fc.linear_backward(x, w, dy)
    np.testing.assert_allclose(db, dy.sum(0), rtol=1e-12)
    np.testing.assert_allclose(dx, dy @ w.T, rtol=1e-12)
    np.testing.assert_allclose(dw, x.T @ dy, rtol=1e-12)


# --- real compilation -------------------------------------------------------

_COMPILE_SCRIPT = r"""
import sys, types
from numba import cuda, float32, float64, int64
def probe(x):
    x[0] = 1.0
try:   # a trivial kernel: does this machine have the CUDA compilers?
    cuda.compile_ptx(probe, (float32[::1],), cc=(9, 0))
except Exception as e:
    print("no CUDA compiler (NVVM/NVRTC):", type(e).__name__,
          str(e).splitlines()[0] if str(e) else "")
    sys.exit(77)
import numba.cuda.dispatcher as dispatcher
# device functions compile for the current device, which a GPU-less
# machine lacks: pretend an sm_90 one
dispatcher.get_current_device = lambda: types.SimpleNamespace(
    compute_capability=(9, 0))
from fastmm.cuda import _kernels as k
for dt, t in (("float32", float32), ("float64", float64)):
    C, A = t[:, ::1], t[:, :]
    for flags in [(False, False, False, True, True, False),
                  (True, True, True, False, False, True)]:
        for act, stages in (("identity", 1), ("gelu_erf", 2)):
            k.STAGES = stages     # read when the (uncached) kernel is built
            kern = k.gemm_kernel(dt, *flags, act, k.TILES[dt])
            cuda.compile_ptx(kern.py_func, (int64, int64, int64, t, A, C, t,
                                            A, C, t[::1], t), cc=(9, 0))
    for kern, sig in [(k.softmax_rows_kernel(dt, 128), (C, int64)),
                      (k.softmax_backward_kernel(dt, 128), (C, C, C, int64)),
                      (k.colsum_kernel(dt), (A, C, int64)),
                      (k.copy_kernel(), (A, C))]:
        cuda.compile_ptx(kern.py_func, sig, cc=(9, 0))
    for act in k.ACTIVATIONS:
        cuda.compile_ptx(k.activation_grad_kernel(dt, act).py_func,
                         (A, A, A, C, t), cc=(9, 0))
print("ok")
"""


@pytest.mark.skipif(not HAVE_NUMBA_CUDA, reason="numba-cuda not installed")
def test_kernels_compile_to_ptx():
    """The simulator runs kernels as Python and never type-checks them for
    the GPU: compile each kernel family with NVVM (no GPU needed), in a
    process without the simulator.  Skipped where the CUDA compilers are
    not installed (pip install 'fastmm[cuda12]' provides them)."""
    env = {key: v for key, v in os.environ.items()
           if key != "NUMBA_ENABLE_CUDASIM"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-c", _COMPILE_SCRIPT],
                       capture_output=True, text=True, cwd=root, env=env)
    if r.returncode == 77:
        pytest.skip(r.stdout.strip())
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-3000:]
