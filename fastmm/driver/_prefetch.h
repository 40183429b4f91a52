/*
 * Software prefetch, into L2, of operands a driver reads next, asked for
 * while the kernels compute on what is already there: the hardware
 * prefetchers follow long contiguous runs, not a jump to the next product
 * of a stack (driver/_unpacked.h), nor short runs a page or more apart, as
 * the packed driver's B chunks read them (driver/_pack.pxd).  (Tried for
 * the packed driver's next B chunk as a whole, with m <= MC: slower on one
 * Zen 4 thread, so not used there.)
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

#endif
