// Narrow weights on the CPU outside the matvec (kernels/infer_kernels.h): the
// linear layer of a prefill chunk, y = x W^T with W in BF16 or Q8, the row
// conversions between BF16 and F32, and Q8 quantization of a row.
//
// linear_forward_bf16 (and _q8) widens W panel by panel into the caller's
// scratch and runs oneDNN's F32 sgemm on each panel (exact F32 products of the
// stored weights, unlike a BF16 GEMM, which would round x),
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
#include <cmath>
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

STEM_SIMD void quantize_q8_row(uint8_t* STEM_RESTRICT dst, const float* STEM_RESTRICT src, int64_t n) {
  for (int64_t b0 = 0; b0 < n; b0 += 32) {
    const int64_t m = std::min<int64_t>(32, n - b0);
    float amax = 0.0f;
    for (int64_t i = 0; i < m; ++i) amax = std::max(amax, std::fabs(src[b0 + i]));
    const float scale = amax / 127.0f, inv = amax > 0.0f ? 127.0f / amax : 0.0f;
    uint8_t* blk = dst + b0 / 32 * 36;
    std::memcpy(blk, &scale, 4);
    auto* q = reinterpret_cast<int8_t*>(blk + 4);
    for (int64_t i = 0; i < m; ++i)
      q[i] = static_cast<int8_t>(std::clamp(std::nearbyint(src[b0 + i] * inv), -127.0f, 127.0f));
    for (int64_t i = m; i < 32; ++i) q[i] = 0;
  }
}

STEM_SIMD void dequantize_q8_row(float* STEM_RESTRICT dst, const uint8_t* STEM_RESTRICT src, int64_t n) {
  for (int64_t b0 = 0; b0 < n; b0 += 32) {
    const uint8_t* blk = src + b0 / 32 * 36;
    float scale;
    std::memcpy(&scale, blk, 4);
    const auto* q = reinterpret_cast<const int8_t*>(blk + 4);
    const int64_t m = std::min<int64_t>(32, n - b0);
    for (int64_t i = 0; i < m; ++i) dst[b0 + i] = static_cast<float>(q[i]) * scale;
  }
}

namespace {

// y = x W^T with W in a narrow format: widen(r, k0, kk, dst) writes the F32
// values of W[r, k0 .. k0+kk) to dst; k0 is a multiple of `align`.
template <class Widen>
void linear_widened(float* y, const float* x, int64_t N, int64_t in, int64_t out, bool accumulate, float* scratch,
                    int64_t align, const Widen& widen) {
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
  const int64_t per = S / nt;
  const int64_t kb = per >= in ? in : std::max(align, per / align * align);
  const int64_t p_max = std::max<int64_t>(1, per / kb);
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
        for (int64_t r = 0; r < rows; ++r) widen(o0 + r, k0, kk, panel + r * kk);
        gemm(false, true, N, rows, kk, 1.0f, x + k0, in, panel, kk,
             accumulate || k0 > 0 ? 1.0f : 0.0f, y + o0, out);
      }
    }
  }
}

}  // namespace

void linear_forward_bf16(float* y, const float* x, const uint16_t* W, int64_t N, int64_t in,
                         int64_t out, bool accumulate, float* scratch) {
  STEM_CHECK(N >= 0 && in >= 0 && out >= 0);
  if (N == 0 || out == 0) return;
  if (N == 1) {
    matvec_bf16(y, W, x, out, in, accumulate);
    return;
  }
  linear_widened(y, x, N, in, out, accumulate, scratch, 1, [&](int64_t r, int64_t k0, int64_t kk, float* dst) {
    bf16_to_f32_row(dst, W + r * in + k0, kk);
  });
}

void linear_forward_q8(float* y, const float* x, const uint8_t* W, int64_t N, int64_t in, int64_t out,
                       bool accumulate, float* scratch) {
  STEM_CHECK(N >= 0 && in >= 0 && out >= 0);
  if (N == 0 || out == 0) return;
  if (N == 1) {
    matvec_q8(y, W, x, out, in, accumulate);
    return;
  }
  const int64_t row = q8_row_bytes(in);
  linear_widened(y, x, N, in, out, accumulate, scratch, 32, [&](int64_t r, int64_t k0, int64_t kk, float* dst) {
    dequantize_q8_row(dst, W + r * row + k0 / 32 * 36, kk);
  });
}

}  // namespace stem::kernels
