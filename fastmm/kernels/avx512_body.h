/*
 * The AVX-512 micro-kernel, written once for both element types and for the
 * edge-row variants: avx512.h includes this file once per kernel, with
 *
 *   FMM_UKR  the kernel's name      FMM_T  the element type (float, double)
 *   FMM_V    its vector type        FMM_MR, FMM_NV  the register block
 *
 * defined, and for an edge-row kernel also
 *
 *   FMM_MRA  the packed A panel's row count (the full kernel's MR), when
 *            the kernel computes only its first FMM_MR rows
 *   FMM_ROWS defined: the kernel takes `int rows` (<= FMM_MR) and reads and
 *            writes only that many rows of C
 *
 * and for a streaming kernel
 *
 *   FMM_AHEAD the k steps ahead at which it prefetches both packed panels
 *
 * They are undefined at the end, ready for the next kernel.  The shape and
 * the prefetches are explained in avx512.h.
 */
#ifndef FMM_MRA
#define FMM_MRA FMM_MR
#endif
#ifdef FMM_ROWS
#define FMM_ROWS_PARAM , int rows
#define FMM_LIVE_ROWS rows
#else
#define FMM_ROWS_PARAM
#define FMM_LIVE_ROWS MR
#endif
FMM_TARGET_AVX512 static void
FMM_UKR(ptrdiff_t k, FMM_T alpha, const FMM_T *a, const FMM_T *b, FMM_T beta,
        FMM_T *c, ptrdiff_t ldc FMM_ROWS_PARAM)
{
    enum { MR = FMM_MR, NV = FMM_NV, W = sizeof(FMM_V) / sizeof(FMM_T) };
    FMM_V acc[MR][NV];
    /* C is touched only after the k loop: start fetching its rows now (both
     * ends: a row spans two lines), and again FMM_AVX512_C_AHEAD steps before
     * the end, as the streamed panels evict these lines from L1 well before
     * then.  Row pointers are walked, not indexed, here and below: a dozen
     * live row addresses make GCC spill accumulators. */
    for (const FMM_T *ci = c; ci < c + FMM_LIVE_ROWS * ldc; ci += ldc) {
        _mm_prefetch((const char *)ci, _MM_HINT_T0);
        _mm_prefetch((const char *)(ci + W * NV - 1), _MM_HINT_T0);
    }
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
        for (int j = 0; j < NV; j++)
            acc[i][j] = fmm512_set1((FMM_T)0);
    ptrdiff_t p = 0;
    ptrdiff_t stop = k > FMM_AVX512_C_AHEAD ? k - FMM_AVX512_C_AHEAD : 0;
    for (int pass = 0; pass < 2; pass++, stop = k) {
        for (; p < stop; p++) {
            FMM_V bv[NV];
#ifdef FMM_AHEAD
            /* every line of both panels FMM_AHEAD steps on: B's NV lines,
             * and A's step (MRA elements, 48 or 96 bytes) a line at a time */
#pragma GCC unroll 4
            for (int j = 0; j < NV; j++)
                _mm_prefetch((const char *)(b + W * (NV * FMM_AHEAD + j)),
                             _MM_HINT_T0);
#pragma GCC unroll 2
            for (int off = 0; off < FMM_MRA * (int)sizeof(FMM_T); off += 64)
                _mm_prefetch((const char *)(a + FMM_MRA * FMM_AHEAD) + off,
                             _MM_HINT_T0);
#endif
#pragma GCC unroll 4
            for (int j = 0; j < NV; j++)
                bv[j] = fmm512_load(b + W * j);
#pragma GCC unroll 16
            for (int i = 0; i < MR; i++) {
                FMM_V ai = fmm512_set1(a[i]);
#pragma GCC unroll 4
                for (int j = 0; j < NV; j++)
                    acc[i][j] = fmm512_fmadd(ai, bv[j], acc[i][j]);
            }
            a += FMM_MRA;
            b += W * NV;
        }
        if (pass == 0)
            for (const FMM_T *ci = c; ci < c + FMM_LIVE_ROWS * ldc;
                 ci += ldc) {
                _mm_prefetch((const char *)ci, _MM_HINT_T0);
                _mm_prefetch((const char *)(ci + W * NV - 1), _MM_HINT_T0);
            }
    }
    FMM_V va = fmm512_set1(alpha), vb = fmm512_set1(beta);
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++, c += ldc) {
#ifdef FMM_ROWS
        if (i >= rows)
            break;
#endif
#pragma GCC unroll 4
        for (int j = 0; j < NV; j++) {
            FMM_T *cij = c + W * j;
            FMM_V r = fmm512_mul(va, acc[i][j]);
            if (beta != 0) /* beta == 0: C is not read (NaN must not leak) */
                r = fmm512_fmadd(vb, fmm512_loadu(cij), r);
            fmm512_storeu(cij, r);
        }
    }
}

#undef FMM_UKR
#undef FMM_T
#undef FMM_V
#undef FMM_MR
#undef FMM_NV
#undef FMM_MRA
#undef FMM_ROWS
#undef FMM_ROWS_PARAM
#undef FMM_LIVE_ROWS
#undef FMM_AHEAD
