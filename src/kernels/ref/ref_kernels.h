// Scalar reference kernels: the oracles that the fast kernels of kernels.h are
// tested against. One function per op of kernels.h, same name, same argument
// order, same semantics (what is overwritten, what accumulates), templated on
// the scalar type (float, or double for finite differences).
//
// Deliberately NOT fast: plain loops written straight from the contract
// (shared/model-format.md), one thread, no blocking, no SIMD, temporaries
// allocated freely. Backward passes recompute what they need from the inputs
// where the signature allows (attention ignores `out` and `lse` and rebuilds
// the full [T,T] probability matrix) so that the oracle does not share a bug
// with the saved activations of the fast path. Scratch arguments are accepted
// only to keep the signatures aligned, and are not touched.
//
// Not mirrored: build_row_index (the real one is used; it is tested on its
// own against a naive grouping), doc_starts and doc_positions (likewise, host
// helpers tested on their own), gemm_peak_gflops (a measurement, not an op)
// and the float-only MoeWeights/MoeGrads, which get templated twins here.
// The inference ops of infer_kernels.h are checked against attention_forward
// and linear_forward below, which define them.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/kernels.h"

namespace stem::kernels::ref {

using stem::kernels::AdamWHyper;
using stem::kernels::RowIndex;

// ---------------------------------------------------------------- GEMM
template <typename Real>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, Real alpha, const Real* A,
          int64_t lda, const Real* B, int64_t ldb, Real beta, Real* C, int64_t ldc) {
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      Real acc = 0;
      for (int64_t p = 0; p < K; ++p) {
        const Real a = trans_a ? A[p * lda + i] : A[i * lda + p];
        const Real b = trans_b ? B[j * ldb + p] : B[p * ldb + j];
        acc += a * b;
      }
      // beta == 0 does not read C (BLAS convention).
      C[i * ldc + j] = alpha * acc + (beta == Real(0) ? Real(0) : beta * C[i * ldc + j]);
    }
}

template <typename Real>
void linear_forward(Real* y, const Real* x, const Real* W, int64_t N, int64_t in, int64_t out,
                    bool accumulate = false) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < out; ++o) {
      Real acc = 0;
      for (int64_t i = 0; i < in; ++i) acc += x[n * in + i] * W[o * in + i];
      y[n * out + o] = accumulate ? y[n * out + o] + acc : acc;
    }
}

template <typename Real>
void linear_backward(Real* dx, Real* dW, const Real* dy, const Real* x, const Real* W, int64_t N,
                     int64_t in, int64_t out, bool accumulate_dx) {
  if (dW)
    for (int64_t o = 0; o < out; ++o)
      for (int64_t i = 0; i < in; ++i) {
        Real acc = 0;
        for (int64_t n = 0; n < N; ++n) acc += dy[n * out + o] * x[n * in + i];
        dW[o * in + i] += acc;
      }
  if (dx)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < in; ++i) {
        Real acc = 0;
        for (int64_t o = 0; o < out; ++o) acc += dy[n * out + o] * W[o * in + i];
        dx[n * in + i] = accumulate_dx ? dx[n * in + i] + acc : acc;
      }
}

// ---------------------------------------------------------------- rows
template <typename Real>
void gather_rows(Real* out, const Real* rows, const int32_t* row_of, int64_t N, int64_t C) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) out[n * C + c] = rows[int64_t(row_of[n]) * C + c];
}

// Slot u adds into row dest(u) = index.dest[u] of drows, or row u when dest is empty.
template <typename Real>
void scatter_add_rows(Real* drows, const Real* dsrc, const RowIndex& index, int64_t C) {
  const int64_t N = static_cast<int64_t>(index.slot.size());
  for (int64_t n = 0; n < N; ++n) {
    const int64_t u = index.slot[n];
    const int64_t row = index.dest.empty() ? u : int64_t(index.dest[u]);
    for (int64_t c = 0; c < C; ++c) drows[row * C + c] += dsrc[n * C + c];
  }
}

template <typename Real>
void embedding_forward(Real* h, const Real* table, const int32_t* ids, int64_t N, int64_t d) {
  ref::gather_rows(h, table, ids, N, d);
}

template <typename Real>
void embedding_backward(Real* drows, const Real* dh, const RowIndex& index, int64_t d) {
  ref::scatter_add_rows(drows, dh, index, d);
}

