"""Dense neural-network layers on fastmm's GEMM::

    y = fastmm.nn.linear(x, w, b, activation="relu")         # act(x @ w + b)
    dx, dw, db = fastmm.nn.linear_backward(x, w, dy, y=y, activation="relu")

    model = fastmm.nn.Sequential([Dense(64, 128, "relu", seed=0),
                                  Dense(128, 10, "softmax", seed=1)])
    history = model.fit(X, labels, epochs=20, batch_size=32)
    probabilities = model.predict(X_test)
    q = fastmm.nn.quantize(model, "int8")     # or "bf16": inference only
    probabilities = q.predict(X_test)         # (fastmm/nn/quantized.py)

Shapes: x (batch, in), w (in, out), b (out,); any strides, so the ``w.T`` view
of a PyTorch-style (out, in) weight is read in place.  float32 when every
operand is float32, float64 otherwise (integers are promoted as numpy
promotes them; complex input is a TypeError).

The forward pass adds the bias and applies the activation to each tile of y
as the GEMM finishes it (the driver's epilogue), so y is written once.
Softmax needs whole rows, which a tile does not hold: it runs as one row-wise
pass right after the product.  Backward makes one pass over dy that applies
the activation's derivative and sums the bias gradient, then runs
dx = g @ w.T and dw = x.T @ g on transposed views (no copies).  The compute
lives in ``fastmm/nn/_ops.pyx``; this module validates and documents.
"""
import json
import math
import time

import numpy as np

from fastmm.nn import _fastpath, _npz, _ops
from fastmm.bench._progress import Progress

__all__ = ["linear", "linear_backward", "activate", "ACTIVATIONS", "Dense",
           "Sequential", "SGD", "MeanSquaredError", "SoftmaxCrossEntropy",
           "quantize", "QuantizedSequential"]

#: Activation names accepted everywhere (None means "identity").
ACTIVATIONS = ("identity", "relu", "leaky_relu", "sigmoid", "tanh", "gelu",
               "gelu_tanh", "softmax")
_ALIASES = {"gelu_erf": "gelu", "linear": "identity"}
_HELP = ("identity (or None), relu, leaky_relu (negative slope: slope=), "
         "sigmoid, tanh, gelu (exact, erf form; alias gelu_erf), gelu_tanh "
         "(tanh approximation), softmax (row-wise)")


def _activation(activation):
    """The canonical name and the compiled code of an activation."""
    if activation is None:
        return "identity", _ops.CODES["identity"]
    if not isinstance(activation, str):
        raise TypeError(f"activation must be a string or None, got "
                        f"{type(activation).__name__}; valid: {_HELP}")
    name = _ALIASES.get(activation, activation)
    if name not in _ops.CODES:
        raise ValueError(f"unknown activation {activation!r}; valid: {_HELP}")
    return name, _ops.CODES[name]


def _slope(slope):
    if isinstance(slope, (bool, np.bool_)) or not isinstance(
            slope, (int, float, np.integer, np.floating)):
        raise TypeError(f"slope must be a real number, got "
                        f"{type(slope).__name__}")
    if not math.isfinite(slope):
        raise ValueError(f"slope must be finite, got {slope}")
    return float(slope)


def _array(a, name, ndim):
    a = np.asarray(a)
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {a.shape}")
    return a


def _require_finite(a, name, source=None):
    """ValueError naming the first NaN or infinity in ``a``; ``source`` is
    the array ``a`` was cast from, so that an overflow in the cast is told
    apart from a non-finite value the caller passed."""
    if a.dtype.kind != "f" or np.isfinite(a).all():
        return
    idx = np.unravel_index(int(np.argmin(np.isfinite(a))), a.shape)
    where = f"{name}[{', '.join(map(str, idx))}]"
    value = (a if source is None else source)[idx]
    if np.isfinite(value):
        raise ValueError(f"fit: {where} = {value} overflows {a.dtype} (the "
                         f"model's dtype)")
    raise ValueError(f"fit: {name} contains NaN or infinity (first at row "
                     f"{idx[0]}: {where} = {value})")


