/*
 * AMX micro-kernels (AMX-TILE with AMX-BF16 and AMX-INT8, Intel Sapphire
 * Rapids and later) for the low-precision driver, with the contract of the
 * AVX-512 ones in lowp.h: C's 12 x 32 tile (fmm_i8_ukr_t / fmm_bf_ukr_t),
 * B in the usual packed micro-panel, A in the layout below.
 *
 * A tile multiply-add (TDPBF16PS, TDPBUSD) takes C[12 x 16] += A[12 x 16
 * dwords] . B[16 dwords x 16], where a row of A and a row of B are 64 bytes
 * each: 16 groups of k (2 bfloat16 or 4 bytes a dword) for A's rows, one
 * group for 16 columns for B's.  So
 *
 *   B: the packed micro-panel as it is (per group, NR = 32 dwords): its two
 *      16-column halves are tiles with rows 128 bytes apart;
 *   A: packed per step of 16 groups as 12 rows of 16 dwords (768 bytes; a
 *      row of a tile must be contiguous), groups past the end zero
 *      (fmm_lp_pack_a_amx), so each call runs whole steps;
 *   C: two 12 x 16 accumulator tiles, started at zero and added to C at the
 *      end as the AVX-512 kernels do (bfloat16: float32 sums rounded in the
 *      same places: the products of a pair, odd element first, then the
 *      running sum, per group in k order; int8: the same corrections).
 *
 * The last step's B rows past `groups` are read from a zero-padded copy,
 * not from the next micro-panel (0 x NaN would leak into C).  The tile
 * shapes are configured once per thread and product (fmm_lp_amx_begin /
 * _end around the driver's loops): LDTILECFG costs about as much as a few
 * tile multiplies.  Linux hands out AMX state only to a process that asks
 * (arch_prctl ARCH_REQ_XCOMP_PERM), which fmm_cpu_has_amx does once.
 */
#ifndef FASTMM_LOWP_AMX_H
#define FASTMM_LOWP_AMX_H

#if defined(__linux__) && \
    ((defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11) || \
     (defined(__clang__) && __clang_major__ >= 12))
#define FMM_LP_AMX 1
#include <sys/syscall.h>
#include <unistd.h>

#define FMM_TARGET_AMX                                                       \
    __attribute__((target("avx512f,avx512bw,avx512vl,amx-tile,amx-bf16,"   \
                          "amx-int8")))

/* Groups of one k step of the tiles, and the most groups a packed k block
 * holds (FMM_BF_KC / 2 and FMM_I8_KC / 4). */
#define FMM_AMX_STEP 16
#define FMM_AMX_MAX_GROUPS 256
_Static_assert(FMM_BF_KC / 2 <= FMM_AMX_MAX_GROUPS &&
               FMM_I8_KC / 4 <= FMM_AMX_MAX_GROUPS, "k block too deep");
_Static_assert(FMM_LP_MR <= 16 && FMM_LP_NR == 32, "tile shapes");

/* Groups of an A panel in the AMX layout: whole steps. */
static inline ptrdiff_t fmm_amx_groups(ptrdiff_t groups)
{
    return (groups + FMM_AMX_STEP - 1) / FMM_AMX_STEP * FMM_AMX_STEP;
}

/* A (rows x kc at src) as fmm_lp_pack_a packs it (same dwords: the same
 * flip, zero rows past `rows` and zero k padding), rearranged into steps of
 * FMM_LP_MR rows by FMM_AMX_STEP dwords. */
static void fmm_lp_pack_a_amx(const char *src, ptrdiff_t rs, ptrdiff_t cs,
                              ptrdiff_t rows, ptrdiff_t kc, int kind,
                              uint32_t flip, uint32_t *dst)
{
    const int G = kind >= FMM_SRC_BF16 ? 2 : 4;
    const ptrdiff_t groups = (kc + G - 1) / G;
    const ptrdiff_t padded = fmm_amx_groups(groups);
    uint32_t tmp[FMM_AMX_MAX_GROUPS * FMM_LP_MR];
    fmm_lp_pack_a(src, rs, cs, rows, kc, kind, flip, tmp);
    for (ptrdiff_t s = 0; s < padded; s += FMM_AMX_STEP)
        for (ptrdiff_t i = 0; i < FMM_LP_MR; i++)
            for (ptrdiff_t d = 0; d < FMM_AMX_STEP; d++) {
                ptrdiff_t g = s + d;
                dst[(s * FMM_LP_MR) + i * FMM_AMX_STEP + d] =
                    g < groups ? tmp[g * FMM_LP_MR + i] : 0;
            }
}

/* The tile configuration (palette 1): tiles 0 and 1 C's halves, 2 A, 3 and
 * 4 B's halves. */
typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} fmm_amx_cfg_t;

/* A static object, not one filled on the stack: GCC 12 drops the stores
 * into a local configuration before _tile_loadconfig, which then loads
 * whatever the stack held. */
static const fmm_amx_cfg_t fmm_amx_cfg __attribute__((aligned(64))) = {
    1, 0, {0},
    {64, 64, 64, 64, 64},
    {FMM_LP_MR, FMM_LP_MR, FMM_LP_MR, FMM_AMX_STEP, FMM_AMX_STEP}};

FMM_TARGET_AMX static void fmm_lp_amx_begin(void)
{
    _tile_loadconfig(&fmm_amx_cfg);
}

FMM_TARGET_AMX static void fmm_lp_amx_end(void) { _tile_release(); }

