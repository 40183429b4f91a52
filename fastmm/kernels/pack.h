/*
 * Two cases of packing (fastmm/driver/_pack.pxd), in C for the x86-64
 * baseline (SSE2), so no run-time dispatch is needed.
 *
 * The transposing case: `count` source
 * rows, each contiguous along k, interleaved into a k-major micro-panel of
 * `width`:
 *
 *     dst[p * width + i] = src[i * ld + p],   i < count <= width, p < kc.
 *
 * This is pack_a for a row-major A (width MR) and pack_b for a column-major B
 * (width NR).  Element by element it costs one strided store per element;
 * here 4 x 4 (float) or 2 x 2 (double) tiles are transposed in SSE2
 * registers.  Columns count..width-1 are left to the caller (zero padding).
 *
 * The copying case, fmm_pack_panels_*: B with contiguous rows into panels
 * of `width` columns (below).
 */
#ifndef FASTMM_PACK_H
#define FASTMM_PACK_H

#include <stddef.h>
#include <string.h>
#include "../driver/_prefetch.h"
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

static void fmm_pack_rows_s(ptrdiff_t kc, int count, const float *src,
                            ptrdiff_t ld, float *dst, int width)
{
    int i = 0;
    ptrdiff_t p;
#if defined(__SSE2__)
    for (; i + 4 <= count; i += 4) {
        const float *s0 = src + i * ld, *s1 = s0 + ld, *s2 = s1 + ld,
                    *s3 = s2 + ld;
        float *d = dst + i;
        for (p = 0; p + 4 <= kc; p += 4) {
            __m128 r0 = _mm_loadu_ps(s0 + p), r1 = _mm_loadu_ps(s1 + p);
            __m128 r2 = _mm_loadu_ps(s2 + p), r3 = _mm_loadu_ps(s3 + p);
            _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
            _mm_storeu_ps(d + (p + 0) * width, r0);
            _mm_storeu_ps(d + (p + 1) * width, r1);
            _mm_storeu_ps(d + (p + 2) * width, r2);
            _mm_storeu_ps(d + (p + 3) * width, r3);
        }
        for (; p < kc; p++) {
            d[p * width + 0] = s0[p];
            d[p * width + 1] = s1[p];
            d[p * width + 2] = s2[p];
            d[p * width + 3] = s3[p];
        }
    }
#endif
    for (; i < count; i++)
        for (p = 0; p < kc; p++)
            dst[p * width + i] = src[i * ld + p];
}

static void fmm_pack_rows_d(ptrdiff_t kc, int count, const double *src,
                            ptrdiff_t ld, double *dst, int width)
{
    int i = 0;
    ptrdiff_t p;
#if defined(__SSE2__)
    for (; i + 2 <= count; i += 2) {
        const double *s0 = src + i * ld, *s1 = s0 + ld;
        double *d = dst + i;
        for (p = 0; p + 2 <= kc; p += 2) {
            __m128d r0 = _mm_loadu_pd(s0 + p), r1 = _mm_loadu_pd(s1 + p);
            _mm_storeu_pd(d + (p + 0) * width, _mm_unpacklo_pd(r0, r1));
            _mm_storeu_pd(d + (p + 1) * width, _mm_unpackhi_pd(r0, r1));
        }
        for (; p < kc; p++) {
            d[p * width + 0] = s0[p];
            d[p * width + 1] = s1[p];
        }
    }
#endif
    for (; i < count; i++)
        for (p = 0; p < kc; p++)
            dst[p * width + i] = src[i * ld + p];
}

