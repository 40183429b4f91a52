/*
 * AVX-512 micro-kernels (F/DQ/BW/VL), obeying kernels/ukernel.h.
 *
 * Register block: MR rows of C by NR = NV vectors of 16 floats (8 doubles).
 * Per k step the kernel loads the NV vectors of the B micro-panel, broadcasts
 * each of the MR elements of the A column, and issues MR*NV independent FMAs
 * into accumulators that stay in zmm registers for the whole k loop.
 *
 * Shape: 12 x 32 float32, 12 x 16 float64.  24 accumulators + 2 B vectors +
 * 1 broadcast fit the 32 zmm registers, cover the FMA latency on two FMA
 * pipes (>= 8 independent chains needed), and need 14 loads per 24 FMAs.
 * With panels in L1 (kc = 256) on a Zen 5 core (two 512-bit FMA pipes, ~268
 * GFLOP/s float32), 6x32, 6x64, 8x48, 10x32, 12x32 and 14x32 all ran at
 * 98-100% of peak; in the full GEMM (n = 512..2048, block sizes from _cpu.py)
 * 6x64, 8x48 and 12x32 were within the measurement noise (~5%) of each other.
 * 12x32 is kept for its narrower NR: less padding on narrow C (NN layers with
 * few outputs, the transposed route for column-major C), and the kc x NR
 * micro-panel stays a fixed 64 KiB at kc = 512 for both element types.
 *
 * The loops over MR and NV have compile-time bounds and are fully unrolled
 * (the pragmas: without them GCC keeps acc[][] on the stack); the arrays are
 * sized exactly, as a partly used array is not promoted to registers either.
 */
#ifndef FASTMM_AVX512_H
#define FASTMM_AVX512_H

#include <immintrin.h>
#include "ukernel.h"

#define FMM_TARGET_AVX512 \
    __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl")))

/* k steps before the end of the k loop at which the kernel prefetches its C
 * tile again.  The kc x NR B micro-panel (64 KiB at kc = 512) and the A
 * micro-panel stream through L1 meanwhile, so the lines prefetched on entry
 * are long gone; with large C (rows 8 KiB apart at n = 2048) they come from L3
 * or memory, and the tile update stalled on them.  64 steps (~800 cycles at
 * 24 FMAs per step on two pipes) cover memory latency: measured +1-3% at
 * n = 2048 (float32 and float64, 1 and 2 threads), neutral at n <= 1024, when
 * the machine's L3 is contended; 24, 64 and 128 were within noise of each
 * other, and a late prefetch alone (none on entry) did no better. */
#define FMM_AVX512_C_AHEAD 64

#define FMM_AVX512_S_MR 12
#define FMM_AVX512_S_NV 2
#define FMM_AVX512_D_MR 12
#define FMM_AVX512_D_NV 2

FMM_TARGET_AVX512 static void
fmm_sgemm_avx512_12x32(ptrdiff_t k, float alpha, const float *a,
                       const float *b, float beta, float *c, ptrdiff_t ldc)
{
    enum { MR = FMM_AVX512_S_MR, NV = FMM_AVX512_S_NV, W = 16 };
    __m512 acc[MR][NV];
    /* C is touched only after the k loop: start fetching its rows now (both
     * ends: a row spans two lines), and again FMM_AVX512_C_AHEAD steps before
     * the end, as the streamed panels evict these lines from L1 well before
     * then.  Row pointers are walked, not indexed, here and below: a dozen
     * live row addresses make GCC spill accumulators. */
    for (const float *ci = c; ci < c + MR * ldc; ci += ldc) {
        _mm_prefetch((const char *)ci, _MM_HINT_T0);
        _mm_prefetch((const char *)(ci + W * NV - 1), _MM_HINT_T0);
    }
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
        for (int j = 0; j < NV; j++)
            acc[i][j] = _mm512_setzero_ps();
    ptrdiff_t p = 0;
    ptrdiff_t stop = k > FMM_AVX512_C_AHEAD ? k - FMM_AVX512_C_AHEAD : 0;
    for (int pass = 0; pass < 2; pass++, stop = k) {
        for (; p < stop; p++) {
            __m512 bv[NV];
#pragma GCC unroll 4
            for (int j = 0; j < NV; j++)
                bv[j] = _mm512_load_ps(b + W * j);
#pragma GCC unroll 16
            for (int i = 0; i < MR; i++) {
                __m512 ai = _mm512_set1_ps(a[i]);
#pragma GCC unroll 4
                for (int j = 0; j < NV; j++)
                    acc[i][j] = _mm512_fmadd_ps(ai, bv[j], acc[i][j]);
            }
            a += MR;
            b += W * NV;
        }
        if (pass == 0)
            for (const float *ci = c; ci < c + MR * ldc; ci += ldc) {
                _mm_prefetch((const char *)ci, _MM_HINT_T0);
                _mm_prefetch((const char *)(ci + W * NV - 1), _MM_HINT_T0);
            }
    }
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++, c += ldc)
#pragma GCC unroll 4
        for (int j = 0; j < NV; j++) {
            float *cij = c + W * j;
            __m512 r = _mm512_mul_ps(va, acc[i][j]);
            if (beta != 0) /* beta == 0: C is not read (NaN must not leak) */
                r = _mm512_fmadd_ps(vb, _mm512_loadu_ps(cij), r);
            _mm512_storeu_ps(cij, r);
        }
}

