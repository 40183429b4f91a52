/*
 * The unpacked path: products too small or too skinny for packing to pay.
 *
 *     C := alpha * A @ B + beta * C,   A: m x k, B: k x n, C: m x n
 *
 * Same contract as the packed driver (ukernel.h): strides in elements, any
 * sign; beta == 0 never reads C (NaN already there does not leak); alpha == 0
 * or k == 0 does not read A or B; no zero operand is skipped, so NaN and Inf
 * in A or B propagate.  Unlike the packed path nothing is allocated and no
 * thread is started unless the caller asks for more than one.
 *
 *   fmm_small_[sd]gemm   any m, n; register blocks (small_avx512.h,
 *                        small_avx2.h) read B's rows in place when B's
 *                        columns are contiguous (or A's rows are: C^T =
 *                        B^T A^T) and B is small or used by one row block;
 *                        otherwise from KC x 128-byte panels of B copied
 *                        onto the stack (any strides, no cache-set conflicts).
 *   stack_[sd]           `count` products at fixed batch strides, each one
 *                        register block (AVX2: one or two): the block is
 *                        chosen once, so a 4 x 4 product costs ~5-10 ns,
 *                        not the ~27 of a call per product (Zen 4).
 *   m == 1 or n == 1     matrix-vector, bandwidth-bound: "axpy" form (rows
 *                        of the matrix contiguous, streamed four at a time)
 *                        or "dot" form (the matrix's other axis contiguous).
 *
 * The ISA is chosen once (fmm_small_init) with dispatch.h's CPU checks.
 */
#ifndef FASTMM_SMALL_H
#define FASTMM_SMALL_H

#include <stddef.h>
#include <string.h>
#include "dispatch.h"
#include "driver/_parallel.h"

/* A B up to this size (bytes) with unit column stride is read in place by
 * every row block of A; a larger or strided one is copied, FMM_SMALL_KC rows
 * by 128 bytes at a time, onto the stack (see driver/_unpacked.h). */
#define FMM_SMALL_INPLACE_BYTES (128 * 1024)
#define FMM_SMALL_KC 256
/* A B up to this size (bytes) stays in L1 while the loops walk C's blocks a
 * row block at a time, so A, B and C are each read or written once, in
 * address order; a larger B is walked a column slice at a time, which keeps
 * that slice in L1 while A streams (FMM_SMALL_FOR_BLOCKS). */
#define FMM_SMALL_ROWS_FIRST_BYTES (16 * 1024)
/* Rows of A from which a B whose rows collide in L1's sets is copied: below,
 * the copy costs about what the re-reads from L2 do.  (Zen 3, 1 thread, B
 * read in place -> copied: float64 256 x 64 @ 64 x 256 35 -> 45 GFLOP/s,
 * 128^3 35 -> 45, float32 256 x 32 @ 32 x 256 76 -> 87; 32..80 rows
 * were level or 2-10% behind.) */
#define FMM_SMALL_COPY_ROWS 96

/* L1's geometry as the unpacked driver sees it (set from the detected
 * cache by fastmm.config through set_l1_geometry; ways 0: never copy B for
 * set collisions).  Plain ints read per product: either answer is correct. */
static ptrdiff_t fmm_l1_sets = 64, fmm_l1_ways = 8, fmm_l1_line = 64;

/* Whether k rows of B, `row_bytes` apart, would collide in L1's sets.  The
 * rows of a column slice fall on way / gcd(row_bytes, way) of the sets (way:
 * the bytes one way spans, 4 KiB on 32 KiB 8-way and 48 KiB 12-way L1s):
 * only 4 sets at 1 KiB rows, 2 at 2 KiB.  Past half the ways of those, the
 * slice no longer stays in L1 while A streams by, and each row block of A
 * re-reads it from L2; such a B is copied in panels like a large one. */
