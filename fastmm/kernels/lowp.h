/*
 * Low-precision GEMM: int8 x int8 -> int32 and bfloat16 x bfloat16 -> float32.
 *
 *     C := A @ B  (+ C when accumulating over k blocks)
 *
 * One packed layout serves both: k is split into groups of G elements that
 * one 32-bit lane holds (G = 4 int8, G = 2 bfloat16), so a micro-kernel step
 * broadcasts one dword of A per row and multiplies it into NR lanes of B:
 *
 *   packed A micro-panel, per group g:  MR dwords, row i = A[i, G*g .. G*g+G)
 *   packed B micro-panel, per group g:  NR dwords, col j = B[G*g .. G*g+G, j]
 *
 * k is zero-padded to a multiple of G, rows past m and columns past n are
 * zero-padded: padding contributes exact zeros.
 *
 * int8: vpdpbusd multiplies unsigned bytes (A) by signed bytes (B).  Signed A
 * is packed as A' = A + 128 (a XOR of the top bit), unsigned B as B' = B - 128,
 * and the write-back adds the exact correction
 *     A @ B = A' @ B' + 128 uB rowsum(A) - 128 sA colsum(B) + 128^2 sA uB k
 * (sA: A signed, uB: B unsigned), all in wrapping int32 arithmetic, so the
 * result equals the exact sum modulo 2^32: numpy's int32 matmul, bit for bit.
 *
 * bfloat16: vdpbf16ps multiplies pairs and accumulates in float32 (the
 * instruction flushes denormals and rounds to nearest even).  float32
 * operands are rounded to bfloat16 (nearest even) while packing.
 *
 * Kernels: AMX tiles (lowp_amx.h: the same B panels, A rearranged into
 * tiles), AVX512-VNNI and AVX512-BF16 (12 x 32), AVX2 + FMA (lowp_avx2.h),
 * and portable C with the same layout (any CPU); the loops around them are
 * driver/_lowp.h.  No AVX-VNNI (256-bit) kernel: no machine to test one.
 */
#ifndef FASTMM_LOWP_H
#define FASTMM_LOWP_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#include "driver/_parallel.h"

#define FMM_LP_MR 12
#define FMM_LP_NR 32
/* Block sizes in k elements and rows/columns.  The packed A block (MC x KC
 * bytes or halfwords) stays in a 1-2 MiB L2, one B micro-panel (KC x 32) in
 * L1/L2, as for float32 (fastmm/_cpu.py) at the same byte sizes. */
#define FMM_I8_KC 1024
#define FMM_BF_KC 512
#define FMM_BF_WIDE_KC 384      /* wide panels (below): twice the bytes a k step */
#define FMM_LP_MC 384
#define FMM_LP_NC 4096

/* Source element kinds the packers read. */
enum { FMM_SRC_I8 = 0, FMM_SRC_U8 = 1, FMM_SRC_BF16 = 2, FMM_SRC_F32 = 3 };

static inline uint16_t fmm_f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u)          /* NaN: keep it a NaN */
        return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);               /* round to nearest even */
    return (uint16_t)(u >> 16);
}

static inline float fmm_bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* One element of a source matrix as the packed lane wants it: the byte
 * (offset applied) or the bfloat16 bits.  Always inlined with a constant
 * kind, so each packer below is compiled once per kind without a switch in
 * its loops. */
__attribute__((always_inline)) static inline uint32_t
fmm_lp_load(const char *p, int kind, uint32_t flip)
{
    switch (kind) {
    case FMM_SRC_I8:
    case FMM_SRC_U8:
        return (uint32_t)(*(const uint8_t *)p ^ flip);
    case FMM_SRC_BF16:
        return *(const uint16_t *)p;
    default:
        return fmm_f32_to_bf16(*(const float *)p);
    }
}

#if defined(__SSE2__)
static inline __m128i fmm_lp_bf16x4(const char *p)
{
    /* four float32 -> bfloat16 bits in the low halves, as fmm_f32_to_bf16 */
    const __m128i u = _mm_loadu_si128((const __m128i *)p);
    const __m128i nan = _mm_cmpgt_epi32(
        _mm_and_si128(u, _mm_set1_epi32(0x7fffffff)), _mm_set1_epi32(0x7f800000));
    __m128i r = _mm_add_epi32(u, _mm_add_epi32(_mm_set1_epi32(0x7fff),
        _mm_and_si128(_mm_srli_epi32(u, 16), _mm_set1_epi32(1))));
    r = _mm_srli_epi32(r, 16);
    const __m128i q = _mm_or_si128(_mm_srli_epi32(u, 16), _mm_set1_epi32(0x40));
    return _mm_or_si128(_mm_and_si128(nan, q), _mm_andnot_si128(nan, r));
}

