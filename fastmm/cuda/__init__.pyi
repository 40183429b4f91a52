# Type information for fastmm.cuda, whose arrays are numpy arrays or device
# arrays (numba, CuPy, PyTorch: anything with __cuda_array_interface__), so
# operands and results are typed loosely.  tests/test_typing.py compares
# the signatures with the runtime ones.
from typing import Any

from fastmm.nn import _Activation

__all__ = ["is_available", "matmul", "gemm", "linear", "linear_backward",
           "CudaUnavailableError"]

class CudaUnavailableError(RuntimeError): ...

def is_available() -> bool: ...
def matmul(a: Any, b: Any, out: Any = None) -> Any: ...
def gemm(alpha: float, a: Any, b: Any, beta: float = 0.0, c: Any = None,
         trans_a: bool | int = False, trans_b: bool | int = False,
         overwrite_c: bool = False) -> Any: ...
def linear(x: Any, w: Any, b: Any = None, activation: _Activation = None,
           out: Any = None, *, slope: float = 0.01) -> Any: ...
# (dx, dw, db)
def linear_backward(x: Any, w: Any, dy: Any, y: Any = None, activation: _Activation = None,
                    *, b: Any = None, z: Any = None,
                    slope: float = 0.01) -> tuple[Any, Any, Any]: ...
