"""fastmm: fast matrix multiplication and dense layers on the CPU.

    c = fastmm.matmul(a, b)              # np.matmul, faster for float32/64
    c = fastmm.gemm(alpha, a, b, beta, c, trans_a=False, trans_b=False)
    with fastmm.threads(1): ...
    fastmm.show_config()
"""
__version__ = "0.1.0"

from fastmm._threads import get_num_threads, set_num_threads, threads
from fastmm._linalg import matmul
from fastmm._blas import gemm
from fastmm._config import show_config

__all__ = ["matmul", "gemm", "get_num_threads", "set_num_threads", "threads",
           "show_config", "__version__"]

from fastmm._threads import _register_threadpoolctl

_register_threadpoolctl()
del _register_threadpoolctl
