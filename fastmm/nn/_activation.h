/*
 * Activations for the dense-layer epilogue (fastmm/nn/_epilogue.pxd), written
 * branch-free so the compiler vectorizes a row of a tile at a time.
 *
 * Why not libm: glibc's expf/tanhf are scalar calls of 10-40 ns each, which
 * would make a fused sigmoid/tanh layer slower than numpy's SIMD ufuncs.
 * float32 sigmoid, tanh and both gelus use Cephes' expf/tanhf polynomials
 * and Numerical Recipes' erfc (within a few ulp); float64 sigmoid, tanh and
 * gelu_tanh use Cephes' exp and tanh (fmm_exp_neg), float64 gelu libm's erfc.
 *
 * The tile routine is compiled three times, for AVX-512, AVX2+FMA and the
 * x86-64 baseline, by per-function target attributes; the CPU's features
 * (as libgcc reads them, OS register support included) pick one at run
 * time.  A CPU without AVX never executes an AVX instruction.  The vector
 * versions contract a*b+c into FMAs, so results may differ from the scalar
 * path (fmm_act_f32 below) in the last bit.
 */
#ifndef FASTMM_ACTIVATION_H
#define FASTMM_ACTIVATION_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The codes of _epilogue.pxd's ACT_* enum. */
enum { FMM_ACT_NONE, FMM_ACT_RELU, FMM_ACT_LEAKY_RELU, FMM_ACT_SIGMOID,
       FMM_ACT_TANH, FMM_ACT_GELU_TANH, FMM_ACT_GELU_ERF };

#define FMM_INLINE static inline __attribute__((always_inline))

/* exp(x) for x <= 0 (the only arguments the callers need, so no overflow).
 * Cephes expf: x = n ln2 + r with |r| <= ln2/2, a degree-6 polynomial in r,
 * times 2^n built in the exponent bits.  Rounding to n adds and subtracts
 * 1.5 * 2^23 instead of calling rintf, which the baseline ISA cannot
 * vectorize.  Below -87.33 (2^-126) the result flushes to 0 (error below
 * 1.2e-38). */
FMM_INLINE float fmm_expf_neg(float x)
{
    const float magic = 12582912.0f; /* 1.5 * 2^23 */
    float xc = x < -87.33654f ? -87.33654f : x;
    float t = xc * 1.44269504088896341f + magic;
    union { float f; int32_t i; } u = { t }, s;
    int32_t n = u.i - 0x4B400000; /* the bits of magic */
    float fn = t - magic;
    float r = xc - fn * 0.693359375f - fn * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    s.i = (n + 127) << 23;
    return x < -87.33654f ? 0.0f : p * s.f;
}

/* 1 / (1 + exp(-x)) without overflow on either side; NaN stays NaN. */
FMM_INLINE float fmm_sigmoidf(float x)
{
    float e = fmm_expf_neg(-fabsf(x));
    float s = 1.0f / (1.0f + e);
    return x >= 0 ? s : e * s;
}

/* Cephes tanhf: an odd polynomial below 0.625 (where (1-e)/(1+e) would lose
 * relative accuracy), (1 - e) / (1 + e) with e = exp(-2|x|) above. */
FMM_INLINE float fmm_tanhf(float x)
{
    float a = fabsf(x), s = a * a, e, big, small;
    small = ((((-5.70498872745e-3f * s + 2.06390887954e-2f) * s
               - 5.37397155531e-2f) * s + 1.33314422036e-1f) * s
             - 3.33332819422e-1f) * s * a + a;
    e = fmm_expf_neg(-2.0f * a);
    big = (1.0f - e) / (1.0f + e);
    return copysignf(a < 0.625f ? small : big, x);
}

/* 0.5 x (1 + tanh(u)) written as x * sigmoid(2u): the same function, without
 * the cancellation in 1 + tanh(u) for negative x. */
FMM_INLINE float fmm_gelu_tanhf(float x)
{
    float u = 0.7978845608028654f * (x + 0.044715f * x * x * x);
    return x * fmm_sigmoidf(2.0f * u);
}

