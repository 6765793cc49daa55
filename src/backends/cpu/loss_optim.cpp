// Cross-entropy (plain, and blended with a teacher's distribution for
// distillation) over the vocabulary and the AdamW update on the CPU, plus the
// reductions the optimizer needs (sum of squares for gradient norms).
// AdamW follows PyTorch's single-tensor AdamW operation by operation.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "backends/cpu/vec_math.h"
#include "core/simd.h"
#include "kernels/kernels.h"

namespace stem::kernels {
namespace {

STEM_SIMD float row_max(const float* STEM_RESTRICT x, int64_t n) {
  float m = x[0];
  for (int64_t i = 1; i < n; ++i) m = std::max(m, x[i]);
  return m;
}

STEM_SIMD float row_sum_exp(const float* STEM_RESTRICT x, float mx, int64_t n) {
  float s = 0.0f;
  for (int64_t i = 0; i < n; ++i) s += cpu::exp_approx(x[i] - mx);
  return s;
}

STEM_SIMD void row_softmax_scaled(float* dst, const float* src, float lse, float scale, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = cpu::exp_approx(src[i] - lse) * scale;
}

// dx += a (softmax(zs) - softmax(ys)), with lq, lp their log-sum-exps.
STEM_SIMD void kl_grad_add(float* STEM_RESTRICT dx, const float* STEM_RESTRICT zs, const float* STEM_RESTRICT ys,
                           float lq, float lp, float a, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dx[i] += a * (cpu::exp_approx(zs[i] - lq) - cpu::exp_approx(ys[i] - lp));
}

float row_lse(const float* x, int64_t V) {
  const float mx = row_max(x, V);
  return mx + std::log(row_sum_exp(x, mx, V));
}

STEM_SIMD void adamw_chunk(float* STEM_RESTRICT p, float* STEM_RESTRICT m, float* STEM_RESTRICT v,
                           const float* STEM_RESTRICT g, int64_t n, float decay, float b1,
                           float b2, float step_size, float bc2_sqrt, float eps) {
  for (int64_t i = 0; i < n; ++i) {
    p[i] *= decay;
    m[i] = b1 * m[i] + (1.0f - b1) * g[i];
    v[i] = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
    p[i] -= step_size * m[i] / (std::sqrt(v[i]) / bc2_sqrt + eps);
  }
}

STEM_SIMD void adamw_chunk_zero_grad(float* STEM_RESTRICT p, float* STEM_RESTRICT m,
                                     float* STEM_RESTRICT v, int64_t n, float decay, float b1,
                                     float b2, float step_size, float bc2_sqrt, float eps) {
  for (int64_t i = 0; i < n; ++i) {
    p[i] *= decay;
    m[i] = b1 * m[i];
    v[i] = b2 * v[i];
    p[i] -= step_size * m[i] / (std::sqrt(v[i]) / bc2_sqrt + eps);
  }
}

STEM_SIMD float chunk_sum_squares(const float* STEM_RESTRICT x, int64_t n) {
  float s = 0.0f;
  for (int64_t i = 0; i < n; ++i) s += x[i] * x[i];
  return s;
}

STEM_SIMD void scale_chunk(float* STEM_RESTRICT x, int64_t n, float s) {
  for (int64_t i = 0; i < n; ++i) x[i] *= s;
}

struct AdamWConsts {
  float decay, b1, b2, step_size, bc2_sqrt, eps;
};

AdamWConsts adamw_consts(const AdamWHyper& h) {
  const double bc1 = 1.0 - std::pow(static_cast<double>(h.beta1), static_cast<double>(h.step));
  const double bc2 = 1.0 - std::pow(static_cast<double>(h.beta2), static_cast<double>(h.step));
  return {1.0f - h.lr * h.weight_decay, h.beta1, h.beta2,
          static_cast<float>(h.lr / bc1), static_cast<float>(std::sqrt(bc2)), h.eps};
}

constexpr int64_t kChunk = 4096;

}  // namespace

double cross_entropy_forward(float* losses, const float* logits, const int32_t* targets, int64_t N,
                             int64_t V) {
#pragma omp parallel for schedule(static) if (N * V > 32768)
  for (int64_t n = 0; n < N; ++n) {
    if (targets[n] < 0) {
      losses[n] = 0.0f;
      continue;
    }
    const float* x = logits + n * V;
    losses[n] = row_lse(x, V) - x[targets[n]];
  }
  double total = 0.0;  // serial: the same sum whatever the thread count
  for (int64_t n = 0; n < N; ++n) total += losses[n];
  return total;
}

void cross_entropy_backward(float* dlogits, const float* logits, const int32_t* targets,
                            float scale, int64_t N, int64_t V) {
#pragma omp parallel for schedule(static) if (N * V > 32768)
  for (int64_t n = 0; n < N; ++n) {
    float* dx = dlogits + n * V;
    if (targets[n] < 0) {
      std::fill(dx, dx + V, 0.0f);
      continue;
    }
    const float* x = logits + n * V;
    const float target_logit = x[targets[n]];
    const float lse = row_lse(x, V);
    row_softmax_scaled(dx, x, lse, scale, V);  // may overwrite x when aliased
    dx[targets[n]] = cpu::exp_approx(target_logit - lse) * scale - scale;
  }
}

// Distillation, row by row: the student's log-sum-exp at temperature 1 and
// tau, the teacher's at tau; the KL term sums p (log p - log q) in double.
double distill_forward(float* losses, const float* logits, const float* teacher, const int32_t* targets,
                       float alpha, float tau, int64_t N, int64_t V) {
  const float inv = 1.0f / tau;
#pragma omp parallel
  {
    std::vector<float> zs(V), ys(V);
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      if (targets[n] < 0) {
        losses[n] = 0.0f;
        continue;
      }
      const float* z = logits + n * V;
      const float* y = teacher + n * V;
      for (int64_t i = 0; i < V; ++i) zs[i] = z[i] * inv, ys[i] = y[i] * inv;
      const float ce = row_lse(z, V) - z[targets[n]];
      const float lq = row_lse(zs.data(), V), lp = row_lse(ys.data(), V);
      double kl = 0.0;
      for (int64_t i = 0; i < V; ++i) {
        const float log_p = ys[i] - lp;
        kl += static_cast<double>(cpu::exp_approx(log_p)) * static_cast<double>(log_p - (zs[i] - lq));
      }
      losses[n] = (1.0f - alpha) * ce + static_cast<float>(static_cast<double>(alpha) * tau * tau * kl);
    }
  }
  double total = 0.0;  // serial: the same sum whatever the thread count
  for (int64_t n = 0; n < N; ++n) total += losses[n];
  return total;
}

