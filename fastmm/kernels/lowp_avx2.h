/*
 * AVX2 + FMA low-precision micro-kernels, for CPUs without AVX512-VNNI /
 * AVX512-BF16 (AMD Zen 2/3, Intel Haswell to Skylake client, and AVX-512
 * parts without those extensions).  They read the packed panels of lowp.h
 * (groups of 4 int8 or 2 bfloat16 per 32-bit lane, MR x NR tiles) as the
 * AVX-512 kernels do and compute the same products, with the same
 * write-back, in passes over sub-tiles small enough for 16 ymm registers.
 * Included by lowp.h.
 *
 * bfloat16: a bfloat16 is the top half of a float32, and products of
 * bfloat16 values are exact in float32, so the kernel multiplies float32
 * with FMA on "wide" panels (lowp.h), packed one element a lane as float32.
 * Splitting the packed pairs in the kernel instead (a shift and a mask per
 * operand vector) ran at 0.75x the float32 kernels' rate on Zen 3; wide
 * panels double the packed bytes, so their k block is half as long.
 * Subnormals are kept (the portable kernel's rule; AVX512-BF16 flushes
 * them).
 *
 * int8: AVX2 has no u8 x s8 dot product that cannot saturate (vpmaddubsw
 * saturates 16-bit pair sums), so bytes are widened to 16 bits (packed A is
 * unsigned, packed B signed: lowp.h) and vpmaddwd forms exact 32-bit pair
 * sums; a column's two pair sums sit in adjacent lanes until the write-back
 * adds them.  Passes of 2 rows x 16 columns: 8 accumulators, 4 widened B
 * vectors.  The sums wrap modulo 2^32 like the VNNI kernel's.
 */
#define FMM_TARGET_LP_AVX2 __attribute__((target("avx2,fma")))

/* bfloat16 on wide panels (lowp.h: one element a lane, as float32), so the
 * loop is a float32 kernel's: passes of 6 rows x 16 columns, 12
 * accumulators, 2 B vectors and a broadcast A element per step. */
FMM_TARGET_LP_AVX2 static void
fmm_bf_ukr_avx2(ptrdiff_t steps, const uint32_t *a, const uint32_t *b,
                float *c, ptrdiff_t ldc, int acc_c, int rows)
{
    for (int r0 = 0; r0 < rows; r0 += 6)
        for (int j0 = 0; j0 < FMM_LP_NR; j0 += 16) {
            __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
            __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
            __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
            __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
            __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
            __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
            const uint32_t *ap = a + r0, *bp = b + j0;
            for (ptrdiff_t p = 0; p < steps; p++) {
                /* integer loads and broadcasts of the uint32 panels: the
                 * same instructions as float ones, without reading the
                 * buffer through a float pointer */
                const __m256 b0 = _mm256_castsi256_ps(
                    _mm256_load_si256((const __m256i *)bp));
                const __m256 b1 = _mm256_castsi256_ps(
                    _mm256_load_si256((const __m256i *)(bp + 8)));
#define FMM_BF2_ROW(i)                                                        \
                {                                                             \
                    const __m256 x = _mm256_castsi256_ps(                     \
                        _mm256_set1_epi32((int)ap[i]));                       \
                    c##i##0 = _mm256_fmadd_ps(x, b0, c##i##0);                \
                    c##i##1 = _mm256_fmadd_ps(x, b1, c##i##1);                \
                }
                FMM_BF2_ROW(0) FMM_BF2_ROW(1) FMM_BF2_ROW(2)
                FMM_BF2_ROW(3) FMM_BF2_ROW(4) FMM_BF2_ROW(5)
#undef FMM_BF2_ROW
                ap += FMM_LP_MR;
                bp += FMM_LP_NR;
            }
            /* this block's sum, then C added: as the other kernels do */
#define FMM_BF2_STORE(i)                                                      \
            if (r0 + (i) < rows) {                                            \
                float *ci = c + (r0 + (i)) * ldc + j0;                        \
                __m256 s0 = c##i##0, s1 = c##i##1;                            \
                if (acc_c) {                                                  \
                    s0 = _mm256_add_ps(s0, _mm256_loadu_ps(ci));              \
                    s1 = _mm256_add_ps(s1, _mm256_loadu_ps(ci + 8));          \
                }                                                             \
                _mm256_storeu_ps(ci, s0);                                     \
                _mm256_storeu_ps(ci + 8, s1);                                 \
            }
            FMM_BF2_STORE(0) FMM_BF2_STORE(1) FMM_BF2_STORE(2)
            FMM_BF2_STORE(3) FMM_BF2_STORE(4) FMM_BF2_STORE(5)
#undef FMM_BF2_STORE
        }
}

/* Columns j .. j+7 of one row from two accumulators of pair sums (columns
 * j .. j+3 and j+4 .. j+7, each column's two sums adjacent). */
