/* Stateless OpenMP shims for code that runs inside a parallel region
 * (fastmm/_gemm.pyx).  Orphaned barriers bind to the enclosing region. */
#ifndef FASTMM_PARALLEL_H
#define FASTMM_PARALLEL_H
#ifdef _OPENMP
#include <omp.h>
static inline int fmm_thread_num(void) { return omp_get_thread_num(); }
static inline int fmm_team_size(void) { return omp_get_num_threads(); }
static inline void fmm_barrier(void) {
#pragma omp barrier
}
#else
static inline int fmm_thread_num(void) { return 0; }
static inline int fmm_team_size(void) { return 1; }
static inline void fmm_barrier(void) {}
#endif
#endif
