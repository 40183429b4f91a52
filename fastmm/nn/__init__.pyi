# Type information for fastmm.nn (fastmm/nn/__init__.py).  A stub rather than
# annotations in nn.py: the module calls compiled code that type checkers
# cannot read, and a stub keeps checkers from analysing it.
# tests/test_typing.py compares every signature here with the runtime one.
import os
from collections.abc import Iterable, Sequence
from typing import IO, Any, Literal, Protocol, TextIO, TypeVar, overload

import numpy as np
import numpy.typing as npt
from typing_extensions import Self

from fastmm.nn.quantized import QuantizedSequential as QuantizedSequential
from fastmm.nn.quantized import quantize as quantize

__all__ = ["linear", "linear_backward", "activate", "ACTIVATIONS", "Dense",
           "Sequential", "SGD", "MeanSquaredError", "SoftmaxCrossEntropy",
           "quantize", "QuantizedSequential"]

_ArrayT = TypeVar("_ArrayT", bound=np.ndarray[Any, Any])
_F32 = npt.NDArray[np.float32]
_Float = npt.NDArray[np.float32 | np.float64]
# the canonical names, as layers report them
_ActivationName = Literal["identity", "relu", "leaky_relu", "sigmoid", "tanh",
                          "gelu", "gelu_tanh", "softmax"]
# what the functions accept: the names, their aliases, and None (identity)
_Activation = _ActivationName | Literal["gelu_erf", "linear"] | None
_Seed = int | Sequence[int] | np.random.SeedSequence | np.random.BitGenerator | np.random.Generator | None
_Path = str | os.PathLike[str] | IO[bytes]
_Pairs = Iterable[tuple[npt.NDArray[Any], npt.NDArray[Any]]]

class _Loss(Protocol):
    # what Sequential.fit and evaluate call on a loss
    def value_and_gradient(self, pred: _Float, target: Any, activation: str = ...,
                           check: bool = ...) -> tuple[float, _Float, bool]: ...
    def value(self, pred: _Float, target: Any, activation: str = ...) -> float: ...

class _Optimizer(Protocol):
    def step(self, pairs: list[tuple[_Float, _Float]]) -> None: ...

ACTIVATIONS: tuple[_ActivationName, ...]

# out= given: filled and returned
@overload
def linear(x: npt.ArrayLike, w: npt.ArrayLike, b: npt.ArrayLike | None, activation: _Activation,
           out: _ArrayT, *, slope: float = 0.01) -> _ArrayT: ...
@overload
def linear(x: npt.ArrayLike, w: npt.ArrayLike, b: npt.ArrayLike | None = None,
           activation: _Activation = None, *, out: _ArrayT, slope: float = 0.01) -> _ArrayT: ...
# float32 when every operand is float32, float64 otherwise
@overload
def linear(x: _F32, w: _F32, b: _F32 | None = None, activation: _Activation = None,
           out: None = None, *, slope: float = 0.01) -> _F32: ...
@overload
def linear(x: npt.ArrayLike, w: npt.ArrayLike, b: npt.ArrayLike | None = None,
           activation: _Activation = None, out: None = None, *,
           slope: float = 0.01) -> _Float: ...

# (dx, dw, db); dx is None with need_dx=False
@overload
def linear_backward(x: npt.ArrayLike, w: npt.ArrayLike, dy: npt.ArrayLike,
                    y: npt.ArrayLike | None = None, activation: _Activation = None, *,
                    z: npt.ArrayLike | None = None, slope: float = 0.01,
                    need_dx: Literal[True] = True) -> tuple[_Float, _Float, _Float]: ...
@overload
def linear_backward(x: npt.ArrayLike, w: npt.ArrayLike, dy: npt.ArrayLike,
                    y: npt.ArrayLike | None = None, activation: _Activation = None, *,
                    z: npt.ArrayLike | None = None, slope: float = 0.01,
                    need_dx: Literal[False]) -> tuple[None, _Float, _Float]: ...
@overload
def linear_backward(x: npt.ArrayLike, w: npt.ArrayLike, dy: npt.ArrayLike,
                    y: npt.ArrayLike | None = None, activation: _Activation = None, *,
                    z: npt.ArrayLike | None = None, slope: float = 0.01,
                    need_dx: bool = True) -> tuple[_Float | None, _Float, _Float]: ...

