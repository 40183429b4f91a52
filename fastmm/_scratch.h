/*
 * Scratch memory for the GEMM driver's packed panels, kept per calling thread
 * between calls.  A fresh aligned_alloc of a few hundred KiB is served by
 * mmap, so every call would fault in (and the kernel zero) each 4 KiB page
 * again: about 100 faults per 256^3 float32 product, a quarter of its time.
 * A thread keeps its largest buffer up to FMM_SCRATCH_KEEP bytes (freed when
 * the thread exits); bigger requests are allocated and freed per call.
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

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>

typedef struct {
    void *ptr;
    size_t size;
} fmm_scratch_t;

static pthread_key_t fmm_scratch_key;
static pthread_once_t fmm_scratch_once = PTHREAD_ONCE_INIT;
static int fmm_scratch_ok = 0;

static void fmm_scratch_destroy(void *p)
{
    fmm_scratch_t *s = (fmm_scratch_t *)p;
    free(s->ptr);
    free(s);
}

static void fmm_scratch_init(void)
{
    fmm_scratch_ok = pthread_key_create(&fmm_scratch_key,
                                        fmm_scratch_destroy) == 0;
}

/* 64-byte aligned memory of at least `size` bytes, or NULL; pass it back to
 * fmm_scratch_release when done. */
static void *fmm_scratch_get(size_t size)
{
    fmm_scratch_t *s;
    pthread_once(&fmm_scratch_once, fmm_scratch_init);
    if (!fmm_scratch_ok || size > FMM_SCRATCH_KEEP)
        return fmm_aligned_alloc64(size);
    s = (fmm_scratch_t *)pthread_getspecific(fmm_scratch_key);
    if (s == NULL) {
        s = (fmm_scratch_t *)calloc(1, sizeof(*s));
        if (s == NULL || pthread_setspecific(fmm_scratch_key, s) != 0) {
            free(s);
            return fmm_aligned_alloc64(size);
        }
    }
    if (s->size < size) {
        free(s->ptr);
        s->ptr = fmm_aligned_alloc64(size);
        s->size = s->ptr ? size : 0;
    }
    return s->ptr;
}

static void fmm_scratch_release(void *ptr, size_t size)
{
    if (!fmm_scratch_ok || size > FMM_SCRATCH_KEEP)
        free(ptr);
}

#else /* no POSIX threads: allocate per call */
static void *fmm_scratch_get(size_t size) { return fmm_aligned_alloc64(size); }
static void fmm_scratch_release(void *ptr, size_t size) { (void)size; free(ptr); }
#endif

#endif
