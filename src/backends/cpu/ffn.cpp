// The three FFNs on the CPU: dense SwiGLU, STEM (up-projection replaced by a
// row of the token's table) and hash-MoE (tokens grouped by expert, each group a
// dense SwiGLU). GEMMs through gemm(); the element-wise SwiGLU in SIMD rows.
// A STEM backward writes the table gradient only into the rows of the step's
// distinct tokens (scatter_add_rows), never a dense [V, f] pass.
#include <cstring>

#include "backends/cpu/parallel.h"
#include "backends/cpu/vec_math.h"
#include "core/check.h"
#include "core/simd.h"
#include "kernels/kernels.h"

namespace stem::kernels {
namespace {

STEM_SIMD void swiglu_row(float* STEM_RESTRICT h, const float* STEM_RESTRICT g,
                          const float* STEM_RESTRICT u, int64_t f) {
  for (int64_t i = 0; i < f; ++i) h[i] = g[i] * cpu::sigmoid_approx(g[i]) * u[i];
}

// dg = dh * u * silu'(g), du = dh * silu(g); du may alias dh.
STEM_SIMD void swiglu_row_backward(float* dg, float* du, const float* dh,
                                   const float* STEM_RESTRICT g, const float* STEM_RESTRICT u,
                                   int64_t f) {
  for (int64_t i = 0; i < f; ++i) {
    const float s = cpu::sigmoid_approx(g[i]);
    const float silu = g[i] * s;
    const float d = dh[i];
    dg[i] = d * u[i] * (s + silu * (1.0f - s));
    du[i] = d * silu;
  }
}

STEM_SIMD void add_into(float* STEM_RESTRICT dst, const float* STEM_RESTRICT src, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] += src[i];
}

}  // namespace

void swiglu_forward(float* hact, const float* g, const float* u_rows, const int32_t* u_row_of,
                    int64_t N, int64_t f) {
  cpu::parallel_for(N, N * f > 32768, [&](int64_t n) {
    const int64_t r = u_row_of ? u_row_of[n] : n;
    swiglu_row(hact + n * f, g + n * f, u_rows + r * f, f);
  });
}

void swiglu_backward(float* dg, float* du, const float* dhact, const float* g,
                     const float* u_rows, const int32_t* u_row_of, int64_t N, int64_t f) {
#pragma omp parallel for schedule(static) if (N * f > 32768)
  for (int64_t n = 0; n < N; ++n) {
    const int64_t r = u_row_of ? u_row_of[n] : n;
    swiglu_row_backward(dg + n * f, du + n * f, dhact + n * f, g + n * f, u_rows + r * f, f);
  }
}

void dense_ffn_forward(float* y, float* g, float* u, float* hact, const float* x, const float* Wg,
                       const float* Wu, const float* Wd, int64_t N, int64_t d, int64_t f) {
  linear_forward(g, x, Wg, N, d, f);
  linear_forward(u, x, Wu, N, d, f);
  swiglu_forward(hact, g, u, nullptr, N, f);
  linear_forward(y, hact, Wd, N, f, d);
}

void dense_ffn_backward(float* dx, float* dWg, float* dWu, float* dWd, const float* dy,
                        const float* x, const float* g, const float* u, const float* hact,
                        const float* Wg, const float* Wu, const float* Wd, float* scratch_a,
                        float* scratch_b, int64_t N, int64_t d, int64_t f) {
  float* dh = scratch_a;  // becomes du in place
  float* dg = scratch_b;
  linear_backward(dh, dWd, dy, hact, Wd, N, f, d, false);
  swiglu_backward(dg, dh, dh, g, u, nullptr, N, f);
  linear_backward(dx, dWg, dg, x, Wg, N, d, f, true);
  linear_backward(dx, dWu, dh, x, Wu, N, d, f, true);
}

void stem_ffn_forward(float* y, float* g, float* hact, const float* x, const float* Wg,
                      const float* Wd, const float* rows, const int32_t* row_of, int64_t N,
                      int64_t d, int64_t f) {
  linear_forward(g, x, Wg, N, d, f);
  swiglu_forward(hact, g, rows, row_of, N, f);
  linear_forward(y, hact, Wd, N, f, d);
}

void stem_ffn_backward(float* dx, float* dWg, float* dWd, float* drows, const float* dy,
                       const float* x, const float* g, const float* hact, const float* Wg,
                       const float* Wd, const float* rows, const int32_t* row_of,
                       const RowIndex& index, float* scratch_a, float* scratch_b, int64_t N,
                       int64_t d, int64_t f) {
  float* dh = scratch_a;  // becomes du (per position) in place
  float* dg = scratch_b;
  linear_backward(dh, dWd, dy, hact, Wd, N, f, d, false);
  swiglu_backward(dg, dh, dh, g, rows, row_of, N, f);
  if (drows) scatter_add_rows(drows, dh, index, f);
  linear_backward(dx, dWg, dg, x, Wg, N, d, f, true);
}

void hash_moe_forward(float* y, float* xe, float* g, float* u, float* hact, float* ye,
                      const float* x, const MoeWeights& w, const RowIndex& route, int64_t N,
                      int64_t d, int64_t f) {
  // xe[k] = x[order[k]]: positions in expert order.
  gather_rows(xe, x, route.order.data(), N, d);
  for (int64_t s = 0; s < route.n_unique(); ++s) {
    const int64_t e = route.unique[s], k0 = route.offsets[s], n = route.offsets[s + 1] - k0;
    dense_ffn_forward(ye + k0 * d, g + k0 * f, u + k0 * f, hact + k0 * f, xe + k0 * d, w.Wg[e],
                      w.Wu[e], w.Wd[e], n, d, f);
  }
#pragma omp parallel for schedule(static) if (N * d > 32768)
  for (int64_t k = 0; k < N; ++k)
    std::memcpy(y + static_cast<int64_t>(route.order[k]) * d, ye + k * d, sizeof(float) * d);
}

void hash_moe_backward(float* dx, const MoeGrads& dw, const float* dy, const float* xe,
                       const float* g, const float* u, const float* hact, const MoeWeights& w,
                       const RowIndex& route, float* dye, float* dxe, float* scratch_a,
                       float* scratch_b, int64_t N, int64_t d, int64_t f) {
  gather_rows(dye, dy, route.order.data(), N, d);
  std::memset(dxe, 0, sizeof(float) * N * d);
  for (int64_t s = 0; s < route.n_unique(); ++s) {
    const int64_t e = route.unique[s], k0 = route.offsets[s], n = route.offsets[s + 1] - k0;
    dense_ffn_backward(dxe + k0 * d, dw.dWg[e], dw.dWu[e], dw.dWd[e], dye + k0 * d, xe + k0 * d,
                       g + k0 * f, u + k0 * f, hact + k0 * f, w.Wg[e], w.Wu[e], w.Wd[e],
                       scratch_a, scratch_b, n, d, f);
  }
#pragma omp parallel for schedule(static) if (N * d > 32768)
  for (int64_t k = 0; k < N; ++k)
    add_into(dx + static_cast<int64_t>(route.order[k]) * d, dxe + k * d, d);
}

}  // namespace stem::kernels