static inline int fmm_small_sets_collide(ptrdiff_t k, ptrdiff_t row_bytes)
{
    ptrdiff_t way = fmm_l1_sets * fmm_l1_line;
    ptrdiff_t g = way, r = row_bytes < 0 ? -row_bytes : row_bytes;
    if (fmm_l1_ways <= 0 || r == 0 || way <= 0)
        return 0;                     /* off, or one broadcast row */
    while (r) {                       /* g := gcd(row_bytes, way) */
        ptrdiff_t t = g % r;
        g = r;
        r = t;
    }
    ptrdiff_t sets = way / g > fmm_l1_sets ? fmm_l1_sets : way / g;
    return k > fmm_l1_ways / 2 * sets;
}

/* Length of a strided vector the dot form copies onto the stack. */
#define FMM_SMALL_STACK_ELEMS 4096
/* Columns of C one "axpy" pass accumulates (16 KiB of float32, 32 KiB of
 * float64).  A row of the matrix is read in runs of this many elements:
 * 1024 (4 KiB runs, one page each) left the prefetchers behind, and
 * 4096 x 4096 and 8192 x 8192 vector @ matrix read their matrix at 17-20
 * GB/s; 4096 reads it at 21-27 (Zen 4, 1 thread; 8192 was no better). */
#define FMM_VM_CHUNK 4096

/* Loops over a register block must unroll fully, or the accumulators
 * acc[i][v] (indexed by the loop counter) are kept in memory. */
#define FMM_UNROLL _Pragma("GCC unroll 16")

/* Cases of the row-tail switch in the ISA loops (R rows, 1 or 2 vectors),
 * each block run by LOOP: once (FMM_ONCE), or for every product of a stack
 * (FMM_OVER_STACK), so the block is chosen once per stack, not per product.
 * A body entered only when C fits one vector takes the one-vector cases
 * alone (FMM_SMALL_CASE_1V): every case is an inlined block, and a dead one
 * still costs compile time. */
#define FMM_SMALL_CASE_1V(BLK, R, LOOP)                                        \
    case 2 * R:                                                                \
        LOOP BLK(R, 1, k, alpha, ai, rs_a, cs_a, bj, rs_b, beta, ci, rs_c,     \
                 cs_c, last);                                                  \
        break;
#define FMM_SMALL_CASE(BLK, R, LOOP)                                           \
    FMM_SMALL_CASE_1V(BLK, R, LOOP)                                            \
    case 2 * R + 1:                                                            \
        LOOP BLK(R, 2, k, alpha, ai, rs_a, cs_a, bj, rs_b, beta, ci, rs_c,     \
                 cs_c, last);                                                  \
        break;
#define FMM_ONCE
#define FMM_OVER_STACK                                                         \
    for (ptrdiff_t t = 0; t < count; t++, ai += bs_a, bj += bs_b, ci += bs_c)

/* Rows of the register block that starts `left` rows from the bottom of C:
 * MRB, but with `bal` the last MRB + 1 or MRB + 2 rows as two blocks of
 * about half, not MRB and a block of 1 or 2 rows whose 2-4 accumulators
 * leave the FMA pipes waiting on latency (Zen 3, AVX2, 1 thread: 1000 x
 * 32x32 @ 32x32 float32 stacks ran at 80 GFLOP/s, 30 and 36 rows at 87). */
static inline ptrdiff_t fmm_small_rows(ptrdiff_t left, int mrb, int bal)
{
    if (left <= mrb)
        return left;
    return bal && left <= mrb + 2 ? (left + 1) / 2 : mrb;
}

/* Walks C's register blocks (rows from fmm_small_rows(.., MRB, BAL), NB
 * columns), (i, j) at each one's corner: a row block at a time (j inner)
 * when B is at most FMM_SMALL_ROWS_FIRST_BYTES, else a column slice at a
 * time (i inner).  Rows first matters when a stack streams from memory:
 * column slices first wrote each C row and read each B row in parts a pass
 * apart, and 1000 x 32x32 @ 32x32 float64 ran at half numpy's speed (Zen 4).
 * Opens two loops: the body is one statement or block. */
