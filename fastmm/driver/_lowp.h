/*
 * The low-precision driver: the loops around kernels/lowp.h's packers and
 * micro-kernels, and the write-back that turns a finished tile into a
 * quantized dense layer's output.
 *
 *     C := A @ B                                  (int32 or float32 C)
 *     C := act(dequant(A @ B) + bias)             (float32 C, with an epilogue)
 *
 * Loops jc (NC columns) -> pc (KC deep) -> ic (MC rows) -> jr -> ir, with
 * threads on independent row or column ranges of C (no barriers).
 * fastmm/_lowp.pyx is its Python face.
 */
#ifndef FASTMM_DRIVER_LOWP_H
#define FASTMM_DRIVER_LOWP_H

#include "kernels/lowp.h"
#include "nn/_activation.h"

/* Packing buffers come from the float driver's per-thread scratch (kept
 * between calls: a fresh multi-MiB buffer per call is served by mmap, and
 * faulting its pages in cost as much as packing into them).  _lowp.pyx
 * points these at it on import; until then, plain allocations. */
static void *fmm_lp_fresh(size_t size)
{
    return aligned_alloc(64, (size + 63) & ~(size_t)63);
}
static void fmm_lp_free(void *p, size_t size) { (void)size; free(p); }
static void *(*fmm_lp_scratch_get)(size_t) = fmm_lp_fresh;
/* Test hook: products (or thread shares) the calling thread ran on AMX
 * tiles. */
static __thread long fmm_lp_amx_parts = 0;
static void (*fmm_lp_scratch_release)(void *, size_t) = fmm_lp_free;

/* The write-back of a dense layer, applied to each tile of C after its last
 * k block while the tile is in L1: int8 sums become float32 in C's own
 * memory (both 4 bytes), C[i, j] = float32(acc) * row_scale[i] *
 * col_scale[j], in that order (float32 roundings as numpy's two multiplies
 * would make them); then bias and activation as the float layers' epilogue
 * (nn/_activation.h's tile routine, the one fastmm.nn uses). */
typedef struct {
    const float *row_scale, *col_scale;  /* int8 only; both or neither */
    const float *bias;                   /* one per column, or NULL */
    int act;                             /* FMM_ACT_* */
    float slope;                         /* leaky_relu's */
} fmm_lp_epilogue_t;

typedef struct {
    int bf16;                  /* 0: int8 -> int32, 1: bf16 -> float32 */
    int kind_a, kind_b;        /* FMM_SRC_* */
    const char *a, *b;         /* operands; strides in bytes */
    ptrdiff_t rs_a, cs_a, rs_b, cs_b;
    char *c;                   /* int32 or float32; strides in elements */
    ptrdiff_t rs_c, cs_c;
    ptrdiff_t k;
    const fmm_lp_epilogue_t *ep;   /* NULL: C is the plain product */
} fmm_lp_problem_t;

/* The epilogue on C's mr x nr tile at c, which is C[i0, j0] of the whole
 * problem (its scales and bias are indexed from there). */
static void fmm_lp_finish(const fmm_lp_problem_t *P, char *c, ptrdiff_t mr,
                          ptrdiff_t nr, ptrdiff_t i0, ptrdiff_t j0)
{
    const fmm_lp_epilogue_t *E = P->ep;
    const ptrdiff_t rs = P->rs_c, cs = P->cs_c;
    float *cf = (float *)c;
    if (E->row_scale)
        for (ptrdiff_t i = 0; i < mr; i++) {
            float s = E->row_scale[i0 + i];
            for (ptrdiff_t j = 0; j < nr; j++) {
                int32_t acc;   /* read through memcpy: C's bytes change type */
                memcpy(&acc, cf + i * rs + j * cs, 4);
                float v = (float)acc * s;
                cf[i * rs + j * cs] = v * E->col_scale[j0 + j];
            }
        }
    if (cs == 1) {
        fmm_act_tile_f32(cf, rs, mr, nr, E->bias ? E->bias + j0 : NULL,
                         E->act, E->slope);
        return;
    }
    for (ptrdiff_t i = 0; i < mr; i++)
        for (ptrdiff_t j = 0; j < nr; j++) {
            float *v = cf + i * rs + j * cs;
            float x = E->bias ? *v + E->bias[j0 + j] : *v;
            *v = fmm_act_f32(x, E->act, E->slope);
        }
}

