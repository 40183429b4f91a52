# cython: language_level=3
"""The unpacked driver's compiled home: driver/_unpacked.h's entry points
(over the kernels of kernels/small.h) and the run-time choice of their
instruction set (the kernel state lives here once).

Shape-based selection between this path and the packed driver is made in
fastmm/_linalg.pyx (``_unpacked``).
"""
import os

from fastmm.driver._threads cimport note_region, PATH_SMALL, PATH_SMALL_BATCH

cdef extern from "driver/_unpacked.h" nogil:
    int fmm_small_sgemm(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, float alpha,
                         const float* a, Py_ssize_t rs_a, Py_ssize_t cs_a,
                         const float* b, Py_ssize_t rs_b, Py_ssize_t cs_b,
                         float beta, float* c, Py_ssize_t rs_c,
                         Py_ssize_t cs_c, int nthreads)
    int fmm_small_dgemm(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, double alpha,
                         const double* a, Py_ssize_t rs_a, Py_ssize_t cs_a,
                         const double* b, Py_ssize_t rs_b, Py_ssize_t cs_b,
                         double beta, double* c, Py_ssize_t rs_c,
                         Py_ssize_t cs_c, int nthreads)
    int fmm_small_sgemm_batch(
        Py_ssize_t count, int nb, const Py_ssize_t* shape,
        const Py_ssize_t* bs_a, const Py_ssize_t* bs_b, const Py_ssize_t* bs_c,
        Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, float alpha, const float* a,
        Py_ssize_t rs_a, Py_ssize_t cs_a, const float* b, Py_ssize_t rs_b,
        Py_ssize_t cs_b, float beta, float* c, Py_ssize_t rs_c, Py_ssize_t cs_c,
        int nt)
    int fmm_small_dgemm_batch(
        Py_ssize_t count, int nb, const Py_ssize_t* shape,
        const Py_ssize_t* bs_a, const Py_ssize_t* bs_b, const Py_ssize_t* bs_c,
        Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, double alpha, const double* a,
        Py_ssize_t rs_a, Py_ssize_t cs_a, const double* b, Py_ssize_t rs_b,
        Py_ssize_t cs_b, double beta, double* c, Py_ssize_t rs_c, Py_ssize_t cs_c,
        int nt)
    const char* fmm_small_init(const char* isa)
    Py_ssize_t fmm_l1_sets, fmm_l1_ways, fmm_l1_line
    void fmm_small_stack_limits(int* rows, int* cols_s, int* cols_d)
    long fmm_vm_row_splits, fmm_small_b_copies, fmm_small_row_runs


cdef void small_sgemm(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, float alpha,
                      const float* a, Py_ssize_t rs_a, Py_ssize_t cs_a,
                      const float* b, Py_ssize_t rs_b, Py_ssize_t cs_b,
                      float beta, float* c, Py_ssize_t rs_c, Py_ssize_t cs_c,
                      int nthreads) noexcept nogil:
    note_region(PATH_SMALL, fmm_small_sgemm(m, n, k, alpha, a, rs_a, cs_a, b,
                                            rs_b, cs_b, beta, c, rs_c, cs_c,
                                            nthreads))


cdef void small_dgemm(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, double alpha,
                      const double* a, Py_ssize_t rs_a, Py_ssize_t cs_a,
                      const double* b, Py_ssize_t rs_b, Py_ssize_t cs_b,
                      double beta, double* c, Py_ssize_t rs_c, Py_ssize_t cs_c,
                      int nthreads) noexcept nogil:
    note_region(PATH_SMALL, fmm_small_dgemm(m, n, k, alpha, a, rs_a, cs_a, b,
                                            rs_b, cs_b, beta, c, rs_c, cs_c,
                                            nthreads))


