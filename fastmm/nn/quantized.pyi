# Type information for fastmm.nn.quantized (fastmm/nn/quantized.py), which calls
# compiled code; tests/test_typing.py compares it with the runtime signatures.
import os
from collections.abc import Callable, Iterable
from typing import IO, Any, Literal

import numpy as np
import numpy.typing as npt
from typing_extensions import Self

from fastmm.nn import Sequential, _ActivationName, _Loss

__all__ = ["quantize", "QuantizedSequential", "QuantizedDense", "MODES"]

_F32 = npt.NDArray[np.float32]
_Mode = Literal["int8", "bf16"]
_Path = str | os.PathLike[str] | IO[bytes]

MODES: tuple[_Mode, ...]
FORMAT: str
VERSION: int

def quantize_weight(w: npt.ArrayLike) -> tuple[npt.NDArray[np.int8], _F32]: ...
def quantize_rows(x: npt.ArrayLike, x_q: npt.NDArray[np.int8] | None = None,
                  scale: _F32 | None = None) -> tuple[npt.NDArray[np.int8], _F32]: ...
def quantize(model: Sequential, mode: _Mode) -> QuantizedSequential: ...

class QuantizedDense:
    mode: _Mode
    # int8 weights ("int8") or bfloat16 bit patterns as uint16 ("bf16")
    W: npt.NDArray[np.int8 | np.uint16]
    scale: _F32 | None
    b: _F32 | None
    activation: _ActivationName
    slope: float
    in_features: int
    out_features: int
    def __init__(self, mode: _Mode, W: npt.NDArray[np.int8 | np.uint16], scale: _F32 | None,
                 b: _F32 | None, activation: _ActivationName, slope: float) -> None: ...
    @property
    def nbytes(self) -> int: ...
    def weight(self) -> _F32: ...
    def forward(self, x: npt.ArrayLike) -> _F32: ...
    def __call__(self, x: npt.ArrayLike) -> _F32: ...
    def config(self) -> dict[str, Any]: ...

class QuantizedSequential:
    mode: _Mode
    layers: list[QuantizedDense]
    def __init__(self, mode: _Mode, layers: Iterable[QuantizedDense]) -> None: ...
    @property
    def output_activation(self) -> _ActivationName: ...
    @property
    def nbytes(self) -> int: ...
    def forward(self, x: npt.ArrayLike) -> _F32: ...
    def __call__(self, x: npt.ArrayLike) -> _F32: ...
    def predict(self, X: npt.ArrayLike, batch_size: int = 4096) -> _F32: ...
    def evaluate(self, X: npt.ArrayLike, y: npt.ArrayLike, loss: _Loss | None = None) -> float: ...
    def save(self, path: _Path) -> None: ...
    @classmethod
    def load(cls, path: _Path) -> Self: ...
