/*
 * fastmm's thread state and OpenMP shims.  Included by _threads.pyx only:
 * the state below exists once per process.
 *
 * Without OpenMP (a compiler lacking it) everything degrades to one thread.
 */
#ifndef FASTMM_THREADS_H
#define FASTMM_THREADS_H

#include <pthread.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__GNUC__)
#define FMM_EXPORT __attribute__((visibility("default")))
#else
#define FMM_EXPORT
#endif

static int fmm_nthreads = 1;
/* Set once this process has run a parallel region with more than one thread;
 * libgomp's pool then does not survive fork(). */
static volatile int fmm_team_started = 0;
/* In a child forked after that: entering a multi-threaded region would hang
 * (GNU OpenMP), so every product runs on one thread. */
static volatile int fmm_forked_child = 0;

static void fmm_atfork_child(void)
{
    if (fmm_team_started)
        fmm_forked_child = 1;
}

static int fmm_register_atfork(void)
{
    return pthread_atfork(NULL, NULL, fmm_atfork_child);
}

static int fmm_have_openmp(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

/* The controller threadpoolctl finds (see fastmm/_threads.pyx) calls these
 * through ctypes, so they must be visible in the extension module. */
FMM_EXPORT int fastmm_get_num_threads(void) { return fmm_nthreads; }
FMM_EXPORT void fastmm_set_num_threads(int n) { fmm_nthreads = n < 1 ? 1 : n; }

#endif