// ---------------------------------------------------------------- RMSNorm
template <typename Real>
void rmsnorm_forward(Real* y, Real* rstd, const Real* x, const Real* w, int64_t N, int64_t d,
                     float eps) {
  for (int64_t n = 0; n < N; ++n) {
    Real ss = 0;
    for (int64_t i = 0; i < d; ++i) ss += x[n * d + i] * x[n * d + i];
    const Real r = Real(1) / std::sqrt(ss / Real(d) + Real(eps));
    rstd[n] = r;
    for (int64_t i = 0; i < d; ++i) y[n * d + i] = x[n * d + i] * r * w[i];
  }
}

// y_i = x_i r w_i with r = (mean(x^2) + eps)^(-1/2), dr/dx_j = -r^3 x_j / d.
template <typename Real>
void rmsnorm_backward(Real* dx, Real* dw, const Real* dy, const Real* x, const Real* w,
                      const Real* rstd, int64_t N, int64_t d) {
  for (int64_t n = 0; n < N; ++n) {
    const Real r = rstd[n];
    Real dot = 0;  // sum_i dy_i w_i x_i
    for (int64_t i = 0; i < d; ++i) dot += dy[n * d + i] * w[i] * x[n * d + i];
    for (int64_t j = 0; j < d; ++j) {
      dx[n * d + j] += r * w[j] * dy[n * d + j] - r * r * r * x[n * d + j] * dot / Real(d);
      dw[j] += dy[n * d + j] * x[n * d + j] * r;
    }
  }
}

// ---------------------------------------------------------------- RoPE
template <typename Real>
void rope_tables(Real* cos, Real* sin, int64_t P, int64_t hd, double theta) {
  const int64_t half = hd / 2;
  for (int64_t p = 0; p < P; ++p)
    for (int64_t j = 0; j < half; ++j) {
      const double inv_freq = std::pow(theta, -2.0 * double(j) / double(hd));
      const double angle = double(p) * inv_freq;
      // The contract stores the tables as float, whatever Real is.
      cos[p * half + j] = Real(static_cast<float>(std::cos(angle)));
      sin[p * half + j] = Real(static_cast<float>(std::sin(angle)));
    }
}

namespace detail {
// concat(-x[hd/2:], x[:hd/2])
template <typename Real>
std::vector<Real> rotate_half(const std::vector<Real>& x) {
  const size_t half = x.size() / 2;
  std::vector<Real> r(x.size());
  for (size_t j = 0; j < half; ++j) {
    r[j] = -x[j + half];
    r[j + half] = x[j];
  }
  return r;
}

// Applies, per head vector at position p: x <- x*C + rotate_half(x)*S (forward)
// or x <- x*C - rotate_half(x*S) (the transpose of that linear map).
template <typename Real>
void rope_apply(Real* x, const Real* cos, const Real* sin, int64_t B, int64_t T, int64_t nh,
                int64_t hd, int64_t pos0, const int32_t* pos, bool transpose) {
  const int64_t half = hd / 2;
  std::vector<Real> v(hd), c(hd), s(hd);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < nh; ++h) {
        Real* row = x + ((b * T + t) * nh + h) * hd;
        const int64_t p = pos0 + (pos ? int64_t(pos[b * T + t]) : t);
        for (int64_t j = 0; j < hd; ++j) {  // angles repeated twice to length hd
          v[j] = row[j];
          c[j] = cos[p * half + j % half];
          s[j] = sin[p * half + j % half];
        }
        if (!transpose) {
          const std::vector<Real> rh = rotate_half(v);
          for (int64_t j = 0; j < hd; ++j) row[j] = v[j] * c[j] + rh[j] * s[j];
        } else {
          std::vector<Real> vs(hd);
          for (int64_t j = 0; j < hd; ++j) vs[j] = v[j] * s[j];
          const std::vector<Real> rh = rotate_half(vs);
          for (int64_t j = 0; j < hd; ++j) row[j] = v[j] * c[j] - rh[j];
        }
      }
}
}  // namespace detail

template <typename Real>
void rope_forward(Real* x, const Real* cos, const Real* sin, int64_t B, int64_t T, int64_t nh,
                  int64_t hd, int64_t pos0, const int32_t* pos) {
  detail::rope_apply(x, cos, sin, B, T, nh, hd, pos0, pos, /*transpose=*/false);
}

