/*
 * AVX2+FMA kernels for the unpacked small-product path (see small.h for the
 * contract): the same register block as small_avx512.h, with vmaskmov loads
 * for B's column tail and C's tail stored through a small buffer (AVX2 has no
 * cheap masked store).
 */
#ifndef FASTMM_SMALL_AVX2_H
#define FASTMM_SMALL_AVX2_H

#include <immintrin.h>

#define FMM_T256 __attribute__((target("avx2,fma")))

static const int fmm_small_avx2_masks[16] = {-1, -1, -1, -1, -1, -1, -1, -1,
                                             0,  0,  0,  0,  0,  0,  0,  0};

/* MR rows by NV vectors of C; `tail` (1..L) valid lanes in the last vector. */
#define FMM_SMALL_AVX2_BLOCK(NAME, T, V, L, SFX, MASKLOAD)                     \
    static inline __attribute__((always_inline)) FMM_T256 void NAME(           \
        const int MR, const int NV, ptrdiff_t k, T alpha, const T *a,          \
        ptrdiff_t rs_a, ptrdiff_t cs_a, const T *b, ptrdiff_t rs_b, T beta,    \
        T *c, ptrdiff_t rs_c, ptrdiff_t cs_c, int tail)                        \
    {                                                                          \
        V acc[6][2];                                                           \
        __m256i lm = _mm256_loadu_si256(                                       \
            (const __m256i *)(fmm_small_avx2_masks + 8 - tail * (8 / L)));     \
        FMM_UNROLL                                                             \
        for (int i = 0; i < MR; i++)                                           \
            FMM_UNROLL                                                         \
            for (int v = 0; v < NV; v++)                                       \
                acc[i][v] = _mm256_setzero_##SFX();                            \
        for (ptrdiff_t p = 0; p < k; p++) {                                    \
            V bv[2];                                                           \
            FMM_UNROLL                                                         \
            for (int v = 0; v < NV - 1; v++)                                   \
                bv[v] = _mm256_loadu_##SFX(b + p * rs_b + v * L);              \
            bv[NV - 1] = tail == L                                             \
                ? _mm256_loadu_##SFX(b + p * rs_b + (NV - 1) * L)              \
                : MASKLOAD(b + p * rs_b + (NV - 1) * L, lm);                   \
            FMM_UNROLL                                                         \
            for (int i = 0; i < MR; i++) {                                     \
                V av = _mm256_set1_##SFX(a[i * rs_a + p * cs_a]);              \
                FMM_UNROLL                                                     \
                for (int v = 0; v < NV; v++)                                   \
                    acc[i][v] = _mm256_fmadd_##SFX(av, bv[v], acc[i][v]);      \
            }                                                                  \
        }                                                                      \
        V va = _mm256_set1_##SFX(alpha);                                       \
        FMM_UNROLL                                                             \
        for (int i = 0; i < MR; i++) {                                         \
            FMM_UNROLL                                                         \
            for (int v = 0; v < NV; v++) {                                     \
                int nj = v == NV - 1 ? tail : L;                               \
                T *cv = c + i * rs_c + v * L * cs_c;                           \
                V r = _mm256_mul_##SFX(va, acc[i][v]);                         \
                if (cs_c == 1 && nj == L) {                                    \
                    if (beta != 0) /* beta == 0: C is never read */            \
                        r = _mm256_fmadd_##SFX(_mm256_set1_##SFX(beta),        \
                                               _mm256_loadu_##SFX(cv), r);     \
                    _mm256_storeu_##SFX(cv, r);                                \
                } else {                                                       \
                    T tmp[L];                                                  \
                    _mm256_storeu_##SFX(tmp, r);                               \
                    for (int j = 0; j < nj; j++)                               \
                        cv[j * cs_c] = beta == 0                               \
                            ? tmp[j] : tmp[j] + beta * cv[j * cs_c];           \
                }                                                              \
            }                                                                  \
        }                                                                      \
    }

FMM_SMALL_AVX2_BLOCK(fmm_sblk_avx2, float, __m256, 8, ps, _mm256_maskload_ps)
FMM_SMALL_AVX2_BLOCK(fmm_dblk_avx2, double, __m256d, 4, pd, _mm256_maskload_pd)

#define FMM_SMALL_AVX2_CASES(BLK, LOOP)                                        \
    FMM_SMALL_CASE(BLK, 6, LOOP) FMM_SMALL_CASE(BLK, 5, LOOP)                  \
    FMM_SMALL_CASE(BLK, 4, LOOP) FMM_SMALL_CASE(BLK, 3, LOOP)                  \
    FMM_SMALL_CASE(BLK, 2, LOOP) FMM_SMALL_CASE(BLK, 1, LOOP)

/* 6 rows by 2 vectors (12 of the 16 ymm registers hold C), in the order
 * FMM_SMALL_FOR_BLOCKS picks. */
#define FMM_SMALL_AVX2_LOOPS(NAME, BLK, T, L)                                  \
    static FMM_T256 void NAME(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, T alpha,  \
                              const T *a, ptrdiff_t rs_a, ptrdiff_t cs_a,      \
                              const T *b, ptrdiff_t rs_b, T beta, T *c,        \
                              ptrdiff_t rs_c, ptrdiff_t cs_c)                  \
    {                                                                          \
        FMM_SMALL_FOR_BLOCKS(m, n, k, T, 6, 2 * L) {                           \
            ptrdiff_t nr = n - j < 2 * L ? n - j : 2 * L;                      \
            int nv = nr > L ? 2 : 1;                                           \
            int last = (int)(nr - (nv - 1) * L);                               \
            const T *bj = b + j, *ai = a + i * rs_a;                           \
            T *ci = c + j * cs_c + i * rs_c;                                   \
            switch ((m - i < 6 ? m - i : 6) * 2 + nv - 1) {                    \
                FMM_SMALL_AVX2_CASES(BLK, FMM_ONCE)                            \
            }                                                                  \
        }                                                                      \
    }

FMM_SMALL_AVX2_LOOPS(fmm_small_s_avx2, fmm_sblk_avx2, float, 8)
FMM_SMALL_AVX2_LOOPS(fmm_small_d_avx2, fmm_dblk_avx2, double, 4)

/* A stack of products of at most 6 rows by 2 vectors: one block each. */
#define FMM_SMALL_AVX2_STACK(NAME, BLK, T, L)                                  \
    static FMM_T256 void NAME(FMM_SMALL_STACK_ARGS(T))                         \
    {                                                                          \
        int nv = n > L ? 2 : 1;                                                \
        int last = (int)(n - (nv - 1) * L);                                    \
        switch (m * 2 + nv - 1) {                                              \
            FMM_SMALL_AVX2_CASES(BLK, FMM_OVER_STACK)                          \
        }                                                                      \
    }

FMM_SMALL_AVX2_STACK(fmm_stack_s_avx2, fmm_sblk_avx2, float, 8)
FMM_SMALL_AVX2_STACK(fmm_stack_d_avx2, fmm_dblk_avx2, double, 4)

#endif
