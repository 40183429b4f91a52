# cython: language_level=3
# The unpacked path for small and skinny products (kernels/small.h has the
# contract): C := alpha * A @ B + beta * C, strides in elements, any sign;
# beta == 0 never reads C.  Nothing is allocated; nthreads == 1 starts no
# thread.  The batch form runs a broadcast stack (batch strides bs_*, 0 where
# an operand is broadcast) parallel over the stack.

cdef void small_sgemm(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, float alpha,
                      const float* a, Py_ssize_t rs_a, Py_ssize_t cs_a,
                      const float* b, Py_ssize_t rs_b, Py_ssize_t cs_b,
                      float beta, float* c, Py_ssize_t rs_c, Py_ssize_t cs_c,
                      int nthreads) noexcept nogil
cdef void small_dgemm(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, double alpha,
                      const double* a, Py_ssize_t rs_a, Py_ssize_t cs_a,
                      const double* b, Py_ssize_t rs_b, Py_ssize_t cs_b,
                      double beta, double* c, Py_ssize_t rs_c, Py_ssize_t cs_c,
                      int nthreads) noexcept nogil
cdef void small_sgemm_batch(Py_ssize_t count, int nb, const Py_ssize_t* shape,
                            const Py_ssize_t* bs_a, const Py_ssize_t* bs_b,
                            const Py_ssize_t* bs_c, Py_ssize_t m, Py_ssize_t n,
                            Py_ssize_t k, float alpha, const float* a,
                            Py_ssize_t rs_a, Py_ssize_t cs_a, const float* b,
                            Py_ssize_t rs_b, Py_ssize_t cs_b, float beta,
                            float* c, Py_ssize_t rs_c, Py_ssize_t cs_c,
                            int nthreads) noexcept nogil
cdef void small_dgemm_batch(Py_ssize_t count, int nb, const Py_ssize_t* shape,
                            const Py_ssize_t* bs_a, const Py_ssize_t* bs_b,
                            const Py_ssize_t* bs_c, Py_ssize_t m, Py_ssize_t n,
                            Py_ssize_t k, double alpha, const double* a,
                            Py_ssize_t rs_a, Py_ssize_t cs_a, const double* b,
                            Py_ssize_t rs_b, Py_ssize_t cs_b, double beta,
                            double* c, Py_ssize_t rs_c, Py_ssize_t cs_c,
                            int nthreads) noexcept nogil
