# Type information for fastmm.dask (fastmm/dask.py); tests/test_typing.py
# compares it with the runtime signatures.  Needs Dask, as the module does.
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from dask.array import Array

from fastmm.nn import Sequential, _Activation

__all__ = ["matmul", "linear", "predict", "block_threads", "benchmark"]

# k_chunks: "auto", None (A's k blocks as they are), or what rechunk takes for
# one axis (a block size, -1, a tuple of sizes)
def matmul(a: Array | npt.ArrayLike, b: Array | npt.ArrayLike, *,
           k_chunks: Literal["auto"] | int | tuple[int, ...] | None = "auto",
           split_every: int = 4) -> Array: ...
def linear(x: Array | npt.ArrayLike, w: npt.ArrayLike, b: npt.ArrayLike | None = None,
           activation: _Activation = None, *, slope: float = 0.01) -> Array: ...
def predict(model: Sequential, X: Array | npt.ArrayLike) -> Array: ...
def block_threads() -> int | None: ...
def benchmark(n: int = 4096, chunk: int | None = None, *, dtype: npt.DTypeLike = "float32",
              n_workers: int = 2, threads_per_worker: int = 1,
              memory_limit: str | int = "auto",
              k_chunks: Literal["auto"] | int | tuple[int, ...] | None = "auto",
              repeats: int = 3, seed: int | None = 0,
              verbose: bool = False) -> dict[str, Any]: ...