def _dtype(*arrays):
    """float32 if every operand is float32 (or narrower), else float64."""
    dtype = np.result_type(*[a.dtype for a in arrays if a is not None])
    if dtype.kind in "biuf":
        dtype = np.promote_types(dtype, np.float32)
        if dtype in (np.float32, np.float64):
            return dtype
    raise TypeError(f"fastmm.nn supports real floating-point data (float32, "
                    f"float64); got {dtype}")


def _native(a, dtype):
    """a as a native-order, aligned array of dtype (a copy only if needed)."""
    if a is None:
        return None
    return np.require(a, dtype=dtype, requirements="A")


def _check_out(out, shape, dtype):
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy array, got {type(out).__name__}")
    if out.shape != shape:
        raise ValueError(f"out has shape {out.shape}, expected {shape}")
    if out.dtype != dtype:
        raise TypeError(f"out has dtype {out.dtype}, expected {dtype} (the "
                        f"result's dtype); fastmm.nn does not cast")
    if not out.flags.writeable:
        raise ValueError("out is read-only")
    # (an empty out may have zero strides everywhere: numpy 2 makes
    # np.empty((0, 3)) so, and nothing is written to it)
    if out.size and any(s == 0 and d > 1
                        for s, d in zip(out.strides, out.shape)):
        raise ValueError("out has a zero stride: one element would hold "
                         "several results")


def linear(x, w, b=None, activation=None, out=None, *, slope=0.01):
    """act(x @ w + b), with the bias and activation fused into the GEMM.

    Parameters
    ----------
    x : array_like, shape (batch, in)
    w : array_like, shape (in, out)
        Any strides: the ``w.T`` view of an (out, in) weight is read in place.
    b : array_like, shape (out,), optional
        None: no bias.
    activation : str, optional
        One of :data:`ACTIVATIONS`; None means identity.
    out : ndarray, optional
        Shape (batch, out) and the result's dtype; any strides.
    slope : float, optional
        leaky_relu's negative slope.

    Returns
    -------
    ndarray, shape (batch, out)
        float32 when every operand is float32, float64 otherwise; ``out``
        if given.
    """
    y = _fastpath.try_forward(x, w, b, activation, slope, out)
    if y is not None:
        return y
    name, code = _activation(activation)
    slope = _slope(slope)
    x = _array(x, "x", 2)
    w = _array(w, "w", 2)
    if b is not None:
        b = _array(b, "b", 1)
    if x.shape[1] != w.shape[0]:
        raise ValueError(f"linear: x has shape {x.shape} and w has shape "
                         f"{w.shape}: inner dimensions {x.shape[1]} and "
                         f"{w.shape[0]} differ")
    shape = (x.shape[0], w.shape[1])
    if b is not None and b.shape != shape[1:]:
        raise ValueError(f"linear: b has shape {b.shape}, expected "
                         f"{shape[1:]} (one bias per output column)")
    dtype = _dtype(x, w, b)
    x, w, b = _native(x, dtype), _native(w, dtype), _native(b, dtype)
    if out is None:
        return _ops.forward(x, w, b, np.empty(shape, dtype), code, slope)
    _check_out(out, shape, dtype)
    if (out.dtype.isnative and out.flags.aligned
            and not any(np.may_share_memory(out, a) for a in (x, w, b)
                        if a is not None)):
        return _ops.forward(x, w, b, out, code, slope)
    out[...] = _ops.forward(x, w, b, np.empty(shape, dtype), code, slope)
    return out


def activate(z, activation, *, slope=0.01):
    """act(z) for a 1-D or 2-D z (softmax over the last axis).

    Parameters
    ----------
    z : array_like
        1-D or 2-D.
    activation : str or None
        One of :data:`ACTIVATIONS`.
    slope : float, optional
        leaky_relu's negative slope.

    Returns
    -------
    ndarray
        A new array.
    """
    y = _fastpath.try_activate(z, activation, slope)
    if y is not None:
        return y
    _, code = _activation(activation)
    slope = _slope(slope)
    z = np.asarray(z)
    if z.ndim not in (1, 2):
        raise ValueError(f"z must be 1-D or 2-D, got shape {z.shape}")
    z = _native(z, _dtype(z))
    z2 = z.reshape(1, -1) if z.ndim == 1 else z
    y = np.empty(z2.shape, z.dtype)
    _ops.apply_activation(z2, y, code, slope)
    return y.reshape(z.shape)