/* One step: A's tile at A0, B's two halves from B0 (rows 128 bytes
 * apart), into tiles 0 and 1 with TDP the tile multiply-add. */
#define FMM_AMX_STEP_AT(TDP, A0, B0)                                         \
    _tile_loadd(2, A0, 4 * FMM_AMX_STEP);                                    \
    _tile_loadd(3, B0, 4 * FMM_LP_NR);                                       \
    _tile_loadd(4, (B0) + 16, 4 * FMM_LP_NR);                                \
    TDP(0, 2, 3);                                                            \
    TDP(1, 2, 4);
/* The step loop, the sums stored to t (FMM_LP_NR a row); the last step's B
 * from a zero-padded copy when `groups` ends inside it. */
#define FMM_AMX_STEPS(TDP)                                                   \
    _tile_zero(0);                                                           \
    _tile_zero(1);                                                           \
    ptrdiff_t full = groups / FMM_AMX_STEP * FMM_AMX_STEP;                   \
    for (ptrdiff_t g = 0; g < full; g += FMM_AMX_STEP) {                     \
        FMM_AMX_STEP_AT(TDP, a + g * FMM_LP_MR, b + g * FMM_LP_NR)           \
    }                                                                        \
    if (full < groups) {                                                     \
        uint32_t bt[FMM_AMX_STEP * FMM_LP_NR] __attribute__((aligned(64)));  \
        size_t live = (size_t)(groups - full) * FMM_LP_NR;                   \
        memcpy(bt, b + full * FMM_LP_NR, 4 * live);                          \
        memset(bt + live, 0, 4 * (FMM_AMX_STEP * FMM_LP_NR - live));         \
        FMM_AMX_STEP_AT(TDP, a + full * FMM_LP_MR, bt)                       \
    }                                                                        \
    _tile_stored(0, t, 4 * FMM_LP_NR);                                       \
    _tile_stored(1, t + 16, 4 * FMM_LP_NR);

FMM_TARGET_AMX static void
fmm_bf_ukr_amx(ptrdiff_t groups, const uint32_t *a, const uint32_t *b,
               float *c, ptrdiff_t ldc, int acc_c, int rows)
{
    float t[FMM_LP_MR * FMM_LP_NR] __attribute__((aligned(64)));
    FMM_AMX_STEPS(_tile_dpbf16ps)
    for (int i = 0; i < rows; i++) {
        float *ci = c + i * ldc;
        __m512 r0 = _mm512_load_ps(t + i * FMM_LP_NR);
        __m512 r1 = _mm512_load_ps(t + i * FMM_LP_NR + 16);
        if (acc_c) {
            r0 = _mm512_add_ps(r0, _mm512_loadu_ps(ci));
            r1 = _mm512_add_ps(r1, _mm512_loadu_ps(ci + 16));
        }
        _mm512_storeu_ps(ci, r0);
        _mm512_storeu_ps(ci + 16, r1);
    }
}

/* Unsigned A' by signed B' (TDPBUSD), as vpdpbusd: the driver's flips and
 * corrections hold unchanged. */
FMM_TARGET_AMX static void
fmm_i8_ukr_amx(ptrdiff_t groups, const uint32_t *a, const uint32_t *b,
               int32_t *c, ptrdiff_t ldc, int acc_c, const int32_t *rowc,
               const int32_t *colc, int rows)
{
    int32_t t[FMM_LP_MR * FMM_LP_NR] __attribute__((aligned(64)));
    FMM_AMX_STEPS(_tile_dpbusd)
    __m512i col0 = _mm512_loadu_si512(colc);
    __m512i col1 = _mm512_loadu_si512(colc + 16);
    for (int i = 0; i < rows; i++) {
        int32_t *ci = c + i * ldc;
        __m512i r = _mm512_set1_epi32(rowc[i]);
        __m512i r0 = _mm512_add_epi32(_mm512_load_si512(t + i * FMM_LP_NR),
                                      _mm512_add_epi32(r, col0));
        __m512i r1 = _mm512_add_epi32(
            _mm512_load_si512(t + i * FMM_LP_NR + 16),
            _mm512_add_epi32(r, col1));
        if (acc_c) {
            r0 = _mm512_add_epi32(r0, _mm512_loadu_si512(ci));
            r1 = _mm512_add_epi32(r1, _mm512_loadu_si512(ci + 16));
        }
        _mm512_storeu_si512(ci, r0);
        _mm512_storeu_si512(ci + 16, r1);
    }
}
#undef FMM_AMX_STEPS
#undef FMM_AMX_STEP_AT

/* AMX-TILE, -BF16 and -INT8 in CPUID, their state enabled in XCR0, and the
 * kernel's permission for this process (asked for once). */
static int fmm_cpu_has_amx(void)
{
    static int known = -1;
    unsigned int a, b, c, d, lo, hi;
    if (known >= 0)
        return known;
    known = 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return 0;
    if (!(d & (1u << 24)) || !(d & (1u << 22)) || !(d & (1u << 25)))
        return 0;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_OSXSAVE))
        return 0;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & (3u << 17)) != (3u << 17))
        return 0;
    /* ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA (Linux 5.16+) */
    if (syscall(SYS_arch_prctl, 0x1023, 18) != 0)
        return 0;
    known = fmm_cpu_has_vnni512() && fmm_cpu_has_bf16_512();
    return known;
}
#endif

#endif
