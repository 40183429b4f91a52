"""Ordinary use of fastmm's public API, for the type checker.

tests/test_typing.py runs ``python -m mypy`` on this file (the assert_type
lines are the checker's expectations) and also runs it, so each expectation
is checked against what the code returns: a stub that claimed the wrong
type would fail one or the other.
"""
from typing import Any, Optional

import numpy as np
import numpy.typing as npt
from typing_extensions import assert_type

import fastmm
import fastmm.nn as nn

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
Float = npt.NDArray[np.float32 | np.float64]


def products() -> None:
    rng = np.random.default_rng(0)
    a = rng.random((8, 5), dtype=np.float32)
    b = rng.random((5, 3), dtype=np.float32)
    d = rng.random((5, 3))

    c32 = fastmm.matmul(a, b)
    assert_type(c32, F32)
    assert c32.dtype == np.float32
    c64 = fastmm.matmul(a, d)
    assert_type(c64, F64)
    assert c64.dtype == np.float64
    out: F32 = np.empty((8, 3), np.float32)
    assert_type(fastmm.matmul(a, b, out=out), F32)       # out, as given
    assert fastmm.matmul(a, b, out) is out
    assert fastmm.matmul(a, b, precision="bf16").dtype == np.float32
    i8 = np.ones((4, 4), np.int8)
    exact: Any = fastmm.matmul(i8, i8, dtype=np.int32)    # np.matmul's rules
    assert exact.dtype == np.int32
    lists = fastmm.matmul([[1.0, 2.0]], [[3.0], [4.0]])  # array-likes too
    assert lists.shape == (1, 1)

    g = fastmm.gemm(2.0, a, b.T.copy(), trans_b=True)
    assert_type(g, F32)
    assert g.dtype == np.float32
    c = np.zeros((8, 3))
    g64 = fastmm.gemm(1.0, a, d, beta=0.5, c=c, overwrite_c=True)
    assert_type(g64, Float)
    assert g64 is c


def threads() -> None:
    n: int = fastmm.get_num_threads()
    with fastmm.threads(1):
        assert fastmm.get_num_threads() == 1
    fastmm.set_num_threads(n)
    freed: int = fastmm.release_buffers()
    kept: int = fastmm.kept_buffer_bytes()
    assert freed >= 0 and kept >= 0
    assert_type(fastmm.config.current()["isa"], str)
    assert isinstance(fastmm.__version__, str)


def layers() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((16, 4)).astype(np.float32)
    w = rng.standard_normal((4, 3)).astype(np.float32)
    bias = np.zeros(3, np.float32)

    y = nn.linear(x, w, bias, "relu")
    assert_type(y, F32)
    assert y.dtype == np.float32
    y2 = nn.linear(x, w, bias, activation="leaky_relu", slope=0.1)
    dx, dw, db = nn.linear_backward(x, w, np.ones_like(y2), y=y2,
                                    activation="leaky_relu", slope=0.1)
    assert_type(dx, Float)
    assert dx.shape == x.shape and dw.shape == w.shape and db.shape == (3,)
    no_dx, _, _ = nn.linear_backward(x, w, np.ones_like(y), y=y,
                                     activation="relu", need_dx=False)
    assert_type(no_dx, None)
    assert no_dx is None
    assert_type(nn.activate(y, "softmax"), F32)

    model = nn.Sequential([nn.Dense(4, 8, "relu", seed=0),
                           nn.Dense(8, 3, "softmax", init="xavier", seed=1)])
    labels = rng.integers(0, 3, 16)
    history = model.fit(x, labels, epochs=2, batch_size=8, verbose=False,
                        optimizer=nn.SGD(lr=0.1, momentum=0.9),
                        loss=nn.SoftmaxCrossEntropy())
    assert_type(history, dict[str, list[float]])
    assert len(history["loss"]) == 2
    p = model.predict(x)
    assert p.shape == (16, 3)
    loss: float = model.evaluate(x, labels)
    assert loss > 0
    first_bias: Optional[Float] = model.layers[0].b
    assert first_bias is not None

    q = nn.quantize(model, "int8")
    assert_type(q, nn.QuantizedSequential)
    assert_type(q.predict(x), F32)
    assert q.predict(x).dtype == np.float32
    size: int = q.nbytes
    assert size > 0


def main() -> None:
    products()
    threads()
    layers()


if __name__ == "__main__":
    main()