def _grad_source(name, code, slope, y, z):
    """What the derivative is computed from: (array, from_z).

    relu, leaky_relu (slope >= 0), sigmoid and tanh from y, so forward's
    output is all backward needs; gelu and a negative-slope leaky_relu are not
    functions of their output and need the pre-activation z; softmax's
    Jacobian is written in y (computed from z when only z is given).
    """
    if name == "identity":
        return None, False
    if name == "softmax":
        if y is None and z is None:
            raise ValueError("linear_backward: softmax needs y= (the forward "
                             "output) or z= (the pre-activation)")
        if y is None:
            y = np.empty_like(z)
            _ops.apply_activation(z, y, code, slope)
        return y, False
    needs_z = name in ("gelu", "gelu_tanh") or (name == "leaky_relu"
                                                  and slope < 0)
    if needs_z and z is None:
        what = name + (" with a negative slope" if name == "leaky_relu"
                       else "")
        raise ValueError(
            f"linear_backward: {what} is not a function of its output; pass "
            f"the pre-activation z= (z = linear(x, w, b); "
            f"y = activate(z, {name!r}))")
    if y is not None and not needs_z:
        return y, False
    if z is None:
        raise ValueError(f"linear_backward: {name} needs y= (the forward "
                         f"output) or z= (the pre-activation)")
    return z, True


def linear_backward(x, w, dy, y=None, activation=None, *, z=None, slope=0.01,
                    need_dx=True):
    """Gradients of y = act(x @ w + b) with respect to x, w and b.

    Give y (forward's output) or z (the pre-activation x @ w + b), as the
    activation requires: y suffices for relu, leaky_relu (slope >= 0),
    sigmoid, tanh and softmax; gelu and gelu_tanh need z.  Identity needs
    neither.

    Parameters
    ----------
    x : array_like, shape (batch, in)
        Forward's input.
    w : array_like, shape (in, out)
        Forward's weight.
    dy : array_like, shape (batch, out)
        dL/dy.
    y : array_like, shape (batch, out), optional
        Forward's output.
    activation : str, optional
        Forward's activation, one of :data:`ACTIVATIONS`.
    z : array_like, shape (batch, out), optional
        The pre-activation x @ w + b.
    slope : float, optional
        Must match forward's.
    need_dx : bool, optional
        False skips dx (a first layer's input gradient is rarely wanted and
        costs a third of the work).

    Returns
    -------
    dx : ndarray or None
        dL/dx, shape (batch, in); None when ``need_dx`` is false.
    dw : ndarray
        dL/dw, shape (in, out).
    db : ndarray
        dL/db, shape (out,), summed in a fixed order for any thread count.
    """
    grads = _fastpath.try_backward(x, w, dy, y, z, activation, slope, need_dx)
    if grads is not None:
        return grads
    name, code = _activation(activation)
    slope = _slope(slope)
    x = _array(x, "x", 2)
    w = _array(w, "w", 2)
    dy = _array(dy, "dy", 2)
    if x.shape[1] != w.shape[0]:
        raise ValueError(f"linear_backward: x has shape {x.shape} and w has "
                         f"shape {w.shape}: inner dimensions {x.shape[1]} and "
                         f"{w.shape[0]} differ")
    shape = (x.shape[0], w.shape[1])
    if dy.shape != shape:
        raise ValueError(f"linear_backward: dy has shape {dy.shape}, expected "
                         f"{shape} for x {x.shape} @ w {w.shape}")
    if name == "identity":
        y = z = None
    y = None if y is None else _array(y, "y", 2)
    z = None if z is None else _array(z, "z", 2)
    for label, a in (("y", y), ("z", z)):
        if a is not None and a.shape != shape:
            raise ValueError(f"linear_backward: {label} has shape {a.shape}, "
                             f"expected {shape}")
    dtype = _dtype(x, w, dy, y, z)
    x, w, dy = _native(x, dtype), _native(w, dtype), _native(dy, dtype)
    y, z = _native(y, dtype), _native(z, dtype)
    v, from_z = _grad_source(name, code, slope, y, z)
    dx = np.empty(x.shape, dtype) if need_dx else None
    dw = np.empty(w.shape, dtype)
    db = np.empty(shape[1], dtype)
    _ops.backward(x, w, dy, v, from_z, code, slope, dx, dw, db)
    return dx, dw, db


