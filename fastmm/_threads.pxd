# The one place that decides how many threads a product uses.
cdef int threads_for(double flops) noexcept nogil
