"""fastmm.nn.quantize: int8 and bf16 inference models.

The error bounds (u = 2**-24, float32's unit roundoff; p = the exact
dequantized product):

int8, against the same quantization done in float64: acc = x_q @ W_q is
exact, so the layer may differ from p + b = acc * s_x * s_w + b only by
float32's roundings of the write-back (int32 -> float32, two products, one
sum): |z - z_ref| <= 5u (|p| + |b|).

int8, against the unquantized float64 layer: with x = s_x x_q + dx and
W = s_w W_q + dW, |dx| <= h s_x and |dW| <= h s_w (h = 1/2 + 2**-15: half a
step, plus float32's roundings in x * (127 / max|x|) and s_x: < 400 u),
x W - s_x s_w x_q W_q = x dW + dx W - dx dW, so per element
|z - z64| <= sum_k (h s_w |x_k| + h s_x |W_kj| + h^2 s_x s_w) + 5u (|p| + |b|).

bf16, against the same rounding done in float64 (ml_dtypes): only float32
accumulation, |z - z_ref| <= (k + 2) u (|x_bf| @ |W_bf| + |b|); against the
unrounded float64 layer each operand moves by at most 2**-8 relatively, so
|z - z64| <= (2**-7 + 2**-15 + (k + 2) u) (|x| @ |W| + |b|).
"""
import io
import json
import warnings

import numpy as np
import pytest

import fastmm
import fastmm.nn as nn
from fastmm.nn import quantized as qz
from conftest import assert_ran, forced_threads

U = 2.0 ** -24
H = 0.5 + 2.0 ** -15
# (batch, in, out): batch 1, k == 1, primes, more than one write-back block
# (131072 bytes: 256 rows of 128), and k large enough that |acc| > 2**24
SHAPES = [(1, 1, 1), (13, 17, 11), (97, 61, 53), (300, 40, 128),
          (9, 1500, 7)]
ELEMENTWISE = ["relu", "leaky_relu", "sigmoid", "tanh", "gelu", "gelu_tanh",
               "softmax"]


def _data(shape, seed=0):
    m, k, n = shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((m, k)).astype(np.float32)
    # rows and columns of very different magnitudes: the scales must follow
    x *= np.logspace(-3, 3, m, dtype=np.float32)[:, None]
    w = rng.standard_normal((k, n)) * np.logspace(-2, 1, n)
    b = rng.standard_normal(n)
    return x, w, b


def _model(w, b, activation="identity", dtype=np.float32):
    layer = nn.Dense(*w.shape, activation, dtype=dtype)
    layer.W[...] = w
    layer.b[...] = b
    return nn.Sequential([layer])


def _int8_reference(x, layer):
    """(acc * s_x * s_w + b, |acc * s_x * s_w| + |b|) in float64 from the
    same x_q (quantize_rows, tested on its own below) and W_q."""
    x_q, s_x = qz.quantize_rows(x)
    acc = x_q.astype(np.int64) @ layer.W.astype(np.int64)
    p = acc * s_x.astype(np.float64)[:, None] * layer.scale.astype(np.float64)
    b = layer.b.astype(np.float64)
    return p + b, np.abs(p) + np.abs(b)


# ---- the two quantizers ----

def test_quantize_rows_bound_and_grid():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((40, 33)).astype(np.float32)
    x *= np.logspace(-30, 30, 40, dtype=np.float32)[:, None]
    x[3] = 0
    x[5, 7] = -np.abs(x[5]).max() * 2           # the extreme is negative
    x_q, s_x = qz.quantize_rows(x)
    assert x_q.dtype == np.int8 and s_x.dtype == np.float32
    assert np.abs(x_q.astype(int)).max() <= 127
    err = np.abs(x.astype(np.float64) - s_x[:, None] * x_q.astype(np.float64))
    assert (err <= H * s_x[:, None].astype(np.float64)).all()
    nonzero = np.abs(x).max(1) > 0
    assert (np.abs(x_q[nonzero].astype(int)).max(1) == 127).all()
    assert s_x[3] == 0 and not x_q[3].any()


def _numpy_quantize_rows(x):
    """The scheme of quantize_rows in numpy float32 operations."""
    amax = np.abs(x).max(axis=1) if x.shape[1] else np.zeros(len(x), np.float32)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        inv = np.float32(127) / amax
        scale = amax / np.float32(127)
        inv[~np.isfinite(inv)] = 0
        y = x * inv[:, None]
    bad = ~np.isfinite(x).all(axis=1)
    y[bad] = 0
    scale[bad] = np.nan
    return np.rint(y).astype(np.int8), scale