#define FMM_SMALL_FOR_BLOCKS(m, n, k, T, MRB, NB, BAL)                         \
    for (ptrdiff_t rf_ = (k) * (n) * (ptrdiff_t)sizeof(T) <=                   \
                         FMM_SMALL_ROWS_FIRST_BYTES,                           \
                   o_ = 0, outer_ = rf_ ? (m) : (n), inner_ = rf_ ? (n) : (m); \
         o_ < outer_;                                                          \
         o_ += rf_ ? fmm_small_rows((m) - o_, MRB, BAL) : (NB))                \
        for (ptrdiff_t q_ = 0, i = rf_ ? o_ : 0, j = rf_ ? 0 : o_; q_ < inner_; \
             q_ += rf_ ? (NB) : fmm_small_rows((m) - q_, MRB, BAL),            \
                       i = rf_ ? o_ : q_, j = rf_ ? q_ : o_)

/* The stack entry's signature: `count` products at fixed batch strides bs_*
 * (elements, 0 for a broadcast operand), B with unit column stride, each
 * product one register block (m <= stack_rows, n <= stack_cols_[sd]). */
#define FMM_SMALL_STACK_ARGS(T)                                                \
    ptrdiff_t count, ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, T alpha,           \
        const T *ai, ptrdiff_t rs_a, ptrdiff_t cs_a, ptrdiff_t bs_a,           \
        const T *bj, ptrdiff_t rs_b, ptrdiff_t bs_b, T beta, T *ci,            \
        ptrdiff_t rs_c, ptrdiff_t cs_c, ptrdiff_t bs_c

#ifdef FMM_X86
#include "small_avx512.h"
#include "small_avx2.h"
#define FMM_TGT_AVX512 FMM_T512
#define FMM_TGT_AVX2 FMM_T256
#endif

/* ---- portable bodies: the fallback, and (compiled once per ISA through
 * target attributes) the matrix-vector kernels, which GCC vectorises. ---- */

/* Register-block kernel's portable twin (B with unit column stride). */
#define FMM_SMALL_REF(NAME, T)                                                 \
    static void NAME(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, T alpha,           \
                     const T *a, ptrdiff_t rs_a, ptrdiff_t cs_a, const T *b,   \
                     ptrdiff_t rs_b, T beta, T *c, ptrdiff_t rs_c,             \
                     ptrdiff_t cs_c)                                           \
    {                                                                          \
        for (ptrdiff_t i = 0; i < m; i++)                                      \
            for (ptrdiff_t j = 0; j < n; j++) {                                \
                T acc = 0;                                                     \
                for (ptrdiff_t p = 0; p < k; p++)                              \
                    acc += a[i * rs_a + p * cs_a] * b[p * rs_b + j];           \
                T *cij = c + i * rs_c + j * cs_c;                              \
                *cij = beta == 0 ? alpha * acc : alpha * acc + beta * *cij;    \
            }                                                                  \
    }
FMM_SMALL_REF(fmm_small_s_ref, float)
FMM_SMALL_REF(fmm_small_d_ref, double)

/* The matrix-vector loops below are vectorised by GCC, not written with
 * intrinsics: they keep -O3's loop optimisations where the including module
 * is built at -O2 for compile time (setup.py); 10-30% slower without. */
#if defined(__GNUC__) && !defined(__clang__)
#define FMM_AUTOVEC __attribute__((optimize("O3")))
#else
#define FMM_AUTOVEC
#endif

/* c[j] := alpha * sum_p x[p] m[p, j] + beta * c[j], rows of m contiguous.
 * Eight rows per pass over an L1-resident accumulator; each element still sums
 * p in order with one multiply-add per term. */
