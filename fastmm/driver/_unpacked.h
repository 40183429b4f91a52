/*
 * The unpacked driver: products too small or too skinny for packing, read in
 * place (contract: kernels/small.h, whose register-block kernels it calls).
 * It picks the kernel form from the strides and splits the work over `nt`
 * threads (the caller's count, from fastmm.driver._threads.threads_for; 1
 * starts no thread).  fastmm/driver/_unpacked.pyx is its Python face.
 */
#ifndef FASTMM_UNPACKED_H
#define FASTMM_UNPACKED_H

#include "kernels/small.h"
#include "driver/_parallel.h"
#include "driver/_prefetch.h"
#include <stdlib.h>

/* Batch dimensions a stack may have (numpy's limit on dimensions). */
#define FMM_MAX_BATCH_DIMS 64

/* Split [0, n) into nt parts rounded to multiples of `quantum`. */
static inline void fmm_share(ptrdiff_t n, ptrdiff_t quantum, int tid, int nt,
                             ptrdiff_t *lo, ptrdiff_t *hi)
{
    ptrdiff_t units = (n + quantum - 1) / quantum;
    *lo = units * tid / nt * quantum;
    *hi = units * (tid + 1) / nt * quantum;
    if (*hi > n)
        *hi = n;
    if (*lo > n)
        *lo = n;
}

/* Moves a position in a batch of nb dimensions `steps` products on (no more
 * than what is left of the innermost dimension), carrying into the outer
 * ones; off[] holds the element offsets of A, B and C, bs[] their batch
 * strides. */
static inline void fmm_batch_step(int nb, const ptrdiff_t *shape,
                                  ptrdiff_t *idx, const ptrdiff_t *bs[3],
                                  ptrdiff_t steps, ptrdiff_t off[3])
{
    for (int d = nb - 1; d >= 0; d--) {
        for (int o = 0; o < 3; o++)
            off[o] += steps * bs[o][d];
        idx[d] += steps;
        if (idx[d] < shape[d])
            return;
        for (int o = 0; o < 3; o++)
            off[o] -= shape[d] * bs[o][d];
        idx[d] = 0;
        steps = 1;
    }
}

/* Threads share x^T B by blocks of B's rows (each at least this many rows)
 * when B's rows are shorter than FMM_VM_SPLIT_BYTES, else by columns. */
#define FMM_VM_SPLIT_ROWS 64
#define FMM_VM_SPLIT_BYTES (16 * 1024)
/* Test hook: products the calling thread ran by blocks of rows. */
static __thread long fmm_vm_row_splits = 0;
/* Test hook: products (or thread shares) the calling thread ran over copies
 * of B's panels rather than reading B in place. */
static __thread long fmm_small_b_copies = 0;
/* Test hook: products (or thread shares) the calling thread ran as a stack
 * of row runs (fmm_small_t.row_run, the drivers' _blocks). */
static __thread long fmm_small_row_runs = 0;

