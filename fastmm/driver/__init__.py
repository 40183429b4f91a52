"""fastmm's GEMM drivers: the loops around the kernels, no ISA code.

_packed     jc -> pc -> ic -> jr -> ir around the micro-kernel
            (fastmm/kernels/ukernel.h), with packing (_pack.pxd), per-thread
            scratch (_scratch.h), edge tiles and the epilogue hook
_unpacked   small, skinny, matrix-vector and stacked products read in place
            (_unpacked.h, over the kernels of fastmm/kernels/small*.h)
_threads    the one place that decides thread counts

fastmm._linalg (np.matmul's semantics) chooses between the two drivers.
"""