# ---- layers ----

class Dense:
    """A fully connected layer: y = act(x @ W + b), W of shape (in, out).

    Parameters
    ----------
    in_features, out_features : int
        The sizes of x's and y's last axis.
    activation : str, optional
        One of :data:`ACTIVATIONS`; None means identity.
    init : {"he", "xavier"}, optional
        "he" (normal, std sqrt(2/in); the default for relu-family
        activations) or "xavier" (Glorot uniform, bound sqrt(6/(in+out));
        the default otherwise).
    seed : int, optional
        Makes the initial weights reproducible.
    slope : float, optional
        leaky_relu's negative slope.
    bias : bool, optional
        False: no bias.
    dtype : {numpy.float32, numpy.float64}, optional
        The parameters' dtype.
    """

    def __init__(self, in_features, out_features, activation=None, init=None,
                 seed=None, *, slope=0.01, bias=True, dtype=np.float32):
        self.activation, self._code = _activation(activation)
        self.slope = _slope(slope)
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        if self.in_features < 1 or self.out_features < 1:
            raise ValueError(f"Dense needs positive sizes, got "
                             f"({in_features}, {out_features})")
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise TypeError(f"Dense dtype must be float32 or float64, got "
                            f"{self.dtype}")
        if init is None:
            relu_family = self.activation in ("relu", "leaky_relu")
            init = "he" if relu_family else "xavier"
        rng = np.random.default_rng(seed)
        fan_in, fan_out = self.in_features, self.out_features
        if init == "he":
            w = rng.standard_normal((fan_in, fan_out))
            w *= math.sqrt(2.0 / fan_in)
        elif init == "xavier":
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            w = rng.uniform(-bound, bound, (fan_in, fan_out))
        else:
            raise ValueError(f"unknown init {init!r}; valid: 'he', 'xavier'")
        self.init = init
        self.W = w.astype(self.dtype)
        self.b = np.zeros(fan_out, self.dtype) if bias else None
        self.dW = np.zeros_like(self.W)
        self.db = np.zeros(fan_out, self.dtype) if bias else None
        self._x = self._y = self._z = None

    def __repr__(self):
        return (f"Dense({self.in_features}, {self.out_features}, "
                f"activation={self.activation!r})")

    def _input(self, x, cols, what):
        if not (type(x) is np.ndarray and x.dtype == self.dtype
                and x.flags.aligned):
            x = _native(np.asarray(x), self.dtype)
        if x.ndim != 2 or x.shape[1] != cols:
            raise ValueError(f"{self!r}: {what} must have shape (batch, "
                             f"{cols}), got {x.shape}")
        return x

    def forward(self, x, training=True):
        """act(x @ W + b); with ``training`` keeps what backward needs."""
        x = self._input(x, self.in_features, "input")
        y = np.empty((x.shape[0], self.out_features), self.dtype)
        z = None
        if self.activation in ("gelu", "gelu_tanh") and training:
            # gelu's derivative needs z: keep it, at one extra pass over y
            z = _ops.forward(x, self.W, self.b, np.empty_like(y),
                            _ops.CODES["identity"], 0.0)
            _ops.apply_activation(z, y, self._code, self.slope)
        else:
            _ops.forward(x, self.W, self.b, y, self._code, self.slope)
        if training:
            self._x, self._y, self._z = x, y, z
        return y

    __call__ = forward

    def backward(self, dy, *, preactivation=False, need_dx=True):
        """Given dL/dy (or dL/dz with ``preactivation``), store dW and db and
        return dL/dx (None when not ``need_dx``)."""
        if self._x is None:
            raise RuntimeError(f"{self!r}: backward before forward")
        dy = self._input(dy, self.out_features, "dy")
        if dy.shape[0] != self._x.shape[0]:
            raise ValueError(f"{self!r}: dy has {dy.shape[0]} rows, forward "
                             f"had {self._x.shape[0]}")
        code = _ops.CODES["identity"] if preactivation else self._code
        name = "identity" if preactivation else self.activation
        v, from_z = _grad_source(name, code, self.slope, self._y, self._z)
        dx = np.empty(self._x.shape, self.dtype) if need_dx else None
        db = self.db if self.db is not None else np.empty(self.out_features,
                                                          self.dtype)
        _ops.backward(self._x, self.W, dy, v, from_z, code, self.slope, dx,
                     self.dW, db)
        return dx

    def parameters(self):
        """(parameter, gradient) pairs, updated in place by optimizers."""
        pairs = [(self.W, self.dW)]
        if self.b is not None:
            pairs.append((self.b, self.db))
        return pairs

    def config(self):
        return {"in": self.in_features, "out": self.out_features,
                "activation": self.activation, "slope": self.slope,
                "bias": self.b is not None, "dtype": self.dtype.name}


