"""Post-training quantization of a trained fastmm.nn.Sequential, for inference::

    q = fastmm.nn.quantize(model, "int8")          # or "bf16"
    probabilities = q.predict(X_test)      # float32, as model.predict gives
    q.save("digits_int8.npz")
    q = fastmm.nn.QuantizedSequential.load("digits_int8.npz")

int8 (symmetric, no zero points): each weight column j (output channel) gets
one scale, ``s_w[j] = max_k |W[k, j]| / 127``, and ``W_q = clip(round(W /
s_w), -127, 127)`` as int8, once, in :func:`quantize`.  At run time each
input row i gets its own scale, ``s_x[i] = max_k |x[i, k]| / 127``, and
``x_q = round(x / s_x)`` as int8 (round half to even; computed as
``x * (127 / max|x[i]|)`` in float32).
The product x_q @ W_q is exact in int32 (the VNNI kernels of fastmm/_lowp.pyx),
and the layer's output is::

    y[i, j] = act(float32(acc[i, j]) * s_x[i] * s_w[j] + b[j])   (in float32)

so the only errors are the two roundings to the int8 grids (at most half a
step each: ``|x - s_x x_q| <= s_x / 2``, ``|W - s_w W_q| <= s_w / 2``) and float32's
in the write-back.  int32 holds any sum of up to 133,144 products of
127 * 127: layers with more inputs are refused.  An all-zero weight column or
input row has scale 0 and quantizes to zeros (no division by zero); so does
a row whose largest magnitude is too small for 127 / max|x| to be a finite
float32 (below about 4e-37).  A row holding a NaN or an infinity gives a NaN
output row.

bf16: the weights are rounded once to bfloat16 (nearest even, via float32)
and kept as their 16-bit patterns in a uint16 array: half the memory of
float32 and no dependence on ml_dtypes.  At run time the float32 activations
are rounded to bfloat16 while the kernel packs them (the same rounding as
``fastmm.matmul(x, w, precision="bf16")``), the products accumulate in
float32, and bias + activation follow.

The write-back is fused, as in the float32 and float64 layers of fastmm.nn:
the low-precision driver (driver/_lowp.h) dequantizes, adds the bias and
applies the activation to each tile of the output right after the tile's
last k block, while it is in L1; int8 sums become float32 in the output's
own memory, so no int32 array is made.  Softmax needs whole rows and runs
after the product, as in Sequential.
"""
import json
import math

import numpy as np

from fastmm import _lowp
from fastmm.nn import _npz, _ops

__all__ = ["quantize", "QuantizedSequential", "QuantizedDense", "MODES"]

#: The quantization modes :func:`quantize` accepts.
MODES = ("int8", "bf16")
FORMAT = "fastmm.nn.QuantizedSequential"
VERSION = 1
_F32 = np.dtype(np.float32)
_WEIGHT_DTYPE = {"int8": np.dtype(np.int8), "bf16": np.dtype(np.uint16)}
# The longest int8 dot product whose int32 sum cannot overflow.
_INT8_MAX_K = (2 ** 31 - 1) // (127 * 127)


def _check_mode(mode):
    if not isinstance(mode, str) or mode not in MODES:
        raise ValueError(f"unknown quantization mode {mode!r}; valid: "
                         f"{', '.join(map(repr, MODES))}")
    return mode


def _to_bf16_bits(w):
    """float32 -> bfloat16 bit patterns (uint16), round to nearest even: the
    rounding kernels/lowp.h applies when it packs float32 operands."""
    u = np.ascontiguousarray(w, _F32).view(np.uint32)
    rounded = u + (np.uint32(0x7FFF) + ((u >> 16) & np.uint32(1)))
    return (rounded >> 16).astype(np.uint16)


def _from_bf16_bits(bits):
    return (bits.astype(np.uint32) << 16).view(_F32)