/* erfc(x): Numerical Recipes' erfcc, a Chebyshev fit of erfc(x) exp(x^2)
 * with fractional error below 1.2e-7 everywhere, tails included. */
FMM_INLINE float fmm_erfcf(float x)
{
    float z = fabsf(x), t = 1.0f / (1.0f + 0.5f * z), p, ans;
    p = 0.17087277f;
    p = p * t - 0.82215223f;
    p = p * t + 1.48851587f;
    p = p * t - 1.13520398f;
    p = p * t + 0.27886807f;
    p = p * t - 0.18628806f;
    p = p * t + 0.09678418f;
    p = p * t + 0.37409196f;
    p = p * t + 1.00002368f;
    ans = t * fmm_expf_neg(-z * z - 1.26551223f + t * p);
    return x >= 0 ? ans : 2.0f - ans;
}

/* float64 counterparts, vectorizable the same way (libm's exp and tanh are
 * scalar calls of 10-40 ns: a fused float64 tanh layer ran at 0.7-0.95x
 * numpy's separate passes on Zen 3).  exp(x) for x <= 0: Cephes exp, x =
 * n ln2 + r with |r| <= ln2/2 and exp(r) = 1 + 2 r P(r^2) / (Q(r^2) -
 * r P(r^2)), within about 1 ulp; 2^n from the exponent bits, the rounding
 * to n by adding 1.5 * 2^52.  Below -708.39 (2^-1022) it flushes to 0. */
FMM_INLINE double fmm_exp_neg(double x)
{
    const double magic = 6755399441055744.0; /* 1.5 * 2^52 */
    const double lo = -708.3964185322641;
    double xc = x < lo ? lo : x;
    double t = xc * 1.4426950408889634 + magic;
    union { double f; uint64_t i; } u = { t }, s;
    /* n + 1023 in the low bits (unsigned: a NaN's bits wrap, not overflow) */
    uint64_t n = u.i - 0x4338000000000000ULL + 1023;
    double fn = t - magic;
    double r = xc - fn * 6.93145751953125e-1 - fn * 1.42860682030941723212e-6;
    double rr = r * r;
    double px = r * ((1.26177193074810590878e-4 * rr +
                      3.02994407707441961300e-2) * rr + 1.0);
    double qx = ((3.00198505138664455042e-6 * rr +
                  2.52448340349684104192e-3) * rr +
                 2.27265548208155028766e-1) * rr + 2.0;
    double e = 1.0 + 2.0 * px / (qx - px);
    s.i = n << 52;
    return x < lo ? 0.0 : e * s.f;
}

FMM_INLINE double fmm_sigmoid(double x)
{
    double e = fmm_exp_neg(-fabs(x));
    double s = 1.0 / (1.0 + e);
    return x >= 0 ? s : e * s;
}

/* Cephes tanh: x + x^3 P(x^2) / Q(x^2) below 0.625, (1 - e) / (1 + e) with
 * e = exp(-2|x|) above. */
FMM_INLINE double fmm_tanh(double x)
{
    double a = fabs(x), z = a * a, e, big, small;
    small = a + a * z *
                    (((-9.64399179425052238628e-1 * z -
                       9.92877231001918586564e1) * z -
                      1.61468768441708447952e3) /
                     (((z + 1.12811678491632931402e2) * z +
                       2.23548839060100448583e3) * z +
                      4.84406305325125486048e3));
    e = fmm_exp_neg(-2.0 * a);
    big = (1.0 - e) / (1.0 + e);
    return copysign(a < 0.625 ? small : big, x);
}

/* One element, any activation: the scalar reference the strided paths use. */
FMM_INLINE float fmm_act_f32(float v, int act, float slope)
{
    switch (act) {
    case FMM_ACT_RELU: return (v > 0 || v != v) ? v : 0.0f;
    case FMM_ACT_LEAKY_RELU: return (v > 0 || v != v) ? v : v * slope;
    case FMM_ACT_SIGMOID: return fmm_sigmoidf(v);
    case FMM_ACT_TANH: return fmm_tanhf(v);
    case FMM_ACT_GELU_TANH: return fmm_gelu_tanhf(v);
    /* 1 + erf(t) as erfc(-t): no cancellation for negative v */
    case FMM_ACT_GELU_ERF:
        return 0.5f * v * fmm_erfcf(-v * 0.7071067811865476f);
    default: return v;
    }
}