static inline __m128i fmm_lp_widen8(__m128i v, int sign, int hi)
{
    /* 8 of the 16 bytes of v (low or high half) as int16 */
    if (sign)
        return _mm_srai_epi16(hi ? _mm_unpackhi_epi8(v, v)
                                 : _mm_unpacklo_epi8(v, v), 8);
    return hi ? _mm_unpackhi_epi8(v, _mm_setzero_si128())
              : _mm_unpacklo_epi8(v, _mm_setzero_si128());
}

/* w's four lanes down one row of a packed A micro-panel (MR apart) */
static inline void fmm_lp_scatter4(uint32_t *d, __m128i w)
{
    d[0] = (uint32_t)_mm_cvtsi128_si32(w);
    d[FMM_LP_MR] = (uint32_t)_mm_cvtsi128_si32(
        _mm_shuffle_epi32(w, _MM_SHUFFLE(1, 1, 1, 1)));
    d[2 * FMM_LP_MR] = (uint32_t)_mm_cvtsi128_si32(
        _mm_shuffle_epi32(w, _MM_SHUFFLE(2, 2, 2, 2)));
    d[3 * FMM_LP_MR] = (uint32_t)_mm_cvtsi128_si32(
        _mm_shuffle_epi32(w, _MM_SHUFFLE(3, 3, 3, 3)));
}

static inline void fmm_lp_colsum16(int32_t *cs, __m128i s16lo, __m128i s16hi)
{
    /* cs[0..16) += the int16 sums (|sum| <= 4 * 255) as int32 */
    __m128i *d = (__m128i *)cs;
    _mm_storeu_si128(d + 0, _mm_add_epi32(_mm_loadu_si128(d + 0),
        _mm_srai_epi32(_mm_unpacklo_epi16(s16lo, s16lo), 16)));
    _mm_storeu_si128(d + 1, _mm_add_epi32(_mm_loadu_si128(d + 1),
        _mm_srai_epi32(_mm_unpackhi_epi16(s16lo, s16lo), 16)));
    _mm_storeu_si128(d + 2, _mm_add_epi32(_mm_loadu_si128(d + 2),
        _mm_srai_epi32(_mm_unpacklo_epi16(s16hi, s16hi), 16)));
    _mm_storeu_si128(d + 3, _mm_add_epi32(_mm_loadu_si128(d + 3),
        _mm_srai_epi32(_mm_unpackhi_epi16(s16hi, s16hi), 16)));
}
#endif

/* A (rows x kc at src, strides in bytes) into one packed A micro-panel of
 * MR rows; G = 4 (bytes) or 2 (halfwords).  With rows contiguous (the
 * common C-ordered A) a group is one unaligned dword load. */
__attribute__((always_inline)) static inline void
fmm_lp_pack_a_kind(const char *src, ptrdiff_t rs, ptrdiff_t cs,
                   ptrdiff_t rows, ptrdiff_t kc, const int kind,
                   uint32_t flip, uint32_t *dst)
{
    const int G = kind >= FMM_SRC_BF16 ? 2 : 4, bits = 32 / G;
    const ptrdiff_t size = kind == FMM_SRC_F32 ? 4 : kind == FMM_SRC_BF16 ? 2 : 1;
    ptrdiff_t full = kc / G, groups = (kc + G - 1) / G;
    uint32_t flip4 = flip * 0x01010101u;
    for (ptrdiff_t i = 0; i < FMM_LP_MR; i++) {
        const char *row = src + i * rs;
        ptrdiff_t g = 0;
        if (i >= rows) {
            for (; g < groups; g++)
                dst[g * FMM_LP_MR + i] = 0;
            continue;
        }
        if (cs == size && kind != FMM_SRC_F32)
            for (; g < full; g++) {
                uint32_t w;
                memcpy(&w, row + g * 4, 4);
                dst[g * FMM_LP_MR + i] = w ^ flip4;
            }
#if defined(__SSE2__)
        if (cs == size && kind == FMM_SRC_F32)
            for (; g + 4 <= full; g += 4) {
                /* 8 floats -> 4 pairs: the rounded bfloat16 bits of the
                 * even element in the low half of each 64-bit lane's low
                 * dword, the odd one's moved up from the high dword */
                __m128i lo = fmm_lp_bf16x4(row + g * 8);
                __m128i hi = fmm_lp_bf16x4(row + g * 8 + 16);
                lo = _mm_or_si128(lo, _mm_srli_epi64(lo, 16));
                hi = _mm_or_si128(hi, _mm_srli_epi64(hi, 16));
                const __m128i w = _mm_unpacklo_epi64(
                    _mm_shuffle_epi32(lo, _MM_SHUFFLE(3, 3, 2, 0)),
                    _mm_shuffle_epi32(hi, _MM_SHUFFLE(3, 3, 2, 0)));
                fmm_lp_scatter4(dst + g * FMM_LP_MR + i, w);
            }
#endif
        for (; g < groups; g++) {
            uint32_t word = 0;
            for (int q = 0; q < G && g * G + q < kc; q++)
                word |= fmm_lp_load(row + (g * G + q) * cs, kind, flip)
                        << (bits * q);
            dst[g * FMM_LP_MR + i] = word;
        }
    }
}