def test_quantize_rows_equals_numpy_float32():
    """The compiled quantizer is numpy's float32 arithmetic bit for bit: ties
    round to even, NaN and infinite rows, zero, tiny and subnormal rows, row
    lengths around its 16 lanes, a strided input."""
    rng = np.random.default_rng(5)
    for k in (0, 1, 15, 16, 17, 40, 300):
        x = rng.standard_normal((12, k)).astype(np.float32)
        x[1] = 0
        if k:
            x[2, k // 2] = np.nan
            x[3, -1] = -np.inf
            x[4] = np.float32(1e-38) * np.sign(x[4])     # 127 / max overflows
            x[5] = np.float32(3e-45)                       # subnormal
            x[6] = np.arange(k, dtype=np.float32) - k / 2  # exact halves
            x[7] = x[7].max() - x[7]                       # extreme first
        for xs in (x, np.repeat(x, 2, axis=1)[:, ::2]):
            x_q, s_x = qz.quantize_rows(xs)
            want_q, want_s = _numpy_quantize_rows(np.ascontiguousarray(xs))
            assert np.array_equal(x_q, want_q), k
            assert np.array_equal(s_x, want_s, equal_nan=True), k


def test_quantize_weight_bound_and_grid():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((50, 9)) * np.logspace(-20, 20, 9)
    w[:, 4] = 0
    w_q, s_w = qz.quantize_weight(w)
    assert w_q.dtype == np.int8 and s_w.dtype == np.float32
    assert np.abs(w_q.astype(int)).max() <= 127     # never -128
    err = np.abs(w - s_w * w_q.astype(np.float64))
    assert (err <= H * s_w.astype(np.float64)).all()
    assert s_w[4] == 0 and not w_q[:, 4].any()


# ---- one layer against float64 references, on every kernel ----

@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("activation", ["identity", "relu"])
def test_int8_layer_equals_float64_quantization(kernel, shape, activation):
    x, w, b = _data(shape)
    q = nn.quantize(_model(w, b, activation), "int8")
    with forced_threads(2) as seen:
        y = q.predict(x)
    assert "lowp" in seen and "packed" not in seen and y.dtype == np.float32
    z_ref, size = _int8_reference(x, q.layers[0])
    y_ref = np.maximum(z_ref, 0) if activation == "relu" else z_ref
    assert (np.abs(y - y_ref) <= 5 * U * size).all()


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_int8_layer_within_quantization_bound(shape):
    x, w, b = _data(shape, seed=3)
    q = nn.quantize(_model(w, b), "int8")
    y = q.predict(x)
    layer = q.layers[0]
    _, s_x = qz.quantize_rows(x)
    s_x = s_x.astype(np.float64)[:, None]
    s_w = layer.scale.astype(np.float64)
    ax = np.abs(x.astype(np.float64))
    bound = (H * ax.sum(1, keepdims=True) * s_w
             + H * s_x * np.abs(w).sum(0)
             + H * H * shape[1] * s_x * s_w)
    _, size = _int8_reference(x, layer)
    z64 = x.astype(np.float64) @ w + b
    assert (np.abs(y - z64) <= bound + 5 * U * size).all()


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_bf16_layer_equals_float64_rounding(kernel, shape):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    x, w, b = _data(shape, seed=4)
    q = nn.quantize(_model(w, b), "bf16")
    with forced_threads(2) as seen:
        y = q.predict(x)
    assert "lowp" in seen and "packed" not in seen

    def bf(a):
        a32 = np.asarray(a, np.float32)
        return a32.astype(ml_dtypes.bfloat16).astype(np.float64)

    assert np.array_equal(bf(w), q.layers[0].weight())   # stored rounding
    z_ref = bf(x) @ bf(w) + b.astype(np.float32)
    size = np.abs(bf(x)) @ np.abs(bf(w)) + np.abs(b)
    assert (np.abs(y - z_ref) <= (shape[1] + 2) * U * size).all()


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_bf16_layer_within_rounding_bound(shape):
    x, w, b = _data(shape, seed=5)
    y = nn.quantize(_model(w, b), "bf16").predict(x)
    x64 = x.astype(np.float64)
    size = np.abs(x64) @ np.abs(w) + np.abs(b)
    bound = (2.0 ** -7 + 2.0 ** -15 + (shape[1] + 2) * U) * size
    assert (np.abs(y - (x64 @ w + b)) <= bound).all()


@pytest.mark.parametrize("mode", qz.MODES)
@pytest.mark.parametrize("activation", ELEMENTWISE)
def test_activation_is_the_one_fastmm_nn_applies(mode, activation):
    """act(layer without act) == layer with act, bit for bit: the write-back
    runs the same activation routine as fastmm.nn.activate."""
    x, w, b = _data((37, 19, 23), seed=6)
    plain = nn.quantize(_model(w, b), mode).predict(x)
    fused = nn.quantize(_model(w, b, activation), mode).predict(x)
    assert np.array_equal(fused, nn.activate(plain, activation))


@pytest.mark.parametrize("mode", qz.MODES)
def test_threads_and_batches_do_not_change_results(mode):
    x, w, b = _data((300, 40, 128), seed=7)
    q = nn.quantize(_model(w, b, "relu"), mode)
    with forced_threads(1):
        one = q.predict(x)
    with forced_threads(2) as seen:
        two = q.predict(x)
    assert_ran(seen, "lowp", 2)
    assert np.array_equal(one, two)
    assert np.array_equal(one, q.predict(x, batch_size=7))


# ---- a trained model ----

@pytest.fixture(scope="module")
def trained():
    """A 32-64-10 softmax network trained on overlapping Gaussian blobs
    (about 96% test accuracy: quantization has room to lose some)."""
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((10, 32))
    labels = rng.integers(0, 10, 4000)
    X = (centers[labels] + 1.4 * rng.standard_normal((4000, 32)))
    X = X.astype(np.float32)
    model = nn.Sequential([nn.Dense(32, 64, "relu", seed=0),
                           nn.Dense(64, 10, "softmax", seed=1)])
    model.fit(X[:2000], labels[:2000], epochs=8, batch_size=32, seed=0,
              verbose=False)
    return model, X[2000:], labels[2000:]


@pytest.mark.parametrize("mode", qz.MODES)
def test_trained_model_keeps_its_accuracy(trained, mode):
    model, X, labels = trained
    p = model.predict(X)
    q = nn.quantize(model, mode)
    pq = q.predict(X)
    assert pq.dtype == np.float32 and pq.shape == p.shape
    np.testing.assert_allclose(pq.sum(1), 1, rtol=1e-5)   # probabilities
    acc = (p.argmax(1) == labels).mean()
    acc_q = (pq.argmax(1) == labels).mean()
    assert 0.8 < acc < 0.99
    assert abs(acc_q - acc) <= 0.01                  # at most 1 point
    assert (pq.argmax(1) == p.argmax(1)).mean() >= 0.98
    assert abs(q.evaluate(X, labels) - model.evaluate(X, labels)) < 0.02


@pytest.mark.parametrize("mode", qz.MODES)
def test_save_load_round_trip(trained, mode, tmp_path):
    model, X, _ = trained
    q = nn.quantize(model, mode)
    path = tmp_path / f"{mode}.npz"
    q.save(path)
    r = nn.QuantizedSequential.load(path)
    assert repr(r) == repr(q) and r.mode == mode
    assert np.array_equal(r.predict(X), q.predict(X))
    buffer = io.BytesIO()
    q.save(buffer)
    buffer.seek(0)
    assert np.array_equal(nn.QuantizedSequential.load(buffer).predict(X),
                          q.predict(X))


# ---- files that are not quantized models ----

def _saved(trained, tmp_path, mode="int8"):
    path = tmp_path / "q.npz"
    nn.quantize(trained[0], mode).save(path)
    with np.load(path) as f:
        return path, {k: f[k] for k in f.files}


def _rewrite(path, arrays, **config):
    c = json.loads(str(arrays["config"]))
    c.update(config)
    arrays = dict(arrays, config=np.array(json.dumps(c)))
    np.savez(path, **arrays)
    return path


# damage to the first central-directory entry of a zip, found by fuzzing:
# zipfile's NotImplementedError (an unknown compression method; a "version
# needed to extract" of 21.0, raised while opening) and RuntimeError (the
# encrypted flag)
ZIP_DAMAGE = {"zip_method": (10, 99), "zip_version": (6, 0xD2),
              "zip_encrypted": (8, None)}


def damage_zip(path, how):
    data = bytearray(path.read_bytes())
    entry = data.find(b"PK\x01\x02")
    offset, value = ZIP_DAMAGE[how]
    data[entry + offset] = data[entry + offset] | 1 if value is None else value
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("change", [
    "garbage", "truncated", "npy", "float_model", "version", "mode",
    "missing_scale", "weight_dtype", "weight_shape", "int8_min",
    "negative_scale", "nan_bias", "activation", "layer_sizes", "no_config",
    "config_not_json", *ZIP_DAMAGE, "deep_config", "activation_list"])
def test_load_rejects_bad_files(trained, tmp_path, change):
    path, arrays = _saved(trained, tmp_path)
    if change == "garbage":
        path.write_bytes(b"not an npz file at all" * 10)
    elif change == "truncated":
        path.write_bytes(path.read_bytes()[:300])
    elif change == "npy":
        path = tmp_path / "a.npy"
        np.save(path, np.zeros(3))
    elif change == "float_model":
        trained[0].save(path)
    elif change == "version":
        _rewrite(path, arrays, version=2)
    elif change == "mode":
        _rewrite(path, arrays, mode="int4")
    elif change == "missing_scale":
        del arrays["s1"]
        _rewrite(path, arrays)
    elif change == "weight_dtype":
        arrays["W0"] = arrays["W0"].astype(np.float32)
        _rewrite(path, arrays)
    elif change == "weight_shape":
        arrays["W1"] = arrays["W1"][:, :5]
        _rewrite(path, arrays)
    elif change == "int8_min":
        arrays["W0"][0, 0] = -128
        _rewrite(path, arrays)
    elif change == "negative_scale":
        arrays["s0"][0] = -1
        _rewrite(path, arrays)
    elif change == "nan_bias":
        arrays["b1"][0] = np.nan
        _rewrite(path, arrays)
    elif change == "activation":
        c = json.loads(str(arrays["config"]))
        c["layers"][0]["activation"] = "swish"
        _rewrite(path, arrays, layers=c["layers"])
    elif change == "layer_sizes":
        c = json.loads(str(arrays["config"]))
        c["layers"][0]["out"] = "64"
        _rewrite(path, arrays, layers=c["layers"])
    elif change == "no_config":
        del arrays["config"]
        np.savez(path, **arrays)
    elif change == "config_not_json":
        np.savez(path, **dict(arrays, config=np.array("{not json")))
    elif change in ZIP_DAMAGE:
        damage_zip(path, change)
    elif change == "deep_config":
        np.savez(path, **dict(arrays, config=np.array("[" * 100000)))
    elif change == "activation_list":
        c = json.loads(str(arrays["config"]))
        c["layers"][0]["activation"] = ["relu"]
        _rewrite(path, arrays, layers=c["layers"])
    with pytest.raises(ValueError, match=str(path.name)):
        nn.QuantizedSequential.load(path)


def test_load_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        nn.QuantizedSequential.load(tmp_path / "absent.npz")


# ---- what quantize refuses, and the edges of the data ----

def test_quantize_rejects_what_it_cannot_quantize():
    model = nn.Sequential([nn.Dense(4, 3, "relu", seed=0)])
    with pytest.raises(ValueError, match="int8"):
        nn.quantize(model, "int4")
    with pytest.raises(TypeError, match="Sequential"):
        nn.quantize(model.layers[0], "int8")

    class Other:
        in_features = out_features = 3

    with pytest.raises(TypeError, match="layer 1 is Other"):
        nn.quantize(nn.Sequential([model.layers[0], Other()]), "int8")
    model.layers[0].W[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        nn.quantize(model, "bf16")
    wide = nn.Sequential([nn.Dense(qz._INT8_MAX_K + 1, 1, seed=0)])
    with pytest.raises(ValueError, match="overflow"):
        nn.quantize(wide, "int8")
    nn.quantize(wide, "bf16")


@pytest.mark.parametrize("mode", qz.MODES)
def test_zero_rows_and_columns(mode):
    x, w, b = _data((6, 5, 4), seed=8)
    x[2] = 0
    w[:, 1] = 0
    q = nn.quantize(_model(w, b, "tanh"), mode)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = q.predict(x)
    b32 = np.tanh(b.astype(np.float32))
    np.testing.assert_allclose(y[2], b32, rtol=1e-6)
    np.testing.assert_allclose(y[:, 1], np.full(6, b32[1]), rtol=1e-6)


@pytest.mark.parametrize("mode", qz.MODES)
def test_nan_rows_give_nan_rows(trained, mode):
    model, X, _ = trained
    q = nn.quantize(model, mode)
    X = X[:8].copy()
    X[3, 5] = np.nan
    bad = [3]
    if mode == "int8":
        X[6, 0] = np.inf       # int8: any non-finite row has no scale
        bad.append(6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = q.predict(X)
    assert np.isnan(y[bad]).all()
    good = [i for i in range(8) if i not in bad]
    assert np.array_equal(y[good], q.predict(X[good]))


def test_float64_model_and_empty_input():
    x, w, b = _data((5, 6, 3), seed=9)
    q = nn.quantize(_model(w, b, "relu", dtype=np.float64), "int8")
    assert q.predict(x.astype(np.float64)).dtype == np.float32
    assert q.predict(x[:0]).shape == (0, 3)
    with pytest.raises(ValueError, match="features"):
        q.predict(x[:, :4])
    assert "QuantizedSequential('int8'" in repr(q)


# ---- the fused write-back (driver/_lowp.h) ----

@pytest.mark.parametrize("mode", qz.MODES)
@pytest.mark.parametrize("activation", ["identity", "relu", "leaky_relu",
                                        "sigmoid", "gelu"])
@pytest.mark.parametrize("nt", [1, 2])
def test_write_back_fused_equals_separate_passes(kernel, mode, activation,
                                                 nt):
    """The low-precision driver's epilogue on each finished tile gives, bit
    for bit, what a product followed by numpy's dequantize, bias and
    fastmm.nn's activation gives: edge rows and columns, k past one int8 k
    block (1024), with and without bias, and a strided output (through the
    scalar write-back).  Under every kernel family: the portable bfloat16
    kernel once started its sums from C while the strided path added C last,
    and strided outputs differed in the last bit (CPUs without AVX512-BF16)."""
    from fastmm import _lowp
    from fastmm.driver import _threads
    from fastmm.nn import _ops
    code = _ops.CODES[activation]
    x, w, b = _data((29, 1100, 45), seed=12)
    b32 = b.astype(np.float32)
    if mode == "int8":
        w_q, s_w = qz.quantize_weight(w)
        x_q, s_x = qz.quantize_rows(x)
        plain = np.matmul(x_q, w_q, dtype=np.int32).astype(np.float32)
        plain = plain * s_x[:, None] * s_w
        args = (x_q, w_q, "int8", "int8")
        scales = dict(row_scale=s_x, col_scale=s_w)
    else:
        w_bits = qz._to_bf16_bits(w)
        plain = np.empty((29, 45), np.float32)
        _lowp.gemm_lowp(x, w_bits, plain, "float32", "bfloat16")
        args = (x, w_bits, "float32", "bfloat16")
        scales = {}
    for bias in (None, b32):
        want = plain if bias is None else plain + bias
        want = nn.activate(want, activation) if code else want
        contiguous = np.full((29, 45), np.nan, np.float32)
        big = np.full((29, 90), -5.0, np.float32)
        for y in (contiguous, big[:, ::2]):
            with fastmm.threads(nt), _threads.record() as seen, \
                    _threads.parallel_threshold(0):
                _lowp.gemm_lowp(args[0], args[1], y, args[2], args[3],
                                bias=bias, act=code, slope=0.01, **scales)
            assert_ran(seen, "lowp", nt)
            if code in (0, _ops.CODES["relu"], _ops.CODES["leaky_relu"]) \
                    or y is contiguous:
                assert np.array_equal(y, want), (activation, bias is None)
            else:
                # strided: the scalar activation, without the vector code's
                # FMA contractions (gelu's erfc polynomial: up to ~4e-6)
                np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-30)
        assert (big[:, 1::2] == -5.0).all()


def test_write_back_arguments_are_checked():
    from fastmm import _lowp
    a = np.ones((3, 4), np.int8)
    b = np.ones((4, 5), np.int8)
    s3, s5 = np.ones(3, np.float32), np.ones(5, np.float32)
    y = np.empty((3, 5), np.float32)
    with pytest.raises(ValueError, match="go together"):
        _lowp.gemm_lowp(a, b, y, "int8", "int8", row_scale=s3)
    with pytest.raises(TypeError, match="float32 output"):
        _lowp.gemm_lowp(a, b, np.empty((3, 5), np.int32), "int8", "int8",
                        row_scale=s3, col_scale=s5)
    with pytest.raises(ValueError, match="5 elements"):
        _lowp.gemm_lowp(a, b, y, "int8", "int8", row_scale=s3,
                        col_scale=s3)
    with pytest.raises(ValueError, match="activation code"):
        _lowp.gemm_lowp(a, b, y, "int8", "int8", row_scale=s3,
                        col_scale=s5, act=64)
    _lowp.gemm_lowp(a, b, y, "int8", "int8", row_scale=s3, col_scale=s5,
                    bias=s5)
    assert (y == 5.0).all()
