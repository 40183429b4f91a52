/*
 * AVX2+FMA kernels for the unpacked small-product path (see small.h for the
 * contract): the same register block as small_avx512.h, with vmaskmov loads
 * for B's column tail and C's tail stored a whole 16-, 8- or 4-byte piece at
 * a time (AVX2 has no cheap masked store).  Stacks of products at most 4
 * float / 2 double columns wide take 128-bit vectors, so a row of C is one
 * plain store, and stacks take up to 12 rows (two blocks a product past 6
 * rows by two vectors or 8 by one, as 12 of the 16 registers at most can
 * hold C).
 */
#ifndef FASTMM_SMALL_AVX2_H
#define FASTMM_SMALL_AVX2_H

#include <immintrin.h>

#define FMM_T256 __attribute__((target("avx2,fma")))

static const int fmm_small_avx2_masks[16] = {-1, -1, -1, -1, -1, -1, -1, -1,
                                             0,  0,  0,  0,  0,  0,  0,  0};

/* The first t (0 < t < lanes) lanes of v stored at p, a whole 16- or 8-byte
 * piece at a time: Zen 3 runs a ymm vmaskmov store at a fraction of a plain
 * store's rate (5 x 5 float32 stacks lost a third), and a store to a buffer
 * read back a lane at a time stalls on store forwarding (3 x 3 float32
 * stacks: 12 ns a product, 10 this way). */
static inline __attribute__((always_inline)) FMM_T256 void
fmm_avx2_store_s4(float *p, __m128 v, int t)
{
    if (t & 2) {
        _mm_storel_pi((__m64 *)p, v);
        v = _mm_movehl_ps(v, v);
        p += 2;
    }
    if (t & 1)
        _mm_store_ss(p, v);
}
static inline __attribute__((always_inline)) FMM_T256 void
fmm_avx2_store_d2(double *p, __m128d v, int t)
{
    if (t & 1)
        _mm_store_sd(p, v);
}
/* A 256-bit v: its low half whole when t covers it, then the first lanes of
 * the half that holds lane t - 1, by the 128-bit store above (HALF lanes a
 * half). */
#define FMM_AVX2_STORE_WIDE(NAME, T, V, H, HALF, LOW, EXTRACT, STOREU, NARROW) \
    static inline __attribute__((always_inline)) FMM_T256 void NAME(          \
        T *p, V v, int t)                                                      \
    {                                                                          \
        H h = LOW(v);                                                          \
        if (t & HALF) {                                                        \
            STOREU(p, h);                                                      \
            h = EXTRACT(v, 1);                                                 \
            p += HALF;                                                         \
        }                                                                      \
        NARROW(p, h, t & (HALF - 1));                                          \
    }
FMM_AVX2_STORE_WIDE(fmm_avx2_store_s8, float, __m256, __m128, 4,
                    _mm256_castps256_ps128, _mm256_extractf128_ps,
                    _mm_storeu_ps, fmm_avx2_store_s4)
FMM_AVX2_STORE_WIDE(fmm_avx2_store_d4, double, __m256d, __m128d, 2,
                    _mm256_castpd256_pd128, _mm256_extractf128_pd,
                    _mm_storeu_pd, fmm_avx2_store_d2)

/* MR rows by NV vectors of C; `tail` (1..L) valid lanes in the last vector.
 * PFX/SFX name the intrinsics of the width (_mm256 or _mm), VI/LOADI its
 * integer vector and load (the lane mask), STORE_PART its partial store. */