/* B (kc x cols at src) into one packed B micro-panel of NR columns; for int8
 * also colsum[j] = sum of B[:, j] (the correction for signed A). */
__attribute__((always_inline)) static inline void
fmm_lp_pack_b_kind(const char *src, ptrdiff_t rs, ptrdiff_t cs, ptrdiff_t kc,
                   ptrdiff_t cols, const int kind, uint32_t flip,
                   uint32_t *dst, int32_t *colsum)
{
    const int G = kind >= FMM_SRC_BF16 ? 2 : 4, bits = 32 / G;
    const ptrdiff_t size = kind == FMM_SRC_F32 ? 4 : kind == FMM_SRC_BF16 ? 2 : 1;
    ptrdiff_t groups = (kc + G - 1) / G;
    for (ptrdiff_t g = 0; g < groups; g++) {
        uint32_t *out = dst + g * FMM_LP_NR;
        ptrdiff_t qn = kc - g * G < G ? kc - g * G : G;
        const char *r0 = src + g * G * rs;
        if (qn == G && cols == FMM_LP_NR && cs == size) {
            /* rows contiguous (C-ordered B): G rows of NR columns at once,
             * a loop the compiler vectorises */
            for (ptrdiff_t j = 0; j < FMM_LP_NR; j++) {
                uint32_t word = 0;
                for (int q = 0; q < G; q++)
                    word |= fmm_lp_load(r0 + q * rs + j * size, kind, flip)
                            << (bits * q);
                out[j] = word;
            }
        } else {
            for (ptrdiff_t j = 0; j < FMM_LP_NR; j++) {
                uint32_t word = 0;
                if (j < cols)
                    for (int q = 0; q < qn; q++)
                        word |= fmm_lp_load(r0 + q * rs + j * cs, kind, flip)
                                << (bits * q);
                out[j] = word;
            }
        }
        if (colsum != NULL) {
            /* the original bytes back; k padding stays zero */
            uint32_t valid = qn == 4 ? 0xffffffffu : (1u << (8 * qn)) - 1u;
            for (ptrdiff_t j = 0; j < FMM_LP_NR; j++) {
                uint32_t w = (out[j] ^ (flip * 0x01010101u)) & valid;
                int32_t s = 0;
                for (int q = 0; q < 4; q++)   /* padding bytes are zero */
                    s += kind == FMM_SRC_I8 ? (int32_t)(int8_t)(w >> (8 * q))
                                            : (int32_t)(uint8_t)(w >> (8 * q));
                colsum[j] += j < cols ? s : 0;
            }
        }
    }
}

static void fmm_lp_pack_a(const char *src, ptrdiff_t rs, ptrdiff_t cs,
                          ptrdiff_t rows, ptrdiff_t kc, int kind,
                          uint32_t flip, uint32_t *dst)
{
    switch (kind) {
    case FMM_SRC_I8:
        fmm_lp_pack_a_kind(src, rs, cs, rows, kc, FMM_SRC_I8, flip, dst);
        break;
    case FMM_SRC_U8:
        fmm_lp_pack_a_kind(src, rs, cs, rows, kc, FMM_SRC_U8, flip, dst);
        break;
    case FMM_SRC_BF16:
        fmm_lp_pack_a_kind(src, rs, cs, rows, kc, FMM_SRC_BF16, 0, dst);
        break;
    default:
        fmm_lp_pack_a_kind(src, rs, cs, rows, kc, FMM_SRC_F32, 0, dst);
    }
}

static void fmm_lp_pack_b(const char *src, ptrdiff_t rs, ptrdiff_t cs,
                          ptrdiff_t kc, ptrdiff_t cols, int kind,
                          uint32_t flip, uint32_t *dst, int32_t *colsum)
{
    switch (kind) {
    case FMM_SRC_I8:
        fmm_lp_pack_b_kind(src, rs, cs, kc, cols, FMM_SRC_I8, flip, dst,
                           colsum);
        break;
    case FMM_SRC_U8:
        fmm_lp_pack_b_kind(src, rs, cs, kc, cols, FMM_SRC_U8, flip, dst,
                           colsum);
        break;
    case FMM_SRC_BF16:
        fmm_lp_pack_b_kind(src, rs, cs, kc, cols, FMM_SRC_BF16, 0, dst, NULL);
        break;
    default:
        fmm_lp_pack_b_kind(src, rs, cs, kc, cols, FMM_SRC_F32, 0, dst, NULL);
    }
}

/* "Wide" bfloat16 panels, for kernels that multiply in float32 (AVX2): one
 * element a 32-bit lane, the bfloat16 bits in its top half (the float32 of
 * the same value), so a group is one k step and the panels have the float32
 * kernels' layout: A micro-panel dst[p * MR + i], B dst[p * NR + j].  kind:
 * FMM_SRC_BF16, or FMM_SRC_F32 rounded to bfloat16 as fmm_f32_to_bf16. */