#define FMM_VM(NAME, T, ATTR)                                                  \
    static ATTR FMM_AUTOVEC void NAME(                                         \
        ptrdiff_t k, ptrdiff_t n, T alpha, const T *x, ptrdiff_t inc_x,        \
        const T *mat, ptrdiff_t rs_m, T beta, T *c, ptrdiff_t inc_c)           \
    {                                                                          \
        T acc[FMM_VM_CHUNK] __attribute__((aligned(64)));                      \
        for (ptrdiff_t j0 = 0; j0 < n; j0 += FMM_VM_CHUNK) {                   \
            ptrdiff_t nj = n - j0 < FMM_VM_CHUNK ? n - j0 : FMM_VM_CHUNK, p;   \
            const T *mj = mat + j0;                                            \
            for (ptrdiff_t j = 0; j < nj; j++)                                 \
                acc[j] = 0;                                                    \
            for (p = 0; p + 8 <= k; p += 8) {                                  \
                const T *r0 = mj + p * rs_m, *r1 = r0 + rs_m;                  \
                const T *r2 = r1 + rs_m, *r3 = r2 + rs_m, *r4 = r3 + rs_m;     \
                const T *r5 = r4 + rs_m, *r6 = r5 + rs_m, *r7 = r6 + rs_m;     \
                T x0 = x[p * inc_x], x1 = x[(p + 1) * inc_x];                  \
                T x2 = x[(p + 2) * inc_x], x3 = x[(p + 3) * inc_x];            \
                T x4 = x[(p + 4) * inc_x], x5 = x[(p + 5) * inc_x];            \
                T x6 = x[(p + 6) * inc_x], x7 = x[(p + 7) * inc_x];            \
                for (ptrdiff_t j = 0; j < nj; j++)                             \
                    acc[j] = acc[j] + x0 * r0[j] + x1 * r1[j] + x2 * r2[j] +   \
                             x3 * r3[j] + x4 * r4[j] + x5 * r5[j] +            \
                             x6 * r6[j] + x7 * r7[j];                          \
            }                                                                  \
            for (; p + 4 <= k; p += 4) {                                       \
                const T *r0 = mj + p * rs_m, *r1 = r0 + rs_m;                  \
                const T *r2 = r1 + rs_m, *r3 = r2 + rs_m;                      \
                T x0 = x[p * inc_x], x1 = x[(p + 1) * inc_x];                  \
                T x2 = x[(p + 2) * inc_x], x3 = x[(p + 3) * inc_x];            \
                for (ptrdiff_t j = 0; j < nj; j++)                             \
                    acc[j] = acc[j] + x0 * r0[j] + x1 * r1[j] + x2 * r2[j] +   \
                             x3 * r3[j];                                       \
            }                                                                  \
            for (; p < k; p++) {                                               \
                const T *r0 = mj + p * rs_m;                                   \
                T x0 = x[p * inc_x];                                           \
                for (ptrdiff_t j = 0; j < nj; j++)                             \
                    acc[j] = acc[j] + x0 * r0[j];                              \
            }                                                                  \
            T *cj = c + j0 * inc_c;                                            \
            if (beta == 0)                                                     \
                for (ptrdiff_t j = 0; j < nj; j++)                             \
                    cj[j * inc_c] = alpha * acc[j];                            \
            else                                                               \
                for (ptrdiff_t j = 0; j < nj; j++)                             \
                    cj[j * inc_c] = alpha * acc[j] + beta * cj[j * inc_c];     \
        }                                                                      \
    }

/* c[i] := alpha * dot(m[i, :], x) + beta * c[i], m's rows and x contiguous.
 * Lane-wise partial sums in a GCC vector extension type one register wide for
 * the target (zmm, ymm, xmm: a wider type is split into several registers and
 * the 8 sums plus the loads outgrow the 16 ymm/xmm registers, spilling every
 * add), two per row so FMA latency is hidden, four rows at a time so x is
 * loaded once per four rows; the lanes are then added as a tree (a chain of
 * adds would dominate short rows). */