#define FMM_SMALL_AVX2_BLOCK(NAME, T, V, L, PFX, SFX, VI, LOADI, STORE_PART)   \
    static inline __attribute__((always_inline)) FMM_T256 void NAME(           \
        const int MR, const int NV, ptrdiff_t k, T alpha, const T *a,          \
        ptrdiff_t rs_a, ptrdiff_t cs_a, const T *b, ptrdiff_t rs_b, T beta,    \
        T *c, ptrdiff_t rs_c, ptrdiff_t cs_c, int tail)                        \
    {                                                                          \
        V acc[8][2];                                                           \
        VI lm = LOADI((const VI *)(fmm_small_avx2_masks + 8 -                  \
                                   tail * (int)(sizeof(T) / 4)));              \
        FMM_UNROLL                                                             \
        for (int i = 0; i < MR; i++)                                           \
            FMM_UNROLL                                                         \
            for (int v = 0; v < NV; v++)                                       \
                acc[i][v] = PFX##_setzero_##SFX();                             \
        for (ptrdiff_t p = 0; p < k; p++) {                                    \
            V bv[2];                                                           \
            FMM_UNROLL                                                         \
            for (int v = 0; v < NV - 1; v++)                                   \
                bv[v] = PFX##_loadu_##SFX(b + p * rs_b + v * L);               \
            bv[NV - 1] = tail == L                                             \
                ? PFX##_loadu_##SFX(b + p * rs_b + (NV - 1) * L)               \
                : PFX##_maskload_##SFX(b + p * rs_b + (NV - 1) * L, lm);       \
            FMM_UNROLL                                                         \
            for (int i = 0; i < MR; i++) {                                     \
                V av = PFX##_set1_##SFX(a[i * rs_a + p * cs_a]);               \
                FMM_UNROLL                                                     \
                for (int v = 0; v < NV; v++)                                   \
                    acc[i][v] = PFX##_fmadd_##SFX(av, bv[v], acc[i][v]);       \
            }                                                                  \
        }                                                                      \
        V va = PFX##_set1_##SFX(alpha);                                        \
        FMM_UNROLL                                                             \
        for (int i = 0; i < MR; i++) {                                         \
            FMM_UNROLL                                                         \
            for (int v = 0; v < NV; v++) {                                     \
                int nj = v == NV - 1 ? tail : L;                               \
                T *cv = c + i * rs_c + v * L * cs_c;                           \
                V r = PFX##_mul_##SFX(va, acc[i][v]);                          \
                if (cs_c == 1 && nj == L) {                                    \
                    if (beta != 0) /* beta == 0: C is never read */            \
                        r = PFX##_fmadd_##SFX(PFX##_set1_##SFX(beta),          \
                                              PFX##_loadu_##SFX(cv), r);       \
                    PFX##_storeu_##SFX(cv, r);                                 \
                } else if (cs_c == 1) {                                        \
                    if (beta != 0)                                             \
                        r = PFX##_fmadd_##SFX(PFX##_set1_##SFX(beta),          \
                                              PFX##_maskload_##SFX(cv, lm), r);\
                    STORE_PART(cv, r, nj);                                     \
                } else {                                                       \
                    T tmp[L];                                                  \
                    PFX##_storeu_##SFX(tmp, r);                                \
                    for (int j = 0; j < nj; j++)                               \
                        cv[j * cs_c] = beta == 0                               \
                            ? tmp[j] : tmp[j] + beta * cv[j * cs_c];           \
                }                                                              \
            }                                                                  \
        }                                                                      \
    }

FMM_SMALL_AVX2_BLOCK(fmm_sblk_avx2, float, __m256, 8, _mm256, ps, __m256i,
                     _mm256_loadu_si256, fmm_avx2_store_s8)
FMM_SMALL_AVX2_BLOCK(fmm_dblk_avx2, double, __m256d, 4, _mm256, pd, __m256i,
                     _mm256_loadu_si256, fmm_avx2_store_d4)
FMM_SMALL_AVX2_BLOCK(fmm_sblk_avx2_x, float, __m128, 4, _mm, ps, __m128i,
                     _mm_loadu_si128, fmm_avx2_store_s4)
FMM_SMALL_AVX2_BLOCK(fmm_dblk_avx2_x, double, __m128d, 2, _mm, pd, __m128i,
                     _mm_loadu_si128, fmm_avx2_store_d2)