static inline uint32_t fmm_lp_wide(const char *p, int kind)
{
    return (uint32_t)(kind == FMM_SRC_BF16 ? *(const uint16_t *)p
                                           : fmm_f32_to_bf16(*(const float *)p))
           << 16;
}

#if defined(__SSE2__)
/* 4 elements at p (contiguous) as wide lanes */
static inline __m128i fmm_lp_wide4(const char *p, int kind)
{
    if (kind == FMM_SRC_BF16)
        return _mm_unpacklo_epi16(_mm_setzero_si128(),
                                  _mm_loadl_epi64((const __m128i *)p));
    return _mm_slli_epi32(fmm_lp_bf16x4(p), 16);
}
#endif

static void fmm_lp_pack_a_wide(const char *src, ptrdiff_t rs, ptrdiff_t cs,
                               ptrdiff_t rows, ptrdiff_t kc, int kind,
                               uint32_t *dst)
{
    const ptrdiff_t size = kind == FMM_SRC_F32 ? 4 : 2;
    for (ptrdiff_t i = 0; i < FMM_LP_MR; i++) {
        const char *row = src + i * rs;
        ptrdiff_t p = 0;
        if (i >= rows) {
            for (; p < kc; p++)
                dst[p * FMM_LP_MR + i] = 0;
            continue;
        }
#if defined(__SSE2__)
        if (cs == size)
            for (; p + 4 <= kc; p += 4) {
                const __m128i w = fmm_lp_wide4(row + p * size, kind);
                fmm_lp_scatter4(dst + p * FMM_LP_MR + i, w);
            }
#endif
        for (; p < kc; p++)
            dst[p * FMM_LP_MR + i] = fmm_lp_wide(row + p * cs, kind);
    }
}

/* One B micro-panel of NR columns (cols of them real), any strides. */
static void fmm_lp_pack_b_wide(const char *src, ptrdiff_t rs, ptrdiff_t cs,
                               ptrdiff_t kc, ptrdiff_t cols, int kind,
                               uint32_t *dst)
{
    for (ptrdiff_t p = 0; p < kc; p++)
        for (ptrdiff_t j = 0; j < FMM_LP_NR; j++)
            dst[p * FMM_LP_NR + j] =
                j < cols ? fmm_lp_wide(src + p * rs + j * cs, kind) : 0;
}

/* C-ordered B: all nc columns of a k block, into ceil(nc/NR) micro-panels
 * of kc steps at dst, each row read once as a run (as fmm_lp_pack_b_rows). */
static void fmm_lp_pack_b_rows_wide(const char *src, ptrdiff_t rs,
                                    ptrdiff_t kc, ptrdiff_t nc, int kind,
                                    uint32_t *dst)
{
    const ptrdiff_t size = kind == FMM_SRC_F32 ? 4 : 2;
    const ptrdiff_t ncp = (nc + FMM_LP_NR - 1) / FMM_LP_NR * FMM_LP_NR;
    for (ptrdiff_t p = 0; p < kc; p++) {
        const char *r = src + p * rs;
        ptrdiff_t j = 0;
#if defined(__SSE2__)
        for (; j + 8 <= nc; j += 8) {      /* NR is a multiple of 8 */
            __m128i *d = (__m128i *)(dst + (j / FMM_LP_NR) * kc * FMM_LP_NR +
                                     p * FMM_LP_NR + j % FMM_LP_NR);
            _mm_storeu_si128(d, fmm_lp_wide4(r + j * size, kind));
            _mm_storeu_si128(d + 1, fmm_lp_wide4(r + (j + 4) * size, kind));
        }
#endif
        for (; j < ncp; j++)
            dst[(j / FMM_LP_NR) * kc * FMM_LP_NR + p * FMM_LP_NR +
                j % FMM_LP_NR] = j < nc ? fmm_lp_wide(r + j * size, kind) : 0;
    }
}

/* ---- micro-kernels: the first `rows` rows (<= MR) of a C tile (MR x NR,
 * row stride ldc) from `groups` groups of packed A and B; acc != 0 adds to
 * C.  int8: + rowc[i] + colc[j].  Rows past `rows` are neither read nor
 * written. ---- */

static void fmm_i8_ukr_ref(ptrdiff_t groups, const uint32_t *a,
                           const uint32_t *b, int32_t *c, ptrdiff_t ldc,
                           int acc, const int32_t *rowc, const int32_t *colc,
                           int rows)
{
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < FMM_LP_NR; j++) {
            uint32_t s = (uint32_t)rowc[i] + (uint32_t)colc[j];
            for (ptrdiff_t g = 0; g < groups; g++) {
                uint32_t x = a[g * FMM_LP_MR + i], y = b[g * FMM_LP_NR + j];
                for (int q = 0; q < 4; q++)
                    s += (uint32_t)((int32_t)(uint8_t)(x >> (8 * q)) *
                                    (int32_t)(int8_t)(y >> (8 * q)));
            }
            int32_t *cij = c + i * ldc + j;
            *cij = (int32_t)(acc ? s + (uint32_t)*cij : s);
        }
}