typedef float fmm_v16s __attribute__((vector_size(64)));
typedef double fmm_v8d __attribute__((vector_size(64)));
typedef float fmm_v8s __attribute__((vector_size(32)));
typedef double fmm_v4d __attribute__((vector_size(32)));
typedef float fmm_v4s __attribute__((vector_size(16)));
typedef double fmm_v2d __attribute__((vector_size(16)));

/* Sum of the lanes, folding halves in registers down to two lanes (inlined
 * into each ISA); each width halves into the next narrower type. */
static inline __attribute__((always_inline)) float fmm_hsum_v4s(fmm_v4s v)
{
    v += __builtin_shufflevector(v, v, 2, 3, 0, 1);
    return v[0] + v[1];
}
static inline __attribute__((always_inline)) float fmm_hsum_v8s(fmm_v8s v)
{
    fmm_v4s lo = __builtin_shufflevector(v, v, 0, 1, 2, 3);
    fmm_v4s hi = __builtin_shufflevector(v, v, 4, 5, 6, 7);
    return fmm_hsum_v4s(lo + hi);
}
static inline __attribute__((always_inline)) float fmm_hsum_v16s(fmm_v16s v)
{
    fmm_v8s lo = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7);
    fmm_v8s hi = __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
    return fmm_hsum_v8s(lo + hi);
}
static inline __attribute__((always_inline)) double fmm_hsum_v2d(fmm_v2d v)
{
    return v[0] + v[1];
}
static inline __attribute__((always_inline)) double fmm_hsum_v4d(fmm_v4d v)
{
    fmm_v2d lo = __builtin_shufflevector(v, v, 0, 1);
    fmm_v2d hi = __builtin_shufflevector(v, v, 2, 3);
    return fmm_hsum_v2d(lo + hi);
}
static inline __attribute__((always_inline)) double fmm_hsum_v8d(fmm_v8d v)
{
    fmm_v4d lo = __builtin_shufflevector(v, v, 0, 1, 2, 3);
    fmm_v4d hi = __builtin_shufflevector(v, v, 4, 5, 6, 7);
    return fmm_hsum_v4d(lo + hi);
}

#define FMM_DOTS(NAME, T, V, HSUM, ATTR)                                       \
    static ATTR FMM_AUTOVEC void NAME(                                         \
        ptrdiff_t m, ptrdiff_t k, T alpha, const T *mat, ptrdiff_t rs_m,       \
        const T *x, T beta, T *c, ptrdiff_t inc_c)                             \
    {                                                                          \
        enum { L = sizeof(V) / sizeof(T) };                                    \
        for (ptrdiff_t i = 0; i < m; i += 4) {                                 \
            int nr = m - i < 4 ? (int)(m - i) : 4;                             \
            const T *r[4];                                                     \
            V s[4][2];                                                         \
            ptrdiff_t p = 0;                                                   \
            for (int q = 0; q < 4; q++) {                                      \
                r[q] = mat + (i + (q < nr ? q : 0)) * rs_m;                    \
                s[q][0] = s[q][1] = (V){0};                                    \
            }                                                                  \
            for (; p + 2 * L <= k; p += 2 * L) {                               \
                V x0, x1, r0, r1;                                              \
                memcpy(&x0, x + p, sizeof(V));                                 \
                memcpy(&x1, x + p + L, sizeof(V));                             \
                for (int q = 0; q < 4; q++) {                                  \
                    memcpy(&r0, r[q] + p, sizeof(V));                          \
                    memcpy(&r1, r[q] + p + L, sizeof(V));                      \
                    s[q][0] += r0 * x0;                                        \
                    s[q][1] += r1 * x1;                                        \
                }                                                              \
            }                                                                  \
            if (p + L <= k) {                                                  \
                V x0, r0;                                                      \
                memcpy(&x0, x + p, sizeof(V));                                 \
                for (int q = 0; q < 4; q++) {                                  \
                    memcpy(&r0, r[q] + p, sizeof(V));                          \
                    s[q][0] += r0 * x0;                                        \
                }                                                              \
                p += L;                                                        \
            }                                                                  \
            for (int q = 0; q < nr; q++) {                                     \
                V sq = s[q][0] + s[q][1];                                      \
                T t = HSUM(sq);                                                \
                for (ptrdiff_t pp = p; pp < k; pp++)                           \
                    t += r[q][pp] * x[pp];                                     \
                T *ci = c + (i + q) * inc_c;                                   \
                *ci = beta == 0 ? alpha * t : alpha * t + beta * *ci;          \
            }                                                                  \
        }                                                                      \
    }

