/*
 * AVX-512 kernels for the unpacked small-product path (see small.h for the
 * contract).  One register block reads B's rows in place (unit column stride)
 * with masked loads for the column tail, and broadcasts A's elements through
 * any strides, so nothing is packed and nothing is allocated.
 *
 * Three widths: 512-bit for wide C, and 256-bit (AVX-512VL masks) when C
 * has at most 8 float / 4 double columns, since Zen 4 runs a ymm FMA twice as
 * often as a half-empty zmm one; stacks also take 128-bit for at most 4 / 2
 * columns, so a full vector is stored without a mask (masked stores are slow
 * on AMD).
 */
#ifndef FASTMM_SMALL_AVX512_H
#define FASTMM_SMALL_AVX512_H

#include <immintrin.h>

#define FMM_T512                                                               \
    __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,fma")))

/* One body per (element type, vector width): MR rows by NV vectors of C.
 * MR and NV are constants at every call site, so acc[][] lives in registers.
 * Each term is one FMA, p = 0..k-1 in order (the micro-kernel contract). */
#define FMM_SMALL_AVX512_BLOCK(NAME, T, V, L, MT, PFX, SFX)                    \
    static inline __attribute__((always_inline)) FMM_T512 void NAME(           \
        const int MR, const int NV, ptrdiff_t k, T alpha, const T *a,          \
        ptrdiff_t rs_a, ptrdiff_t cs_a, const T *b, ptrdiff_t rs_b, T beta,    \
        T *c, ptrdiff_t rs_c, ptrdiff_t cs_c, MT last)                         \
    {                                                                          \
        const MT full = (MT)((1u << L) - 1);                                   \
        V acc[8][2];                                                           \
        FMM_UNROLL                                                             \
        for (int i = 0; i < MR; i++)                                           \
            FMM_UNROLL                                                         \
            for (int v = 0; v < NV; v++)                                       \
                acc[i][v] = PFX##_setzero_##SFX();                             \
        for (ptrdiff_t p = 0; p < k; p++) {                                    \
            V bv[2];                                                           \
            FMM_UNROLL                                                         \
            for (int v = 0; v < NV; v++)                                       \
                bv[v] = v == NV - 1 && last != full                            \
                    ? PFX##_maskz_loadu_##SFX(last, b + p * rs_b + v * L)      \
                    : PFX##_loadu_##SFX(b + p * rs_b + v * L);                 \
            FMM_UNROLL                                                         \
            for (int i = 0; i < MR; i++) {                                     \
                V av = PFX##_set1_##SFX(a[i * rs_a + p * cs_a]);               \
                FMM_UNROLL                                                     \
                for (int v = 0; v < NV; v++)                                   \
                    acc[i][v] = PFX##_fmadd_##SFX(av, bv[v], acc[i][v]);       \
            }                                                                  \
        }                                                                      \
        V va = PFX##_set1_##SFX(alpha), vb = PFX##_set1_##SFX(beta);           \
        FMM_UNROLL                                                             \
        for (int i = 0; i < MR; i++) {                                         \
            FMM_UNROLL                                                         \
            for (int v = 0; v < NV; v++) {                                     \
                MT mk = v == NV - 1 ? last : full;                             \
                T *cv = c + i * rs_c + v * L * cs_c;                           \
                V r = PFX##_mul_##SFX(va, acc[i][v]);                          \
                if (cs_c == 1) {                                               \
                    if (beta != 0) /* beta == 0: C is never read */            \
                        r = PFX##_fmadd_##SFX(                                 \
                            vb, PFX##_maskz_loadu_##SFX(mk, cv), r);           \
                    if (mk == full) /* AMD: masked stores are slower */        \
                        PFX##_storeu_##SFX(cv, r);                             \
                    else                                                       \
                        PFX##_mask_storeu_##SFX(cv, mk, r);                    \
                } else {                                                       \
                    T tmp[L];                                                  \
                    PFX##_storeu_##SFX(tmp, r);                                \
                    for (int j = 0; j < L && ((mk >> j) & 1); j++)             \
                        cv[j * cs_c] = beta == 0                               \
                            ? tmp[j] : tmp[j] + beta * cv[j * cs_c];           \
                }                                                              \
            }                                                                  \
        }                                                                      \
    }