FMM_INLINE double fmm_act_f64(double v, int act, double slope)
{
    switch (act) {
    case FMM_ACT_RELU: return (v > 0 || v != v) ? v : 0.0;
    case FMM_ACT_LEAKY_RELU: return (v > 0 || v != v) ? v : v * slope;
    case FMM_ACT_SIGMOID: return fmm_sigmoid(v);
    case FMM_ACT_TANH: return fmm_tanh(v);
    case FMM_ACT_GELU_TANH: /* x * sigmoid(2u), as fmm_gelu_tanhf */
        return v * fmm_sigmoid(1.5957691216057308 *
                               (v + 0.044715 * v * v * v));
    case FMM_ACT_GELU_ERF: return 0.5 * v * erfc(-v * 0.7071067811865476);
    default: return v;
    }
}

/*
 * c[i*rs + j] = act(c[i*rs + j] + bias[j]) for an mr x nr tile with unit
 * column stride; bias is NULL or unit-stride.  One loop per activation, each
 * with a loop-invariant body, so every one of them vectorizes.
 */
#define FMM_ACT_TILE_BODY(T, ACT)                                             \
    for (ptrdiff_t i = 0; i < mr; i++) {                                      \
        T *ci = c + i * rs;                                                   \
        if (bias)                                                             \
            for (ptrdiff_t j = 0; j < nr; j++)                                \
                ci[j] += bias[j];                                             \
        switch (act) {                                                        \
        case FMM_ACT_NONE: break;                                             \
        case FMM_ACT_RELU:                                                    \
            for (ptrdiff_t j = 0; j < nr; j++)                                \
                ci[j] = (ci[j] > 0 || ci[j] != ci[j]) ? ci[j] : (T)0;         \
            break;                                                            \
        case FMM_ACT_LEAKY_RELU:                                              \
            for (ptrdiff_t j = 0; j < nr; j++)                                \
                ci[j] = (ci[j] > 0 || ci[j] != ci[j]) ? ci[j]                 \
                                                      : ci[j] * (T)slope;     \
            break;                                                            \
        case FMM_ACT_SIGMOID:                                                 \
            for (ptrdiff_t j = 0; j < nr; j++)                                \
                ci[j] = ACT(ci[j], FMM_ACT_SIGMOID, slope);                   \
            break;                                                            \
        case FMM_ACT_TANH:                                                    \
            for (ptrdiff_t j = 0; j < nr; j++)                                \
                ci[j] = ACT(ci[j], FMM_ACT_TANH, slope);                      \
            break;                                                            \
        case FMM_ACT_GELU_TANH:                                               \
            for (ptrdiff_t j = 0; j < nr; j++)                                \
                ci[j] = ACT(ci[j], FMM_ACT_GELU_TANH, slope);                 \
            break;                                                            \
        case FMM_ACT_GELU_ERF:                                                \
            for (ptrdiff_t j = 0; j < nr; j++)                                \
                ci[j] = ACT(ci[j], FMM_ACT_GELU_ERF, slope);                  \
            break;                                                            \
        default:                                                              \
            for (ptrdiff_t j = 0; j < nr; j++)                                \
                ci[j] = ACT(ci[j], act, slope);                               \
        }                                                                     \
    }

/* GCC may not if-convert a select whose arm could raise a floating-point
 * exception (p * 2^n in exp, e * s in sigmoid) unless the ISA can mask the
 * arm: the AVX-512 loops vectorized, the AVX2 and baseline ones stayed
 * scalar, and a fused tanh or sigmoid layer ran slower than numpy's
 * separate passes on AVX2 CPUs.  Without trapping math both arms are
 * computed and one is kept, which gives the same values; only the
 * floating-point status flags (which nothing here reads) may differ. */
#if defined(__GNUC__) && !defined(__clang__)
#define FMM_ACT_NOTRAP __attribute__((optimize("no-trapping-math")))
#else
#define FMM_ACT_NOTRAP
#endif

