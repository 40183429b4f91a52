# The one place that decides how many threads a product uses, and where each
# parallel path reports the team it ran with (for tests; see _threads.record).
cdef enum:
    PATH_PACKED = 0
    PATH_SMALL = 1
    PATH_SMALL_BATCH = 2
    PATH_STACK = 3
    PATH_LOWP = 4
    # not a team of its own: a one-thread packed product that fetched the
    # next product of its stack while it ran (_packed.pyx, Ahead)
    PATH_AHEAD = 5

cdef int threads_for(double flops) noexcept nogil
cdef void note_region(int path, int team) noexcept nogil