cdef void small_sgemm_batch(Py_ssize_t count, int nb, const Py_ssize_t* shape,
                            const Py_ssize_t* bs_a, const Py_ssize_t* bs_b,
                            const Py_ssize_t* bs_c, Py_ssize_t m, Py_ssize_t n,
                            Py_ssize_t k, float alpha, const float* a,
                            Py_ssize_t rs_a, Py_ssize_t cs_a, const float* b,
                            Py_ssize_t rs_b, Py_ssize_t cs_b, float beta,
                            float* c, Py_ssize_t rs_c, Py_ssize_t cs_c,
                            int nthreads) noexcept nogil:
    note_region(PATH_SMALL_BATCH, fmm_small_sgemm_batch(
        count, nb, shape, bs_a, bs_b, bs_c, m, n, k, alpha, a, rs_a, cs_a, b,
        rs_b, cs_b, beta, c, rs_c, cs_c, nthreads))


cdef void small_dgemm_batch(Py_ssize_t count, int nb, const Py_ssize_t* shape,
                            const Py_ssize_t* bs_a, const Py_ssize_t* bs_b,
                            const Py_ssize_t* bs_c, Py_ssize_t m, Py_ssize_t n,
                            Py_ssize_t k, double alpha, const double* a,
                            Py_ssize_t rs_a, Py_ssize_t cs_a, const double* b,
                            Py_ssize_t rs_b, Py_ssize_t cs_b, double beta,
                            double* c, Py_ssize_t rs_c, Py_ssize_t cs_c,
                            int nthreads) noexcept nogil:
    note_region(PATH_SMALL_BATCH, fmm_small_dgemm_batch(
        count, nb, shape, bs_a, bs_b, bs_c, m, n, k, alpha, a, rs_a, cs_a, b,
        rs_b, cs_b, beta, c, rs_c, cs_c, nthreads))


_in_use = None


def select_small_kernel(name=None):
    """Use the unpacked path's kernels for ISA ``name`` ("avx512", "avx2" or
    "generic"; None: the best this CPU runs).  Returns the name in use: a
    name this CPU cannot run falls back to the best one it can.
    fastmm.driver._context.select_kernel calls this too, so one call switches
    both."""
    global _in_use
    cdef bytes key = name.encode() if name else b""
    _in_use = fmm_small_init(<const char*>key if name else NULL).decode()
    return _in_use


def small_kernel():
    """The ISA of the unpacked path's kernels in use."""
    return _in_use


def stack_limits():
    """The largest product (rows, {dtype name: columns}) that the kernels in
    use run a stack of in one call, a block per product ((0, 0): none)."""
    cdef int rows, cols_s, cols_d
    fmm_small_stack_limits(&rows, &cols_s, &cols_d)
    return rows, {"float32": cols_s, "float64": cols_d}


def set_l1_geometry(sets, ways, line):
    """The L1 data cache the unpacked path plans around (sets, ways, line
    bytes); ways 0 turns off copying B for L1 set collisions."""
    global fmm_l1_sets, fmm_l1_ways, fmm_l1_line
    if sets < 1 or ways < 0 or line < 1:
        raise ValueError(f"L1 geometry: sets >= 1, ways >= 0 and line >= 1, "
                         f"got {sets}, {ways}, {line}")
    fmm_l1_sets, fmm_l1_ways, fmm_l1_line = int(sets), int(ways), int(line)


def l1_geometry():
    """The L1 geometry in force, as set_l1_geometry takes it."""
    return fmm_l1_sets, fmm_l1_ways, fmm_l1_line


def b_copies():
    """Test hook: how many products (or thread shares of one) the calling
    thread has run on the unpacked path over copies of B's panels."""
    return fmm_small_b_copies


def row_runs():
    """Test hook: how many products (or thread shares of one) the calling
    thread has run on the unpacked path as a stack of row runs."""
    return fmm_small_row_runs


def vm_row_splits():
    """Test hook: how many vector @ matrix products the calling thread has
    run split over threads by blocks of the matrix's rows."""
    return fmm_vm_row_splits


# FASTMM_KERNEL names the packed path's kernel family; the families share
# their ISA names, so it picks this path's kernels too.
select_small_kernel(os.environ.get("FASTMM_KERNEL") or None)
