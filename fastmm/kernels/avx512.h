/*
 * AVX-512 micro-kernels (F/DQ/BW/VL), obeying kernels/ukernel.h.
 *
 * Register block: MR rows of C by NR = NV vectors of 16 floats (8 doubles).
 * Per k step the kernel loads the NV vectors of the B micro-panel, broadcasts
 * each of the MR elements of the A column, and issues MR*NV independent FMAs
 * into accumulators that stay in zmm registers for the whole k loop.
 *
 * Shape: 12 x 32 float32, 12 x 16 float64.  24 accumulators + 2 B vectors +
 * 1 broadcast fit the 32 zmm registers, cover the FMA latency on two FMA
 * pipes (>= 8 independent chains needed), and need 14 loads per 24 FMAs.
 * With panels in L1 (kc = 256) on a Zen 5 core (two 512-bit FMA pipes, ~268
 * GFLOP/s float32), 6x32, 6x64, 8x48, 10x32, 12x32 and 14x32 all ran at
 * 98-100% of peak; in the full GEMM (n = 512..2048, block sizes from _cpu.py)
 * 6x64, 8x48 and 12x32 were within the measurement noise (~5%) of each other.
 * 12x32 is kept for its narrower NR: less padding on narrow C (NN layers with
 * few outputs, the transposed route for column-major C), and the kc x NR
 * micro-panel stays a fixed 64 KiB at kc = 512 for both element types.
 *
 * The loops over MR and NV have compile-time bounds and are fully unrolled
 * (the pragmas: without them GCC keeps acc[][] on the stack); the arrays are
 * sized exactly, as a partly used array is not promoted to registers either.
 *
 * The body is written once, in avx512_body.h, and included below once per
 * element type; the generated code is the same as that of the two
 * hand-written copies it replaced (same instructions, same registers).
 */
#ifndef FASTMM_AVX512_H
#define FASTMM_AVX512_H

#include <immintrin.h>
#include "ukernel.h"

#define FMM_TARGET_AVX512 \
    __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl")))

/* k steps before the end of the k loop at which the kernel prefetches its C
 * tile again.  The kc x NR B micro-panel (64 KiB at kc = 512) and the A
 * micro-panel stream through L1 meanwhile, so the lines prefetched on entry
 * are long gone; with large C (rows 8 KiB apart at n = 2048) they come from L3
 * or memory, and the tile update stalled on them.  64 steps (~800 cycles at
 * 24 FMAs per step on two pipes) cover memory latency: measured +1-3% at
 * n = 2048 (float32 and float64, 1 and 2 threads), neutral at n <= 1024, when
 * the machine's L3 is contended; 24, 64 and 128 were within noise of each
 * other, and a late prefetch alone (none on entry) did no better. */
#define FMM_AVX512_C_AHEAD 64

#define FMM_AVX512_S_MR 12
#define FMM_AVX512_S_NV 2
#define FMM_AVX512_D_MR 12
#define FMM_AVX512_D_NV 2

/* The intrinsics the body uses, for either element type: _Generic picks the
 * float or the double form from the operand (for loads and stores, from the
 * type the pointer points to), so one body serves both. */
#define fmm512_load(p) \
    _Generic(*(p), float: _mm512_load_ps, double: _mm512_load_pd)(p)
#define fmm512_loadu(p) \
    _Generic(*(p), float: _mm512_loadu_ps, double: _mm512_loadu_pd)(p)
#define fmm512_storeu(p, v) \
    _Generic(*(p), float: _mm512_storeu_ps, double: _mm512_storeu_pd)(p, v)
#define fmm512_set1(x) \
    _Generic((x), float: _mm512_set1_ps, double: _mm512_set1_pd)(x)
#define fmm512_mul(x, y) \
    _Generic((x), __m512: _mm512_mul_ps, __m512d: _mm512_mul_pd)(x, y)
#define fmm512_fmadd(x, y, z) \
    _Generic((x), __m512: _mm512_fmadd_ps, __m512d: _mm512_fmadd_pd)(x, y, z)

#define FMM_UKR fmm_sgemm_avx512_12x32
#define FMM_T float
#define FMM_V __m512
#define FMM_MR FMM_AVX512_S_MR
#define FMM_NV FMM_AVX512_S_NV
#include "avx512_body.h"

#define FMM_UKR fmm_dgemm_avx512_12x16
#define FMM_T double
#define FMM_V __m512d
#define FMM_MR FMM_AVX512_D_MR
#define FMM_NV FMM_AVX512_D_NV
#include "avx512_body.h"

/* Streaming kernels: the same, prefetching both packed micro-panels
 * FMM_AVX512_AHEAD k steps ahead.  With KC = 512 the B micro-panel (64 KiB)
 * and the A micro-panel do not stay in a 48 KiB L1 between calls, so both
 * come from L2, where the core's own prefetchers (Intel Xeon with AMX, 2
 * cores, KVM) left the kernel waiting: in the driver's ir loop (KC 512, A
 * block of a quarter of L2, B panel 4096 wide) float32 ran 150-163 ->
 * 161-169 GFLOP/s and float64 58-72 -> 77-83 with 24-32 steps; 8 and 16
 * were behind on float64, 64 level with 32.  Rows opt in
 * (stream_prefetch): the extra load-port work is unmeasured on AMD. */
