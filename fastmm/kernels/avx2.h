/*
 * AVX2 + FMA micro-kernels, obeying kernels/ukernel.h: the fast path for x86-64
 * CPUs without AVX-512.  Same structure as avx512.h (read its notes), without
 * the late C prefetch; one body for both element types, in avx2_body.h.
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

/* The intrinsics the body uses, for either element type (see avx512.h). */
#define fmm256_load(p) \
    _Generic(*(p), float: _mm256_load_ps, double: _mm256_load_pd)(p)
#define fmm256_loadu(p) \
    _Generic(*(p), float: _mm256_loadu_ps, double: _mm256_loadu_pd)(p)
#define fmm256_storeu(p, v) \
    _Generic(*(p), float: _mm256_storeu_ps, double: _mm256_storeu_pd)(p, v)
#define fmm256_broadcast(p) \
    _Generic(*(p), float: _mm256_broadcast_ss, double: _mm256_broadcast_sd)(p)
#define fmm256_set1(x) \
    _Generic((x), float: _mm256_set1_ps, double: _mm256_set1_pd)(x)
#define fmm256_mul(x, y) \
    _Generic((x), __m256: _mm256_mul_ps, __m256d: _mm256_mul_pd)(x, y)
#define fmm256_fmadd(x, y, z) \
    _Generic((x), __m256: _mm256_fmadd_ps, __m256d: _mm256_fmadd_pd)(x, y, z)

#define FMM_UKR fmm_sgemm_avx2_6x16
#define FMM_T float
#define FMM_V __m256
#define FMM_MR FMM_AVX2_S_MR
#define FMM_NV FMM_AVX2_S_NV
#include "avx2_body.h"

#define FMM_UKR fmm_dgemm_avx2_6x8
#define FMM_T double
#define FMM_V __m256d
#define FMM_MR FMM_AVX2_D_MR
#define FMM_NV FMM_AVX2_D_NV
#include "avx2_body.h"

/* Edge-row kernels (kernels/ukernel.h): a last strip of 1-5 rows runs the
 * 2-, 4- or 6-row body straight into C, as on AVX-512 (avx512.h). */
#define FMM_UKR fmm_sgemm_avx2_2x16_rows
#define FMM_T float
#define FMM_V __m256
#define FMM_MR 2
#define FMM_MRA FMM_AVX2_S_MR
#define FMM_NV FMM_AVX2_S_NV
#define FMM_ROWS 1
#include "avx2_body.h"

#define FMM_UKR fmm_sgemm_avx2_4x16_rows
#define FMM_T float
#define FMM_V __m256
#define FMM_MR 4
#define FMM_MRA FMM_AVX2_S_MR
#define FMM_NV FMM_AVX2_S_NV
#define FMM_ROWS 1
#include "avx2_body.h"

#define FMM_UKR fmm_sgemm_avx2_6x16_rows
#define FMM_T float
#define FMM_V __m256
#define FMM_MR FMM_AVX2_S_MR
#define FMM_MRA FMM_AVX2_S_MR
#define FMM_NV FMM_AVX2_S_NV
#define FMM_ROWS 1
#include "avx2_body.h"

#define FMM_UKR fmm_dgemm_avx2_2x8_rows
#define FMM_T double
#define FMM_V __m256d
#define FMM_MR 2
#define FMM_MRA FMM_AVX2_D_MR
#define FMM_NV FMM_AVX2_D_NV
#define FMM_ROWS 1
#include "avx2_body.h"

#define FMM_UKR fmm_dgemm_avx2_4x8_rows
#define FMM_T double
#define FMM_V __m256d
#define FMM_MR 4
#define FMM_MRA FMM_AVX2_D_MR
#define FMM_NV FMM_AVX2_D_NV
#define FMM_ROWS 1
#include "avx2_body.h"

#define FMM_UKR fmm_dgemm_avx2_6x8_rows
#define FMM_T double
#define FMM_V __m256d
#define FMM_MR FMM_AVX2_D_MR
#define FMM_MRA FMM_AVX2_D_MR
#define FMM_NV FMM_AVX2_D_NV
#define FMM_ROWS 1
#include "avx2_body.h"

FMM_DEFINE_ROWS_DISPATCH(fmm_sgemm_avx2_rows, FMM_TARGET_AVX2, float, 2,
                         fmm_sgemm_avx2_2x16_rows, 4,
                         fmm_sgemm_avx2_4x16_rows,
                         fmm_sgemm_avx2_6x16_rows)
FMM_DEFINE_ROWS_DISPATCH(fmm_dgemm_avx2_rows, FMM_TARGET_AVX2, double, 2,
                         fmm_dgemm_avx2_2x8_rows, 4,
                         fmm_dgemm_avx2_4x8_rows,
                         fmm_dgemm_avx2_6x8_rows)

#define FMM_HAVE_AVX2_KERNELS 1
#define FMM_AVX2_S_NR (8 * FMM_AVX2_S_NV)
#define FMM_AVX2_SGEMM fmm_sgemm_avx2_6x16
#define FMM_AVX2_D_NR (4 * FMM_AVX2_D_NV)
#define FMM_AVX2_DGEMM fmm_dgemm_avx2_6x8
#define FMM_AVX2_SGEMM_ROWS fmm_sgemm_avx2_rows
#define FMM_AVX2_DGEMM_ROWS fmm_dgemm_avx2_rows
/* The 2-row body has 4 accumulators, half the 8 chains that two FMA pipes
 * of latency 4 need: a last strip of 1 or 2 rows runs with the strip before
 * it as 4 + 3 or 4 + 4 rows on the 4-row body (ukernel.h), as fast as 6 + 1
 * or 6 + 2 rows would be at full speed.  (Zen 3, 1 thread: m = 32 took as
 * long as m = 34.) */
#define FMM_AVX2_SPLIT_ROWS 2

/* ukernel.h: the packed B micro-panels must stay 64-byte aligned. */
_Static_assert(FMM_AVX2_S_NR * sizeof(float) % 64 == 0, "NR * 4 % 64");
_Static_assert(FMM_AVX2_D_NR * sizeof(double) % 64 == 0, "NR * 8 % 64");

#endif
