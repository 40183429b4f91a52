"""fastmm.cuda: matmul, gemm and dense layers on an NVIDIA GPU (numba.cuda)::

    fastmm.cuda.is_available()                 # GPU, or numba's CUDA simulator
    c = fastmm.cuda.matmul(a, b)               # == fastmm.matmul(a, b, device="cuda")
    c = fastmm.cuda.gemm(alpha, a, b, beta, c, trans_a=False, trans_b=False)
    y = fastmm.cuda.linear(x, w, b, activation="relu")
    dx, dw, db = fastmm.cuda.linear_backward(x, w, dy, y=y, activation="relu")

Needs the optional ``numba-cuda`` package (``pip install fastmm[cuda]``);
numba is imported on the first call that needs it, never by ``import fastmm``.
numpy inputs are copied to the device and the result copied back; device
arrays (anything exposing ``__cuda_array_interface__``: numba device arrays,
CuPy arrays, PyTorch CUDA tensors) are read in place and the result is a
numba device array on the same device (wrap it without a copy with
``cupy.asarray(r)`` or ``torch.as_tensor(r, device="cuda")``).

Device operands may have any positive strides (the kernels index them with
their own strides; transposes are index maps, never copies); negative
strides raise ValueError.  A broadcast batch of products launches one
kernel per product.  The kernels live in ``_kernels``; how they were
checked without a GPU is in tests/test_cuda.py.
"""
from fastmm.cuda._api import (CudaUnavailableError, gemm, is_available,
                              linear, linear_backward, matmul)

__all__ = ["is_available", "matmul", "gemm", "linear", "linear_backward",
           "CudaUnavailableError"]