/* C[0:m, 0:n] of the problem (a, b, c already offset to the part, which
 * starts at C[i0, j0]), serial.  Returns 0, or -1 when scratch memory could
 * not be allocated. */
static int fmm_lp_part(const fmm_lp_problem_t *P, const fmm_lp_kernels_t *K,
                       ptrdiff_t m, ptrdiff_t n, const char *a, const char *b,
                       char *c, ptrdiff_t i0, ptrdiff_t j0)
{
    /* wide: one bfloat16 a lane as float32, for a float32 kernel (lowp.h) */
    const int wide = P->bf16 && K->bf_wide;
    const int G = wide ? 1 : P->bf16 ? 2 : 4;
    const ptrdiff_t KC = wide ? FMM_BF_WIDE_KC : P->bf16 ? FMM_BF_KC
                       : FMM_I8_KC, k = P->k;
    const int sA = !P->bf16 && P->kind_a == FMM_SRC_I8;
    const int uB = !P->bf16 && P->kind_b == FMM_SRC_U8;
    const uint32_t flip_a = sA ? 0x80u : 0, flip_b = uB ? 0x80u : 0;
    ptrdiff_t kcg = (KC + G - 1) / G;       /* groups per full k block */
#ifdef FMM_LP_AMX
    const int amx = K->amx;
#else
    const int amx = 0;
#endif
    /* an A panel's groups: AMX steps are whole (lowp_amx.h) */
#define FMM_LP_A_GROUPS(g) (amx ? fmm_amx_groups(g) : (g))
    ptrdiff_t mc_max = ((m < FMM_LP_MC ? m : FMM_LP_MC) + FMM_LP_MR - 1) /
                       FMM_LP_MR * FMM_LP_MR;
    ptrdiff_t nc_max = ((n < FMM_LP_NC ? n : FMM_LP_NC) + FMM_LP_NR - 1) /
                       FMM_LP_NR * FMM_LP_NR;
    size_t a_words = (size_t)mc_max * FMM_LP_A_GROUPS(kcg);
    size_t b_words = (size_t)nc_max * kcg;
    size_t bytes = 4 * (a_words + b_words) + 4 * (size_t)(mc_max + nc_max) +
                   4 * FMM_LP_MR * FMM_LP_NR + 64;
    bytes = (bytes + 63) & ~(size_t)63;
    char *mem = (char *)fmm_lp_scratch_get(bytes);
    if (mem == NULL)
        return -1;
    uint32_t *b_packed = (uint32_t *)mem;
    uint32_t *a_packed = b_packed + b_words;
    int32_t *rowc = (int32_t *)(a_packed + a_words);
    int32_t *colc = rowc + mc_max;
    uint32_t *tile = (uint32_t *)(colc + nc_max);
    const size_t csz = 4;      /* int32 and float32 */
#ifdef FMM_LP_AMX
    if (amx) {
        fmm_lp_amx_begin();
        fmm_lp_amx_parts++;
    }
#endif

    for (ptrdiff_t jc = 0; jc < n; jc += FMM_LP_NC) {         /* n in NC */
        ptrdiff_t nc = n - jc < FMM_LP_NC ? n - jc : FMM_LP_NC;
        for (ptrdiff_t pc = 0; pc < k; pc += KC) {             /* k in KC */
            ptrdiff_t kc = k - pc < KC ? k - pc : KC;
            ptrdiff_t groups = (kc + G - 1) / G;
            ptrdiff_t groups_a = FMM_LP_A_GROUPS(groups);
            int finish = P->ep && pc + kc >= k;
            const ptrdiff_t b_size = P->kind_b == FMM_SRC_F32 ? 4
                                   : P->kind_b == FMM_SRC_BF16 ? 2 : 1;
            const ptrdiff_t ncp = (nc + FMM_LP_NR - 1) / FMM_LP_NR * FMM_LP_NR;
            memset(colc, 0, 4 * ncp);
            if (wide && P->cs_b == b_size)
                fmm_lp_pack_b_rows_wide(b + pc * P->rs_b + jc * P->cs_b,
                                        P->rs_b, kc, nc, P->kind_b, b_packed);
            else if (wide)
                for (ptrdiff_t jr = 0; jr < nc; jr += FMM_LP_NR) {
                    ptrdiff_t nr = nc - jr < FMM_LP_NR ? nc - jr : FMM_LP_NR;
                    fmm_lp_pack_b_wide(b + pc * P->rs_b + (jc + jr) * P->cs_b,
                                       P->rs_b, P->cs_b, kc, nr, P->kind_b,
                                       b_packed + jr * groups);
                }
            else if (P->cs_b == b_size)
                fmm_lp_pack_b_rows(b + pc * P->rs_b + jc * P->cs_b, P->rs_b,
                                   kc, nc, P->kind_b, flip_b, b_packed, groups,
                                   sA ? colc : NULL);
            else
                for (ptrdiff_t jr = 0; jr < nc; jr += FMM_LP_NR) {
                    ptrdiff_t nr = nc - jr < FMM_LP_NR ? nc - jr : FMM_LP_NR;
                    fmm_lp_pack_b(b + pc * P->rs_b + (jc + jr) * P->cs_b,
                                  P->rs_b, P->cs_b, kc, nr, P->kind_b, flip_b,
                                  b_packed + jr * groups, sA ? colc + jr : NULL);
                }
            for (ptrdiff_t j = 0; j < ncp; j++)       /* -128 sA colsum */
                colc[j] = (int32_t)((uint32_t)colc[j] * (uint32_t)-128);
            for (ptrdiff_t ic = 0; ic < m; ic += FMM_LP_MC) {     /* m in MC */
                ptrdiff_t mc = m - ic < FMM_LP_MC ? m - ic : FMM_LP_MC;
                for (ptrdiff_t ir = 0; ir < mc; ir += FMM_LP_MR) {
                    ptrdiff_t mr = mc - ir < FMM_LP_MR ? mc - ir : FMM_LP_MR;
                    const char *as = a + (ic + ir) * P->rs_a + pc * P->cs_a;
                    if (wide)
                        fmm_lp_pack_a_wide(as, P->rs_a, P->cs_a, mr, kc,
                                           P->kind_a, a_packed + ir * groups);
#ifdef FMM_LP_AMX
                    else if (amx)
                        fmm_lp_pack_a_amx(as, P->rs_a, P->cs_a, mr, kc,
                                          P->kind_a, flip_a,
                                          a_packed + ir * groups_a);
#endif
                    else
                        fmm_lp_pack_a(as, P->rs_a, P->cs_a, mr, kc, P->kind_a,
                                      flip_a, a_packed + ir * groups);
                    if (!P->bf16)  /* 128 uB rowsum(A) + 128^2 sA uB kc */
                        for (ptrdiff_t i = 0; i < FMM_LP_MR; i++) {
                            uint32_t s = 0;
                            if (uB && i < mr) {
                                for (ptrdiff_t p = 0; p < kc; p++)
                                    s += (uint32_t)(sA
                                        ? *(const int8_t *)(as + i * P->rs_a +
                                                            p * P->cs_a)
                                        : *(const uint8_t *)(as + i * P->rs_a +
                                                             p * P->cs_a));
                                s = s * 128u + (sA ? 16384u * (uint32_t)kc : 0);
                            }
                            rowc[ir + i] = (int32_t)s;
                        }
                }
                for (ptrdiff_t jr = 0; jr < nc; jr += FMM_LP_NR) {
                    ptrdiff_t nr = nc - jr < FMM_LP_NR ? nc - jr : FMM_LP_NR;
                    for (ptrdiff_t ir = 0; ir < mc; ir += FMM_LP_MR) {
                        ptrdiff_t mr = mc - ir < FMM_LP_MR ? mc - ir : FMM_LP_MR;
                        char *cij = c + ((ic + ir) * P->rs_c +
                                         (jc + jr) * P->cs_c) * csz;
                        const uint32_t *ap = a_packed + ir * groups_a;
                        const uint32_t *bp = b_packed + jr * groups;
                        /* whole columns: C itself, its first mr rows */
                        int direct = nr == FMM_LP_NR && P->cs_c == 1;
                        int acc = pc > 0, rows = (int)mr;
                        if (direct) {
                            if (P->bf16)
                                K->bf(groups, ap, bp, (float *)cij, P->rs_c,
                                      acc, rows);
                            else
                                K->i8(groups, ap, bp, (int32_t *)cij, P->rs_c,
                                      acc, rowc + ir, colc + jr, rows);
                            if (finish)
                                fmm_lp_finish(P, cij, mr, nr, i0 + ic + ir,
                                              j0 + jc + jr);
                            continue;
                        }
                        /* edge columns or strided C: through a private tile */
                        if (P->bf16)
                            K->bf(groups, ap, bp, (float *)tile, FMM_LP_NR, 0,
                                  rows);
                        else
                            K->i8(groups, ap, bp, (int32_t *)tile, FMM_LP_NR, 0,
                                  rowc + ir, colc + jr, rows);
                        for (ptrdiff_t i = 0; i < mr; i++)
                            for (ptrdiff_t j = 0; j < nr; j++) {
                                uint32_t *dst = (uint32_t *)(
                                    cij + (i * P->rs_c + j * P->cs_c) * csz);
                                uint32_t v = tile[i * FMM_LP_NR + j];
                                if (!acc)
                                    *dst = v;
                                else if (P->bf16) {
                                    float x, y;
                                    memcpy(&x, dst, 4);
                                    memcpy(&y, &v, 4);
                                    x += y;
                                    memcpy(dst, &x, 4);
                                } else
                                    *dst += v;
                            }
                        if (finish)
                            fmm_lp_finish(P, cij, mr, nr, i0 + ic + ir,
                                          j0 + jc + jr);
                    }
                }
            }
        }
    }
#ifdef FMM_LP_AMX
    if (amx)
        fmm_lp_amx_end();
#endif
    fmm_lp_scratch_release(mem, bytes);
    return 0;
#undef FMM_LP_A_GROUPS
}