template <typename Real>
void rope_backward(Real* dx, const Real* cos, const Real* sin, int64_t B, int64_t T, int64_t nh,
                   int64_t hd, int64_t pos0, const int32_t* pos) {
  detail::rope_apply(dx, cos, sin, B, T, nh, hd, pos0, pos, /*transpose=*/true);
}

// ---------------------------------------------------------------- attention
namespace detail {
// The first key query i of sequence b reads: its document start, or 0.
inline int64_t first_key(const int32_t* doc_start, int64_t b, int64_t T, int64_t i) {
  return doc_start ? int64_t(doc_start[b * T + i]) : 0;
}

// P[i][j] (first_key(i) <= j <= i) of one (batch, query head), the full
// softmax matrix; 0 elsewhere.
template <typename Real>
std::vector<Real> attention_probs(const Real* q, const Real* k, int64_t b, int64_t h, int64_t T,
                                  int64_t H, int64_t Hkv, int64_t hd, const int32_t* doc_start,
                                  std::vector<Real>* lse) {
  const int64_t kvh = h / (H / Hkv);
  const Real scale = Real(1) / std::sqrt(Real(hd));
  std::vector<Real> P(T * T, Real(0));
  for (int64_t i = 0; i < T; ++i) {
    const Real* qi = q + ((b * T + i) * H + h) * hd;
    const int64_t j0 = first_key(doc_start, b, T, i);
    Real mx = -INFINITY;
    for (int64_t j = j0; j <= i; ++j) {
      const Real* kj = k + ((b * T + j) * Hkv + kvh) * hd;
      Real s = 0;
      for (int64_t e = 0; e < hd; ++e) s += qi[e] * kj[e];
      P[i * T + j] = s * scale;
      mx = std::max(mx, P[i * T + j]);
    }
    Real sum = 0;
    for (int64_t j = j0; j <= i; ++j) sum += std::exp(P[i * T + j] - mx);
    for (int64_t j = j0; j <= i; ++j) P[i * T + j] = std::exp(P[i * T + j] - mx) / sum;
    if (lse) (*lse)[i] = mx + std::log(sum);
  }
  return P;
}
}  // namespace detail

template <typename Real>
void attention_forward(Real* out, Real* lse, const Real* q, const Real* k, const Real* v, int64_t B,
                       int64_t T, int64_t H, int64_t Hkv, int64_t hd, const int32_t* doc_start) {
  std::vector<Real> row_lse(T);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t kvh = h / (H / Hkv);
      const std::vector<Real> P =
          detail::attention_probs(q, k, b, h, T, H, Hkv, hd, doc_start, &row_lse);
      for (int64_t i = 0; i < T; ++i) {
        lse[(b * H + h) * T + i] = row_lse[i];
        Real* oi = out + ((b * T + i) * H + h) * hd;
        for (int64_t e = 0; e < hd; ++e) {
          Real acc = 0;
          for (int64_t j = detail::first_key(doc_start, b, T, i); j <= i; ++j)
            acc += P[i * T + j] * v[((b * T + j) * Hkv + kvh) * hd + e];
          oi[e] = acc;
        }
      }
    }
}

// Recomputes P from q and k; `out` and `lse` are not read.
template <typename Real>
void attention_backward(Real* dq, Real* dk, Real* dv, const Real* dout, const Real* /*out*/,
                        const Real* /*lse*/, const Real* q, const Real* k, const Real* v, int64_t B,
                        int64_t T, int64_t H, int64_t Hkv, int64_t hd, const int32_t* doc_start) {
  for (int64_t i = 0; i < B * T * H * hd; ++i) dq[i] = 0;
  for (int64_t i = 0; i < B * T * Hkv * hd; ++i) dk[i] = dv[i] = 0;
  const Real scale = Real(1) / std::sqrt(Real(hd));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t kvh = h / (H / Hkv);
      auto Q = [&](int64_t t) { return q + ((b * T + t) * H + h) * hd; };
      auto KV = [&](int64_t t) { return ((b * T + t) * Hkv + kvh) * hd; };
      const std::vector<Real> P =
          detail::attention_probs<Real>(q, k, b, h, T, H, Hkv, hd, doc_start, nullptr);
      for (int64_t i = 0; i < T; ++i) {
        const Real* doi = dout + ((b * T + i) * H + h) * hd;
        const int64_t j0 = detail::first_key(doc_start, b, T, i);
        std::vector<Real> dP(i + 1);
        Real pdp = 0;  // sum_j P_ij dP_ij
        for (int64_t j = j0; j <= i; ++j) {
          Real s = 0;
          for (int64_t e = 0; e < hd; ++e) s += doi[e] * v[KV(j) + e];
          dP[j] = s;
          pdp += P[i * T + j] * s;
        }
        for (int64_t j = j0; j <= i; ++j) {
          const Real pij = P[i * T + j];
          const Real dS = pij * (dP[j] - pdp);  // gradient wrt the scaled score
          for (int64_t e = 0; e < hd; ++e) {
            dv[KV(j) + e] += pij * doi[e];
            dq[((b * T + i) * H + h) * hd + e] += scale * dS * k[KV(j) + e];
            dk[KV(j) + e] += scale * dS * Q(i)[e];
          }
        }
      }
    }
}

