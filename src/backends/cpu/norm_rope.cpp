// RMSNorm and RoPE on the CPU: one SIMD row function each, rows split across
// threads. rmsnorm_backward reduces dw through per-thread partial sums.
#include <omp.h>

#include <cmath>
#include <vector>

#include "backends/cpu/parallel.h"
#include "core/simd.h"
#include "kernels/kernels.h"

namespace stem::kernels {
namespace {

STEM_SIMD float rms_row_forward(float* STEM_RESTRICT y, const float* STEM_RESTRICT x,
                                const float* STEM_RESTRICT w, int64_t d, float eps) {
  float ss = 0.0f;
  for (int64_t i = 0; i < d; ++i) ss += x[i] * x[i];
  const float r = 1.0f / std::sqrt(ss / static_cast<float>(d) + eps);
  for (int64_t i = 0; i < d; ++i) y[i] = x[i] * r * w[i];
  return r;
}

STEM_SIMD void rms_row_backward(float* STEM_RESTRICT dx, float* STEM_RESTRICT dw,
                                const float* STEM_RESTRICT dy, const float* STEM_RESTRICT x,
                                const float* STEM_RESTRICT w, float r, int64_t d) {
  float dot = 0.0f;
  for (int64_t i = 0; i < d; ++i) dot += dy[i] * w[i] * x[i];
  const float c = r * r * dot / static_cast<float>(d);
  for (int64_t i = 0; i < d; ++i) {
    dx[i] += r * (dy[i] * w[i] - x[i] * c);
    dw[i] += dy[i] * x[i] * r;
  }
}

STEM_SIMD void add_into(float* STEM_RESTRICT dst, const float* STEM_RESTRICT src, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] += src[i];
}

STEM_SIMD void rope_row(float* STEM_RESTRICT x, const float* STEM_RESTRICT c,
                        const float* STEM_RESTRICT s, int64_t half, float sign) {
  float* x2 = x + half;
  for (int64_t j = 0; j < half; ++j) {
    const float a = x[j], b = x2[j], sj = sign * s[j];
    x[j] = a * c[j] - b * sj;
    x2[j] = b * c[j] + a * sj;
  }
}

void rope_apply(float* x, const float* cos, const float* sin, int64_t B, int64_t T, int64_t nh,
                int64_t hd, int64_t pos0, const int32_t* pos, float sign) {
  const int64_t half = hd / 2;
  cpu::parallel_for(B * T, B * T * nh * hd > 32768, [&](int64_t bt) {
    const int64_t p = pos0 + (pos ? static_cast<int64_t>(pos[bt]) : bt % T);
    for (int64_t h = 0; h < nh; ++h)
      rope_row(x + (bt * nh + h) * hd, cos + p * half, sin + p * half, half, sign);
  });
}

}  // namespace

void rmsnorm_forward(float* y, float* rstd, const float* x, const float* w, int64_t N, int64_t d,
                     float eps) {
  cpu::parallel_for(N, N * d > 32768,
                    [&](int64_t n) { rstd[n] = rms_row_forward(y + n * d, x + n * d, w, d, eps); });
}

void rmsnorm_backward(float* dx, float* dw, const float* dy, const float* x, const float* w,
                      const float* rstd, int64_t N, int64_t d) {
  const int nt = (N * d > 32768) ? omp_get_max_threads() : 1;
  std::vector<float> partial(static_cast<size_t>(nt) * d, 0.0f);
#pragma omp parallel num_threads(nt)
  {
    float* dwp = partial.data() + static_cast<int64_t>(omp_get_thread_num()) * d;
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; ++n)
      rms_row_backward(dx + n * d, dwp, dy + n * d, x + n * d, w, rstd[n], d);
  }
  for (int t = 0; t < nt; ++t) add_into(dw, partial.data() + static_cast<int64_t>(t) * d, d);
}

void rope_tables(float* cos, float* sin, int64_t P, int64_t hd, double theta) {
  const int64_t half = hd / 2;
  for (int64_t j = 0; j < half; ++j) {
    const double inv_freq = std::pow(theta, -2.0 * static_cast<double>(j) / static_cast<double>(hd));
    for (int64_t p = 0; p < P; ++p) {
      const double angle = static_cast<double>(p) * inv_freq;
      cos[p * half + j] = static_cast<float>(std::cos(angle));
      sin[p * half + j] = static_cast<float>(std::sin(angle));
    }
  }
}

void rope_forward(float* x, const float* cos, const float* sin, int64_t B, int64_t T, int64_t nh,
                  int64_t hd, int64_t pos0, const int32_t* pos) {
  rope_apply(x, cos, sin, B, T, nh, hd, pos0, pos, 1.0f);
}

void rope_backward(float* dx, const float* cos, const float* sin, int64_t B, int64_t T,
                   int64_t nh, int64_t hd, int64_t pos0, const int32_t* pos) {
  rope_apply(dx, cos, sin, B, T, nh, hd, pos0, pos, -1.0f);
}

}  // namespace stem::kernels
