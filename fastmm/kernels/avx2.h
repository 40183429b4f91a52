/*
 * AVX2 + FMA micro-kernels, obeying kernels/ukernel.h: the fast path for x86-64
 * CPUs without AVX-512.  Same structure as avx512.h (read its notes).
 *
 * Shape: 6 x 16 float32, 6 x 8 float64 (BLIS's Haswell/Zen choice).
 * 12 accumulators + 2 B vectors + 1 broadcast use 15 of the 16 ymm
 * registers, 12 independent FMA chains cover two FMA pipes, and a k step
 * needs 8 loads per 12 FMAs.
 */
#ifndef FASTMM_AVX2_H
#define FASTMM_AVX2_H

#include <immintrin.h>
#include "ukernel.h"

#define FMM_TARGET_AVX2 __attribute__((target("avx2,fma")))

#define FMM_AVX2_S_MR 6
#define FMM_AVX2_S_NV 2
#define FMM_AVX2_D_MR 6
#define FMM_AVX2_D_NV 2

FMM_TARGET_AVX2 static void
fmm_sgemm_avx2_6x16(ptrdiff_t k, float alpha, const float *a, const float *b,
                    float beta, float *c, ptrdiff_t ldc)
{
    enum { MR = FMM_AVX2_S_MR, NV = FMM_AVX2_S_NV, W = 8 };
    __m256 acc[MR][NV];
    /* C is touched only after the k loop: start fetching its rows now (both
     * ends: a row may straddle two lines).  Row pointers are walked, not
     * indexed, here and below: live row addresses make GCC spill. */
    for (const float *ci = c; ci < c + MR * ldc; ci += ldc) {
        _mm_prefetch((const char *)ci, _MM_HINT_T0);
        _mm_prefetch((const char *)(ci + W * NV - 1), _MM_HINT_T0);
    }
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
        for (int j = 0; j < NV; j++)
            acc[i][j] = _mm256_setzero_ps();
    for (ptrdiff_t p = 0; p < k; p++) {
        __m256 bv[NV];
#pragma GCC unroll 4
        for (int j = 0; j < NV; j++)
            bv[j] = _mm256_load_ps(b + W * j);
#pragma GCC unroll 16
        for (int i = 0; i < MR; i++) {
            __m256 ai = _mm256_broadcast_ss(a + i);
#pragma GCC unroll 4
            for (int j = 0; j < NV; j++)
                acc[i][j] = _mm256_fmadd_ps(ai, bv[j], acc[i][j]);
        }
        a += MR;
        b += W * NV;
    }
    __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++, c += ldc)
#pragma GCC unroll 4
        for (int j = 0; j < NV; j++) {
            float *cij = c + W * j;
            __m256 r = _mm256_mul_ps(va, acc[i][j]);
            if (beta != 0) /* beta == 0: C is not read (NaN must not leak) */
                r = _mm256_fmadd_ps(vb, _mm256_loadu_ps(cij), r);
            _mm256_storeu_ps(cij, r);
        }
}

FMM_TARGET_AVX2 static void
fmm_dgemm_avx2_6x8(ptrdiff_t k, double alpha, const double *a,
                   const double *b, double beta, double *c, ptrdiff_t ldc)
{
    enum { MR = FMM_AVX2_D_MR, NV = FMM_AVX2_D_NV, W = 4 };
    __m256d acc[MR][NV];
    for (const double *ci = c; ci < c + MR * ldc; ci += ldc) {
        _mm_prefetch((const char *)ci, _MM_HINT_T0);
        _mm_prefetch((const char *)(ci + W * NV - 1), _MM_HINT_T0);
    }
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
        for (int j = 0; j < NV; j++)
            acc[i][j] = _mm256_setzero_pd();
    for (ptrdiff_t p = 0; p < k; p++) {
        __m256d bv[NV];
#pragma GCC unroll 4
        for (int j = 0; j < NV; j++)
            bv[j] = _mm256_load_pd(b + W * j);
#pragma GCC unroll 16
        for (int i = 0; i < MR; i++) {
            __m256d ai = _mm256_broadcast_sd(a + i);
#pragma GCC unroll 4
            for (int j = 0; j < NV; j++)
                acc[i][j] = _mm256_fmadd_pd(ai, bv[j], acc[i][j]);
        }
        a += MR;
        b += W * NV;
    }
    __m256d va = _mm256_set1_pd(alpha), vb = _mm256_set1_pd(beta);
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++, c += ldc)
#pragma GCC unroll 4
        for (int j = 0; j < NV; j++) {
            double *cij = c + W * j;
            __m256d r = _mm256_mul_pd(va, acc[i][j]);
            if (beta != 0)
                r = _mm256_fmadd_pd(vb, _mm256_loadu_pd(cij), r);
            _mm256_storeu_pd(cij, r);
        }
}

#define FMM_HAVE_AVX2_KERNELS 1
#define FMM_AVX2_S_NR (8 * FMM_AVX2_S_NV)
#define FMM_AVX2_SGEMM fmm_sgemm_avx2_6x16
#define FMM_AVX2_D_NR (4 * FMM_AVX2_D_NV)
#define FMM_AVX2_DGEMM fmm_dgemm_avx2_6x8

/* ukernel.h: the packed B micro-panels must stay 64-byte aligned. */
_Static_assert(FMM_AVX2_S_NR * sizeof(float) % 64 == 0, "NR * 4 % 64");
_Static_assert(FMM_AVX2_D_NR * sizeof(double) % 64 == 0, "NR * 8 % 64");

#endif