// ---------------------------------------------------------------- SwiGLU
namespace detail {
template <typename Real>
Real sigmoid(Real z) {
  return Real(1) / (Real(1) + std::exp(-z));
}
template <typename Real>
Real silu(Real z) {
  return z * sigmoid(z);
}
template <typename Real>
Real dsilu(Real z) {
  const Real s = sigmoid(z);
  return s * (Real(1) + z * (Real(1) - s));
}
template <typename Real>
const Real* u_row(const Real* u_rows, const int32_t* u_row_of, int64_t n, int64_t f) {
  return u_rows + (u_row_of ? int64_t(u_row_of[n]) : n) * f;
}
}  // namespace detail

template <typename Real>
void swiglu_forward(Real* hact, const Real* g, const Real* u_rows, const int32_t* u_row_of,
                    int64_t N, int64_t f) {
  for (int64_t n = 0; n < N; ++n) {
    const Real* u = detail::u_row(u_rows, u_row_of, n, f);
    for (int64_t i = 0; i < f; ++i) hact[n * f + i] = detail::silu(g[n * f + i]) * u[i];
  }
}

template <typename Real>
void swiglu_backward(Real* dg, Real* du, const Real* dhact, const Real* g, const Real* u_rows,
                     const int32_t* u_row_of, int64_t N, int64_t f) {
  for (int64_t n = 0; n < N; ++n) {
    const Real* u = detail::u_row(u_rows, u_row_of, n, f);
    for (int64_t i = 0; i < f; ++i) {
      const Real z = g[n * f + i], dh = dhact[n * f + i];
      dg[n * f + i] = dh * u[i] * detail::dsilu(z);
      du[n * f + i] = dh * detail::silu(z);
    }
  }
}

// ---------------------------------------------------------------- dense FFN
template <typename Real>
void dense_ffn_forward(Real* y, Real* g, Real* u, Real* hact, const Real* x, const Real* Wg,
                       const Real* Wu, const Real* Wd, int64_t N, int64_t d, int64_t f) {
  ref::linear_forward(g, x, Wg, N, d, f);
  ref::linear_forward(u, x, Wu, N, d, f);
  ref::swiglu_forward(hact, g, u, static_cast<const int32_t*>(nullptr), N, f);
  ref::linear_forward(y, hact, Wd, N, f, d);
}

template <typename Real>
void dense_ffn_backward(Real* dx, Real* dWg, Real* dWu, Real* dWd, const Real* dy, const Real* x,
                        const Real* g, const Real* u, const Real* hact, const Real* Wg,
                        const Real* Wu, const Real* Wd, Real* /*scratch_a*/, Real* /*scratch_b*/,
                        int64_t N, int64_t d, int64_t f) {
  std::vector<Real> dhact(N * f), dg(N * f), du(N * f);
  ref::linear_backward(dhact.data(), dWd, dy, hact, Wd, N, f, d, false);
  ref::swiglu_backward(dg.data(), du.data(), dhact.data(), g, u, nullptr, N, f);
  ref::linear_backward(dx, dWg, dg.data(), x, Wg, N, d, f, true);
  ref::linear_backward(dx, dWu, du.data(), x, Wu, N, d, f, true);
}