FMM_SMALL_AVX512_BLOCK(fmm_sblk_avx512_z, float, __m512,
                       16, __mmask16, _mm512, ps)
FMM_SMALL_AVX512_BLOCK(fmm_sblk_avx512_y, float, __m256,
                       8, __mmask8, _mm256, ps)
FMM_SMALL_AVX512_BLOCK(fmm_dblk_avx512_z, double, __m512d,
                       8, __mmask8, _mm512, pd)
FMM_SMALL_AVX512_BLOCK(fmm_dblk_avx512_y, double, __m256d,
                       4, __mmask8, _mm256, pd)
FMM_SMALL_AVX512_BLOCK(fmm_sblk_avx512_x, float, __m128,
                       4, __mmask8, _mm, ps)
FMM_SMALL_AVX512_BLOCK(fmm_dblk_avx512_x, double, __m128d,
                       2, __mmask8, _mm, pd)

/* The loops over C's blocks: 8 rows by NV*L columns, in the order
 * FMM_SMALL_FOR_BLOCKS picks, with the row tail dispatched to a block of
 * exactly its height (not rebalanced as on AVX2: unmeasured on an AVX-512
 * core). */
#define FMM_SMALL_AVX512_LOOPS(NAME, BLK, T, L, MT, CASE)                      \
    static FMM_T512 void NAME(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, T alpha,  \
                              const T *a, ptrdiff_t rs_a, ptrdiff_t cs_a,      \
                              const T *b, ptrdiff_t rs_b, T beta, T *c,        \
                              ptrdiff_t rs_c, ptrdiff_t cs_c)                  \
    {                                                                          \
        FMM_SMALL_FOR_BLOCKS(m, n, k, T, 8, 2 * L, 0) {                        \
            ptrdiff_t nr = n - j < 2 * L ? n - j : 2 * L;                      \
            int nv = nr > L ? 2 : 1;                                           \
            int tail = (int)(nr - (nv - 1) * L);                               \
            MT last = (MT)((1u << tail) - 1);                                  \
            const T *bj = b + j, *ai = a + i * rs_a;                           \
            T *ci = c + j * cs_c + i * rs_c;                                   \
            switch ((m - i < 8 ? m - i : 8) * 2 + nv - 1) {                    \
                FMM_SMALL_AVX512_CASES(CASE, BLK, FMM_ONCE)                    \
            }                                                                  \
        }                                                                      \
    }
#define FMM_SMALL_AVX512_CASES(CASE, BLK, LOOP)                                \
    CASE(BLK, 8, LOOP) CASE(BLK, 7, LOOP) CASE(BLK, 6, LOOP)                   \
    CASE(BLK, 5, LOOP) CASE(BLK, 4, LOOP) CASE(BLK, 3, LOOP)                   \
    CASE(BLK, 2, LOOP) CASE(BLK, 1, LOOP)

/* A stack of products of at most 8 rows by 2 vectors: one block each. */
#define FMM_SMALL_AVX512_STACK(NAME, BLK, T, L, MT, CASE)                      \
    static FMM_T512 void NAME(FMM_SMALL_STACK_ARGS(T))                         \
    {                                                                          \
        int nv = n > L ? 2 : 1;                                                \
        MT last = (MT)((1u << (n - (nv - 1) * L)) - 1);                        \
        switch (m * 2 + nv - 1) {                                              \
            FMM_SMALL_AVX512_CASES(CASE, BLK, FMM_OVER_STACK)                  \
        }                                                                      \
    }

/* The zmm bodies take C one or two vectors wide; the narrower ones only run
 * where C fits one vector (the entry points below), and the xmm one only in
 * stacks (a single product that small is all call overhead). */
FMM_SMALL_AVX512_LOOPS(fmm_small_s_avx512_z, fmm_sblk_avx512_z, float,
                       16, __mmask16, FMM_SMALL_CASE)
