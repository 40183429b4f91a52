# cython: language_level=3
# The kernels and block sizes in force (driver/_context.pyx), for the loops.

# The micro-kernel contract's signatures (kernels/ukernel.h): full MR x NR
# tiles, and the edge-row kernels that write only the first `rows` rows.
ctypedef void (*sgemm_ukr_t)(Py_ssize_t k, float alpha, const float* a,
                             const float* b, float beta, float* c,
                             Py_ssize_t ldc) noexcept nogil
ctypedef void (*dgemm_ukr_t)(Py_ssize_t k, double alpha, const double* a,
                             const double* b, double beta, double* c,
                             Py_ssize_t ldc) noexcept nogil
ctypedef void (*sgemm_rows_t)(Py_ssize_t k, float alpha, const float* a,
                              const float* b, float beta, float* c,
                              Py_ssize_t ldc, int rows) noexcept nogil
ctypedef void (*dgemm_rows_t)(Py_ssize_t k, double alpha, const double* a,
                              const double* b, double beta, double* c,
                              Py_ssize_t ldc, int rows) noexcept nogil

# Everything the loops need about one element type's kernel.
cdef struct Blocking:
    int MR, NR
    Py_ssize_t MC, KC, NC
    # products of few rows run in one A block, each thread packing `chunk`
    # B micro-panels at a time (driver/_packed.pyx): half of the L2 budget
    # set_blocking is given (by default MC x KC's); with B wide, up to
    # one_block_m rows (twice the budget's; >= 2 MC)
    Py_ssize_t one_block_m, chunk
    void* ukr
    void* ukr_rows     # edge-row kernel (kernels/ukernel.h), or NULL
    int split_rows     # a last strip this short joins the one before (ukernel.h)

# One dtype's Blocking of the kernel family in force.  Read it once per
# product: a switch while threads multiply publishes a new one and never
# changes the one a product holds.
cdef const Blocking* active_blocking(bint f64) noexcept nogil