// ---------------------------------------------------------------- STEM FFN
template <typename Real>
void stem_ffn_forward(Real* y, Real* g, Real* hact, const Real* x, const Real* Wg, const Real* Wd,
                      const Real* rows, const int32_t* row_of, int64_t N, int64_t d, int64_t f) {
  ref::linear_forward(g, x, Wg, N, d, f);
  ref::swiglu_forward(hact, g, rows, row_of, N, f);
  ref::linear_forward(y, hact, Wd, N, f, d);
}

template <typename Real>
void stem_ffn_backward(Real* dx, Real* dWg, Real* dWd, Real* drows, const Real* dy, const Real* x,
                       const Real* g, const Real* hact, const Real* Wg, const Real* Wd,
                       const Real* rows, const int32_t* row_of, const RowIndex& index,
                       Real* /*scratch_a*/, Real* /*scratch_b*/, int64_t N, int64_t d, int64_t f) {
  std::vector<Real> dhact(N * f), dg(N * f), du(N * f);
  ref::linear_backward(dhact.data(), dWd, dy, hact, Wd, N, f, d, false);
  ref::swiglu_backward(dg.data(), du.data(), dhact.data(), g, rows, row_of, N, f);
  ref::linear_backward(dx, dWg, dg.data(), x, Wg, N, d, f, true);
  ref::scatter_add_rows(drows, du.data(), index, f);
}

// ---------------------------------------------------------------- hash-MoE FFN
template <typename Real>
struct MoeWeights {
  const Real* const* Wg;  // E x [f,d]
  const Real* const* Wu;  // E x [f,d]
  const Real* const* Wd;  // E x [d,f]
};
template <typename Real>
struct MoeGrads {
  Real* const* dWg;  // E x [f,d] +=
  Real* const* dWu;  // E x [f,d] +=
  Real* const* dWd;  // E x [d,f] +=
};

// Row i of xe, g, u, hact, ye is position route.order[i]; slot s (expert
// route.unique[s]) owns rows offsets[s] .. offsets[s+1].
template <typename Real>
void hash_moe_forward(Real* y, Real* xe, Real* g, Real* u, Real* hact, Real* ye, const Real* x,
                      const MoeWeights<Real>& w, const RowIndex& route, int64_t N, int64_t d,
                      int64_t f) {
  for (int64_t i = 0; i < N; ++i)
    for (int64_t c = 0; c < d; ++c) xe[i * d + c] = x[int64_t(route.order[i]) * d + c];
  for (int64_t s = 0; s < route.n_unique(); ++s) {
    const int64_t e = route.unique[s], r0 = route.offsets[s], n = route.offsets[s + 1] - r0;
    ref::dense_ffn_forward(ye + r0 * d, g + r0 * f, u + r0 * f, hact + r0 * f, xe + r0 * d, w.Wg[e],
                           w.Wu[e], w.Wd[e], n, d, f);
  }
  for (int64_t i = 0; i < N; ++i)
    for (int64_t c = 0; c < d; ++c) y[int64_t(route.order[i]) * d + c] = ye[i * d + c];
}

template <typename Real>
void hash_moe_backward(Real* dx, const MoeGrads<Real>& dw, const Real* dy, const Real* xe,
                       const Real* g, const Real* u, const Real* hact, const MoeWeights<Real>& w,
                       const RowIndex& route, Real* /*dye*/, Real* /*dxe*/, Real* /*scratch_a*/,
                       Real* /*scratch_b*/, int64_t N, int64_t d, int64_t f) {
  std::vector<Real> dye(N * d), dxe(N * d, Real(0));
  for (int64_t i = 0; i < N; ++i)
    for (int64_t c = 0; c < d; ++c) dye[i * d + c] = dy[int64_t(route.order[i]) * d + c];
  for (int64_t s = 0; s < route.n_unique(); ++s) {
    const int64_t e = route.unique[s], r0 = route.offsets[s], n = route.offsets[s + 1] - r0;
    ref::dense_ffn_backward(dxe.data() + r0 * d, dw.dWg[e], dw.dWu[e], dw.dWd[e],
                            dye.data() + r0 * d, xe + r0 * d, g + r0 * f, u + r0 * f, hact + r0 * f,
                            w.Wg[e], w.Wu[e], w.Wd[e], static_cast<Real*>(nullptr),
                            static_cast<Real*>(nullptr), n, d, f);
  }
  for (int64_t i = 0; i < N; ++i)
    for (int64_t c = 0; c < d; ++c) dx[int64_t(route.order[i]) * d + c] += dxe[i * d + c];
}