def quantize_weight(w):
    """(W_q int8, s_w float32): per-column symmetric quantization of a 2-D
    weight (in, out); zero columns get s_w = 0 and W_q = 0."""
    w = np.asarray(w, np.float64)
    scale = (np.max(np.abs(w), axis=0) / 127).astype(_F32)
    # divide by the float32 scale that is stored, so that s_w * W_q is the
    # dequantized weight the run-time write-back uses
    s = scale.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(s > 0, np.rint(w / s), 0.0)
    return np.clip(q, -127, 127).astype(np.int8), scale


def quantize_rows(x, x_q=None, scale=None):
    """(x_q int8, s_x float32): per-row symmetric quantization of a float32
    (batch, features) array, written into ``x_q`` and ``scale`` if given.

    s_x = max|x[i]| / 127 and x_q = round(x * (127 / max|x[i]|)) in
    float32, rounded half to even: the rounding error |x - s_x x_q| is at
    most s_x * (1/2 + 2**-15) (half a step, plus float32's roundings of
    127 / max, of the product and of s_x: about 381 * 2**-24).  A zero row
    (or one too small for a finite inverse scale) quantizes to zeros; a row
    with a NaN or an infinity to zeros with s_x = NaN, so its output row is
    NaN.  One pass of compiled code per row (driver/_lowp.h).
    """
    x = np.asarray(x)
    if x.ndim != 2 or x.dtype != _F32:
        raise ValueError(f"quantize_rows takes a 2-D float32 array, got "
                         f"{x.dtype} of shape {x.shape}")
    if x.shape[1] > 1 and x.strides[1] != 4 or x.strides[0] % 4:
        x = np.ascontiguousarray(x)
    m, k = x.shape
    x_q = np.empty((m, k), np.int8) if x_q is None else x_q
    scale = np.empty(m, _F32) if scale is None else scale
    return _lowp.quantize_rows(x, x_q, scale)


class QuantizedDense:
    """One quantized dense layer (built by :func:`quantize` or
    :meth:`QuantizedSequential.load`): y = act(x @ W + b) in float32.

    ``W``: int8 (in, out) with ``scale`` float32 (out,) in "int8" mode;
    uint16 bfloat16 bit patterns (in, out) with ``scale`` None in "bf16".
    """

    def __init__(self, mode, W, scale, b, activation, slope):
        self.mode = _check_mode(mode)
        self.W = W
        self.scale = scale
        self.b = b
        self.activation = activation
        self.slope = float(slope)
        self._code = _ops.CODES[activation]
        self.in_features, self.out_features = W.shape

    def __repr__(self):
        return (f"QuantizedDense({self.in_features}, {self.out_features}, "
                f"activation={self.activation!r}, mode={self.mode!r})")

    @property
    def nbytes(self):
        return sum(a.nbytes for a in (self.W, self.scale, self.b)
                   if a is not None)

    def weight(self):
        """The dequantized weight, float32 (in, out): what the layer
        multiplies by (s_w[j] * W_q[:, j], or the bfloat16 values)."""
        if self.mode == "int8":
            return self.W.astype(_F32) * self.scale
        return _from_bf16_bits(self.W)

    def forward(self, x):
        """act(x @ W + b) for a float32 (batch, in) x; float32 (batch, out)."""
        if not (type(x) is np.ndarray and x.dtype == _F32
                and x.flags.aligned):
            x = np.require(x, _F32, "A")
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"{self!r}: input must have shape (batch, "
                             f"{self.in_features}), got {x.shape}")
        m, n = len(x), self.out_features
        y = np.empty((m, n), _F32)
        # dequantize, bias and activation run on each tile of y as the
        # kernels finish it; softmax needs whole rows and follows
        softmax = self.activation == "softmax"
        act = 0 if softmax else self._code
        if self.mode == "int8":
            x_q, s_x = quantize_rows(x)
            _lowp.gemm_lowp(x_q, self.W, y, "int8", "int8", row_scale=s_x,
                            col_scale=self.scale, bias=self.b, act=act,
                            slope=self.slope)
        else:
            # x rounded to bfloat16 while packed, W read as bfloat16 bits
            _lowp.gemm_lowp(x, self.W, y, "float32", "bfloat16", bias=self.b,
                            act=act, slope=self.slope)
        if softmax:
            _ops.apply_activation(y, y, self._code, self.slope)
        return y

    __call__ = forward

    def config(self):
        return {"in": self.in_features, "out": self.out_features,
                "activation": self.activation, "slope": self.slope,
                "bias": self.b is not None}