static void fmm_bf_ukr_ref(ptrdiff_t groups, const uint32_t *a,
                           const uint32_t *b, float *c, ptrdiff_t ldc,
                           int acc, int rows)
{
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < FMM_LP_NR; j++) {
            /* this block's sum first, C added last, as the AVX512-BF16
             * kernel does: the driver's private-tile path (edge columns,
             * strided C) adds the block to C the same way, so every layout
             * of C gets the same bits */
            float s = 0.0f;
            for (ptrdiff_t g = 0; g < groups; g++) {
                uint32_t x = a[g * FMM_LP_MR + i], y = b[g * FMM_LP_NR + j];
                s += fmm_bf16_to_f32((uint16_t)x) * fmm_bf16_to_f32((uint16_t)y)
                     + fmm_bf16_to_f32((uint16_t)(x >> 16)) *
                           fmm_bf16_to_f32((uint16_t)(y >> 16));
            }
            c[i * ldc + j] = acc ? c[i * ldc + j] + s : s;
        }
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#include <cpuid.h>
#define FMM_LP_X86 1

#define FMM_TARGET_VNNI \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))
#define FMM_TARGET_BF16 \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

/* The 24 accumulators are named variables, updated by inline asm: GCC 12
 * copies every accumulator through a fresh register and a stack slot on each
 * vpdpbusd / vdpbf16ps intrinsic (destructive three-operand instructions),
 * and the kernels ran at half speed.  "+v" keeps each in its zmm register. */
#define FMM_DPBUSD(acc, x, y) \
    __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(x), "v"(y))
#define FMM_DPBF16(acc, x, y) \
    __asm__("vdpbf16ps %2, %1, %0" : "+v"(acc) : "v"(x), "v"(y))

/* C tile prefetch, as the float kernels do (kernels/avx512.h): on entry,
 * and again this many groups before the end, since the streamed panels
 * evict the lines meanwhile (both ends of each 128-byte row). */
#define FMM_LP_C_AHEAD 64
static inline void fmm_lp_prefetch_c(const void *c, ptrdiff_t ldc, int rows)
{
    const char *ci = (const char *)c;
    for (int i = 0; i < rows; i++, ci += 4 * ldc) {
        _mm_prefetch(ci, _MM_HINT_T0);
        _mm_prefetch(ci + 4 * FMM_LP_NR - 1, _MM_HINT_T0);
    }
}

/* The kernels for 4, 8 and 12 rows of C, from one body (lowp_body.h): the
 * last strip of an A block often has fewer than 12 rows (m = 32 and 64 end
 * in 8 and 4), and the 12-row kernel spent a full strip's dot products on
 * it (int8 32 x 1024 @ 1024 x 1024 took as long as 36 rows). */
#define FMM_LP_ROWS(X) X(0) X(1) X(2) X(3)
#define FMM_LP_I8 fmm_i8_ukr_vnni_4
#define FMM_LP_BF fmm_bf_ukr_avx512_4
#include "lowp_body.h"
#define FMM_LP_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)
#define FMM_LP_I8 fmm_i8_ukr_vnni_8
#define FMM_LP_BF fmm_bf_ukr_avx512_8
#include "lowp_body.h"
#define FMM_LP_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) \
    X(10) X(11)
#define FMM_LP_I8 fmm_i8_ukr_vnni_12
#define FMM_LP_BF fmm_bf_ukr_avx512_12
#include "lowp_body.h"

FMM_TARGET_VNNI static void
fmm_i8_ukr_vnni(ptrdiff_t groups, const uint32_t *a, const uint32_t *b,
                int32_t *c, ptrdiff_t ldc, int acc_c, const int32_t *rowc,
                const int32_t *colc, int rows)
{
    if (rows <= 4)
        fmm_i8_ukr_vnni_4(groups, a, b, c, ldc, acc_c, rowc, colc, rows);
    else if (rows <= 8)
        fmm_i8_ukr_vnni_8(groups, a, b, c, ldc, acc_c, rowc, colc, rows);
    else
        fmm_i8_ukr_vnni_12(groups, a, b, c, ldc, acc_c, rowc, colc, rows);
}

FMM_TARGET_BF16 static void
fmm_bf_ukr_avx512(ptrdiff_t groups, const uint32_t *a, const uint32_t *b,
                  float *c, ptrdiff_t ldc, int acc_c, int rows)
{
    if (rows <= 4)
        fmm_bf_ukr_avx512_4(groups, a, b, c, ldc, acc_c, rows);
    else if (rows <= 8)
        fmm_bf_ukr_avx512_8(groups, a, b, c, ldc, acc_c, rows);
    else
        fmm_bf_ukr_avx512_12(groups, a, b, c, ldc, acc_c, rows);
}