// ---------------------------------------------------------------- loss
template <typename Real>
double cross_entropy_forward(Real* losses, const Real* logits, const int32_t* targets, int64_t N,
                             int64_t V) {
  double total = 0;
  for (int64_t n = 0; n < N; ++n) {
    if (targets[n] < 0) {
      losses[n] = 0;
      continue;
    }
    const Real* z = logits + n * V;
    Real mx = z[0];
    for (int64_t i = 1; i < V; ++i) mx = std::max(mx, z[i]);
    Real sum = 0;
    for (int64_t i = 0; i < V; ++i) sum += std::exp(z[i] - mx);
    losses[n] = mx + std::log(sum) - z[targets[n]];
    total += double(losses[n]);
  }
  return total;
}

// Alias-safe (dlogits may be logits): each row is read in full before written.
template <typename Real>
void cross_entropy_backward(Real* dlogits, const Real* logits, const int32_t* targets, float scale,
                            int64_t N, int64_t V) {
  std::vector<Real> p(V);
  for (int64_t n = 0; n < N; ++n) {
    if (targets[n] < 0) {
      for (int64_t i = 0; i < V; ++i) dlogits[n * V + i] = 0;
      continue;
    }
    const Real* z = logits + n * V;
    Real mx = z[0];
    for (int64_t i = 1; i < V; ++i) mx = std::max(mx, z[i]);
    Real sum = 0;
    for (int64_t i = 0; i < V; ++i) sum += (p[i] = std::exp(z[i] - mx));
    for (int64_t i = 0; i < V; ++i)
      dlogits[n * V + i] = (p[i] / sum - (i == targets[n] ? Real(1) : Real(0))) * Real(scale);
  }
}

// Distillation: (1-alpha) CE + alpha tau^2 KL(softmax(y/tau) || softmax(z/tau)).
template <typename Real>
Real ref_log_softmax_at(const Real* z, Real inv_tau, int64_t V, int64_t i) {
  Real mx = z[0] * inv_tau;
  for (int64_t j = 1; j < V; ++j) mx = std::max(mx, z[j] * inv_tau);
  Real sum = 0;
  for (int64_t j = 0; j < V; ++j) sum += std::exp(z[j] * inv_tau - mx);
  return z[i] * inv_tau - mx - std::log(sum);
}

template <typename Real>
double distill_forward(Real* losses, const Real* logits, const Real* teacher, const int32_t* targets,
                       float alpha, float tau, int64_t N, int64_t V) {
  double total = 0;
  const Real inv = Real(1) / Real(tau);
  for (int64_t n = 0; n < N; ++n) {
    if (targets[n] < 0) {
      losses[n] = 0;
      continue;
    }
    const Real* z = logits + n * V;
    const Real* y = teacher + n * V;
    Real kl = 0;
    for (int64_t i = 0; i < V; ++i) {
      const Real log_p = ref_log_softmax_at(y, inv, V, i);
      kl += std::exp(log_p) * (log_p - ref_log_softmax_at(z, inv, V, i));
    }
    const Real ce = -ref_log_softmax_at(z, Real(1), V, targets[n]);
    losses[n] = (Real(1) - Real(alpha)) * ce + Real(alpha) * Real(tau) * Real(tau) * kl;
    total += double(losses[n]);
  }
  return total;
}

// Alias-safe (dlogits may be logits).
template <typename Real>
void distill_backward(Real* dlogits, const Real* logits, const Real* teacher, const int32_t* targets,
                      float alpha, float tau, float scale, int64_t N, int64_t V) {
  std::vector<Real> g(V);
  const Real inv = Real(1) / Real(tau);
  for (int64_t n = 0; n < N; ++n) {
    const Real* z = logits + n * V;
    const Real* y = teacher + n * V;
    for (int64_t i = 0; i < V; ++i) {
      if (targets[n] < 0) {
        g[i] = 0;
        continue;
      }
      const Real ce = std::exp(ref_log_softmax_at(z, Real(1), V, i)) - (i == targets[n] ? Real(1) : Real(0));
      const Real kl = std::exp(ref_log_softmax_at(z, inv, V, i)) - std::exp(ref_log_softmax_at(y, inv, V, i));
      g[i] = ((Real(1) - Real(alpha)) * ce + Real(alpha) * Real(tau) * kl) * Real(scale);
    }
    for (int64_t i = 0; i < V; ++i) dlogits[n * V + i] = g[i];
  }
}

