/*
 * fastmm's thread state and OpenMP shims.  Included by _threads.pyx only:
 * the state below exists once per process (other modules reach it through
 * _threads.pxd).
 *
 *   fmm_nthreads        the process-wide count (set_num_threads outside any
 *                       threads() block, FASTMM_NUM_THREADS, threadpoolctl)
 *   fmm_tls_nthreads    the calling thread's threads() override, 0 if none:
 *                       a scoped setting must not leak into other threads
 *   fmm_tls_min_flops   test hook: the calling thread's flops-per-thread
 *                       threshold, < 0 for the built-in one
 *   fmm_tls_seen        the largest team each path ran with on this thread
 *                       since the last reset (tests assert the path taken)
 *
 * Without OpenMP (a compiler lacking it) everything degrades to one thread.
 */
#ifndef FASTMM_THREADS_H
#define FASTMM_THREADS_H

#include <pthread.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__linux__)
#include <dirent.h>
#endif

#if defined(__GNUC__)
#define FMM_EXPORT __attribute__((visibility("default")))
#else
#define FMM_EXPORT
#endif

#define FMM_PATHS 8

static int fmm_nthreads = 1;
/* set_num_threads and the environment are capped here (at import, from the
 * CPU count): libgomp ends the process when it cannot create a thread. */
static int fmm_max_threads = 1;
static __thread int fmm_tls_nthreads = 0;
static __thread double fmm_tls_min_flops = -1.0;
static __thread int fmm_tls_seen[FMM_PATHS];
/* Number of open test-hook blocks (record, parallel_threshold), any thread:
 * while 0, products touch no per-thread hook state (thread-local reads in a
 * shared library cost a call each, a tenth of a 4x4 product). */
static volatile int fmm_hooks_open = 0;
/* Number of open threads() blocks, any thread: the same saving. */
static volatile int fmm_scopes_open = 0;

/* OS threads of the parent at its last fork(), -1 if unknown. */
static volatile int fmm_threads_at_fork = 0;
/* In a child forked from a multi-threaded parent.  GNU OpenMP's pool does not
 * survive fork(): entering a region with more than one thread would wait for
 * workers that no longer exist, whichever library created the pool.  A parent
 * with one OS thread has no pool, so its children keep their threads. */
static volatile int fmm_forked_child = 0;

static int fmm_count_os_threads(void)
{
#if defined(__linux__)
    int n = 0;
    struct dirent *e;
    DIR *d = opendir("/proc/self/task");
    if (d == NULL)
        return -1;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
#else
    return -1;
#endif
}

static void fmm_atfork_prepare(void)
{
    fmm_threads_at_fork = fmm_count_os_threads();
}

static void fmm_atfork_child(void)
{
    if (fmm_threads_at_fork != 1)
        fmm_forked_child = 1;
}

static int fmm_register_atfork(void)
{
    return pthread_atfork(fmm_atfork_prepare, NULL, fmm_atfork_child);
}

static int fmm_have_openmp(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

static int fmm_clamp_threads(int n)
{
    if (n < 1)
        return 1;
    return n > fmm_max_threads ? fmm_max_threads : n;
}

/* The count in force on the calling thread, before the per-product choice. */
static int fmm_effective_threads(void)
{
    if (fmm_forked_child)
        return 1;
    if (fmm_scopes_open && fmm_tls_nthreads > 0)
        return fmm_tls_nthreads;
    return fmm_nthreads;
}

/* The controller threadpoolctl finds (see driver/_threads.pyx) calls these
 * through ctypes, so they must be visible in the extension module.  Both act
 * on the innermost scope of the calling thread: its threads() block if one is
 * open, else the process-wide count. */
FMM_EXPORT int fastmm_get_num_threads(void) { return fmm_effective_threads(); }
FMM_EXPORT void fastmm_set_num_threads(int n)
{
    n = fmm_clamp_threads(n);
    if (fmm_scopes_open && fmm_tls_nthreads > 0)
        fmm_tls_nthreads = n;
    else
        fmm_nthreads = n;
}

static void fmm_note_region(int path, int team)
{
    if (fmm_hooks_open && path >= 0 && path < FMM_PATHS &&
        team > fmm_tls_seen[path])
        fmm_tls_seen[path] = team;
}

static double fmm_min_flops_hook(double builtin)
{
    return fmm_hooks_open && fmm_tls_min_flops >= 0 ? fmm_tls_min_flops
                                                    : builtin;
}

static void fmm_hooks_enter(int delta)
{
    __atomic_add_fetch(&fmm_hooks_open, delta, __ATOMIC_SEQ_CST);
}

static void fmm_scopes_enter(int delta)
{
    __atomic_add_fetch(&fmm_scopes_open, delta, __ATOMIC_SEQ_CST);
}

#endif