#define FMM_SMALL_AVX2_CASES(CASE, BLK, LOOP)                                  \
    CASE(BLK, 6, LOOP) CASE(BLK, 5, LOOP) CASE(BLK, 4, LOOP)                   \
    CASE(BLK, 3, LOOP) CASE(BLK, 2, LOOP) CASE(BLK, 1, LOOP)

/* 6 rows by 2 vectors (12 of the 16 ymm registers hold C), in the order
 * FMM_SMALL_FOR_BLOCKS picks; the last 7 or 8 rows as two blocks of 4 + 3 or
 * 4 + 4 (fmm_small_rows). */
#define FMM_SMALL_AVX2_LOOPS(NAME, BLK, T, L)                                  \
    static FMM_T256 void NAME(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, T alpha,  \
                              const T *a, ptrdiff_t rs_a, ptrdiff_t cs_a,      \
                              const T *b, ptrdiff_t rs_b, T beta, T *c,        \
                              ptrdiff_t rs_c, ptrdiff_t cs_c)                  \
    {                                                                          \
        FMM_SMALL_FOR_BLOCKS(m, n, k, T, 6, 2 * L, 1) {                        \
            ptrdiff_t nr = n - j < 2 * L ? n - j : 2 * L;                      \
            int nv = nr > L ? 2 : 1;                                           \
            int last = (int)(nr - (nv - 1) * L);                               \
            const T *bj = b + j, *ai = a + i * rs_a;                           \
            T *ci = c + j * cs_c + i * rs_c;                                   \
            switch (fmm_small_rows(m - i, 6, 1) * 2 + nv - 1) {                \
                FMM_SMALL_AVX2_CASES(FMM_SMALL_CASE, BLK, FMM_ONCE)            \
            }                                                                  \
        }                                                                      \
    }

FMM_SMALL_AVX2_LOOPS(fmm_small_s_avx2, fmm_sblk_avx2, float, 8)
FMM_SMALL_AVX2_LOOPS(fmm_small_d_avx2, fmm_dblk_avx2, double, 4)

/* Stacks: 7 and 8 rows by one vector are one block (8 accumulators); by two
 * vectors, and 9 to 12 rows by either, two blocks a product (4 + 3 or 4 + 4
 * rows; 5 + 4 to 6 + 6), B's rows reread from L1 by the second. */
#define FMM_SMALL_AVX2_TWO(BLK, R, R1, NV, LOOP)                               \
    LOOP {                                                                     \
        BLK(R1, NV, k, alpha, ai, rs_a, cs_a, bj, rs_b, beta, ci, rs_c, cs_c,  \
            last);                                                             \
        BLK(R - R1, NV, k, alpha, ai + R1 * rs_a, rs_a, cs_a, bj, rs_b, beta,  \
            ci + R1 * rs_c, rs_c, cs_c, last);                                 \
    }                                                                          \
    break;
#define FMM_SMALL_AVX2_CASE_78(BLK, R, LOOP)                                   \
    FMM_SMALL_CASE_1V(BLK, R, LOOP)                                            \
    case 2 * R + 1:                                                            \
        FMM_SMALL_AVX2_TWO(BLK, R, 4, 2, LOOP)
#define FMM_SMALL_AVX2_CASE_TWO_1V(BLK, R, LOOP)                               \
    case 2 * R:                                                                \
        FMM_SMALL_AVX2_TWO(BLK, R, (R + 1) / 2, 1, LOOP)
#define FMM_SMALL_AVX2_CASE_TWO(BLK, R, LOOP)                                  \
    FMM_SMALL_AVX2_CASE_TWO_1V(BLK, R, LOOP)                                   \
    case 2 * R + 1:                                                            \
        FMM_SMALL_AVX2_TWO(BLK, R, (R + 1) / 2, 2, LOOP)
#define FMM_SMALL_AVX2_STACK_ROWS 12