FMM_TARGET_AVX512 static void
fmm_dgemm_avx512_12x16(ptrdiff_t k, double alpha, const double *a,
                       const double *b, double beta, double *c, ptrdiff_t ldc)
{
    enum { MR = FMM_AVX512_D_MR, NV = FMM_AVX512_D_NV, W = 8 };
    __m512d acc[MR][NV];
    /* C prefetch: see fmm_sgemm_avx512_12x32 */
    for (const double *ci = c; ci < c + MR * ldc; ci += ldc) {
        _mm_prefetch((const char *)ci, _MM_HINT_T0);
        _mm_prefetch((const char *)(ci + W * NV - 1), _MM_HINT_T0);
    }
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
        for (int j = 0; j < NV; j++)
            acc[i][j] = _mm512_setzero_pd();
    ptrdiff_t p = 0;
    ptrdiff_t stop = k > FMM_AVX512_C_AHEAD ? k - FMM_AVX512_C_AHEAD : 0;
    for (int pass = 0; pass < 2; pass++, stop = k) {
        for (; p < stop; p++) {
            __m512d bv[NV];
#pragma GCC unroll 4
            for (int j = 0; j < NV; j++)
                bv[j] = _mm512_load_pd(b + W * j);
#pragma GCC unroll 16
            for (int i = 0; i < MR; i++) {
                __m512d ai = _mm512_set1_pd(a[i]);
#pragma GCC unroll 4
                for (int j = 0; j < NV; j++)
                    acc[i][j] = _mm512_fmadd_pd(ai, bv[j], acc[i][j]);
            }
            a += MR;
            b += W * NV;
        }
        if (pass == 0)
            for (const double *ci = c; ci < c + MR * ldc; ci += ldc) {
                _mm_prefetch((const char *)ci, _MM_HINT_T0);
                _mm_prefetch((const char *)(ci + W * NV - 1), _MM_HINT_T0);
            }
    }
    __m512d va = _mm512_set1_pd(alpha), vb = _mm512_set1_pd(beta);
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++, c += ldc)
#pragma GCC unroll 4
        for (int j = 0; j < NV; j++) {
            double *cij = c + W * j;
            __m512d r = _mm512_mul_pd(va, acc[i][j]);
            if (beta != 0)
                r = _mm512_fmadd_pd(vb, _mm512_loadu_pd(cij), r);
            _mm512_storeu_pd(cij, r);
        }
}

#define FMM_HAVE_AVX512_KERNELS 1
#define FMM_AVX512_S_NR (16 * FMM_AVX512_S_NV)
#define FMM_AVX512_SGEMM fmm_sgemm_avx512_12x32
#define FMM_AVX512_D_NR (8 * FMM_AVX512_D_NV)
#define FMM_AVX512_DGEMM fmm_dgemm_avx512_12x16

/* ukernel.h: the packed B micro-panels must stay 64-byte aligned. */
_Static_assert(FMM_AVX512_S_NR * sizeof(float) % 64 == 0, "NR * 4 % 64");
_Static_assert(FMM_AVX512_D_NR * sizeof(double) % 64 == 0, "NR * 8 % 64");

#endif