FMM_SMALL_AVX512_LOOPS(fmm_small_s_avx512_y, fmm_sblk_avx512_y, float,
                       8, __mmask8, FMM_SMALL_CASE_1V)
FMM_SMALL_AVX512_LOOPS(fmm_small_d_avx512_z, fmm_dblk_avx512_z, double,
                       8, __mmask8, FMM_SMALL_CASE)
FMM_SMALL_AVX512_LOOPS(fmm_small_d_avx512_y, fmm_dblk_avx512_y, double,
                       4, __mmask8, FMM_SMALL_CASE_1V)
FMM_SMALL_AVX512_STACK(fmm_stack_s_avx512_z, fmm_sblk_avx512_z, float,
                       16, __mmask16, FMM_SMALL_CASE)
FMM_SMALL_AVX512_STACK(fmm_stack_s_avx512_y, fmm_sblk_avx512_y, float,
                       8, __mmask8, FMM_SMALL_CASE_1V)
FMM_SMALL_AVX512_STACK(fmm_stack_s_avx512_x, fmm_sblk_avx512_x, float,
                       4, __mmask8, FMM_SMALL_CASE_1V)
FMM_SMALL_AVX512_STACK(fmm_stack_d_avx512_z, fmm_dblk_avx512_z, double,
                       8, __mmask8, FMM_SMALL_CASE)
FMM_SMALL_AVX512_STACK(fmm_stack_d_avx512_y, fmm_dblk_avx512_y, double,
                       4, __mmask8, FMM_SMALL_CASE_1V)
FMM_SMALL_AVX512_STACK(fmm_stack_d_avx512_x, fmm_dblk_avx512_x, double,
                       2, __mmask8, FMM_SMALL_CASE_1V)

/* Entry points (B with unit column stride): narrow C takes a narrower body. */
#define FMM_SMALL_AVX512_ENTRY(NAME, ARGS, CALL, X, Y, Z, T)                   \
    static FMM_T512 void NAME(ARGS)                                            \
    {                                                                          \
        if (n <= 16 / (int)sizeof(T))                                          \
            X CALL;                                                            \
        else if (n <= 32 / (int)sizeof(T))                                     \
            Y CALL;                                                            \
        else                                                                   \
            Z CALL;                                                            \
    }
#define FMM_SMALL_ARGS(T)                                                      \
    ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, T alpha, const T *a,                \
        ptrdiff_t rs_a, ptrdiff_t cs_a, const T *b, ptrdiff_t rs_b, T beta,    \
        T *c, ptrdiff_t rs_c, ptrdiff_t cs_c
#define FMM_SMALL_CALL                                                         \
    (m, n, k, alpha, a, rs_a, cs_a, b, rs_b, beta, c, rs_c, cs_c)
#define FMM_STACK_CALL                                                         \
    (count, m, n, k, alpha, ai, rs_a, cs_a, bs_a, bj, rs_b, bs_b, beta, ci,    \
     rs_c, cs_c, bs_c)

FMM_SMALL_AVX512_ENTRY(fmm_small_s_avx512, FMM_SMALL_ARGS(float),
                       FMM_SMALL_CALL, fmm_small_s_avx512_y,
                       fmm_small_s_avx512_y, fmm_small_s_avx512_z, float)
FMM_SMALL_AVX512_ENTRY(fmm_small_d_avx512, FMM_SMALL_ARGS(double),
                       FMM_SMALL_CALL, fmm_small_d_avx512_y,
                       fmm_small_d_avx512_y, fmm_small_d_avx512_z, double)
FMM_SMALL_AVX512_ENTRY(fmm_stack_s_avx512, FMM_SMALL_STACK_ARGS(float),
                       FMM_STACK_CALL, fmm_stack_s_avx512_x,
                       fmm_stack_s_avx512_y, fmm_stack_s_avx512_z, float)
FMM_SMALL_AVX512_ENTRY(fmm_stack_d_avx512, FMM_SMALL_STACK_ARGS(double),
                       FMM_STACK_CALL, fmm_stack_d_avx512_x,
                       fmm_stack_d_avx512_y, fmm_stack_d_avx512_z, double)

#endif