/*
 * kc rows of B, each contiguous (row stride ld), nc columns, into
 * ceil(nc / width) k-major panels of `width` columns, zero-padded:
 *
 *     dst[q * width * kc + p * width + j] = src[p * ld + q * width + j].
 *
 * Four rows at a time across all the panels, so that each row is read as
 * one run, which the hardware prefetchers follow (panel by panel, runs of
 * `width` elements a page apart are read at memory latency), and four runs
 * are in flight at once: one row at a time, 12 to 32 rows of A against a
 * 1024-column float32 B took 3-6% longer (Zen 3, one thread).  ahead > 0:
 * while copying a piece of row p, ask for the same piece of row p + ahead,
 * for rows the prefetchers miss.  This is also pack_a for a column-major A
 * (width MR).
 * A panel row is one fixed-size copy (MR or NR elements of any kernel
 * family): the element loop with a run-time bound that it replaces ran at
 * 0.3-0.9 ns per element on Zen 3, this at 0.15-0.25, and on products with
 * m <= 64 packing B was a third of the time.
 */
#define FMM_PACK_PANEL_ROWS(BYTES, R)                                          \
    case BYTES:                                                                \
        for (; q < full; q++, s += width, d += step)                           \
            for (int r = 0; r < (R); r++) {                                    \
                if (pf)                                                        \
                    fmm_prefetch_run(s + r * ld + pf, BYTES);                  \
                memcpy(d + r * width, s + r * ld, BYTES);                      \
            }                                                                  \
        break;

/* Rows p .. p + R - 1 (R a constant): the full panels, then the tail; each
 * panel row copied asks for the same columns `ahead` rows down (pf: that
 * offset, or 0), spread along the rows: whole rows asked for at once wait
 * for the few lines the core can have in flight. */
#define FMM_PACK_PANELS_ROWS(T, R)                                             \
    {                                                                          \
        const T *s = src + p * ld;                                             \
        T *d = dst + p * width;                                                \
        const ptrdiff_t pf = ahead > 0 && p + ahead + (R) <= kc ? ahead * ld  \
                                                                : 0;           \
        ptrdiff_t q = 0;                                                       \
        switch (bytes) {                                                       \
        FMM_PACK_PANEL_ROWS(16, R) FMM_PACK_PANEL_ROWS(24, R)                  \
        FMM_PACK_PANEL_ROWS(32, R) FMM_PACK_PANEL_ROWS(48, R)                  \
        FMM_PACK_PANEL_ROWS(64, R) FMM_PACK_PANEL_ROWS(96, R)                  \
        FMM_PACK_PANEL_ROWS(128, R)                                            \
        default:                                                               \
            for (; q < full; q++, s += width, d += step)                       \
                for (int r = 0; r < (R); r++) {                                \
                    if (pf)                                                    \
                        fmm_prefetch_run(s + r * ld + pf, (ptrdiff_t)bytes);   \
                    memcpy(d + r * width, s + r * ld, bytes);                  \
                }                                                              \
        }                                                                      \
        if (tail)                                                              \
            for (int r = 0; r < (R); r++) {                                    \
                memcpy(d + r * width, s + r * ld, (size_t)tail * sizeof(T));   \
                memset(d + r * width + tail, 0,                                \
                       (size_t)(width - tail) * sizeof(T));                    \
            }                                                                  \
    }

#define FMM_DEFINE_PACK_PANELS(NAME, T)                                        \
    static void NAME(ptrdiff_t kc, ptrdiff_t nc, const T *src, ptrdiff_t ld,  \
                     T *dst, int width, ptrdiff_t ahead)                      \
    {                                                                          \
        const ptrdiff_t full = nc / width, tail = nc - full * width;           \
        const ptrdiff_t step = (ptrdiff_t)width * kc;                          \
        const size_t bytes = (size_t)width * sizeof(T);                        \
        ptrdiff_t p = 0;                                                       \
        for (; p + 4 <= kc; p += 4)                                            \
            FMM_PACK_PANELS_ROWS(T, 4)                                         \
        for (; p < kc; p++)                                                    \
            FMM_PACK_PANELS_ROWS(T, 1)                                         \
    }

FMM_DEFINE_PACK_PANELS(fmm_pack_panels_s, float)
FMM_DEFINE_PACK_PANELS(fmm_pack_panels_d, double)

#endif
