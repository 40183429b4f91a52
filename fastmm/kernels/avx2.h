/* AVX2+FMA micro-kernels: not written yet (see the SIMD-kernels issue). */
