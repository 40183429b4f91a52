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


cdef inline Py_ssize_t uniform_strips(Py_ssize_t mc, int MR,
                                      int split) noexcept nogil:
    """How many leading strips of a block of mc rows are MR rows high (the
    last one may be shorter); the others are the last two of `strip`."""
    cdef Py_ssize_t n = (mc + MR - 1) // MR
    if split > 0 and n >= 2 and mc - (n - 1) * MR <= split:
        return n - 2
    return n


cdef inline Py_ssize_t strip(Py_ssize_t q, Py_ssize_t mc, int MR, int split,
                             Py_ssize_t* top) noexcept nogil:
    """Height of strip q of ceil(mc / MR) strips of a block of mc rows, and
    its first row in top[0]: MR rows each, except that a last strip of at
    most `split` rows and the whole strip before it are cut into two halves
    (the kernel family's split_rows, kernels/ukernel.h)."""
    cdef Py_ssize_t u = uniform_strips(mc, MR, split), rest, h
    if q < u:
        top[0] = q * MR
        return min(MR, mc - q * MR)
    rest = mc - u * MR
    h = (rest + 1) // 2
    if q == u:
        top[0] = u * MR
        return h
    top[0] = u * MR + h
    return rest - h


cdef inline void pack_a(Py_ssize_t mc, Py_ssize_t kc, const real* a,
                        Py_ssize_t rs_a, Py_ssize_t cs_a, real* a_packed,
                        int MR, int split) noexcept nogil:
    """A[0:mc, 0:kc] -> ceil(mc/MR) panels of MR rows, zero-padded, one per
    strip (see strip): panel[p*MR + i] = A[top+i, p]."""
    cdef Py_ssize_t ir, i, p, mr, panel
    cdef Py_ssize_t n_panels = (mc + MR - 1) // MR
    cdef Py_ssize_t u = uniform_strips(mc, MR, split)
    cdef const real* src
    cdef real* dst = a_packed
    if rs_a == 1 and cs_a != 1:
        # columns are contiguous: each k step copies a run of MR elements
        # into each panel
        if u > 0:
            _pack_panels(kc, min(mc, u * MR), a, cs_a, a_packed, MR, 0)
        for panel in range(u, n_panels):
            mr = strip(panel, mc, MR, split, &ir)
            _pack_panels(kc, mr, a + ir, cs_a, a_packed + panel * MR * kc,
                         MR, 0)
        return
    for panel in range(n_panels):
        mr = strip(panel, mc, MR, split, &ir)
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
