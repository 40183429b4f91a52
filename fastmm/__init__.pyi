# Type information for fastmm's top level.  The functions live in compiled
# modules that type checkers cannot read; their signatures are written here,
# and tests/test_typing.py compares every one with the runtime object's
# inspect.signature, so this file cannot drift from the code.
#
# Results of matmul/gemm on float32/float64 arrays are typed as arrays of
# that dtype, as numpy's own stubs type ``a @ b``: a 1-D @ 1-D product is a
# numpy scalar at run time.
from contextlib import AbstractContextManager
from typing import Any, Literal, TypeVar, overload

import numpy as np
import numpy.typing as npt

# nn, cuda and dask are imported on first access; config at import
from fastmm import config as config, cuda as cuda, dask as dask, nn as nn

__version__: str
__all__ = ["matmul", "gemm", "get_num_threads", "set_num_threads", "threads",
           "release_buffers", "kept_buffer_bytes", "show_config", "nn", "cuda",
           "__version__"]

_ArrayT = TypeVar("_ArrayT", bound=np.ndarray[Any, Any])
_F32 = npt.NDArray[np.float32]
_F64 = npt.NDArray[np.float64]
_Float = npt.NDArray[np.float32 | np.float64]
_Device = Literal["cpu", "cuda"] | None
_Precision = Literal["highest", "bf16"] | None
# a real number: Python, numpy, or a 0-d array (BLAS's alpha and beta)
_Real = float | np.integer[Any] | np.floating[Any] | npt.NDArray[np.integer[Any] | np.floating[Any] | np.bool_]
# BLAS's transa: false, or 1/2 (both mean the transpose for real data)
_Trans = bool | Literal[0, 1, 2]

# out= given: that array is returned (also when passed as a 1-tuple)
@overload
def matmul(x1: npt.ArrayLike, x2: npt.ArrayLike, out: _ArrayT | tuple[_ArrayT], *,
           device: _Device = None, precision: _Precision = None,
           **kwargs: Any) -> _ArrayT: ...
# no ufunc keywords (dtype=, casting=): the result's dtype follows the operands.
# mypy counts float32 and float64 arrays as overlapping (numpy's bit-width
# classes subclass each other), as numpy's own overloads find; the choice it
# makes is still the first that matches, which tests/typing/usage.py checks.
@overload
def matmul(x1: _F32, x2: _F32, out: None = None, *,  # type: ignore[overload-overlap]
           device: _Device = None, precision: _Precision = None) -> _F32: ...
@overload
def matmul(x1: _F64, x2: _Float, out: None = None, *, device: _Device = None,
           precision: _Precision = None) -> _F64: ...
@overload
def matmul(x1: _Float, x2: _F64, out: None = None, *, device: _Device = None,
           precision: _Precision = None) -> _F64: ...
# anything else goes to np.matmul (int8 with dtype=np.int32, bfloat16,
# integers, objects ...), whose result numpy's stubs leave untyped too
@overload
def matmul(x1: npt.ArrayLike, x2: npt.ArrayLike, out: None = None, *,
           device: _Device = None, precision: _Precision = None,
           **kwargs: Any) -> Any: ...

# float32 when every operand (c too) is float32 or narrower (float16, bool,
# 8- and 16-bit integers), float64 otherwise
@overload
def gemm(alpha: _Real, a: _F32, b: _F32, beta: _Real = 0.0, c: _F32 | None = None,
         trans_a: _Trans = False, trans_b: _Trans = False,
         overwrite_c: bool = False) -> _F32: ...
@overload
def gemm(alpha: _Real, a: npt.ArrayLike, b: npt.ArrayLike, beta: _Real = 0.0,
         c: npt.ArrayLike | None = None, trans_a: _Trans = False,
         trans_b: _Trans = False, overwrite_c: bool = False) -> _Float: ...

def get_num_threads() -> int: ...
def set_num_threads(n: int) -> None: ...
def threads(n: int) -> AbstractContextManager[None]: ...
def release_buffers() -> int: ...
def kept_buffer_bytes() -> int: ...
def show_config() -> None: ...