void distill_backward(float* dlogits, const float* logits, const float* teacher, const int32_t* targets,
                      float alpha, float tau, float scale, int64_t N, int64_t V) {
  const float inv = 1.0f / tau, a_ce = (1.0f - alpha) * scale, a_kl = alpha * tau * scale;
#pragma omp parallel
  {
    std::vector<float> zs(V), ys(V);
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      float* dx = dlogits + n * V;
      if (targets[n] < 0) {
        std::fill(dx, dx + V, 0.0f);
        continue;
      }
      const float* z = logits + n * V;
      const float* y = teacher + n * V;
      for (int64_t i = 0; i < V; ++i) zs[i] = z[i] * inv, ys[i] = y[i] * inv;
      const float lq = row_lse(zs.data(), V), lp = row_lse(ys.data(), V);
      // The cross-entropy part as cross_entropy_backward computes it (so that
      // alpha 0 is plain training bit for bit), then the KL part from the
      // copies (dx may be z).
      const float target_logit = z[targets[n]], lse = row_lse(z, V);
      row_softmax_scaled(dx, z, lse, a_ce, V);
      dx[targets[n]] = cpu::exp_approx(target_logit - lse) * a_ce - a_ce;
      kl_grad_add(dx, zs.data(), ys.data(), lq, lp, a_kl, V);
    }
  }
}

void adamw_update(float* p, float* m, float* v, const float* g, int64_t n, const AdamWHyper& h) {
  const AdamWConsts c = adamw_consts(h);
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t ci = 0; ci < chunks; ++ci) {
    const int64_t i0 = ci * kChunk, len = std::min(kChunk, n - i0);
    if (g)
      adamw_chunk(p + i0, m + i0, v + i0, g + i0, len, c.decay, c.b1, c.b2, c.step_size,
                  c.bc2_sqrt, c.eps);
    else
      adamw_chunk_zero_grad(p + i0, m + i0, v + i0, len, c.decay, c.b1, c.b2, c.step_size,
                            c.bc2_sqrt, c.eps);
  }
}

void adamw_update_rows(float* p, float* m, float* v, const float* drows, const RowIndex& index,
                       int64_t R, int64_t C, const AdamWHyper& h) {
  const AdamWConsts c = adamw_consts(h);
  // Row r has a gradient when it is index.unique[s]; unique is ascending, so a
  // binary search per row keeps the parallel loop independent.
  const int32_t* u_begin = index.unique.data();
  const int32_t* u_end = u_begin + index.unique.size();
#pragma omp parallel for schedule(static) if (R * C > 65536)
  for (int64_t r = 0; r < R; ++r) {
    const int32_t* it = std::lower_bound(u_begin, u_end, static_cast<int32_t>(r));
    float *pr = p + r * C, *mr = m + r * C, *vr = v + r * C;
    if (it != u_end && *it == r)
      adamw_chunk(pr, mr, vr, drows + (it - u_begin) * C, C, c.decay, c.b1, c.b2, c.step_size,
                  c.bc2_sqrt, c.eps);
    else
      adamw_chunk_zero_grad(pr, mr, vr, C, c.decay, c.b1, c.b2, c.step_size, c.bc2_sqrt, c.eps);
  }
}

void adamw_update_rows_lazy(float* p, float* m, float* v, const float* drows,
                            const RowIndex& index, int64_t C, const float* p_decay,
                            const float* m_decay, const float* v_decay, const AdamWHyper& h) {
  const AdamWConsts c = adamw_consts(h);
  const int64_t U = index.n_unique();
#pragma omp parallel for schedule(static) if (U * C > 65536)
  for (int64_t u = 0; u < U; ++u) {
    const int64_t r = index.unique[u];
    float *pr = p + r * C, *mr = m + r * C, *vr = v + r * C;
    scale_chunk(pr, C, p_decay[u]);
    scale_chunk(mr, C, m_decay[u]);
    scale_chunk(vr, C, v_decay[u]);
    adamw_chunk(pr, mr, vr, drows + u * C, C, c.decay, c.b1, c.b2, c.step_size, c.bc2_sqrt, c.eps);
  }
}

double sum_squares(const float* x, int64_t n) {
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> part(static_cast<size_t>(chunks));
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t ci = 0; ci < chunks; ++ci) {
    const int64_t i0 = ci * kChunk;
    part[ci] = chunk_sum_squares(x + i0, std::min(kChunk, n - i0));
  }
  double total = 0.0;  // serial: deterministic whatever the thread count
  for (double p : part) total += p;
  return total;
}

void scale_inplace(float* x, int64_t n, float s) {
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t ci = 0; ci < chunks; ++ci) {
    const int64_t i0 = ci * kChunk;
    scale_chunk(x + i0, std::min(kChunk, n - i0), s);
  }
}

}  // namespace stem::kernels
