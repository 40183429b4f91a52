/*
 * Scratch memory for the GEMM driver's packed panels, kept per calling thread
 * between calls.  A fresh aligned_alloc of a few hundred KiB is served by
 * mmap, so every call would fault in (and the kernel zero) each 4 KiB page
 * again: about 100 faults per 256^3 float32 product, a quarter of its time.
 * A thread keeps its largest buffer up to FMM_SCRATCH_KEEP bytes (freed when
 * the thread exits, or by fmm_scratch_trim); bigger requests, and any request
 * made while the thread's record cannot be set up, are allocated and freed
 * per call.
 *
 * Kept buffers are listed (under a mutex) so that fmm_scratch_trim can free
 * those of every thread that is not using its own at that moment: OpenMP
 * pool threads that ran a stack of products keep ~MiBs each otherwise.
 *
 * Included by _packed.pyx only: the list and counters exist once.
 */
#ifndef FASTMM_SCRATCH_H
#define FASTMM_SCRATCH_H

#include <stdlib.h>

#define FMM_SCRATCH_KEEP ((size_t)64 << 20)

static void *fmm_aligned_alloc64(size_t size)
{
    /* C11 wants the size to be a multiple of the alignment */
    size = (size + 63) & ~(size_t)63;
    return aligned_alloc(64, size ? size : 64);
}

/* Buffers handed out and not yet given back or kept: 0 between products (a
 * test reads it to catch a leak on a fallback path). */
static long fmm_scratch_outstanding = 0;
/* Test hook: when set, the calling thread's record "cannot be set up", as
 * when calloc or pthread_setspecific fails. */
static __thread int fmm_scratch_fail_record = 0;

static void *fmm_scratch_fresh(size_t size)
{
    void *p = fmm_aligned_alloc64(size);
    if (p != NULL)
        __atomic_add_fetch(&fmm_scratch_outstanding, 1, __ATOMIC_RELAXED);
    return p;
}

static void fmm_scratch_free_fresh(void *p)
{
    free(p);
    __atomic_sub_fetch(&fmm_scratch_outstanding, 1, __ATOMIC_RELAXED);
}

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>

typedef struct fmm_scratch {
    void *ptr;
    size_t size;
    int in_use;
    struct fmm_scratch *prev, *next;
} fmm_scratch_t;

static pthread_key_t fmm_scratch_key;
static pthread_once_t fmm_scratch_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t fmm_scratch_lock = PTHREAD_MUTEX_INITIALIZER;
static fmm_scratch_t *fmm_scratch_list = NULL;
static int fmm_scratch_ok = 0;

static void fmm_scratch_destroy(void *p)
{
    fmm_scratch_t *s = (fmm_scratch_t *)p;
    pthread_mutex_lock(&fmm_scratch_lock);
    if (s->prev)
        s->prev->next = s->next;
    else
        fmm_scratch_list = s->next;
    if (s->next)
        s->next->prev = s->prev;
    pthread_mutex_unlock(&fmm_scratch_lock);
    free(s->ptr);
    free(s);
}

static void fmm_scratch_init(void)
{
    fmm_scratch_ok = pthread_key_create(&fmm_scratch_key,
                                        fmm_scratch_destroy) == 0;
}

static fmm_scratch_t *fmm_scratch_record(void)
{
    fmm_scratch_t *s;
    pthread_once(&fmm_scratch_once, fmm_scratch_init);
    if (!fmm_scratch_ok)
        return NULL;
    s = (fmm_scratch_t *)pthread_getspecific(fmm_scratch_key);
    if (s != NULL || fmm_scratch_fail_record)
        return s;
    s = (fmm_scratch_t *)calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    if (pthread_setspecific(fmm_scratch_key, s) != 0) {
        free(s);
        return NULL;
    }
    pthread_mutex_lock(&fmm_scratch_lock);
    s->next = fmm_scratch_list;
    if (s->next)
        s->next->prev = s;
    fmm_scratch_list = s;
    pthread_mutex_unlock(&fmm_scratch_lock);
    return s;
}

/* 64-byte aligned memory of at least `size` bytes, or NULL; pass it back to
 * fmm_scratch_release when done. */
static void *fmm_scratch_get(size_t size)
{
    fmm_scratch_t *s = size > FMM_SCRATCH_KEEP ? NULL : fmm_scratch_record();
    void *old;
    if (s == NULL)
        return fmm_scratch_fresh(size);
    pthread_mutex_lock(&fmm_scratch_lock);
    s->in_use = 1;
    old = s->size < size ? s->ptr : NULL;
    if (old != NULL || s->ptr == NULL) {
        s->ptr = NULL;
        s->size = 0;
    }
    pthread_mutex_unlock(&fmm_scratch_lock);
    if (s->ptr == NULL) {
        free(old);
        s->ptr = fmm_aligned_alloc64(size);
        s->size = s->ptr ? size : 0;
    }
    if (s->ptr == NULL) {
        __atomic_store_n(&s->in_use, 0, __ATOMIC_RELEASE);
        return NULL;
    }
    return s->ptr;
}

static void fmm_scratch_release(void *ptr, size_t size)
{
    fmm_scratch_t *s = NULL;
    (void)size;
    if (fmm_scratch_ok)
        s = (fmm_scratch_t *)pthread_getspecific(fmm_scratch_key);
    if (s != NULL && s->in_use && s->ptr == ptr) {
        pthread_mutex_lock(&fmm_scratch_lock);
        s->in_use = 0;
        pthread_mutex_unlock(&fmm_scratch_lock);
        return;
    }
    fmm_scratch_free_fresh(ptr);
}

/* Frees every thread's kept buffer that is not in use; returns the bytes. */
static size_t fmm_scratch_trim(void)
{
    size_t freed = 0;
    fmm_scratch_t *s;
    pthread_mutex_lock(&fmm_scratch_lock);
    for (s = fmm_scratch_list; s != NULL; s = s->next)
        if (!s->in_use && s->ptr != NULL) {
            free(s->ptr);
            freed += s->size;
            s->ptr = NULL;
            s->size = 0;
        }
    pthread_mutex_unlock(&fmm_scratch_lock);
    return freed;
}

/* Bytes kept by all threads. */
static size_t fmm_scratch_kept(void)
{
    size_t kept = 0;
    fmm_scratch_t *s;
    pthread_mutex_lock(&fmm_scratch_lock);
    for (s = fmm_scratch_list; s != NULL; s = s->next)
        kept += s->size;
    pthread_mutex_unlock(&fmm_scratch_lock);
    return kept;
}

#else /* no POSIX threads: allocate per call */
static void *fmm_scratch_get(size_t size) { return fmm_scratch_fresh(size); }
static void fmm_scratch_release(void *ptr, size_t size)
{
    (void)size;
    fmm_scratch_free_fresh(ptr);
}
static size_t fmm_scratch_trim(void) { return 0; }
static size_t fmm_scratch_kept(void) { return 0; }
#endif

#endif