FMM_VM(fmm_vm_s_base, float, )
FMM_VM(fmm_vm_d_base, double, )
FMM_DOTS(fmm_dots_s_base, float, fmm_v4s, fmm_hsum_v4s, )
FMM_DOTS(fmm_dots_d_base, double, fmm_v2d, fmm_hsum_v2d, )
#ifdef FMM_X86
FMM_VM(fmm_vm_s_avx2, float, FMM_TGT_AVX2)
FMM_VM(fmm_vm_d_avx2, double, FMM_TGT_AVX2)
FMM_DOTS(fmm_dots_s_avx2, float, fmm_v8s, fmm_hsum_v8s, FMM_TGT_AVX2)
FMM_DOTS(fmm_dots_d_avx2, double, fmm_v4d, fmm_hsum_v4d, FMM_TGT_AVX2)
FMM_VM(fmm_vm_s_avx512, float, FMM_TGT_AVX512)
FMM_VM(fmm_vm_d_avx512, double, FMM_TGT_AVX512)
FMM_DOTS(fmm_dots_s_avx512, float, fmm_v16s, fmm_hsum_v16s, FMM_TGT_AVX512)
FMM_DOTS(fmm_dots_d_avx512, double, fmm_v8d, fmm_hsum_v8d, FMM_TGT_AVX512)
#endif

/* ---- run-time choice of the ISA ---- */

typedef void (*fmm_small_s_fn)(ptrdiff_t, ptrdiff_t, ptrdiff_t, float,
                               const float *, ptrdiff_t, ptrdiff_t,
                               const float *, ptrdiff_t, float, float *,
                               ptrdiff_t, ptrdiff_t);
typedef void (*fmm_small_d_fn)(ptrdiff_t, ptrdiff_t, ptrdiff_t, double,
                               const double *, ptrdiff_t, ptrdiff_t,
                               const double *, ptrdiff_t, double, double *,
                               ptrdiff_t, ptrdiff_t);
typedef void (*fmm_vm_s_fn)(ptrdiff_t, ptrdiff_t, float, const float *,
                            ptrdiff_t, const float *, ptrdiff_t, float,
                            float *, ptrdiff_t);
typedef void (*fmm_vm_d_fn)(ptrdiff_t, ptrdiff_t, double, const double *,
                            ptrdiff_t, const double *, ptrdiff_t, double,
                            double *, ptrdiff_t);
typedef void (*fmm_dots_s_fn)(ptrdiff_t, ptrdiff_t, float, const float *,
                              ptrdiff_t, const float *, float, float *,
                              ptrdiff_t);
typedef void (*fmm_dots_d_fn)(ptrdiff_t, ptrdiff_t, double, const double *,
                              ptrdiff_t, const double *, double, double *,
                              ptrdiff_t);

typedef void (*fmm_stack_s_fn)(FMM_SMALL_STACK_ARGS(float));
typedef void (*fmm_stack_d_fn)(FMM_SMALL_STACK_ARGS(double));