static int fmm_lp_os_avx512(void)
{
    unsigned int a, b, c, d, lo, hi;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_OSXSAVE))
        return 0;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (lo & 0xE6) == 0xE6;
}

static int fmm_cpu_has_vnni512(void)
{
    unsigned int a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return 0;
    return (b & bit_AVX512F) && (b & bit_AVX512BW) && (b & bit_AVX512VL) &&
           (c & bit_AVX512VNNI) && fmm_lp_os_avx512();
}

static int fmm_cpu_has_bf16_512(void)
{
    unsigned int a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return 0;
    if (!(b & bit_AVX512F) || !(b & bit_AVX512BW) || !(b & bit_AVX512VL))
        return 0;
    if (!__get_cpuid_count(7, 1, &a, &b, &c, &d) || !(a & bit_AVX512BF16))
        return 0;
    return fmm_lp_os_avx512();
}

#include "lowp_avx2.h"
#include "lowp_amx.h"
#endif

/* ---- kernel choice: "avx512" (VNNI / BF16 where the CPU has them, AVX2
 * where not), "avx2" or "generic"; each dtype falls back on its own ---- */
typedef void (*fmm_i8_ukr_t)(ptrdiff_t, const uint32_t *, const uint32_t *,
                             int32_t *, ptrdiff_t, int, const int32_t *,
                             const int32_t *, int);
typedef void (*fmm_bf_ukr_t)(ptrdiff_t, const uint32_t *, const uint32_t *,
                             float *, ptrdiff_t, int, int);

/* i8_cost, bf_cost: the time of one multiply-add in units of a float32 FMA
 * of the packed float32 kernels, as measured (1 thread, n = 1024: AVX2 on
 * Zen 3 int8 103 GOP/s, bfloat16 72 GFLOP/s, portable C 2.9 and 2.4, float32
 * 93); the thread count follows the product's cost in those units. */
typedef struct {
    const char *i8_name, *bf_name;
    fmm_i8_ukr_t i8;
    fmm_bf_ukr_t bf;
    double i8_cost, bf_cost;
    int bf_wide;            /* the bfloat16 kernel reads wide panels */
    int amx;                /* AMX tiles: A packed in their layout, tile
                             * shapes configured around the loops */
} fmm_lp_kernels_t;

#define FMM_LP_COST_VNNI 0.25        /* 4 multiply-adds a 32-bit lane */
#define FMM_LP_COST_BF512 0.5        /* 2 a lane */
#define FMM_LP_COST_I8_AVX2 0.9
#define FMM_LP_COST_BF_AVX2 1.0
#define FMM_LP_COST_I8_REF 32.0
#define FMM_LP_COST_BF_REF 39.0
/* AMX on one core of an Intel Xeon with AMX (KVM), n = 1024..2048: int8
 * 1.7-1.9 TOP/s, bfloat16 0.9-0.96 TFLOP/s, float32 ~180 GFLOP/s */
#define FMM_LP_COST_AMX_I8 0.1
#define FMM_LP_COST_AMX_BF 0.2
static const fmm_lp_kernels_t fmm_lp_generic = {
    "generic", "generic", fmm_i8_ukr_ref, fmm_bf_ukr_ref,
    FMM_LP_COST_I8_REF, FMM_LP_COST_BF_REF, 0};
#ifdef FMM_LP_X86
static const fmm_lp_kernels_t fmm_lp_vnni_bf16 = {
    "avx512-vnni", "avx512-bf16", fmm_i8_ukr_vnni, fmm_bf_ukr_avx512,
    FMM_LP_COST_VNNI, FMM_LP_COST_BF512, 0};
static const fmm_lp_kernels_t fmm_lp_vnni_only = {
    "avx512-vnni", "generic", fmm_i8_ukr_vnni, fmm_bf_ukr_ref,
    FMM_LP_COST_VNNI, FMM_LP_COST_BF_REF, 0};
static const fmm_lp_kernels_t fmm_lp_bf16_only = {
    "avx2", "avx512-bf16", fmm_i8_ukr_avx2, fmm_bf_ukr_avx512,
    FMM_LP_COST_I8_AVX2, FMM_LP_COST_BF512, 0};
static const fmm_lp_kernels_t fmm_lp_avx2 = {
    "avx2", "avx2", fmm_i8_ukr_avx2, fmm_bf_ukr_avx2,
    FMM_LP_COST_I8_AVX2, FMM_LP_COST_BF_AVX2, 1};
static const fmm_lp_kernels_t fmm_lp_vnni_avx2 = {
    "avx512-vnni", "avx2", fmm_i8_ukr_vnni, fmm_bf_ukr_avx2,
    FMM_LP_COST_VNNI, FMM_LP_COST_BF_AVX2, 1};
#ifdef FMM_LP_AMX
static const fmm_lp_kernels_t fmm_lp_amx = {
    "amx-int8", "amx-bf16", fmm_i8_ukr_amx, fmm_bf_ukr_amx,
    FMM_LP_COST_AMX_I8, FMM_LP_COST_AMX_BF, 0, 1};