#define FMM_ACT_TILE(NAME, ATTR, T, ACT)                                      \
    ATTR FMM_ACT_NOTRAP static void NAME(T *c, ptrdiff_t rs, ptrdiff_t mr,   \
                                         ptrdiff_t nr, const T *bias, int act, \
                                         T slope)                             \
    {                                                                         \
        FMM_ACT_TILE_BODY(T, ACT)                                             \
    }

/*
 * Softmax of one unit-stride row, in place.  Subtracting the row maximum keeps
 * every exp() argument <= 0 (no overflow).  The maximum and the sum run in
 * FMM_SM_L independent lanes, so the compiler vectorizes them without being
 * allowed to reorder a floating-point reduction (no fast-math flags); the sum's
 * lanes are doubles.  NaN anywhere in the row makes the whole row NaN.
 */
#define FMM_SM_L 16
#define FMM_SOFTMAX_ROW(NAME, ATTR, T, EXP)                                   \
    ATTR FMM_ACT_NOTRAP static void NAME(T *y, ptrdiff_t n)                  \
    {                                                                         \
        T lane_max[FMM_SM_L], mx = y[0];                                      \
        double lane_sum[FMM_SM_L], total = 0;                                 \
        ptrdiff_t j = 0, l;                                                   \
        for (l = 0; l < FMM_SM_L; l++) {                                      \
            lane_max[l] = y[0];                                               \
            lane_sum[l] = 0;                                                  \
        }                                                                     \
        for (; j + FMM_SM_L <= n; j += FMM_SM_L)                              \
            for (l = 0; l < FMM_SM_L; l++)                                    \
                lane_max[l] = y[j + l] > lane_max[l] ? y[j + l] : lane_max[l];\
        for (; j < n; j++)                                                    \
            mx = y[j] > mx ? y[j] : mx;                                       \
        for (l = 0; l < FMM_SM_L; l++)                                        \
            mx = lane_max[l] > mx ? lane_max[l] : mx;                         \
        for (j = 0; j < n; j++)                                               \
            y[j] = EXP(y[j] - mx);                                            \
        for (j = 0; j + FMM_SM_L <= n; j += FMM_SM_L)                         \
            for (l = 0; l < FMM_SM_L; l++)                                    \
                lane_sum[l] += y[j + l];                                      \
        for (; j < n; j++)                                                    \
            total += y[j];                                                    \
        for (l = 0; l < FMM_SM_L; l++)                                        \
            total += lane_sum[l];                                             \
        T inv = (T)(1.0 / total);                                             \
        for (j = 0; j < n; j++)                                               \
            y[j] *= inv;                                                      \
    }

#if defined(__x86_64__) && defined(__GNUC__)
#define FMM_ACT_X86 1
#define FMM_ACT_AVX2 __attribute__((target("avx2,fma")))
#define FMM_ACT_AVX512 \
    __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl")))
FMM_ACT_TILE(fmm_act_tile_f32_avx512, FMM_ACT_AVX512, float, fmm_act_f32)
FMM_ACT_TILE(fmm_act_tile_f64_avx512, FMM_ACT_AVX512, double, fmm_act_f64)
FMM_ACT_TILE(fmm_act_tile_f32_avx2, FMM_ACT_AVX2, float, fmm_act_f32)
FMM_ACT_TILE(fmm_act_tile_f64_avx2, FMM_ACT_AVX2, double, fmm_act_f64)
FMM_SOFTMAX_ROW(fmm_softmax_row_f32_avx512, FMM_ACT_AVX512, float,
                fmm_expf_neg)
FMM_SOFTMAX_ROW(fmm_softmax_row_f64_avx512, FMM_ACT_AVX512, double,
                fmm_exp_neg)
FMM_SOFTMAX_ROW(fmm_softmax_row_f32_avx2, FMM_ACT_AVX2, float, fmm_expf_neg)
FMM_SOFTMAX_ROW(fmm_softmax_row_f64_avx2, FMM_ACT_AVX2, double,
                fmm_exp_neg)
