/*
 * Run-time choice of the micro-kernel family: the table of kernels this build
 * contains, and the CPU/OS feature checks that decide which ones may run.
 * Kernels are compiled with per-function target attributes, so one binary
 * carries all of them and only the chosen one ever executes.
 */
#ifndef FASTMM_DISPATCH_H
#define FASTMM_DISPATCH_H

#include "ukernel.h"
#include "ref.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FMM_X86 1
#include <cpuid.h>

/* XCR0 says which register states the OS saves on a context switch; a CPU
 * flag alone is not enough to use the registers. */
static unsigned long long fmm_xgetbv0(void)
{
    unsigned int lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}

static int fmm_os_saves(unsigned long long mask)
{
    unsigned int a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_OSXSAVE))
        return 0;
    return (fmm_xgetbv0() & mask) == mask;
}

static int fmm_cpu_has_avx2_fma(void)
{
    unsigned int a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_FMA) || !(c & bit_AVX))
        return 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(b & bit_AVX2))
        return 0;
    return fmm_os_saves(0x6); /* XMM | YMM state */
}

static int fmm_cpu_has_avx512(void)
{
    unsigned int a, b, c, d;
    if (!fmm_cpu_has_avx2_fma())
        return 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return 0;
    /* F, DQ, BW, VL: the subset the kernels use. */
    if (!(b & bit_AVX512F) || !(b & bit_AVX512DQ) || !(b & bit_AVX512BW) ||
        !(b & bit_AVX512VL))
        return 0;
    return fmm_os_saves(0xE6); /* XMM | YMM | opmask | ZMM_Hi256 | Hi16_ZMM */
}
#include "avx2.h"
#include "avx512.h"
#endif

/* Best first: the first supported row is the default. */
static const fmm_kernel_t fmm_kernels[] = {
#ifdef FMM_X86
#ifdef FMM_HAVE_AVX512_KERNELS
    {"avx512", fmm_cpu_has_avx512, FMM_AVX512_S_MR, FMM_AVX512_S_NR,
     FMM_AVX512_SGEMM, FMM_AVX512_D_MR, FMM_AVX512_D_NR, FMM_AVX512_DGEMM,
     FMM_AVX512_SGEMM_ROWS, FMM_AVX512_DGEMM_ROWS, 0, FMM_AVX512_SGEMM_STREAM,
     FMM_AVX512_DGEMM_STREAM},
#endif
#ifdef FMM_HAVE_AVX2_KERNELS
    {"avx2", fmm_cpu_has_avx2_fma, FMM_AVX2_S_MR, FMM_AVX2_S_NR,
     FMM_AVX2_SGEMM, FMM_AVX2_D_MR, FMM_AVX2_D_NR, FMM_AVX2_DGEMM,
     FMM_AVX2_SGEMM_ROWS, FMM_AVX2_DGEMM_ROWS, FMM_AVX2_SPLIT_ROWS, NULL,
     NULL},
#endif
#endif
    {"generic", fmm_ref_supported, FMM_REF_S_MR, FMM_REF_S_NR,
     fmm_sgemm_ref_4x16, FMM_REF_D_MR, FMM_REF_D_NR, fmm_dgemm_ref_4x8, NULL,
     NULL, 0, NULL, NULL},
};

static int fmm_kernel_count(void)
{
    return (int)(sizeof(fmm_kernels) / sizeof(fmm_kernels[0]));
}

#endif