#endif
#endif
static const fmm_lp_kernels_t *fmm_lp_active = &fmm_lp_generic;
/* AMX where the CPU has it (0: the AVX-512 kernels instead, for tests) */
static int fmm_lp_amx_allowed = 1;

/* Whether the AMX kernels are built and this CPU and OS run them. */
static int fmm_lp_amx_runnable(void)
{
#ifdef FMM_LP_AMX
    return fmm_cpu_has_amx();
#else
    return 0;
#endif
}

/* isa: the kernel family in force ("avx512", "avx2", "generic"); the low-
 * precision kernels follow it (capped at what the CPU has). */
static void fmm_lp_select(const char *isa)
{
    const fmm_lp_kernels_t *k = &fmm_lp_generic;
#ifdef FMM_LP_X86
    /* every AVX-512 CPU has AVX2 and FMA; the check is for a family
     * forced on a CPU without them, which runs the portable kernels */
    int x = isa && (strcmp(isa, "avx512") == 0 || strcmp(isa, "avx2") == 0)
            && fmm_cpu_has_avx2_fma();
    if (isa && strcmp(isa, "avx512") == 0) {
        int v = fmm_cpu_has_vnni512(), h = fmm_cpu_has_bf16_512();
#ifdef FMM_LP_AMX
        if (fmm_lp_amx_allowed && fmm_cpu_has_amx())
            k = &fmm_lp_amx;
        else
#endif
        k = v && h ? &fmm_lp_vnni_bf16
            : v ? (x ? &fmm_lp_vnni_avx2 : &fmm_lp_vnni_only)
            : h ? &fmm_lp_bf16_only : x ? &fmm_lp_avx2 : &fmm_lp_generic;
    } else if (x) {
        k = &fmm_lp_avx2;
    }
#endif
    fmm_publish_config((const void **)&fmm_lp_active, k);
}

static const fmm_lp_kernels_t *fmm_lp_kernels(void)
{
    return (const fmm_lp_kernels_t *)fmm_load_config(
        (const void *const *)&fmm_lp_active);
}

/* C-ordered B (rows contiguous): all nc columns of a k block at once, into
 * the ceil(nc/NR) micro-panels of `groups` groups at dst.  Each group of G
 * rows is read once as runs of nc elements, which the hardware prefetchers
 * follow; the per-panel packer above reads a row NR elements at a time, one
 * row stride apart, at memory latency.  SSE2 (the x86-64 baseline) moves 16
 * columns per step: byte or halfword interleaves for int8 and bfloat16, the
 * rounding of fmm_f32_to_bf16 in integer lanes for float32.  colsum (int8
 * with signed A; nc entries, zeroed by the caller) gets the column sums of
 * the original bytes. */

