"""fastmm: fast matrix multiplication and dense layers on the CPU.

    c = fastmm.matmul(a, b)              # np.matmul, faster for float32/64
    c = fastmm.gemm(alpha, a, b, beta, c, trans_a=False, trans_b=False)
    with fastmm.threads(1): ...
    fastmm.show_config()
"""
__version__ = "0.1.0"

from fastmm._threads import get_num_threads, set_num_threads, threads
from fastmm._linalg import gemm, matmul
from fastmm._config import show_config

__all__ = ["matmul", "gemm", "get_num_threads", "set_num_threads", "threads",
           "show_config", "nn", "__version__"]


def __getattr__(name):
    # fastmm.cuda on first access; it imports numba only when it computes
    if name == "cuda":
        import importlib
        return importlib.import_module("fastmm.cuda")
    raise AttributeError(f"module 'fastmm' has no attribute {name!r}")


from fastmm._threads import _register_threadpoolctl

_register_threadpoolctl()
del _register_threadpoolctl


def __getattr__(name):
    # fastmm.nn (dense layers) loads on first use; `import fastmm.nn` works too
    if name == "nn":
        import importlib
        return importlib.import_module("fastmm.nn")
    raise AttributeError(f"module 'fastmm' has no attribute {name!r}")