@overload
def activate(z: _F32, activation: _Activation, *, slope: float = 0.01) -> _F32: ...
@overload
def activate(z: npt.ArrayLike, activation: _Activation, *, slope: float = 0.01) -> _Float: ...

class Dense:
    activation: _ActivationName
    slope: float
    in_features: int
    out_features: int
    dtype: np.dtype[np.float32 | np.float64]
    init: Literal["he", "xavier"]
    W: _Float
    b: _Float | None
    dW: _Float
    db: _Float | None
    def __init__(self, in_features: int, out_features: int, activation: _Activation = None,
                 init: Literal["he", "xavier"] | None = None, seed: _Seed = None, *,
                 slope: float = 0.01, bias: bool = True,
                 dtype: npt.DTypeLike = ...) -> None: ...
    def forward(self, x: npt.ArrayLike, training: bool = True) -> _Float: ...
    def __call__(self, x: npt.ArrayLike, training: bool = True) -> _Float: ...
    def backward(self, dy: npt.ArrayLike, *, preactivation: bool = False,
                 need_dx: bool = True) -> _Float | None: ...
    def parameters(self) -> list[tuple[_Float, _Float]]: ...
    def config(self) -> dict[str, Any]: ...

class SGD:
    lr: float
    momentum: float
    nesterov: bool
    weight_decay: float
    def __init__(self, lr: float = 0.01, momentum: float = 0.9, nesterov: bool = False,
                 weight_decay: float = 0.0) -> None: ...
    def step(self, pairs: _Pairs) -> None: ...

class MeanSquaredError:
    def value_and_gradient(self, pred: _Float, target: npt.ArrayLike,
                           activation: str = "identity",
                           check: bool = True) -> tuple[float, _Float, bool]: ...
    def value(self, pred: _Float, target: npt.ArrayLike, activation: str = "identity") -> float: ...
    def __call__(self, pred: _Float, target: npt.ArrayLike, activation: str = "identity") -> float: ...
    def gradient(self, pred: _Float, target: npt.ArrayLike,
                 activation: str = "identity") -> tuple[_Float, bool]: ...

class SoftmaxCrossEntropy:
    def value_and_gradient(self, pred: _Float, target: npt.ArrayLike,
                           activation: str = "softmax",
                           check: bool = True) -> tuple[float, _Float, bool]: ...
    def value(self, pred: _Float, target: npt.ArrayLike, activation: str = "softmax") -> float: ...
    def __call__(self, pred: _Float, target: npt.ArrayLike, activation: str = "softmax") -> float: ...
    def gradient(self, pred: _Float, target: npt.ArrayLike,
                 activation: str = "softmax") -> tuple[_Float, bool]: ...

class Sequential:
    layers: list[Dense]
    # {"loss": [...], "epoch_time": [...], and "val_loss" with validation data}
    history: dict[str, list[float]] | None
    def __init__(self, layers: Iterable[Dense]) -> None: ...
    @property
    def output_activation(self) -> _ActivationName: ...
    def forward(self, x: npt.ArrayLike, training: bool = True) -> _Float: ...
    def __call__(self, x: npt.ArrayLike, training: bool = True) -> _Float: ...
    def backward(self, grad: npt.ArrayLike, *, preactivation: bool = False,
                 need_dx: bool = True) -> _Float | None: ...
    def parameters(self) -> list[tuple[_Float, _Float]]: ...
    def predict(self, X: npt.ArrayLike, batch_size: int = 4096) -> _Float: ...
    def evaluate(self, X: npt.ArrayLike, y: npt.ArrayLike, loss: _Loss | None = None) -> float: ...
    def fit(self, X: npt.ArrayLike, y: npt.ArrayLike, epochs: int = 10, batch_size: int = 32, *,
            loss: _Loss | None = None, optimizer: _Optimizer | None = None,
            shuffle: bool = True, seed: _Seed = None, verbose: bool = True,
            validation_data: tuple[npt.ArrayLike, npt.ArrayLike] | None = None,
            stream: TextIO | None = None) -> dict[str, list[float]]: ...
    def save(self, path: _Path) -> None: ...
    @classmethod
    def load(cls, path: _Path) -> Self: ...