class SGD:
    """Stochastic gradient descent with (optionally Nesterov) momentum:
    v = momentum * v - lr * (g + weight_decay * p);  p += v."""

    def __init__(self, lr=0.01, momentum=0.9, nesterov=False,
                 weight_decay=0.0):
        if lr <= 0 or not 0 <= momentum < 1 or weight_decay < 0:
            raise ValueError("SGD needs lr > 0, 0 <= momentum < 1, "
                             "weight_decay >= 0")
        self.lr, self.momentum = float(lr), float(momentum)
        self.nesterov, self.weight_decay = bool(nesterov), float(weight_decay)
        self._velocity = {}

    def step(self, pairs):
        """Update every parameter in place from its gradient."""
        for p, g in pairs:
            v = self._velocity.get(id(p))
            if v is None or v.shape != p.shape:
                v = self._velocity[id(p)] = np.zeros_like(p)
            if (p.flags.c_contiguous and g.flags.c_contiguous
                    and p.dtype == g.dtype and p.dtype in (np.float32,
                                                           np.float64)):
                # one fused pass over p, g and v
                _ops.sgd_step(p, g, v, self.lr, self.momentum, self.nesterov,
                             self.weight_decay)
                continue
            if self.weight_decay:
                g = g + self.weight_decay * p
            v *= self.momentum
            v -= self.lr * g
            if self.nesterov:
                p += self.momentum * v - self.lr * g
            else:
                p += v


class MeanSquaredError:
    """mean((pred - target)**2) over all elements."""

    def value_and_gradient(self, pred, target, activation="identity",
                           check=True):
        """(loss, dL/dpred, False): the gradient is of the layer's output,
        so backward applies the output activation's derivative."""
        target = np.asarray(target)
        if check and target.size != pred.size:
            raise ValueError(f"targets of shape {target.shape} do not match "
                             f"predictions of shape {pred.shape}")
        diff = pred - target.reshape(pred.shape)
        value = float(np.vdot(diff, diff)) / max(pred.size, 1)
        diff *= pred.dtype.type(2.0 / max(pred.size, 1))
        return value, diff, False

    def value(self, pred, target, activation="identity"):
        return self.value_and_gradient(pred, target, activation)[0]

    __call__ = value

    def gradient(self, pred, target, activation="identity"):
        return self.value_and_gradient(pred, target, activation)[1:]


