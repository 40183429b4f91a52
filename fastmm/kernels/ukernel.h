/*
 * The micro-kernel contract: the one boundary between fastmm's portable GEMM
 * driver (fastmm/driver/_packed.pyx) and the ISA-specific kernels (ref.h,
 * avx2.h, avx512.h).  Every kernel obeys exactly this, and
 * tests/test_ukernel.py checks every kernel against it.
 *
 *     C[0:MR, 0:NR] := alpha * A_panel * B_panel + beta * C[0:MR, 0:NR]
 *
 *   k        depth of the product, k >= 1.
 *   a        packed A micro-panel: MR x k, stored k-major, a[p*MR + i] = A[i, p].
 *            Rows past the matrix edge are zero-padded by the packer.
 *   b        packed B micro-panel: k x NR, stored k-major, b[p*NR + j] = B[p, j].
 *            Columns past the matrix edge are zero-padded by the packer.
 *            b starts on a 64-byte boundary (NR * sizeof(element) must be a
 *            multiple of 64, so every micro-panel of a packed block is
 *            aligned); a is only element-aligned (it sits at ir*kc in its block).
 *   c        the MR x NR output tile, row-major with row stride ldc (elements);
 *            columns are contiguous.  The kernel writes all MR x NR elements,
 *            so the driver hands it either an interior tile of C or a private
 *            MR x NR buffer (edge tiles, C with non-unit column stride).
 *   beta     if beta == 0, C is never read: NaN or Inf already in C must not
 *            leak into the result (BLAS semantics).
 *
 * The kernel accumulates in the element type, p = 0..k-1 in order, with one
 * fused multiply-add per term; it never skips zero operands, so NaN and Inf
 * in A or B propagate as they do in numpy.dot.
 */
#ifndef FASTMM_UKERNEL_H
#define FASTMM_UKERNEL_H

#include <stddef.h>

typedef void (*fmm_sgemm_ukr_t)(ptrdiff_t k, float alpha, const float *a,
                                const float *b, float beta, float *c,
                                ptrdiff_t ldc);
typedef void (*fmm_dgemm_ukr_t)(ptrdiff_t k, double alpha, const double *a,
                                const double *b, double beta, double *c,
                                ptrdiff_t ldc);

/* Edge-row kernels (optional): the same contract for the first `rows`
 * rows only, 1 <= rows <= MR.  The A panel keeps its MR-row layout (rows
 * past `rows` are ignored); only rows 0..rows-1 of C are read and written,
 * so the driver hands them C itself where the tile has NR whole columns. */
typedef void (*fmm_sgemm_rows_t)(ptrdiff_t k, float alpha, const float *a,
                                 const float *b, float beta, float *c,
                                 ptrdiff_t ldc, int rows);
typedef void (*fmm_dgemm_rows_t)(ptrdiff_t k, double alpha, const double *a,
                                 const double *b, double beta, double *c,
                                 ptrdiff_t ldc, int rows);

/* An edge-row kernel that hands `rows` to the narrowest of three bodies
 * (heights R1 < R2 < MR) able to hold them. */
#define FMM_DEFINE_ROWS_DISPATCH(NAME, TARGET, T, R1, K1, R2, K2, K3)          \
    TARGET static void NAME(ptrdiff_t k, T alpha, const T *a, const T *b,      \
                            T beta, T *c, ptrdiff_t ldc, int rows)             \
    {                                                                          \
        if (rows <= (R1))                                                      \
            K1(k, alpha, a, b, beta, c, ldc, rows);                            \
        else if (rows <= (R2))                                                 \
            K2(k, alpha, a, b, beta, c, ldc, rows);                            \
        else                                                                   \
            K3(k, alpha, a, b, beta, c, ldc, rows);                            \
    }

/* One row of the dispatch table: a kernel family for one instruction set. */
typedef struct {
    const char *name;          /* "generic", "avx2", "avx512" */
    int (*cpu_supports)(void); /* CPU and OS support the registers it uses */
    int s_mr, s_nr;            /* float32 register block */
    fmm_sgemm_ukr_t sgemm;
    int d_mr, d_nr;            /* float64 register block */
    fmm_dgemm_ukr_t dgemm;
    fmm_sgemm_rows_t sgemm_rows; /* edge-row kernels, or NULL */
    fmm_dgemm_rows_t dgemm_rows;
    /* The driver runs a last strip of 1..split_rows rows together with the
     * full strip before it, as two strips of about half of MR + rows each,
     * where the edge-row kernels' smallest body is bound by FMA latency
     * (too few accumulators for the FMA pipes) and the next one is not;
     * 0: never.  Any split gives the same bits: every element of C is the
     * same FMA chain whichever body computes it. */
    int split_rows;
    /* The full kernels again, prefetching both packed micro-panels into L1
     * a fixed number of k steps ahead, for cores whose hardware prefetchers
     * leave the kernel waiting on L2 (a configuration row asks for them);
     * NULL: the family has none. */
    fmm_sgemm_ukr_t sgemm_stream;
    fmm_dgemm_ukr_t dgemm_stream;
} fmm_kernel_t;

/* Largest MR*NR any kernel uses: sizes the driver's private edge tile. */
#define FMM_MAX_TILE 1024
/* Largest MR or NR: the packers' zero padding relies on it. */
#define FMM_MAX_MR_NR 64

#endif
