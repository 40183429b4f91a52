/*
 * The AVX512-VNNI (int8) and AVX512-BF16 micro-kernels, written once for
 * every row count: lowp.h includes this file once per kernel pair, with
 *
 *   FMM_LP_ROWS(X)  X(0) ... X(R-1): the rows of C this pair computes
 *   FMM_LP_I8, FMM_LP_BF  the two kernels' names
 *
 * defined; they are undefined at the end.  The packed A panel keeps its
 * FMM_LP_MR-row layout whatever R is; each kernel reads and writes only the
 * first `rows` (<= R) rows of C, so the driver may hand it C itself.
 */
#define FMM_LP_DECL_I8(i) \
    __m512i c##i##_0 = _mm512_setzero_si512(), c##i##_1 = _mm512_setzero_si512();
#define FMM_LP_DECL_BF(i) \
    __m512 c##i##_0 = _mm512_setzero_ps(), c##i##_1 = _mm512_setzero_ps();

FMM_TARGET_VNNI static void
FMM_LP_I8(ptrdiff_t groups, const uint32_t *a, const uint32_t *b, int32_t *c,
          ptrdiff_t ldc, int acc_c, const int32_t *rowc, const int32_t *colc,
          int rows)
{
    FMM_LP_ROWS(FMM_LP_DECL_I8)
    fmm_lp_prefetch_c(c, ldc, rows);
    for (ptrdiff_t g = 0; g < groups; g++) {
        if (g == groups - FMM_LP_C_AHEAD)
            fmm_lp_prefetch_c(c, ldc, rows);
        __m512i b0 = _mm512_load_si512(b), b1 = _mm512_load_si512(b + 16);
#define FMM_I8_STEP(i)                                                        \
        {                                                                     \
            __m512i ai = _mm512_set1_epi32((int)a[i]);                        \
            FMM_DPBUSD(c##i##_0, ai, b0);                                     \
            FMM_DPBUSD(c##i##_1, ai, b1);                                     \
        }
        FMM_LP_ROWS(FMM_I8_STEP)
#undef FMM_I8_STEP
        a += FMM_LP_MR;
        b += FMM_LP_NR;
    }
    __m512i col0 = _mm512_loadu_si512(colc), col1 = _mm512_loadu_si512(colc + 16);
#define FMM_I8_STORE(i)                                                       \
    if ((i) < rows) {                                                         \
        int32_t *ci = c + (i) * ldc;                                          \
        __m512i r = _mm512_set1_epi32(rowc[i]);                               \
        __m512i r0 = _mm512_add_epi32(c##i##_0, _mm512_add_epi32(r, col0));   \
        __m512i r1 = _mm512_add_epi32(c##i##_1, _mm512_add_epi32(r, col1));   \
        if (acc_c) {                                                          \
            r0 = _mm512_add_epi32(r0, _mm512_loadu_si512(ci));                \
            r1 = _mm512_add_epi32(r1, _mm512_loadu_si512(ci + 16));           \
        }                                                                     \
        _mm512_storeu_si512(ci, r0);                                          \
        _mm512_storeu_si512(ci + 16, r1);                                     \
    }
    FMM_LP_ROWS(FMM_I8_STORE)
#undef FMM_I8_STORE
}

FMM_TARGET_BF16 static void
FMM_LP_BF(ptrdiff_t groups, const uint32_t *a, const uint32_t *b, float *c,
          ptrdiff_t ldc, int acc_c, int rows)
{
    FMM_LP_ROWS(FMM_LP_DECL_BF)
    fmm_lp_prefetch_c(c, ldc, rows);
    for (ptrdiff_t g = 0; g < groups; g++) {
        if (g == groups - FMM_LP_C_AHEAD)
            fmm_lp_prefetch_c(c, ldc, rows);
        __m512i b0 = _mm512_load_si512(b), b1 = _mm512_load_si512(b + 16);
#define FMM_BF_STEP(i)                                                        \
        {                                                                     \
            __m512i ai = _mm512_set1_epi32((int)a[i]);                        \
            FMM_DPBF16(c##i##_0, ai, b0);                                     \
            FMM_DPBF16(c##i##_1, ai, b1);                                     \
        }
        FMM_LP_ROWS(FMM_BF_STEP)
#undef FMM_BF_STEP
        a += FMM_LP_MR;
        b += FMM_LP_NR;
    }
#define FMM_BF_STORE(i)                                                       \
    if ((i) < rows) {                                                         \
        float *ci = c + (i) * ldc;                                            \
        __m512 r0 = c##i##_0, r1 = c##i##_1;                                  \
        if (acc_c) {                                                          \
            r0 = _mm512_add_ps(r0, _mm512_loadu_ps(ci));                      \
            r1 = _mm512_add_ps(r1, _mm512_loadu_ps(ci + 16));                 \
        }                                                                     \
        _mm512_storeu_ps(ci, r0);                                             \
        _mm512_storeu_ps(ci + 16, r1);                                        \
    }
    FMM_LP_ROWS(FMM_BF_STORE)
#undef FMM_BF_STORE
}

#undef FMM_LP_DECL_I8
#undef FMM_LP_DECL_BF
#undef FMM_LP_ROWS
#undef FMM_LP_I8
#undef FMM_LP_BF
