# cython: language_level=3
# Packing: copy a block of A or B, read through any strides, into the
# contiguous micro-panel layout of kernels/ukernel.h, zero-padded to MR / NR.
# Packing is O(mk + kn); it pays back by letting every micro-kernel call stream
# unit-stride, aligned panels from cache.  Each operand has a unit-stride case
# that copies whole rows of the panel, a transposing case (kernels/pack.h),
# and a generic one for any other strides.

ctypedef fused real:
    float
    double

cdef extern from "kernels/pack.h" nogil:
    void fmm_pack_rows_s(Py_ssize_t kc, int count, const float* src,
                         Py_ssize_t ld, float* dst, int width)
    void fmm_pack_rows_d(Py_ssize_t kc, int count, const double* src,
                         Py_ssize_t ld, double* dst, int width)
    void fmm_pack_panels_s(Py_ssize_t kc, Py_ssize_t nc, const float* src,
                           Py_ssize_t ld, float* dst, int width,
                           Py_ssize_t ahead)
    void fmm_pack_panels_d(Py_ssize_t kc, Py_ssize_t nc, const double* src,
                           Py_ssize_t ld, double* dst, int width,
                           Py_ssize_t ahead)

cdef inline void _pack_rows(Py_ssize_t kc, int count, const real* src,
                            Py_ssize_t ld, real* dst, int width) noexcept nogil:
    # dst[p*width + i] = src[i*ld + p]: rows contiguous along k, transposed
    if real is float:
        fmm_pack_rows_s(kc, count, src, ld, dst, width)
    else:
        fmm_pack_rows_d(kc, count, src, ld, dst, width)


cdef inline void _pack_panels(Py_ssize_t kc, Py_ssize_t nc, const real* src,
                              Py_ssize_t ld, real* dst, int width,
                              Py_ssize_t ahead) noexcept nogil:
    # dst[q*width*kc + p*width + j] = src[p*ld + q*width + j], zero-padded
    if real is float:
        fmm_pack_panels_s(kc, nc, src, ld, dst, width, ahead)
    else:
        fmm_pack_panels_d(kc, nc, src, ld, dst, width, ahead)


cdef inline void pack_a(Py_ssize_t mc, Py_ssize_t kc, const real* a,
                        Py_ssize_t rs_a, Py_ssize_t cs_a, real* a_packed,
                        int MR) noexcept nogil:
    """A[0:mc, 0:kc] -> ceil(mc/MR) panels, panel[p*MR + i] = A[ir+i, p]."""
    cdef Py_ssize_t ir, i, p, mr, panel
    cdef const real* src
    cdef real* dst = a_packed
    if rs_a == 1 and cs_a != 1:
        # columns are contiguous: each k step copies a run of MR elements
        # into each panel
        _pack_panels(kc, mc, a, cs_a, a_packed, MR, 0)
        return
    for panel in range((mc + MR - 1) // MR):
        ir = panel * MR
        mr = min(MR, mc - ir)
        src = a + ir * rs_a
        if cs_a == 1:
            _pack_rows(kc, <int>mr, src, rs_a, dst, MR)
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
                        int NR, Py_ssize_t ahead=0) noexcept nogil:
    """B[0:kc, 0:nc] -> ceil(nc/NR) panels, panel[p*NR + j] = B[p, jr+j].

    ahead > 0 (rows contiguous only): while copying row p, ask for row
    p + ahead's nc elements, for runs the hardware prefetchers miss."""
    cdef Py_ssize_t j, p, jr, nr, panel
    cdef Py_ssize_t n_panels = (nc + NR - 1) // NR
    cdef const real* src
    cdef real* dst
    if cs_b == 1:
        # rows are contiguous: each row streamed once across all the panels
        _pack_panels(kc, nc, b, rs_b, b_packed, NR, ahead)
        return
    for panel in range(n_panels):
        jr = panel * NR
        nr = min(NR, nc - jr)
        dst = b_packed + panel * NR * kc
        if rs_b == 1:
            _pack_rows(kc, <int>nr, b + jr * cs_b, cs_b, dst, NR)
        else:
            for p in range(kc):
                src = b + p * rs_b + jr * cs_b
                for j in range(nr):
                    dst[p * NR + j] = src[j * cs_b]
        if nr < NR:
            for p in range(kc):
                for j in range(nr, NR):
                    dst[p * NR + j] = 0