FMM_TARGET_LP_AVX2 static inline __m256i
fmm_i8_avx2_cols8(__m256i lo, __m256i hi)
{
    /* hadd: per 128-bit lane [lo0+lo1, lo2+lo3, hi0+hi1, hi2+hi3], i.e.
     * columns 0 1 4 5 | 2 3 6 7; the permute puts them in order */
    return _mm256_permute4x64_epi64(_mm256_hadd_epi32(lo, hi), 0xD8);
}

FMM_TARGET_LP_AVX2 static void
fmm_i8_ukr_avx2(ptrdiff_t groups, const uint32_t *a, const uint32_t *b,
                int32_t *c, ptrdiff_t ldc, int acc_c, const int32_t *rowc,
                const int32_t *colc, int rows)
{
    for (int r0 = 0; r0 < rows; r0 += 2)
        for (int j0 = 0; j0 < FMM_LP_NR; j0 += 16) {
            __m256i s00 = _mm256_setzero_si256(), s01 = _mm256_setzero_si256();
            __m256i s02 = _mm256_setzero_si256(), s03 = _mm256_setzero_si256();
            __m256i s10 = _mm256_setzero_si256(), s11 = _mm256_setzero_si256();
            __m256i s12 = _mm256_setzero_si256(), s13 = _mm256_setzero_si256();
            const uint32_t *ap = a + r0, *bp = b + j0;
            for (ptrdiff_t g = 0; g < groups; g++) {
                /* 4 columns x 4 k of B per vector, as 16-bit words */
                const __m256i w0 = _mm256_cvtepi8_epi16(
                    _mm_load_si128((const __m128i *)bp));
                const __m256i w1 = _mm256_cvtepi8_epi16(
                    _mm_load_si128((const __m128i *)(bp + 4)));
                const __m256i w2 = _mm256_cvtepi8_epi16(
                    _mm_load_si128((const __m128i *)(bp + 8)));
                const __m256i w3 = _mm256_cvtepi8_epi16(
                    _mm_load_si128((const __m128i *)(bp + 12)));
                /* both rows' 4 bytes of A as words, each row's four words
                 * broadcast to every 64-bit lane */
                const __m256i x = _mm256_castsi128_si256(_mm_cvtepu8_epi16(
                    _mm_loadl_epi64((const __m128i *)ap)));
                const __m256i a0 = _mm256_permute4x64_epi64(x, 0x00);
                const __m256i a1 = _mm256_permute4x64_epi64(x, 0x55);
                s00 = _mm256_add_epi32(s00, _mm256_madd_epi16(a0, w0));
                s01 = _mm256_add_epi32(s01, _mm256_madd_epi16(a0, w1));
                s02 = _mm256_add_epi32(s02, _mm256_madd_epi16(a0, w2));
                s03 = _mm256_add_epi32(s03, _mm256_madd_epi16(a0, w3));
                s10 = _mm256_add_epi32(s10, _mm256_madd_epi16(a1, w0));
                s11 = _mm256_add_epi32(s11, _mm256_madd_epi16(a1, w1));
                s12 = _mm256_add_epi32(s12, _mm256_madd_epi16(a1, w2));
                s13 = _mm256_add_epi32(s13, _mm256_madd_epi16(a1, w3));
                ap += FMM_LP_MR;
                bp += FMM_LP_NR;
            }
            const __m256i col0 = _mm256_loadu_si256((const __m256i *)(colc + j0));
            const __m256i col1 = _mm256_loadu_si256((const __m256i *)(colc + j0 + 8));
#define FMM_I82_STORE(i)                                                      \
            if (r0 + (i) < rows) {                                            \
                int32_t *ci = c + (r0 + (i)) * ldc + j0;                      \
                const __m256i r = _mm256_set1_epi32(rowc[r0 + (i)]);          \
                __m256i v0 = _mm256_add_epi32(fmm_i8_avx2_cols8(s##i##0, s##i##1), \
                                              _mm256_add_epi32(r, col0));     \
                __m256i v1 = _mm256_add_epi32(fmm_i8_avx2_cols8(s##i##2, s##i##3), \
                                              _mm256_add_epi32(r, col1));     \
                if (acc_c) {                                                  \
                    v0 = _mm256_add_epi32(v0, _mm256_loadu_si256((const __m256i *)ci)); \
                    v1 = _mm256_add_epi32(v1, _mm256_loadu_si256((const __m256i *)(ci + 8))); \
                }                                                             \
                _mm256_storeu_si256((__m256i *)ci, v0);                       \
                _mm256_storeu_si256((__m256i *)(ci + 8), v1);                 \
            }
            FMM_I82_STORE(0) FMM_I82_STORE(1)
#undef FMM_I82_STORE
        }
}

static int fmm_cpu_has_avx2_fma(void)
{
    unsigned int a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_FMA) ||
        !(c & bit_OSXSAVE))
        return 0;
    unsigned int lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & 0x6) != 0x6)
        return 0;
    return __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & bit_AVX2);
}