def quantize(model, mode):
    """An inference copy of ``model`` with int8 or bfloat16 weights; see
    this module's docstring for the scheme.  The model itself is not changed.

    Parameters
    ----------
    model : fastmm.nn.Sequential
        A trained network of Dense layers.
    mode : {"int8", "bf16"}
        "int8": per-output-channel weight scales, per-row activation
        scales, exact int32 products.  "bf16": bfloat16 operands, float32
        accumulation.

    Returns
    -------
    QuantizedSequential
    """
    from fastmm.nn import Dense, Sequential
    _check_mode(mode)
    if not isinstance(model, Sequential):
        raise TypeError(f"quantize takes a fastmm.nn.Sequential, got "
                        f"{type(model).__name__}")
    layers = []
    for i, layer in enumerate(model.layers):
        if type(layer) is not Dense:
            raise TypeError(f"quantize: layer {i} is {type(layer).__name__}; "
                            f"only fastmm.nn.Dense layers can be quantized")
        for name, a in (("W", layer.W), ("b", layer.b)):
            if a is not None and not np.isfinite(a).all():
                raise ValueError(f"quantize: layer {i} ({layer!r}) has NaN "
                                 f"or infinity in {name}")
        if mode == "int8" and layer.in_features > _INT8_MAX_K:
            raise ValueError(f"quantize: layer {i} ({layer!r}) has more than "
                             f"{_INT8_MAX_K} inputs: its int32 sums of "
                             f"127 * 127 products could overflow")
        if mode == "int8":
            W, scale = quantize_weight(layer.W)
        else:
            W, scale = _to_bf16_bits(layer.W), None
        b = None if layer.b is None else np.array(layer.b, _F32)
        layers.append(QuantizedDense(mode, W, scale, b, layer.activation,
                                     layer.slope))
    return QuantizedSequential(mode, layers)