/* The whole product on nt threads: C is split into nt independent row or
 * column ranges, each run serially with its own packed buffers, so there is
 * no barrier at all.  A thread packs all of the operand that is not split:
 * splitting the longer of m and n makes that copy the smaller one (k x
 * min(m, n) per thread, against m n k / nt multiply-adds).
 * Returns the team size, or -1 when memory ran out. */
static int fmm_lp_gemm(const fmm_lp_problem_t *P, ptrdiff_t m, ptrdiff_t n,
                       int nt)
{
    const fmm_lp_kernels_t *K = fmm_lp_kernels();
    int err = 0, team = 1;
    if (m <= 0 || n <= 0)
        return 1;
    if (P->k <= 0) {
        for (ptrdiff_t i = 0; i < m; i++)
            for (ptrdiff_t j = 0; j < n; j++)
                memset(P->c + (i * P->rs_c + j * P->cs_c) * 4, 0, 4);
        if (P->ep)
            fmm_lp_finish(P, P->c, m, n, 0, 0);
        return 1;
    }
    int by_rows = (m >= n && m >= (ptrdiff_t)nt * FMM_LP_MR * 2) ||
                  n < (ptrdiff_t)nt * FMM_LP_NR;
    ptrdiff_t units = by_rows ? (m + FMM_LP_MR - 1) / FMM_LP_MR
                              : (n + FMM_LP_NR - 1) / FMM_LP_NR;
    if (nt > units)
        nt = (int)(units > 0 ? units : 1);
    if (nt <= 1)
        return fmm_lp_part(P, K, m, n, P->a, P->b, P->c, 0, 0) ? -1 : 1;
#ifdef _OPENMP
#pragma omp parallel num_threads(nt) reduction(| : err)
#endif
    {
        int tid = fmm_thread_num(), size = fmm_team_size();
        ptrdiff_t q = by_rows ? FMM_LP_MR : FMM_LP_NR;
        ptrdiff_t lo = units * tid / size * q, hi = units * (tid + 1) / size * q;
        ptrdiff_t len = by_rows ? m : n;
        if (hi > len)
            hi = len;
        if (tid == 0)
            team = size;
        if (hi > lo) {
            if (by_rows)
                err |= fmm_lp_part(P, K, hi - lo, n, P->a + lo * P->rs_a, P->b,
                                   P->c + lo * P->rs_c * 4, lo, 0);
            else
                err |= fmm_lp_part(P, K, m, hi - lo, P->a, P->b + lo * P->cs_b,
                                   P->c + lo * P->cs_c * 4, 0, lo);
        }
    }
    return err ? -1 : team;
}

