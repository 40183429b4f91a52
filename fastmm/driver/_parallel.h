/* Stateless shims for code that runs inside a parallel region or beside
 * other threads (driver/_packed.pyx, driver/_unpacked.h).  Orphaned
 * barriers bind to the innermost enclosing region: call them only from a
 * team the caller started, never from a serial call inside someone else's
 * region (that team's other threads would never arrive). */
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

/* A configuration is published with one pointer store and read with one
 * load, so a product sees either the old one or the new one, whole. */
static inline const void *fmm_load_config(const void *const *slot)
{
    return __atomic_load_n(slot, __ATOMIC_ACQUIRE);
}
static inline void fmm_publish_config(const void **slot, const void *cfg)
{
    __atomic_store_n(slot, cfg, __ATOMIC_RELEASE);
}
#endif