// ---------------------------------------------------------------- optimizer
// torch.optim.AdamW (single-tensor, foreach=False), step by step: decay the
// weights, lerp the first moment, update the second, bias-correct in double.
template <typename Real>
void adamw_update(Real* p, Real* m, Real* v, const Real* g, int64_t n, const AdamWHyper& h) {
  const double b1 = h.beta1, b2 = h.beta2, lr = h.lr;
  const double bc1 = 1.0 - std::pow(b1, double(h.step));
  const double bc2 = 1.0 - std::pow(b2, double(h.step));
  const Real step_size = Real(lr / bc1);
  const Real bc2_sqrt = Real(std::sqrt(bc2));
  const Real decay = Real(1.0 - lr * double(h.weight_decay));
  const Real w1 = Real(1) - Real(h.beta1), w2 = Real(1) - Real(h.beta2);
  for (int64_t i = 0; i < n; ++i) {
    const Real gi = g ? g[i] : Real(0);
    p[i] *= decay;
    m[i] += w1 * (gi - m[i]);
    v[i] = v[i] * Real(h.beta2) + w2 * gi * gi;
    const Real denom = std::sqrt(v[i]) / bc2_sqrt + Real(h.eps);
    p[i] -= step_size * (m[i] / denom);
  }
}

// Dense AdamW on the dense gradient that the row-sparse drows stands for.
template <typename Real>
void adamw_update_rows(Real* p, Real* m, Real* v, const Real* drows, const RowIndex& index,
                       int64_t R, int64_t C, const AdamWHyper& h) {
  std::vector<Real> g(R * C, Real(0));
  for (int64_t u = 0; u < index.n_unique(); ++u)
    for (int64_t c = 0; c < C; ++c) g[int64_t(index.unique[u]) * C + c] = drows[u * C + c];
  ref::adamw_update(p, m, v, g.data(), R * C, h);
}

// Lazy AdamW: only rows index.unique[u] move. Each first catches up on the
// steps it skipped (p, m, v scaled by its decays), then takes the ordinary
// step with gradient drows[u]; every other row is left alone.
template <typename Real>
void adamw_update_rows_lazy(Real* p, Real* m, Real* v, const Real* drows, const RowIndex& index,
                            int64_t C, const Real* p_decay, const Real* m_decay,
                            const Real* v_decay, const AdamWHyper& h) {
  for (int64_t u = 0; u < index.n_unique(); ++u) {
    const int64_t r = index.unique[u];
    for (int64_t c = 0; c < C; ++c) {
      p[r * C + c] *= p_decay[u];
      m[r * C + c] *= m_decay[u];
      v[r * C + c] *= v_decay[u];
    }
    ref::adamw_update(p + r * C, m + r * C, v + r * C, drows + u * C, C, h);
  }
}

template <typename Real>
double sum_squares(const Real* x, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += double(x[i]) * double(x[i]);
  return s;
}

template <typename Real>
void scale_inplace(Real* x, int64_t n, float s) {
  for (int64_t i = 0; i < n; ++i) x[i] *= Real(s);
}

// ---------------------------------------------------------------- elementwise
template <typename Real>
void add(Real* out, const Real* a, const Real* b, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

template <typename Real>
void add_inplace(Real* dst, const Real* src, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] += src[i];
}

template <typename Real>
void scale_rows(Real* x, const float* s, int64_t R, int64_t C) {
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 0; c < C; ++c) x[r * C + c] *= Real(s[r]);
}

// The tied embedding's gradient: dtable[ids[n]] += dh[n] for every position
// (the index only groups them).
template <typename Real>
void embedding_backward_dense(Real* dtable, const Real* dh, const RowIndex& index, int64_t d) {
  for (int64_t u = 0; u < index.n_unique(); ++u)
    for (int32_t j = index.offsets[u]; j < index.offsets[u + 1]; ++j)
      for (int64_t c = 0; c < d; ++c) dtable[int64_t(index.unique[u]) * d + c] += dh[int64_t(index.order[j]) * d + c];
}

}  // namespace stem::kernels::ref