/* Per-row symmetric int8 quantization of a float32 m x k matrix (rows rs
 * elements apart, unit column stride), for the int8 dense layer's input
 * (fastmm/nn/quantized.py, quantize_rows, states the scheme):
 *     scale[i] = amax / 127,  q[i, p] = rint(x[i, p] * (127 / amax))
 * in float32, amax = max_p |x[i, p]|.  A zero row, or one whose 127 / amax
 * is not finite, quantizes to zeros; a row holding a NaN or an infinity to
 * zeros with scale NaN.  |x * fl(127 / amax)| < 127.5, so no clipping.
 * The maximum runs in FMM_Q_L lanes so that it vectorizes without licence
 * to reorder (no fast-math); rint is the float32 "add 1.5 * 2**23" trick
 * (round half to even, exact below 2**22), which SSE2 vectorizes.  Not
 * contracted into an FMA: x * inv must round before the rint, as numpy's
 * separate multiply does. */
#define FMM_Q_L 16
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("O3", "fp-contract=off")))
#endif
static void fmm_lp_quantize_rows(const float *x, ptrdiff_t rs, ptrdiff_t m,
                                 ptrdiff_t k, int8_t *q, ptrdiff_t rs_q,
                                 float *scale)
{
    for (ptrdiff_t i = 0; i < m; i++) {
        const float *xi = x + i * rs;
        int8_t *qi = q + i * rs_q;
        /* x * 0 is 0, or NaN for a NaN or an infinity: summed in lanes
         * beside the maximum, it flags the row in the same pass */
        float lane[FMM_Q_L], flag[FMM_Q_L], amax = 0, nonfinite = 0;
        ptrdiff_t p = 0;
        for (int l = 0; l < FMM_Q_L; l++)
            lane[l] = flag[l] = 0;
        for (; p + FMM_Q_L <= k; p += FMM_Q_L)
            for (int l = 0; l < FMM_Q_L; l++) {
                float a = fabsf(xi[p + l]);
                lane[l] = a > lane[l] ? a : lane[l];
                flag[l] += a * 0.0f;
            }
        for (; p < k; p++) {
            float a = fabsf(xi[p]);
            amax = a > amax ? a : amax;
            nonfinite += a * 0.0f;
        }
        for (int l = 0; l < FMM_Q_L; l++) {
            amax = lane[l] > amax ? lane[l] : amax;
            nonfinite += flag[l];
        }
        int bad = nonfinite != 0;
        if (bad) {
            memset(qi, 0, (size_t)k);
            scale[i] = NAN;
            continue;
        }
        float inv = 127.0f / amax;
        scale[i] = amax / 127.0f;
        if (!(inv <= 3.4028234663852886e38f))
            inv = 0;
        for (p = 0; p < k; p++) {
            float y = xi[p] * inv;
            y = (y + 12582912.0f) - 12582912.0f;
            qi[p] = (int8_t)(int32_t)y;
        }
    }
}

#endif