class QuantizedSequential:
    """Quantized dense layers applied in order, for inference only
    (made by :func:`quantize` or :meth:`load`; trained models stay
    fastmm.nn.Sequential)."""

    def __init__(self, mode, layers):
        self.mode = _check_mode(mode)
        self.layers = list(layers)
        if not self.layers:
            raise ValueError("QuantizedSequential needs at least one layer")
        for a, b in zip(self.layers, self.layers[1:]):
            if a.out_features != b.in_features:
                raise ValueError(f"{a!r} outputs {a.out_features} features "
                                 f"but {b!r} takes {b.in_features}")

    def __repr__(self):
        return (f"QuantizedSequential({self.mode!r}, ["
                + ", ".join(f"QuantizedDense({l.in_features}, "
                            f"{l.out_features}, activation={l.activation!r})"
                            for l in self.layers) + "])")

    @property
    def output_activation(self):
        return self.layers[-1].activation

    @property
    def nbytes(self):
        """Bytes held by the weights, scales and biases."""
        return sum(layer.nbytes for layer in self.layers)

    def forward(self, x):
        x = np.require(x, _F32, "A")
        for layer in self.layers:
            x = layer.forward(x)
        return x

    __call__ = forward

    def predict(self, X, batch_size=4096):
        """The network's outputs for X as float32 (probabilities after a
        softmax layer), computed batch_size rows at a time; as
        Sequential.predict."""
        X = np.asarray(X)
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D (samples, features), got shape "
                             f"{X.shape}")
        batch_size = int(batch_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if X.shape[1] != self.layers[0].in_features:
            raise ValueError(f"X has {X.shape[1]} features; the model takes "
                             f"{self.layers[0].in_features}")
        if len(X) <= batch_size:
            return self.forward(X)
        out = np.empty((len(X), self.layers[-1].out_features), _F32)
        for i in range(0, len(X), batch_size):
            out[i:i + batch_size] = self.forward(X[i:i + batch_size])
        return out

    def evaluate(self, X, y, loss=None):
        """The loss on (X, y), as Sequential.evaluate: SoftmaxCrossEntropy
        after a softmax layer, else MeanSquaredError, unless ``loss`` says."""
        from fastmm.nn import MeanSquaredError, SoftmaxCrossEntropy
        loss = loss or (SoftmaxCrossEntropy()
                        if self.output_activation == "softmax"
                        else MeanSquaredError())
        return loss.value(self.predict(X), y, self.output_activation)

    def save(self, path):
        """Mode, architecture and quantized weights to an .npz (no pickles):
        W{i} int8 or uint16 (bfloat16 bits), s{i} the int8 weight scales,
        b{i} the float32 biases, and a JSON "config" with the format name and
        version."""
        arrays = {"config": np.array(json.dumps(
            {"format": FORMAT, "version": VERSION, "mode": self.mode,
             "layers": [layer.config() for layer in self.layers]}))}
        for i, layer in enumerate(self.layers):
            arrays[f"W{i}"] = layer.W
            if layer.scale is not None:
                arrays[f"s{i}"] = layer.scale
            if layer.b is not None:
                arrays[f"b{i}"] = layer.b
        np.savez(path, **arrays)

    @classmethod
    def load(cls, path):
        """A QuantizedSequential from :meth:`save`'s file.  Raises ValueError
        if the file is not one (another format, a newer version, a damaged
        archive, or arrays whose shape, dtype or values do not fit)."""
        return _npz.load(path, FORMAT, lambda f, bad: cls._from_arrays(
            f, path, bad))

    @classmethod
    def _from_arrays(cls, f, path, bad):
        config = _npz.config(f, path, FORMAT, VERSION, bad, (
            "fastmm.nn.Sequential", "a float model (fastmm.nn.Sequential); "
            "load it with Sequential.load and quantize it"))
        mode = config.get("mode")
        if mode not in MODES:
            raise bad(f"mode {mode!r}")
        layers = []
        for i, c, n_in, n_out in _npz.layers(config, bad):
            if mode == "int8" and n_in > _INT8_MAX_K:
                raise bad(f"layer {i} has {n_in} inputs; int8 layers take "
                          f"at most {_INT8_MAX_K}")
            if c["activation"] not in _ops.CODES:
                raise bad(f"layer {i} has activation {c['activation']!r}")
            slope = c["slope"]
            if not (isinstance(slope, (int, float))
                    and math.isfinite(slope)):
                raise bad(f"layer {i} has slope {slope!r}")
            W = _npz.array(f, f"W{i}", _WEIGHT_DTYPE[mode], (n_in, n_out),
                           bad)
            scale = b = None
            if mode == "int8":
                if W.size and np.abs(W.astype(np.int16)).max() > 127:
                    raise bad(f"W{i} holds -128 (int8 weights are in "
                              f"[-127, 127])")
                scale = _npz.array(f, f"s{i}", _F32, (n_out,), bad)
                if not (np.isfinite(scale).all() and (scale >= 0).all()):
                    raise bad(f"s{i} holds a negative or non-finite scale")
            if c["bias"]:
                b = _npz.array(f, f"b{i}", _F32, (n_out,), bad)
                if not np.isfinite(b).all():
                    raise bad(f"b{i} holds NaN or infinity")
            layers.append(QuantizedDense(mode, W, scale, b, c["activation"],
                                         slope))
        try:
            return cls(mode, layers)
        except ValueError as e:
            raise bad(str(e)) from e