class SoftmaxCrossEntropy:
    """-mean(log p[target]): targets are class indices (batch,), integers or
    floats holding whole numbers, or probability rows (batch, classes).

    ``activation`` is the output layer's: after "softmax", pred holds
    probabilities and the gradient is returned with respect to the softmax's
    input, (p - t) / batch, which skips softmax's Jacobian entirely; after any
    other activation, pred holds logits and the loss applies a stable
    log-softmax itself.
    """

    @staticmethod
    def _targets(pred, target, check):
        """(True, labels) or (False, probability rows), validated."""
        target = np.asarray(target)
        if pred.ndim != 2:
            raise ValueError(f"pred must be 2-D (batch, classes), got "
                             f"{pred.shape}")
        if target.shape == pred.shape[:1] and target.dtype.kind in "iuf":
            floats = target.dtype.kind == "f"
            if check and floats:
                # labels that passed through a float array (np.loadtxt,
                # pandas, a model's output) still name classes when whole
                whole = np.isfinite(target) & (target == np.trunc(target))
                if not whole.all():
                    i = int(np.argmin(whole))
                    raise ValueError(f"class labels must be integers; got "
                                     f"{target[i]} at index {i}")
            # before the cast: a float too large for int64 casts to garbage
            if check and target.size and (target.min() < 0
                                          or target.max() >= pred.shape[1]):
                raise ValueError(f"class labels must lie in [0, "
                                 f"{pred.shape[1]})")
            return True, target.astype(np.int64) if floats else target
        if target.shape == pred.shape:
            return False, target.astype(pred.dtype, copy=False)
        raise ValueError(f"targets must be integer labels of shape "
                         f"{pred.shape[:1]} or rows of shape {pred.shape}, "
                         f"got {target.shape} ({target.dtype})")

    def value_and_gradient(self, pred, target, activation="softmax",
                           check=True):
        """(loss, gradient, wrt_preactivation): the gradient is dL/dz of the
        softmax layer (True) after "softmax", else dL/dpred (False)."""
        labels, t = self._targets(pred, target, check)
        p = pred if activation == "softmax" else activate(pred, "softmax")
        n = len(p)
        tiny = np.finfo(p.dtype).tiny
        grad = p.copy()
        if labels:
            rows = np.arange(n)
            value = -np.log(np.maximum(p[rows, t], tiny)).sum()
            grad[rows, t] -= 1
        else:
            value = -(t * np.log(np.maximum(p, tiny))).sum()
            grad -= t
        grad *= p.dtype.type(1.0 / max(n, 1))
        return float(value) / max(n, 1), grad, activation == "softmax"

    def value(self, pred, target, activation="softmax"):
        return self.value_and_gradient(pred, target, activation)[0]

    __call__ = value

    def gradient(self, pred, target, activation="softmax"):
        return self.value_and_gradient(pred, target, activation)[1:]