#define FMM_SMALL_DRIVER(P, T, KERN, VM, DOTS, STACK, STACK_COLS)             \
    /* C := beta * C without reading A or B (k == 0 or alpha == 0). */         \
    static void P##_scale(ptrdiff_t m, ptrdiff_t n, T beta, T *c,              \
                          ptrdiff_t rs_c, ptrdiff_t cs_c)                      \
    {                                                                          \
        for (ptrdiff_t i = 0; i < m; i++)                                      \
            for (ptrdiff_t j = 0; j < n; j++) {                                \
                T *cij = c + i * rs_c + j * cs_c;                              \
                *cij = beta == 0 ? 0 : beta * *cij;                            \
            }                                                                  \
    }                                                                          \
                                                                               \
    /* C's register blocks with B read in place (unit column stride).  A C   \
     * one vector wide runs its rows as a stack of R-row products on the    \
     * stack kernel (fmm_small_t.row_run), its block chosen once, not once  \
     * per row block. */                                                    \
    static inline void P##_blocks(const fmm_small_t *tab, ptrdiff_t m,         \
                                  ptrdiff_t n, ptrdiff_t k, T alpha,           \
                                  const T *a, ptrdiff_t rs_a, ptrdiff_t cs_a,  \
                                  const T *b, ptrdiff_t rs_b, T beta, T *c,    \
                                  ptrdiff_t rs_c, ptrdiff_t cs_c)              \
    {                                                                          \
        ptrdiff_t R = tab->row_run;                                            \
        if (R > 0 && n <= tab->STACK_COLS / 2 && m >= 2 * R) {                 \
            ptrdiff_t runs = m / R, rem = m % R;                               \
            fmm_small_row_runs++;                                              \
            tab->STACK(runs, R, n, k, alpha, a, rs_a, cs_a, R * rs_a, b, rs_b, \
                       0, beta, c, rs_c, cs_c, R * rs_c);                      \
            if (rem)                                                           \
                tab->STACK(1, rem, n, k, alpha, a + runs * R * rs_a, rs_a,     \
                           cs_a, 0, b, rs_b, 0, beta, c + runs * R * rs_c,     \
                           rs_c, cs_c, 0);                                     \
            return;                                                            \
        }                                                                      \
        tab->KERN(m, n, k, alpha, a, rs_a, cs_a, b, rs_b, beta, c, rs_c, cs_c);\
    }                                                                          \
                                                                               \
    /* Thread tid's share of one product, by the form the strides allow. */   \
    static void P##_part(int tid, int nt, ptrdiff_t m, ptrdiff_t n,            \
                         ptrdiff_t k, T alpha, const T *a, ptrdiff_t rs_a,     \
                         ptrdiff_t cs_a, const T *b, ptrdiff_t rs_b,           \
                         ptrdiff_t cs_b, T beta, T *c, ptrdiff_t rs_c,         \
                         ptrdiff_t cs_c)                                       \
    {                                                                          \
        ptrdiff_t lo, hi;                                                      \
        if (n == 1 && m > 1) {                                                 \
            /* C's column = A x: as the row case on the transposes */          \
            P##_part(tid, nt, 1, m, k, alpha, b, cs_b, rs_b, a, cs_a, rs_a,    \
                     beta, c, cs_c, rs_c);                                     \
            return;                                                            \
        }                                                                      \
        if (m == 1 && cs_b == 1 && (n > 1 || rs_b != 1)) {                     \
            /* x^T B, B's rows contiguous: four rows at a time */              \
            fmm_share(n, 64, tid, nt, &lo, &hi);                               \
            if (lo < hi)                                                       \
                fmm_small.VM(k, hi - lo, alpha, a, cs_a, b + lo, rs_b, beta,   \
                             c + lo * cs_c, cs_c);                             \
            return;                                                            \
        }                                                                      \
        if (m == 1 && rs_b == 1 &&                                             \
            (cs_a == 1 || k <= FMM_SMALL_STACK_ELEMS)) {                       \
            /* x^T B, B's columns contiguous: dot products */                  \
            T xbuf[cs_a == 1 ? 1 : k];                                         \
            const T *x = a;                                                    \
            if (cs_a != 1) {                                                   \
                for (ptrdiff_t p = 0; p < k; p++)                              \
                    xbuf[p] = a[p * cs_a];                                     \
                x = xbuf;                                                      \
            }                                                                  \
            fmm_share(n, 4, tid, nt, &lo, &hi);                                \
            if (lo < hi)                                                       \
                fmm_small.DOTS(hi - lo, k, alpha, b + lo * cs_b, cs_b, x,      \
                               beta, c + lo * cs_c, cs_c);                     \
            return;                                                            \
        }                                                                      \
        if (cs_b != 1 && rs_a == 1 && m > 1) {                                 \
            /* C^T = B^T A^T: A's columns become the contiguous rows */        \
            P##_part(tid, nt, n, m, k, alpha, b, cs_b, rs_b, a, cs_a, rs_a,    \
                     beta, c, cs_c, rs_c);                                     \
            return;                                                            \
        }                                                                      \
        if (n >= 64 * nt || m < 8 * nt) {                                      \
            fmm_share(n, 32, tid, nt, &lo, &hi);                               \
            b += lo * cs_b;                                                    \
            c += lo * cs_c;                                                    \
            n = hi - lo;                                                       \
        } else {                                                               \
            fmm_share(m, 8, tid, nt, &lo, &hi);                                \
            a += lo * rs_a;                                                    \
            c += lo * rs_c;                                                    \
            m = hi - lo;                                                       \
        }                                                                      \
        if (m <= 0 || n <= 0)                                                  \
            return;                                                            \
        if (cs_b == 1 && (m <= 8 || (k * n * (ptrdiff_t)sizeof(T)              \
                                         <= FMM_SMALL_INPLACE_BYTES &&         \
                                     (m < FMM_SMALL_COPY_ROWS ||               \
                                      !fmm_small_sets_collide(                 \
                                          k, rs_b * (ptrdiff_t)sizeof(T)))))) {\
            /* B read in place: once (one row block) or from cache */          \
            P##_blocks(&fmm_small, m, n, k, alpha, a, rs_a, cs_a, b, rs_b,     \
                       beta, c, rs_c, cs_c);                                   \
            return;                                                            \
        }                                                                      \
        /* B's rows strided, B larger than cache, or its rows colliding        \
         * in L1's sets and enough rows of A to pay for a copy: read in        \
         * place, each row block of A would re-read B's rows from L2 or        \
         * memory.  Copy KC x NB panels onto the stack and run every row       \
         * block of A over each copy; along a KC block of rows B is read in    \
         * order, and that block of A stays in L1. */                          \
        enum { NB = 128 / sizeof(T) };                                         \
        fmm_small_b_copies++;                                                  \
        T panel[FMM_SMALL_KC * NB] __attribute__((aligned(64)));               \
        for (ptrdiff_t pc = 0; pc < k; pc += FMM_SMALL_KC) {                   \
            ptrdiff_t kc = k - pc < FMM_SMALL_KC ? k - pc : FMM_SMALL_KC;      \
            for (ptrdiff_t jc = 0; jc < n; jc += NB) {                         \
                ptrdiff_t nb = n - jc < NB ? n - jc : NB;                      \
                const T *bp = b + pc * rs_b + jc * cs_b;                       \
                for (ptrdiff_t p = 0; p < kc; p++)                             \
                    if (cs_b == 1)                                             \
                        memcpy(panel + p * nb, bp + p * rs_b, nb * sizeof(T)); \
                    else                                                       \
                        for (ptrdiff_t j = 0; j < nb; j++)                     \
                            panel[p * nb + j] = bp[p * rs_b + j * cs_b];       \
                fmm_small.KERN(m, nb, kc, alpha, a + pc * cs_a, rs_a, cs_a,    \
                               panel, nb, pc ? (T)1 : beta, c + jc * cs_c,     \
                               rs_c, cs_c);                                    \
            }                                                                  \
        }                                                                      \
    }                                                                          \
                                                                               \
    /* x^T M (M: k x n, rows rs_m apart and contiguous) over nt > 1 threads \
     * by blocks of M's rows, for short rows: split by columns, each thread  \
     * would read runs of a few KiB a row apart, which the prefetchers       \
     * follow poorly; whole rows make one contiguous stream per thread.      \
     * Each thread sums its block privately and the sums are added in        \
     * thread order.  Returns the team size, or 0 when the rule does not     \
     * apply (or no memory) and the column split is to be used. */           \
    static int P##_vm_rows(int nt, ptrdiff_t n, ptrdiff_t k, T alpha,          \
                           const T *x, ptrdiff_t inc_x, const T *mat,          \
                           ptrdiff_t rs_m, T beta, T *c, ptrdiff_t inc_c)      \
    {                                                                          \
        int team = 0;                                                          \
        if (k < FMM_VM_SPLIT_ROWS * nt ||                                      \
            n * (ptrdiff_t)sizeof(T) >= FMM_VM_SPLIT_BYTES)                    \
            return 0;                                                          \
        T *part = (T *)malloc((size_t)(nt - 1) * n * sizeof(T));               \
        if (!part)                                                             \
            return 0;                                                          \
        FMM_OMP_PARALLEL(nt)                                                   \
        {                                                                      \
            ptrdiff_t lo, hi;                                                  \
            int tid = fmm_thread_num(), tn = fmm_team_size();                  \
            if (tid == 0)                                                      \
                team = tn;                                                     \
            fmm_share(k, 8, tid, tn, &lo, &hi);                                \
            if (tid == 0) /* C := alpha x0^T M0 + beta C */                    \
                fmm_small.VM(hi - lo, n, alpha, x, inc_x, mat, rs_m, beta, c,  \
                             inc_c);                                           \
            else if (lo < hi)                                                  \
                fmm_small.VM(hi - lo, n, alpha, x + lo * inc_x, inc_x,         \
                             mat + lo * rs_m, rs_m, (T)0,                      \
                             part + (tid - 1) * n, 1);                         \
            else                                                               \
                memset(part + (tid - 1) * n, 0, n * sizeof(T));                \
        }                                                                      \
        for (int t = 0; t < team - 1; t++)                                     \
            for (ptrdiff_t j = 0; j < n; j++)                                  \
                c[j * inc_c] += part[t * n + j];                               \
        free(part);                                                            \
        fmm_vm_row_splits++;                                                   \
        return team;                                                           \
    }                                                                          \
                                                                               \
    /* Returns the number of threads that ran it. */                         \
    static int P(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, T alpha, const T *a,   \
                 ptrdiff_t rs_a, ptrdiff_t cs_a, const T *b, ptrdiff_t rs_b,   \
                 ptrdiff_t cs_b, T beta, T *c, ptrdiff_t rs_c,                 \
                 ptrdiff_t cs_c, int nt)                                       \
    {                                                                          \
        int team = 1;                                                          \
        if (m <= 0 || n <= 0)                                                  \
            return 1;                                                          \
        if (k <= 0 || alpha == 0) {                                            \
            P##_scale(m, n, beta, c, rs_c, cs_c);                              \
            return 1;                                                          \
        }                                                                      \
        if (nt <= 1) {                                                         \
            P##_part(0, 1, m, n, k, alpha, a, rs_a, cs_a, b, rs_b, cs_b, beta, \
                     c, rs_c, cs_c);                                           \
            return 1;                                                          \
        }                                                                      \
        if (m == 1 && cs_b == 1 && n > 1) {                                    \
            int vt = P##_vm_rows(nt, n, k, alpha, a, cs_a, b, rs_b, beta, c,   \
                                 cs_c);                                        \
            if (vt)                                                            \
                return vt;                                                     \
        }                                                                      \
        if (n == 1 && rs_a == 1 && m > 1) { /* C's column = A x, A's columns   \
                                               contiguous: x^T A^T */          \
            int vt = P##_vm_rows(nt, m, k, alpha, b, rs_b, a, cs_a, beta, c,   \
                                 rs_c);                                        \
            if (vt)                                                            \
                return vt;                                                     \
        }                                                                      \
        FMM_OMP_PARALLEL(nt)                                                   \
        {                                                                      \
            if (fmm_thread_num() == 0)                                         \
                team = fmm_team_size();                                        \
            P##_part(fmm_thread_num(), fmm_team_size(), m, n, k, alpha, a,     \
                     rs_a, cs_a, b, rs_b, cs_b, beta, c, rs_c, cs_c);          \
        }                                                                      \
        return team;                                                           \
    }                                                                          \
                                                                               \
    /* Products [lo, hi) of a broadcast batch: the batch index is carried   \
     * forward digit by digit, not divided out for every product.  Products  \
     * of one register block go to the stack kernel a run of the innermost   \
     * batch dimension at a time, so each costs little more than its FMAs. */\
    static void P##_batch_part(ptrdiff_t lo, ptrdiff_t hi, int form, int nb,  \
                               const ptrdiff_t *shape, const ptrdiff_t *bs_a, \
                               const ptrdiff_t *bs_b, const ptrdiff_t *bs_c,  \
                               ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, T alpha, \
                               const T *a, ptrdiff_t rs_a, ptrdiff_t cs_a,    \
                               const T *b, ptrdiff_t rs_b, ptrdiff_t cs_b,    \
                               T beta, T *c, ptrdiff_t rs_c, ptrdiff_t cs_c)  \
    {                                                                          \
        const fmm_small_t *tab = &fmm_small;                                   \
        const ptrdiff_t *bs[3] = {bs_a, bs_b, bs_c};                           \
        ptrdiff_t idx[FMM_MAX_BATCH_DIMS], off[3] = {0, 0, 0}, rem = lo;       \
        const int in = nb - 1;                                                 \
        for (int d = nb - 1; d >= 0; d--) {                                    \
            idx[d] = rem % shape[d];                                           \
            rem /= shape[d];                                                   \
            for (int o = 0; o < 3; o++)                                        \
                off[o] += idx[d] * bs[o][d];                                   \
        }                                                                      \
        ptrdiff_t rows = form == 0 ? m : n, cols = form == 0 ? n : m;          \
        int stack = form != 2 && rows <= tab->stack_rows &&                    \
                    cols <= tab->STACK_COLS;                                   \
        for (ptrdiff_t t = lo; t < hi;) {                                      \
            if (stack) {                                                       \
                ptrdiff_t run = shape[in] - idx[in];                           \
                run = run < hi - t ? run : hi - t;                             \
                if (form == 0)                                                 \
                    tab->STACK(run, m, n, k, alpha, a + off[0], rs_a, cs_a,    \
                               bs_a[in], b + off[1], rs_b, bs_b[in], beta,     \
                               c + off[2], rs_c, cs_c, bs_c[in]);              \
                else                                                           \
                    tab->STACK(run, n, m, k, alpha, b + off[1], cs_b, rs_b,    \
                               bs_b[in], a + off[0], cs_a, bs_a[in], beta,     \
                               c + off[2], cs_c, rs_c, bs_c[in]);              \
                fmm_batch_step(nb, shape, idx, bs, run, off);                  \
                t += run;                                                      \
                continue;                                                      \
            }                                                                  \
            const T *an = a + off[0], *bn = b + off[1];                        \
            T *cn = c + off[2];                                                \
            fmm_batch_step(nb, shape, idx, bs, 1, off);                        \
            if (++t < hi) {                                                    \
                /* the next product's operands come from L3 or memory: ask  \
                 * for them now, to arrive while this one computes */         \
                if (a + off[0] != an)                                          \
                    fmm_prefetch_part(a + off[0], m, k, rs_a, cs_a,            \
                                      sizeof(T), 0, 1);                        \
                if (b + off[1] != bn)                                          \
                    fmm_prefetch_part(b + off[1], k, n, rs_b, cs_b,            \
                                      sizeof(T), 0, 1);                        \
            }                                                                  \
            if (form == 0)                                                     \
                P##_blocks(tab, m, n, k, alpha, an, rs_a, cs_a, bn, rs_b,      \
                           beta, cn, rs_c, cs_c);                              \
            else if (form == 1)                                                \
                P##_blocks(tab, n, m, k, alpha, bn, cs_b, rs_b, an, cs_a,      \
                           beta, cn, cs_c, rs_c);                              \
            else                                                               \
                P(m, n, k, alpha, an, rs_a, cs_a, bn, rs_b, cs_b, beta, cn,    \
                  rs_c, cs_c, 1);                                              \
        }                                                                      \
    }                                                                          \
                                                                               \
    /* `count` products of a broadcast batch (batch strides bs_*, 0 where an   \
     * operand is broadcast, over nb <= FMM_MAX_BATCH_DIMS dims of `shape`),   \
     * split over nt threads; returns the team size.  The form is chosen once  \
     * for the batch. */                                                       \
    static int P##_batch(ptrdiff_t count, int nb, const ptrdiff_t *shape,      \
                          const ptrdiff_t *bs_a, const ptrdiff_t *bs_b,        \
                          const ptrdiff_t *bs_c, ptrdiff_t m, ptrdiff_t n,     \
                          ptrdiff_t k, T alpha, const T *a, ptrdiff_t rs_a,    \
                          ptrdiff_t cs_a, const T *b, ptrdiff_t rs_b,          \
                          ptrdiff_t cs_b, T beta, T *c, ptrdiff_t rs_c,        \
                          ptrdiff_t cs_c, int nt)                              \
    {                                                                          \
        /* 0: B's rows contiguous, 1: A's columns (C^T = B^T A^T), 2: other */ \
        int form = m == 1 || n == 1 || k <= 0 || alpha == 0 ? 2                \
                   : cs_b == 1 ? 0 : rs_a == 1 ? 1 : 2;                        \
        int team = 1;                                                          \
        if (nt <= 1) {                                                         \
            P##_batch_part(0, count, form, nb, shape, bs_a, bs_b, bs_c, m, n,  \
                           k, alpha, a, rs_a, cs_a, b, rs_b, cs_b, beta, c,    \
                           rs_c, cs_c);                                        \
            return 1;                                                          \
        }                                                                      \
        FMM_OMP_PARALLEL(nt)                                                   \
        {                                                                      \
            ptrdiff_t lo, hi;                                                  \
            if (fmm_thread_num() == 0)                                         \
                team = fmm_team_size();                                        \
            fmm_share(count, 1, fmm_thread_num(), fmm_team_size(), &lo, &hi);  \
            P##_batch_part(lo, hi, form, nb, shape, bs_a, bs_b, bs_c, m, n, k, \
                           alpha, a, rs_a, cs_a, b, rs_b, cs_b, beta, c, rs_c, \
                           cs_c);                                              \
        }                                                                      \
        return team;                                                           \
    }

#ifdef _OPENMP
#define FMM_OMP_PARALLEL(nt) _Pragma("omp parallel num_threads(nt)")
#else
#define FMM_OMP_PARALLEL(nt)
#endif

FMM_SMALL_DRIVER(fmm_small_sgemm, float, s, vm_s, dots_s, stack_s,
                 stack_cols_s)
FMM_SMALL_DRIVER(fmm_small_dgemm, double, d, vm_d, dots_d, stack_d,
                 stack_cols_d)

#endif