/* A stack of products of at most 12 rows by 2 vectors: one or two blocks
 * each, chosen once for the stack. */
#define FMM_SMALL_AVX2_STACK(NAME, BLK, T, L, CASE, CASES_7_12)                \
    static FMM_T256 void NAME(FMM_SMALL_STACK_ARGS(T))                         \
    {                                                                          \
        int nv = n > L ? 2 : 1;                                                \
        int last = (int)(n - (nv - 1) * L);                                    \
        switch (m * 2 + nv - 1) {                                              \
            FMM_SMALL_AVX2_CASES(CASE, BLK, FMM_OVER_STACK)                    \
            CASES_7_12(BLK, FMM_OVER_STACK)                                    \
        }                                                                      \
    }
#define FMM_SMALL_AVX2_CASES_7_12(BLK, LOOP)                                   \
    FMM_SMALL_AVX2_CASE_78(BLK, 7, LOOP)                                       \
    FMM_SMALL_AVX2_CASE_78(BLK, 8, LOOP)                                       \
    FMM_SMALL_AVX2_CASE_TWO(BLK, 9, LOOP)                                      \
    FMM_SMALL_AVX2_CASE_TWO(BLK, 10, LOOP)                                     \
    FMM_SMALL_AVX2_CASE_TWO(BLK, 11, LOOP)                                     \
    FMM_SMALL_AVX2_CASE_TWO(BLK, 12, LOOP)
#define FMM_SMALL_AVX2_CASES_7_12_1V(BLK, LOOP)                                \
    FMM_SMALL_CASE_1V(BLK, 7, LOOP) FMM_SMALL_CASE_1V(BLK, 8, LOOP)            \
    FMM_SMALL_AVX2_CASE_TWO_1V(BLK, 9, LOOP)                                   \
    FMM_SMALL_AVX2_CASE_TWO_1V(BLK, 10, LOOP)                                  \
    FMM_SMALL_AVX2_CASE_TWO_1V(BLK, 11, LOOP)                                  \
    FMM_SMALL_AVX2_CASE_TWO_1V(BLK, 12, LOOP)

FMM_SMALL_AVX2_STACK(fmm_stack_s_avx2_y, fmm_sblk_avx2, float, 8,
                     FMM_SMALL_CASE, FMM_SMALL_AVX2_CASES_7_12)
FMM_SMALL_AVX2_STACK(fmm_stack_d_avx2_y, fmm_dblk_avx2, double, 4,
                     FMM_SMALL_CASE, FMM_SMALL_AVX2_CASES_7_12)
FMM_SMALL_AVX2_STACK(fmm_stack_s_avx2_x, fmm_sblk_avx2_x, float, 4,
                     FMM_SMALL_CASE_1V, FMM_SMALL_AVX2_CASES_7_12_1V)
FMM_SMALL_AVX2_STACK(fmm_stack_d_avx2_x, fmm_dblk_avx2_x, double, 2,
                     FMM_SMALL_CASE_1V, FMM_SMALL_AVX2_CASES_7_12_1V)

/* Narrow stacks (at most 16 bytes a row of C) take the 128-bit body. */
#define FMM_SMALL_AVX2_STACK_ENTRY(NAME, X, Y, T)                              \
    static FMM_T256 void NAME(FMM_SMALL_STACK_ARGS(T))                         \
    {                                                                          \
        if (n <= 16 / (int)sizeof(T))                                          \
            X FMM_STACK_CALL;                                                  \
        else                                                                   \
            Y FMM_STACK_CALL;                                                  \
    }
FMM_SMALL_AVX2_STACK_ENTRY(fmm_stack_s_avx2, fmm_stack_s_avx2_x,
                           fmm_stack_s_avx2_y, float)
FMM_SMALL_AVX2_STACK_ENTRY(fmm_stack_d_avx2, fmm_stack_d_avx2_x,
                           fmm_stack_d_avx2_y, double)

#endif