#endif
FMM_ACT_TILE(fmm_act_tile_f32_base, , float, fmm_act_f32)
FMM_ACT_TILE(fmm_act_tile_f64_base, , double, fmm_act_f64)
FMM_SOFTMAX_ROW(fmm_softmax_row_f32_base, , float, fmm_expf_neg)
FMM_SOFTMAX_ROW(fmm_softmax_row_f64_base, , double, fmm_exp_neg)

/* 2: AVX-512, 1: AVX2+FMA, 0: baseline; -1 until chosen.  Each module that
 * includes this header has its own copy, set by fmm_act_select from the one
 * decision (fastmm.driver._context.select_kernel, following fastmm.config's
 * row). */
static int fmm_act_isa = -1;

static int fmm_act_best(int cap)
{
#ifdef FMM_ACT_X86
    __builtin_cpu_init();
    if (cap >= 2 && __builtin_cpu_supports("avx512f")
        && __builtin_cpu_supports("avx512dq")
        && __builtin_cpu_supports("avx512bw")
        && __builtin_cpu_supports("avx512vl"))
        return 2;
    if (cap >= 1 && __builtin_cpu_supports("avx2")
        && __builtin_cpu_supports("fma"))
        return 1;
#endif
    (void)cap;
    return 0;
}

/* isa: a kernel family name ("avx512", "avx2", "generic"): use that ISA or
 * the best below it the CPU runs.  Returns the name in use. */
static const char *fmm_act_select(const char *isa)
{
    static const char *const names[] = {"generic", "avx2", "avx512"};
    int cap = 2;
    if (isa && strcmp(isa, "generic") == 0)
        cap = 0;
    else if (isa && strcmp(isa, "avx2") == 0)
        cap = 1;
    fmm_act_isa = fmm_act_best(cap);
    return names[fmm_act_isa];
}

static int fmm_act_detect(void)
{
    return fmm_act_best(2);
}

static void fmm_act_tile_f32(float *c, ptrdiff_t rs, ptrdiff_t mr,
                             ptrdiff_t nr, const float *bias, int act,
                             float slope)
{
    /* benign race: every thread computes the same value */
    if (fmm_act_isa < 0)
        fmm_act_isa = fmm_act_detect();
#ifdef FMM_ACT_X86
    if (fmm_act_isa == 2)
        return fmm_act_tile_f32_avx512(c, rs, mr, nr, bias, act, slope);
    if (fmm_act_isa == 1)
        return fmm_act_tile_f32_avx2(c, rs, mr, nr, bias, act, slope);
#endif
    fmm_act_tile_f32_base(c, rs, mr, nr, bias, act, slope);
}

static void fmm_act_tile_f64(double *c, ptrdiff_t rs, ptrdiff_t mr,
                             ptrdiff_t nr, const double *bias, int act,
                             double slope)
{
    if (fmm_act_isa < 0)
        fmm_act_isa = fmm_act_detect();
#ifdef FMM_ACT_X86
    if (fmm_act_isa == 2)
        return fmm_act_tile_f64_avx512(c, rs, mr, nr, bias, act, slope);
    if (fmm_act_isa == 1)
        return fmm_act_tile_f64_avx2(c, rs, mr, nr, bias, act, slope);
#endif
    fmm_act_tile_f64_base(c, rs, mr, nr, bias, act, slope);
}

static void fmm_softmax_row_f32(float *y, ptrdiff_t n)
{
    if (fmm_act_isa < 0)
        fmm_act_isa = fmm_act_detect();
#ifdef FMM_ACT_X86
    if (fmm_act_isa == 2)
        return fmm_softmax_row_f32_avx512(y, n);
    if (fmm_act_isa == 1)
        return fmm_softmax_row_f32_avx2(y, n);
#endif
    fmm_softmax_row_f32_base(y, n);
}

static void fmm_softmax_row_f64(double *y, ptrdiff_t n)
{
    if (fmm_act_isa < 0)
        fmm_act_isa = fmm_act_detect();
#ifdef FMM_ACT_X86
    if (fmm_act_isa == 2)
        return fmm_softmax_row_f64_avx512(y, n);
    if (fmm_act_isa == 1)
        return fmm_softmax_row_f64_avx2(y, n);
#endif
    fmm_softmax_row_f64_base(y, n);
}

#endif
