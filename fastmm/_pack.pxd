# cython: language_level=3
# Packing: copy a block of A or B, read through any strides, into the
# contiguous micro-panel layout of kernels/ukernel.h, zero-padded to MR / NR.
# Packing is O(mk + kn); it pays back by letting every micro-kernel call stream
# unit-stride, aligned panels from cache.

ctypedef fused real:
    float
    double


cdef inline void pack_a(Py_ssize_t mc, Py_ssize_t kc, const real* a,
                        Py_ssize_t rs_a, Py_ssize_t cs_a, real* a_packed,
                        int MR) noexcept nogil:
    """A[0:mc, 0:kc] -> ceil(mc/MR) panels, panel[p*MR + i] = A[ir+i, p]."""
    cdef Py_ssize_t ir, i, p, mr, panel
    cdef const real* src
    cdef real* dst = a_packed
    for panel in range((mc + MR - 1) // MR):
        ir = panel * MR
        mr = min(MR, mc - ir)
        src = a + ir * rs_a
        if cs_a == 1:
            # rows are contiguous along k: read each row once
            for i in range(mr):
                for p in range(kc):
                    dst[p * MR + i] = src[i * rs_a + p]
        else:
            for p in range(kc):
                for i in range(mr):
                    dst[p * MR + i] = src[p * cs_a + i * rs_a]
        if mr < MR:
            for p in range(kc):
                for i in range(mr, MR):
                    dst[p * MR + i] = 0
        dst += MR * kc


cdef inline void pack_b(Py_ssize_t kc, Py_ssize_t nc, const real* b,
                        Py_ssize_t rs_b, Py_ssize_t cs_b, real* b_packed,
                        int NR) noexcept nogil:
    """B[0:kc, 0:nc] (nc <= NR) -> one panel, panel[p*NR + j] = B[p, j]."""
    cdef Py_ssize_t j, p
    cdef const real* src
    if rs_b == 1 and cs_b != 1:
        # columns are contiguous along k: read each column once
        for j in range(nc):
            src = b + j * cs_b
            for p in range(kc):
                b_packed[p * NR + j] = src[p]
    else:
        for p in range(kc):
            src = b + p * rs_b
            for j in range(nc):
                b_packed[p * NR + j] = src[j * cs_b]
    if nc < NR:
        for p in range(kc):
            for j in range(nc, NR):
                b_packed[p * NR + j] = 0
