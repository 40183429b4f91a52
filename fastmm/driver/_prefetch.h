/*
 * Software prefetch, into L2, of operands a driver reads next, asked for
 * while the kernels compute on what is already there: the hardware
 * prefetchers follow long contiguous runs, not a jump to the next product
 * of a stack (driver/_unpacked.h), nor short runs a page or more apart, as
 * the packed driver's B chunks read them (driver/_pack.pxd), nor the next
 * product of a stack (fmm_fetch_t below).  Not used for the packed
 * driver's next B chunk: asked for as a whole (m <= MC) it was slower on
 * one Zen 4 thread; spread over the micro-kernel's k loop (a line every few
 * k steps, Zen 3, m = 12..64 rows, k = 4096, n = 1024..4096) +2-5% on one
 * thread, and on two level or 16% slower (32 x 4096 @ 4096 x 1024).
 */
#ifndef FASTMM_PREFETCH_H
#define FASTMM_PREFETCH_H

#include <stddef.h>

/* Part `part` of `parts` (by runs) of a rows x cols matrix with element
 * strides rs, cs and `size`-byte elements: its runs are its rows when
 * cs == 1, its columns when rs == 1; with neither axis contiguous, nothing
 * is asked for. */
static inline void fmm_prefetch_part(const void *p, ptrdiff_t rows,
                                     ptrdiff_t cols, ptrdiff_t rs,
                                     ptrdiff_t cs, size_t size,
                                     ptrdiff_t part, ptrdiff_t parts)
{
    if (cs != 1) {
        if (rs != 1)
            return;
        ptrdiff_t t = rows;
        rows = cols;
        cols = t;
        rs = cs;
    }
    ptrdiff_t r0 = rows * part / parts, r1 = rows * (part + 1) / parts;
    ptrdiff_t len = cols * (ptrdiff_t)size, step = rs * (ptrdiff_t)size;
    const char *q = (const char *)p + r0 * step;
    for (ptrdiff_t r = r0; r < r1; r++, q += step)
        for (ptrdiff_t o = 0; o < len; o += 64)
            __builtin_prefetch(q + o, 0, 2);
}

/* The lines of one contiguous run of `bytes` bytes at p, into L1. */
static inline void fmm_prefetch_run(const void *p, ptrdiff_t bytes)
{
    const char *q = (const char *)p;
    for (ptrdiff_t o = 0; o < bytes; o += 64)
        __builtin_prefetch(q + o, 0, 3);
    if (bytes > 0)
        __builtin_prefetch(q + bytes - 1, 0, 3);
}

/* The operands of the product a stack runs next (strides in elements), and
 * the fetch of them that a one-thread packed product makes while it runs
 * (driver/_packed.pyx): A (m x k) and B (k x n) in `parts` parts by rows,
 * one before each micro-kernel call.  Asked for all at once, they would
 * wait for the few lines a core can have in flight. */
typedef struct {
    const void *a, *b;
    ptrdiff_t rs_a, cs_a, rs_b, cs_b;
} fmm_ahead_t;

typedef struct {
    const fmm_ahead_t *ahead;
    ptrdiff_t m, n, k, part, parts;
    size_t size;
} fmm_fetch_t;

static inline void fmm_fetch_part(fmm_fetch_t *f)
{
    if (f->part >= f->parts)
        return;
    const fmm_ahead_t *x = f->ahead;
    fmm_prefetch_part(x->a, f->m, f->k, x->rs_a, x->cs_a, f->size, f->part,
                      f->parts);
    fmm_prefetch_part(x->b, f->k, f->n, x->rs_b, x->cs_b, f->size, f->part,
                      f->parts);
    f->part++;
}

#endif
