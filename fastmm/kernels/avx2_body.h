/*
 * The AVX2 micro-kernel, written once for both element types and for the
 * edge-row variants: avx2.h includes this file once per kernel, with FMM_UKR
 * (the kernel's name), FMM_T (the element type), FMM_V (its vector type),
 * FMM_MR and FMM_NV (the register block) defined, and for an edge-row kernel
 * FMM_MRA and FMM_ROWS as in avx512_body.h; they are undefined at the end.
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
FMM_TARGET_AVX2 static void
FMM_UKR(ptrdiff_t k, FMM_T alpha, const FMM_T *a, const FMM_T *b, FMM_T beta,
        FMM_T *c, ptrdiff_t ldc FMM_ROWS_PARAM)
{
    enum { MR = FMM_MR, NV = FMM_NV, W = sizeof(FMM_V) / sizeof(FMM_T) };
    FMM_V acc[MR][NV];
    /* C is touched only after the k loop: start fetching its rows now (both
     * ends: a row may straddle two lines).  Row pointers are walked, not
     * indexed, here and below: live row addresses make GCC spill. */
    for (const FMM_T *ci = c; ci < c + FMM_LIVE_ROWS * ldc; ci += ldc) {
        _mm_prefetch((const char *)ci, _MM_HINT_T0);
        _mm_prefetch((const char *)(ci + W * NV - 1), _MM_HINT_T0);
    }
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
        for (int j = 0; j < NV; j++)
            acc[i][j] = fmm256_set1((FMM_T)0);
    for (ptrdiff_t p = 0; p < k; p++) {
        FMM_V bv[NV];
#pragma GCC unroll 4
        for (int j = 0; j < NV; j++)
            bv[j] = fmm256_load(b + W * j);
#pragma GCC unroll 16
        for (int i = 0; i < MR; i++) {
            FMM_V ai = fmm256_broadcast(a + i);
#pragma GCC unroll 4
            for (int j = 0; j < NV; j++)
                acc[i][j] = fmm256_fmadd(ai, bv[j], acc[i][j]);
        }
        a += FMM_MRA;
        b += W * NV;
    }
    FMM_V va = fmm256_set1(alpha), vb = fmm256_set1(beta);
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++, c += ldc) {
#ifdef FMM_ROWS
        if (i >= rows)
            break;
#endif
#pragma GCC unroll 4
        for (int j = 0; j < NV; j++) {
            FMM_T *cij = c + W * j;
            FMM_V r = fmm256_mul(va, acc[i][j]);
            if (beta != 0) /* beta == 0: C is not read (NaN must not leak) */
                r = fmm256_fmadd(vb, fmm256_loadu(cij), r);
            fmm256_storeu(cij, r);
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
