// BF16 weights on the CPU outside the matvec (kernels/infer_kernels.h): the
// linear layer of a prefill chunk, y = x W^T with W in BF16, and the row
// conversions between BF16 and F32.
//
// linear_forward_bf16 widens W panel by panel into the caller's scratch and
// runs oneDNN's F32 sgemm on each panel (oneDNN 2.6's C API has no BF16 GEMM),
// so one widening serves all N rows of the chunk. Each thread owns a slice of
// the scratch and whole blocks of output columns: it widens a panel that stays
// in its own L2 and runs a one-thread sgemm on it, so there is one fork/join
// per call and no thread waits for another's panel. The result equals
// linear_forward on the widened W (widening is exact).
//
// The conversions are plain loops compiled for AVX-512 / AVX2 / baseline
// (STEM_SIMD); one thread, since callers convert a row or a panel at a time.
// Not here: the one-row (decode) product, matvec_bf16 in matvec.cpp.
#include <omp.h>

#include <algorithm>
#include <cstring>

#include "core/check.h"
#include "core/simd.h"
#include "kernels/infer_kernels.h"
#include "kernels/kernels.h"

namespace stem::kernels {

STEM_SIMD void bf16_to_f32_row(float* STEM_RESTRICT dst, const uint16_t* STEM_RESTRICT src,
                               int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t u = static_cast<uint32_t>(src[i]) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    dst[i] = f;
  }
}

// Same rounding as core::float_to_bf16, written without branches so that it
// vectorises: add 0x7fff plus the lowest kept bit (ties to even; a carry into
// the exponent rounds up to the next binade or to inf), keep the upper half;
// NaN keeps its sign and payload's upper bits and is made quiet.
STEM_SIMD void f32_to_bf16_row(uint16_t* STEM_RESTRICT dst, const float* STEM_RESTRICT src,
                               int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    uint32_t u;
    std::memcpy(&u, src + i, 4);
    const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    const uint32_t quiet_nan = (u >> 16) | 0x40u;
    dst[i] = static_cast<uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? quiet_nan : rounded);
  }
}

void linear_forward_bf16(float* y, const float* x, const uint16_t* W, int64_t N, int64_t in,
                         int64_t out, bool accumulate, float* scratch) {
  STEM_CHECK(N >= 0 && in >= 0 && out >= 0);
  if (N == 0 || out == 0) return;
  if (N == 1) {
    matvec_bf16(y, W, x, out, in, accumulate);
    return;
  }
  if (in == 0) {
    if (!accumulate) std::fill(y, y + N * out, 0.0f);
    return;
  }
  STEM_CHECK(scratch != nullptr);
  const int64_t S = linear_bf16_scratch(in, out);
  // Threads, each with a slice of `per` floats holding a panel of P rows x kb
  // columns of W (kb < in only for rows longer than the whole scratch).
  int nt = omp_in_parallel() ? 1 : omp_get_max_threads();
  nt = static_cast<int>(std::clamp<int64_t>(S / in, 1, nt));
  const int64_t per = S / nt, kb = std::min(in, per), p_max = std::max<int64_t>(1, per / kb);
  // A multiple of nt blocks of equal width, so that threads get equal work.
  int64_t nblk = (out + p_max - 1) / p_max;
  nblk = (nblk + nt - 1) / nt * nt;
  const int64_t P = (out + nblk - 1) / nblk;
  nblk = (out + P - 1) / P;
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    const int t = omp_get_thread_num(), n_t = omp_get_num_threads();
    float* panel = scratch + t * per;
    for (int64_t b = nblk * t / n_t; b < nblk * (t + 1) / n_t; ++b) {
      const int64_t o0 = b * P, rows = std::min(P, out - o0);
      for (int64_t k0 = 0; k0 < in; k0 += kb) {
        const int64_t kk = std::min(kb, in - k0);
        for (int64_t r = 0; r < rows; ++r) bf16_to_f32_row(panel + r * kk, W + (o0 + r) * in + k0, kk);
        gemm(false, true, N, rows, kk, 1.0f, x + k0, in, panel, kk,
             accumulate || k0 > 0 ? 1.0f : 0.0f, y + o0, out);
      }
    }
  }
}

}  // namespace stem::kernels