typedef struct {
    const char *isa;
    fmm_small_s_fn s;
    fmm_small_d_fn d;
    /* stacks of products of at most stack_rows x stack_cols_[sd] (0: none) */
    fmm_stack_s_fn stack_s;
    fmm_stack_d_fn stack_d;
    int stack_rows, stack_cols_s, stack_cols_d;
    /* a C one vector wide (stack_cols / 2) runs as a stack of products of
     * row_run rows on the stack kernel, its block chosen once rather than
     * per row block, from twice that many rows (0: never;
     * driver/_unpacked.h) */
    int row_run;
    fmm_vm_s_fn vm_s;
    fmm_vm_d_fn vm_d;
    fmm_dots_s_fn dots_s;
    fmm_dots_d_fn dots_d;
} fmm_small_t;

static const fmm_small_t fmm_small_generic = {
    "generic", fmm_small_s_ref, fmm_small_d_ref, NULL, NULL, 0, 0, 0, 0,
    fmm_vm_s_base, fmm_vm_d_base, fmm_dots_s_base, fmm_dots_d_base};
#ifdef FMM_X86
static const fmm_small_t fmm_small_avx2 = {
    "avx2", fmm_small_s_avx2, fmm_small_d_avx2, fmm_stack_s_avx2,
    fmm_stack_d_avx2, FMM_SMALL_AVX2_STACK_ROWS, 16, 8,
    /* one block of 8 rows by one vector (8 accumulators).  Zen 3, 1
     * thread: 100000 x 4 @ 4 x 4 float32 10.6 -> 24 GFLOP/s, float64 16 ->
     * 19.4, 4096 x 64 @ 64 x 8 float32 69 -> 73.6.  Not for a C two
     * vectors wide: 8-row runs (two blocks of 4) lost 5% at 100000 x 16 @
     * 16 x 16 float32, and 6-row runs (one 6 x 2 block, whose own loop has
     * little dispatch to save) were level or up to 4% behind. */
    8, fmm_vm_s_avx2, fmm_vm_d_avx2,
    fmm_dots_s_avx2, fmm_dots_d_avx2};
static const fmm_small_t fmm_small_avx512 = {
    "avx512", fmm_small_s_avx512, fmm_small_d_avx512, fmm_stack_s_avx512,
    fmm_stack_d_avx512, 8, 32, 16, 0 /* not measured on AVX-512 */,
    fmm_vm_s_avx512, fmm_vm_d_avx512,
    fmm_dots_s_avx512, fmm_dots_d_avx512};
#endif

/* The table in use: switched with one atomic store (fmm_small_init) while
 * other threads may be multiplying; each use loads it whole. */
static const fmm_small_t *fmm_small_active = &fmm_small_generic;
#define fmm_small \
    (*(const fmm_small_t *)fmm_load_config( \
        (const void *const *)&fmm_small_active))

/* The products the stack kernels in use take whole (0 x 0: none). */
static void fmm_small_stack_limits(int *rows, int *cols_s, int *cols_d)
{
    const fmm_small_t *tab = &fmm_small;
    *rows = tab->stack_rows;
    *cols_s = tab->stack_cols_s;
    *cols_d = tab->stack_cols_d;
}

/* isa: "avx2" or "generic" cap the ISA at that; anything else (or NULL)
 * picks the best the CPU runs.  Returns the name in use. */
static const char *fmm_small_init(const char *isa)
{
    int want2 = !isa || strcmp(isa, "generic");
    int want512 = want2 && (!isa || strcmp(isa, "avx2"));
    const fmm_small_t *table = &fmm_small_generic;
#ifdef FMM_X86
    if (want512 && fmm_cpu_has_avx512())
        table = &fmm_small_avx512;
    else if (want2 && fmm_cpu_has_avx2_fma())
        table = &fmm_small_avx2;
#endif
    fmm_publish_config((const void **)&fmm_small_active, table);
    return table->isa;
}

#endif