class Sequential:
    """Layers applied in order; trained with :meth:`fit`.

    Parameters
    ----------
    layers : sequence of Dense
        Each layer's ``in_features`` must equal the previous one's
        ``out_features`` (ValueError otherwise).
    """

    def __init__(self, layers):
        self.layers = list(layers)
        if not self.layers:
            raise ValueError("Sequential needs at least one layer")
        for a, b in zip(self.layers, self.layers[1:]):
            if a.out_features != b.in_features:
                raise ValueError(f"{a!r} outputs {a.out_features} features "
                                 f"but {b!r} takes {b.in_features}")
        self.history = None

    def __repr__(self):
        return "Sequential([" + ", ".join(map(repr, self.layers)) + "])"

    @property
    def output_activation(self):
        return self.layers[-1].activation

    def forward(self, x, training=True):
        """Every layer's forward in turn; with ``training`` each keeps what
        backward needs."""
        for layer in self.layers:
            x = layer.forward(x, training)
        return x

    __call__ = forward

    def backward(self, grad, *, preactivation=False, need_dx=True):
        """Backpropagate dL/doutput (dL/dlogits with ``preactivation``)
        through every layer, leaving dW and db in each; returns dL/dinput,
        or None with ``need_dx=False`` (which skips the first layer's
        input-gradient product, as training does)."""
        last = len(self.layers) - 1
        for i in range(last, -1, -1):
            grad = self.layers[i].backward(grad, preactivation=preactivation
                                           and i == last,
                                           need_dx=need_dx or i > 0)
        return grad

    def parameters(self):
        return [pair for layer in self.layers for pair in layer.parameters()]

    def predict(self, X, batch_size=4096):
        """The network's outputs for X (probabilities after a softmax layer),
        computed batch_size rows at a time."""
        X = np.asarray(X)
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D (samples, features), got shape "
                             f"{X.shape}")
        parts = [self.forward(X[i:i + batch_size], training=False)
                 for i in range(0, len(X), batch_size)]
        if not parts:
            return np.empty((0, self.layers[-1].out_features),
                            self.layers[-1].dtype)
        return np.concatenate(parts)

    def _default_loss(self):
        return (SoftmaxCrossEntropy() if self.output_activation == "softmax"
                else MeanSquaredError())

    def evaluate(self, X, y, loss=None):
        """The loss on (X, y): SoftmaxCrossEntropy after a softmax layer,
        else MeanSquaredError, unless ``loss`` says."""
        loss = loss or self._default_loss()
        return loss.value(self.predict(X), y, self.output_activation)

    def _finite(self):
        return all(np.isfinite(p).all() for p, _ in self.parameters())

    def _checkpoint(self, optimizer):
        """Copies of the parameters and of SGD's velocities, to roll a
        diverged epoch back to; another optimizer's state is not copied."""
        params = [p.copy() for p, _ in self.parameters()]
        velocity = ({key: v.copy() for key, v in optimizer._velocity.items()}
                    if isinstance(optimizer, SGD) else None)
        return params, velocity

    def _rollback(self, checkpoint, optimizer):
        params, velocity = checkpoint
        # in place: optimizers key their state by the parameter arrays
        for (p, _), saved in zip(self.parameters(), params):
            p[...] = saved
        if velocity is not None:
            optimizer._velocity = velocity

    def fit(self, X, y, epochs=10, batch_size=32, *, loss=None, optimizer=None,
            shuffle=True, seed=None, verbose=True, validation_data=None,
            stream=None):
        """Train with mini-batches.

        Parameters
        ----------
        X : array_like, shape (samples, features)
        y : array_like
            One target per row of X: class indices or probability rows for
            SoftmaxCrossEntropy, values shaped as the output for
            MeanSquaredError.
        epochs, batch_size : int, optional
        loss : optional
            Default SoftmaxCrossEntropy after a softmax layer, else
            MeanSquaredError.
        optimizer : optional
            Default ``SGD(lr=0.01, momentum=0.9)``.
        shuffle : bool, optional
            Reshuffle the rows every epoch.
        seed : int, optional
            Makes the shuffling reproducible.
        verbose : bool, optional
            A progress bar per epoch on stderr (or ``stream``).
        validation_data : tuple, optional
            ``(X_val, y_val)``, evaluated after each epoch.
        stream : file, optional
            Where the progress bar goes.

        Returns
        -------
        dict
            ``{"loss": mean training loss per epoch, "epoch_time": seconds
            per epoch}``, plus ``"val_loss"`` with ``validation_data``; also
            kept as ``self.history``.

        Raises
        ------
        ValueError
            Before any step, if X, y or the validation data hold a NaN or an
            infinity.
        FloatingPointError
            If training diverges (a batch's loss or a parameter stops being
            finite): the parameters, and an SGD optimizer's velocities, are
            first put back as the last finite epoch left them (as they were
            before training if that was the first), and ``self.history``
            holds the finished epochs.
        """
        X = np.asarray(X)
        y = np.asarray(y)
        if X.ndim != 2 or len(X) != len(y):
            raise ValueError(f"X must be 2-D with one row per target; got "
                             f"X {X.shape}, y {y.shape}")
        if int(epochs) < 0 or int(batch_size) < 1:
            raise ValueError("epochs must be >= 0 and batch_size >= 1")
        # one NaN here would silently make every later loss and weight NaN
        source, X = X, _native(X, self.layers[0].dtype)
        _require_finite(X, "X", source)
        _require_finite(y, "y")
        if validation_data is not None:
            X_val, y_val = validation_data
            _require_finite(np.asarray(X_val), "X_val")
            _require_finite(np.asarray(y_val), "y_val")
        if not self._finite():
            raise ValueError("fit: the model's parameters hold NaN or "
                             "infinity before training")
        loss = loss or self._default_loss()
        # targets are checked once here, not once per batch
        if isinstance(loss, SoftmaxCrossEntropy):
            shape = (len(y), self.layers[-1].out_features)
            labels, t = loss._targets(np.broadcast_to(np.empty(1), shape), y,
                                      True)
            if labels:
                y = t   # float labels cast to int64 once, not per batch
        loss.value_and_gradient(self.forward(X[:1], training=False), y[:1],
                                self.output_activation)
        optimizer = optimizer or SGD()
        rng = np.random.default_rng(seed)
        act = self.output_activation
        history = {"loss": [], "epoch_time": []}
        if validation_data is not None:
            history["val_loss"] = []
        n, width = len(X), len(str(int(epochs)))

        def diverged(why):
            self._rollback(checkpoint, optimizer)
            self.history = history
            if bar and bar.tty:
                bar.stream.write("\n")   # keep the last bar above the error
            lr = getattr(optimizer, "lr", None)
            return FloatingPointError(
                f"fit: training diverged in epoch {epoch + 1}/{epochs} "
                f"({why}); lower the learning rate"
                + ("" if lr is None else f" (lr={lr})") + ". The parameters "
                + (f"are back to where epoch {epoch} left them." if epoch else
                   "are back to their values before training."))

        for epoch in range(int(epochs)):
            # costs a copy of the parameters, small against an epoch of GEMMs
            checkpoint = self._checkpoint(optimizer)
            start = time.perf_counter()
            order = rng.permutation(n) if shuffle else np.arange(n)
            bar = (Progress(n, f"epoch {epoch + 1:>{width}}/{epochs} ",
                            stream, log_steps=False) if verbose else None)
            total = 0.0
            for i in range(0, n, batch_size):
                idx = order[i:i + batch_size]
                xb, yb = X[idx], y[idx]
                out = self.forward(xb)
                batch_loss, grad, pre = loss.value_and_gradient(
                    out, yb, act, check=False)
                total += batch_loss * len(idx)
                if not math.isfinite(total):
                    raise diverged(f"batch {i // batch_size + 1}: loss "
                                   f"{batch_loss}")
                self.backward(grad, preactivation=pre, need_dx=False)
                optimizer.step(self.parameters())
                if bar:
                    done = i + len(idx)
                    bar.update(done, f"loss {total / done:.4f}")
            # the last step's update is not seen by any loss of this epoch
            if not self._finite():
                raise diverged("a parameter became NaN or infinity")
            history["epoch_time"].append(time.perf_counter() - start)
            history["loss"].append(total / max(n, 1))
            info = f"loss {history['loss'][-1]:.4f}"
            if validation_data is not None:
                history["val_loss"].append(self.evaluate(*validation_data,
                                                         loss=loss))
                info += f" val_loss {history['val_loss'][-1]:.4f}"
            if bar:
                bar.close(info)
        self.history = history
        return history

    def save(self, path):
        """Weights and architecture to an .npz (no pickles)."""
        arrays = {"config": np.array(json.dumps(
            {"format": "fastmm.nn.Sequential", "version": 1,
             "layers": [layer.config() for layer in self.layers]}))}
        for i, layer in enumerate(self.layers):
            arrays[f"W{i}"] = layer.W
            if layer.b is not None:
                arrays[f"b{i}"] = layer.b
        np.savez(path, **arrays)

    @classmethod
    def load(cls, path):
        """A Sequential rebuilt from :meth:`save`'s file.  Raises ValueError
        if the file is not one (another format, a damaged archive, or
        arrays whose shape or dtype do not fit its layers)."""
        return _npz.load(path, "fastmm.nn.Sequential",
                         lambda f, bad: cls._from_arrays(f, path, bad))

    @classmethod
    def _from_arrays(cls, f, path, bad):
        config = _npz.config(f, path, "fastmm.nn.Sequential", 1, bad, (
            "fastmm.nn.QuantizedSequential",
            "a quantized model; load it with QuantizedSequential.load"))
        layers = []
        for i, c, n_in, n_out in _npz.layers(config, bad):
            if c["dtype"] not in ("float32", "float64"):
                raise bad(f"layer {i} has dtype {c['dtype']!r}")
            if type(c["bias"]) is not bool:
                raise bad(f"layer {i} has bias {c['bias']!r}")
            # the arrays first: sizes are believed only when the file holds
            # arrays of them
            W = _npz.array(f, f"W{i}", np.dtype(c["dtype"]), (n_in, n_out),
                           bad)
            b = (_npz.array(f, f"b{i}", np.dtype(c["dtype"]), (n_out,), bad)
                 if c["bias"] else None)
            try:
                layer = Dense(n_in, n_out, c["activation"], slope=c["slope"],
                              bias=c["bias"], dtype=c["dtype"])
            except (ValueError, TypeError) as e:
                raise bad(f"layer {i}: {e}") from e
            layer.W[...] = W
            if b is not None:
                layer.b[...] = b
            layers.append(layer)
        return cls(layers)


# int8 / bfloat16 inference models; fastmm.nn.quantized imports nothing from
# this module at import time, so the import can sit here, after Sequential
from fastmm.nn.quantized import QuantizedSequential, quantize  # noqa: E402
