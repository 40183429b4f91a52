"""fastmm: fast matrix multiplication and dense layers on the CPU.

    c = fastmm.matmul(a, b)              # np.matmul, faster for float32/64
    c = fastmm.gemm(alpha, a, b, beta, c, trans_a=False, trans_b=False)
    y = fastmm.nn.linear(x, w, b, activation="relu")
    with fastmm.threads(1): ...          # this Python thread, inside the block
    fastmm.release_buffers()             # free the packing buffers kept between calls
    fastmm.show_config()
"""
__version__ = "0.1.0"

try:
    from fastmm.driver._threads import get_num_threads, set_num_threads, threads
except ImportError as e:  # pragma: no cover - depends on how it was installed
    import os as _os
    _driver = _os.path.join(_os.path.dirname(__file__), "driver")
    if not any(f.startswith("_threads.") and not f.endswith((".pyx", ".pxd", ".h"))
               for f in _os.listdir(_driver)):
        raise ImportError(
            "fastmm's compiled modules are missing from "
            f"{_driver}: this looks like the source tree. "
            "Build it in place with `pip install -e .`, or run from outside "
            "the source directory after `pip install .`") from e
    raise
from fastmm._linalg import matmul
from fastmm._blas import gemm
from fastmm.driver._packed import kept_buffer_bytes, release_buffers
from fastmm._config import show_config

__all__ = ["matmul", "gemm", "get_num_threads", "set_num_threads", "threads",
           "release_buffers", "kept_buffer_bytes", "show_config", "nn", "cuda", "__version__"]

# Submodules loaded on first access: fastmm.nn, and fastmm.cuda, which must
# not pull numba into a plain `import fastmm`.
_LAZY_SUBMODULES = ("nn", "cuda", "dask")


def __getattr__(name):
    if name in _LAZY_SUBMODULES:
        import importlib
        return importlib.import_module(f"fastmm.{name}")
    raise AttributeError(f"module 'fastmm' has no attribute {name!r}")


# the configuration row for this CPU (or the tuned one) into every module
from fastmm.config import apply as _apply_config
_apply_config()
del _apply_config

from fastmm.driver._threads import _register_threadpoolctl

_register_threadpoolctl()
del _register_threadpoolctl