#define FMM_AVX512_AHEAD 24

#define FMM_UKR fmm_sgemm_avx512_12x32_stream
#define FMM_T float
#define FMM_V __m512
#define FMM_MR FMM_AVX512_S_MR
#define FMM_NV FMM_AVX512_S_NV
#define FMM_AHEAD FMM_AVX512_AHEAD
#include "avx512_body.h"

#define FMM_UKR fmm_dgemm_avx512_12x16_stream
#define FMM_T double
#define FMM_V __m512d
#define FMM_MR FMM_AVX512_D_MR
#define FMM_NV FMM_AVX512_D_NV
#define FMM_AHEAD FMM_AVX512_AHEAD
#include "avx512_body.h"

/* Edge-row kernels: the last strip of an A block often has fewer than 12
 * rows (m = 32 and 64 end in strips of 8 and 4).  The full kernel would
 * spend 12 rows' FMAs on it and write through the driver's private tile;
 * these spend 4, 8 or 12 rows' worth (the panel keeps its 12-row layout)
 * and write the live rows of C directly.  Measured on 2 Zen 4 cores,
 * three interleaved runs against the full kernel + tile, GFLOP/s:
 * 64x1024 @ 1024x4096 float64 36-37 -> 38-40 (1 thread), 61-68 -> 78 (2);
 * 64x4096 @ 4096x1024 float32 88 -> 96-97 (1), 141-157 -> 152-157 (2);
 * 100x500 @ 500x300 float32 83-92 -> 97-99 (1), 159-178 -> 189 (2); no
 * shape slower. */
#define FMM_UKR fmm_sgemm_avx512_4x32_rows
#define FMM_T float
#define FMM_V __m512
#define FMM_MR 4
#define FMM_MRA FMM_AVX512_S_MR
#define FMM_NV FMM_AVX512_S_NV
#define FMM_ROWS 1
#include "avx512_body.h"

#define FMM_UKR fmm_sgemm_avx512_8x32_rows
#define FMM_T float
#define FMM_V __m512
#define FMM_MR 8
#define FMM_MRA FMM_AVX512_S_MR
#define FMM_NV FMM_AVX512_S_NV
#define FMM_ROWS 1
#include "avx512_body.h"

#define FMM_UKR fmm_sgemm_avx512_12x32_rows
#define FMM_T float
#define FMM_V __m512
#define FMM_MR FMM_AVX512_S_MR
#define FMM_NV FMM_AVX512_S_NV
#define FMM_ROWS 1
#include "avx512_body.h"

#define FMM_UKR fmm_dgemm_avx512_4x16_rows
#define FMM_T double
#define FMM_V __m512d
#define FMM_MR 4
#define FMM_MRA FMM_AVX512_D_MR
#define FMM_NV FMM_AVX512_D_NV
#define FMM_ROWS 1
#include "avx512_body.h"

#define FMM_UKR fmm_dgemm_avx512_8x16_rows
#define FMM_T double
#define FMM_V __m512d
#define FMM_MR 8
#define FMM_MRA FMM_AVX512_D_MR
#define FMM_NV FMM_AVX512_D_NV
#define FMM_ROWS 1
#include "avx512_body.h"

#define FMM_UKR fmm_dgemm_avx512_12x16_rows
#define FMM_T double
#define FMM_V __m512d
#define FMM_MR FMM_AVX512_D_MR
#define FMM_NV FMM_AVX512_D_NV
#define FMM_ROWS 1
#include "avx512_body.h"

FMM_DEFINE_ROWS_DISPATCH(fmm_sgemm_avx512_rows, FMM_TARGET_AVX512, float, 4,
                         fmm_sgemm_avx512_4x32_rows, 8,
                         fmm_sgemm_avx512_8x32_rows,
                         fmm_sgemm_avx512_12x32_rows)
FMM_DEFINE_ROWS_DISPATCH(fmm_dgemm_avx512_rows, FMM_TARGET_AVX512, double, 4,
                         fmm_dgemm_avx512_4x16_rows, 8,
                         fmm_dgemm_avx512_8x16_rows,
                         fmm_dgemm_avx512_12x16_rows)

#define FMM_HAVE_AVX512_KERNELS 1
#define FMM_AVX512_S_NR (16 * FMM_AVX512_S_NV)
#define FMM_AVX512_SGEMM fmm_sgemm_avx512_12x32
#define FMM_AVX512_D_NR (8 * FMM_AVX512_D_NV)
#define FMM_AVX512_DGEMM fmm_dgemm_avx512_12x16
#define FMM_AVX512_SGEMM_ROWS fmm_sgemm_avx512_rows
#define FMM_AVX512_DGEMM_ROWS fmm_dgemm_avx512_rows
#define FMM_AVX512_SGEMM_STREAM fmm_sgemm_avx512_12x32_stream
#define FMM_AVX512_DGEMM_STREAM fmm_dgemm_avx512_12x16_stream

/* ukernel.h: the packed B micro-panels must stay 64-byte aligned. */
_Static_assert(FMM_AVX512_S_NR * sizeof(float) % 64 == 0, "NR * 4 % 64");
_Static_assert(FMM_AVX512_D_NR * sizeof(double) % 64 == 0, "NR * 8 % 64");

#endif
