// Run-time dispatch for hot loops without -march=native: a function marked
// STEM_SIMD is compiled three times (AVX-512, AVX2+FMA, baseline x86-64) and the
// loader picks the best one for the CPU it runs on (GCC target_clones, ifunc).
// Write such loops as plain, branch-free code the compiler can vectorise.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
#define STEM_SIMD __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define STEM_SIMD
#endif

#define STEM_RESTRICT __restrict__