__attribute__((always_inline)) static inline void
fmm_lp_pack_b_rows_kind(const char *src, ptrdiff_t rs, ptrdiff_t kc,
                        ptrdiff_t nc, const int kind, uint32_t flip,
                        uint32_t *dst, ptrdiff_t groups, int32_t *colsum)
{
    const int G = kind >= FMM_SRC_BF16 ? 2 : 4, bits = 32 / G;
    const ptrdiff_t size = kind == FMM_SRC_F32 ? 4 : kind == FMM_SRC_BF16 ? 2 : 1;
    const ptrdiff_t ncp = (nc + FMM_LP_NR - 1) / FMM_LP_NR * FMM_LP_NR;
    for (ptrdiff_t g = 0; g < groups; g++) {
        const ptrdiff_t qn = kc - g * G < G ? kc - g * G : G;
        const char *r0 = src + g * G * rs;
        ptrdiff_t j = 0;
#if defined(__SSE2__)
        if (qn == G)
            for (; j + 16 <= nc; j += 16) {
                uint32_t *out = dst + (j / FMM_LP_NR) * groups * FMM_LP_NR +
                                g * FMM_LP_NR + j % FMM_LP_NR;
                __m128i w0, w1, w2, w3;
                if (kind == FMM_SRC_I8 || kind == FMM_SRC_U8) {
                    const __m128i f = _mm_set1_epi8((char)flip);
                    __m128i x0 = _mm_loadu_si128((const __m128i *)(r0 + j));
                    __m128i x1 = _mm_loadu_si128((const __m128i *)(r0 + rs + j));
                    __m128i x2 = _mm_loadu_si128((const __m128i *)(r0 + 2 * rs + j));
                    __m128i x3 = _mm_loadu_si128((const __m128i *)(r0 + 3 * rs + j));
                    if (colsum != NULL) {
                        const int sg = kind == FMM_SRC_I8;
                        __m128i lo = _mm_add_epi16(
                            _mm_add_epi16(fmm_lp_widen8(x0, sg, 0), fmm_lp_widen8(x1, sg, 0)),
                            _mm_add_epi16(fmm_lp_widen8(x2, sg, 0), fmm_lp_widen8(x3, sg, 0)));
                        __m128i hi = _mm_add_epi16(
                            _mm_add_epi16(fmm_lp_widen8(x0, sg, 1), fmm_lp_widen8(x1, sg, 1)),
                            _mm_add_epi16(fmm_lp_widen8(x2, sg, 1), fmm_lp_widen8(x3, sg, 1)));
                        fmm_lp_colsum16(colsum + j, lo, hi);
                    }
                    x0 = _mm_xor_si128(x0, f);
                    x1 = _mm_xor_si128(x1, f);
                    x2 = _mm_xor_si128(x2, f);
                    x3 = _mm_xor_si128(x3, f);
                    const __m128i t0 = _mm_unpacklo_epi8(x0, x1);
                    const __m128i t1 = _mm_unpackhi_epi8(x0, x1);
                    const __m128i t2 = _mm_unpacklo_epi8(x2, x3);
                    const __m128i t3 = _mm_unpackhi_epi8(x2, x3);
                    w0 = _mm_unpacklo_epi16(t0, t2);
                    w1 = _mm_unpackhi_epi16(t0, t2);
                    w2 = _mm_unpacklo_epi16(t1, t3);
                    w3 = _mm_unpackhi_epi16(t1, t3);
                } else if (kind == FMM_SRC_BF16) {
                    const __m128i a0 = _mm_loadu_si128((const __m128i *)(r0 + 2 * j));
                    const __m128i a1 = _mm_loadu_si128((const __m128i *)(r0 + 2 * j + 16));
                    const __m128i b0 = _mm_loadu_si128((const __m128i *)(r0 + rs + 2 * j));
                    const __m128i b1 = _mm_loadu_si128((const __m128i *)(r0 + rs + 2 * j + 16));
                    w0 = _mm_unpacklo_epi16(a0, b0);
                    w1 = _mm_unpackhi_epi16(a0, b0);
                    w2 = _mm_unpacklo_epi16(a1, b1);
                    w3 = _mm_unpackhi_epi16(a1, b1);
                } else {
                    const char *p0 = r0 + 4 * j, *p1 = r0 + rs + 4 * j;
                    w0 = _mm_or_si128(fmm_lp_bf16x4(p0),
                                      _mm_slli_epi32(fmm_lp_bf16x4(p1), 16));
                    w1 = _mm_or_si128(fmm_lp_bf16x4(p0 + 16),
                                      _mm_slli_epi32(fmm_lp_bf16x4(p1 + 16), 16));
                    w2 = _mm_or_si128(fmm_lp_bf16x4(p0 + 32),
                                      _mm_slli_epi32(fmm_lp_bf16x4(p1 + 32), 16));
                    w3 = _mm_or_si128(fmm_lp_bf16x4(p0 + 48),
                                      _mm_slli_epi32(fmm_lp_bf16x4(p1 + 48), 16));
                }
                _mm_storeu_si128((__m128i *)out + 0, w0);
                _mm_storeu_si128((__m128i *)out + 1, w1);
                _mm_storeu_si128((__m128i *)out + 2, w2);
                _mm_storeu_si128((__m128i *)out + 3, w3);
            }
#endif
        for (; j < ncp; j++) {     /* the rest, the last group, padding */
            uint32_t word = 0;
            int32_t sum = 0;
            if (j < nc)
                for (int q = 0; q < qn; q++) {
                    const char *e = r0 + q * rs + j * size;
                    word |= fmm_lp_load(e, kind, flip) << (bits * q);
                    if (kind == FMM_SRC_I8)
                        sum += *(const int8_t *)e;
                    else if (kind == FMM_SRC_U8)
                        sum += *(const uint8_t *)e;
                }
            dst[(j / FMM_LP_NR) * groups * FMM_LP_NR + g * FMM_LP_NR +
                j % FMM_LP_NR] = word;
            if (colsum != NULL && j < nc)
                colsum[j] += sum;
        }
    }
}

static void fmm_lp_pack_b_rows(const char *src, ptrdiff_t rs, ptrdiff_t kc,
                               ptrdiff_t nc, int kind, uint32_t flip,
                               uint32_t *dst, ptrdiff_t groups,
                               int32_t *colsum)
{
    switch (kind) {
    case FMM_SRC_I8:
        fmm_lp_pack_b_rows_kind(src, rs, kc, nc, FMM_SRC_I8, flip, dst,
                                groups, colsum);
        break;
    case FMM_SRC_U8:
        fmm_lp_pack_b_rows_kind(src, rs, kc, nc, FMM_SRC_U8, flip, dst,
                                groups, colsum);
        break;
    case FMM_SRC_BF16:
        fmm_lp_pack_b_rows_kind(src, rs, kc, nc, FMM_SRC_BF16, 0, dst,
                                groups, NULL);
        break;
    default:
        fmm_lp_pack_b_rows_kind(src, rs, kc, nc, FMM_SRC_F32, 0, dst,
                                groups, NULL);
    }
}

#endif
