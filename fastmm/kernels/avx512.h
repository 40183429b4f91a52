/* AVX-512 micro-kernels: not written yet (see the SIMD-kernels issue). */
