// Causal grouped-query attention on the CPU. Work is split into tasks of (batch,
// query head, block of kQBlock query rows); a block attends only to keys up to
// its last row, so the causal half of the scores is never computed. With a
// document mask, a block also starts at the smallest document start of its
// rows, and each row's entries before its own document start get probability
// 0 (dS 0 in backward): keys of documents that ended before the block are
// never computed either. Scores go through oneDNN GEMMs (single-threaded
// inside the parallel region) on a per-thread [kQBlock, T] scratch, never a
// stored [T, T] matrix: forward saves the log-sum-exp of each row and
// backward recomputes the probabilities.
// Backward gives each query head its own dk/dv partials, then sums each kv
// group, so no two threads write the same row.
// One implementation serves F32 and BF16 (a template on the type of q, k, v):
// in BF16 the products take BF16 operands with F32 accumulation (gemm_bf16),
// the probabilities, dO and dS are rounded to BF16 just before their
// products, and the softmax, lse, D = rowsum(dO * O) and every sum stay F32.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "backends/cpu/vec_math.h"
#include "core/simd.h"
#include "kernels/infer_kernels.h"
#include "kernels/kernels.h"

namespace stem::kernels {
namespace {

constexpr int64_t kQBlock = 128;

// Row i of a score block: s[lo..n) are the scaled scores of the keys the row
// reads; turns them into probabilities in place and zeroes s[0..lo) and
// s[n..width). Returns lse.
STEM_SIMD float softmax_row(float* STEM_RESTRICT s, int64_t lo, int64_t n, int64_t width) {
  for (int64_t j = 0; j < lo; ++j) s[j] = 0.0f;
  return cpu::softmax_prefix(s + lo, n - lo, width - lo);
}

// Backward of one row: p[lo..n) = exp(s - lse) (recomputed), dp holds dO V^T on
// entry and dS = p * (dp - D) on exit; both are zeroed outside [lo, n).
STEM_SIMD void softmax_row_backward(float* STEM_RESTRICT p, float* STEM_RESTRICT dp, float lse,
                                    float D, int64_t lo, int64_t n, int64_t width) {
  for (int64_t j = 0; j < lo; ++j) {
    p[j] = 0.0f;
    dp[j] = 0.0f;
  }
  for (int64_t j = lo; j < n; ++j) {
    const float pj = cpu::exp_approx(p[j] - lse);
    p[j] = pj;
    dp[j] = pj * (dp[j] - D);
  }
  for (int64_t j = n; j < width; ++j) {
    p[j] = 0.0f;
    dp[j] = 0.0f;
  }
}

STEM_SIMD float dot(const float* STEM_RESTRICT a, const float* STEM_RESTRICT b, int64_t n) {
  float s = 0.0f;
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

STEM_SIMD void add_into(float* STEM_RESTRICT dst, const float* STEM_RESTRICT src, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] += src[i];
}

// The first key that query rows [i0, i1) of sequence b read: the smallest
// document start among them, or 0 without a mask.
int64_t first_key(const int32_t* doc_start, int64_t b, int64_t T, int64_t i0, int64_t i1) {
  if (!doc_start) return 0;
  int64_t k0 = i0;
  for (int64_t i = i0; i < i1; ++i) k0 = std::min<int64_t>(k0, doc_start[b * T + i]);
  return k0;
}

// Scratch of the calling thread (an OpenMP worker), kept across calls.
// Thread-local, so that two threads may run these kernels at once, each with
// its own OpenMP team (two models, or two decoders' prefills).
std::vector<float>& thread_scratch() {
  thread_local std::vector<float> buf;
  return buf;
}

// The products in the operands' precision.
void mm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
        const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
void mm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const uint16_t* A, int64_t lda,
        const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  gemm_bf16(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

// An F32 block [r, c] (leading dimension ld) as an operand of type T: itself
// in F32; rounded into the calling thread's buffer `slot` (leading dimension c)
// in BF16.
template <class T>
struct Operand {
  const T* p;
  int64_t ld;
};
Operand<float> as_operand(const float* x, int64_t, int64_t, int64_t ld, float*, int) { return {x, ld}; }
Operand<uint16_t> as_operand(const float* x, int64_t r, int64_t c, int64_t ld, uint16_t*, int slot) {
  thread_local std::vector<uint16_t> buf[2];
  if (buf[slot].size() < static_cast<size_t>(r * c)) buf[slot].resize(r * c);
  for (int64_t i = 0; i < r; ++i) f32_to_bf16_row(buf[slot].data() + i * c, x + i * ld, c);
  return {buf[slot].data(), c};
}

template <class E>
void attention_forward_impl(float* out, float* lse, const E* q, const E* k, const E* v, int64_t B, int64_t T,
                            int64_t H, int64_t Hkv, int64_t hd, const int32_t* doc_start) {
  const int64_t group = H / Hkv, nblk = (T + kQBlock - 1) / kQBlock;
  const int64_t ldq = H * hd, ldk = Hkv * hd;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const int64_t tasks = B * H * nblk;
#pragma omp parallel
  {
    std::vector<float>& S = thread_scratch();
    if (S.size() < static_cast<size_t>(kQBlock * T)) S.resize(kQBlock * T);
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t blk = nblk - 1 - task % nblk;  // big blocks first
      const int64_t bh = task / nblk, b = bh / H, h = bh % H, g = h / group;
      const int64_t i0 = blk * kQBlock, i1 = std::min(T, i0 + kQBlock), m = i1 - i0;
      // Scores of keys [k0, i1): w columns.
      const int64_t k0 = first_key(doc_start, b, T, i0, i1), w = i1 - k0;
      const E* qb = q + (b * T + i0) * ldq + h * hd;
      const E* kb = k + (b * T + k0) * ldk + g * hd;
      const E* vb = v + (b * T + k0) * ldk + g * hd;
      mm(false, true, m, w, hd, scale, qb, ldq, kb, ldk, 0.0f, S.data(), w);
      float* lrow = lse + (b * H + h) * T + i0;
      for (int64_t i = 0; i < m; ++i) {
        const int64_t lo = doc_start ? doc_start[b * T + i0 + i] - k0 : 0;
        lrow[i] = softmax_row(S.data() + i * w, lo, i0 + i + 1 - k0, w);
      }
      const Operand<E> P = as_operand(S.data(), m, w, w, static_cast<E*>(nullptr), 0);
      mm(false, false, m, hd, w, 1.0f, P.p, P.ld, vb, ldk, 0.0f, out + (b * T + i0) * ldq + h * hd, ldq);
    }
  }
}

template <class E>
void attention_backward_impl(float* dq, float* dk, float* dv, const float* dout, const float* out,
                             const float* lse, const E* q, const E* k, const E* v, int64_t B, int64_t T,
                             int64_t H, int64_t Hkv, int64_t hd, const int32_t* doc_start) {
  const int64_t group = H / Hkv, nblk = (T + kQBlock - 1) / kQBlock;
  const int64_t ldq = H * hd, ldk = Hkv * hd;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  // dk/dv partials per query head: [B, H, T, hd] each. Each (b, h) is one task
  // that walks its query blocks in order, so it owns its partial rows.
  thread_local std::vector<float> part;  // the caller's, see thread_scratch()
  const size_t part_n = static_cast<size_t>(B * H * T * hd);
  if (part.size() < 2 * part_n) part.resize(2 * part_n);
  float* dk_part = part.data();
  float* dv_part = part.data() + part_n;
  const int64_t tasks = B * H;
#pragma omp parallel
  {
    std::vector<float>& S = thread_scratch();
    if (S.size() < static_cast<size_t>(2 * kQBlock * T + kQBlock)) S.resize(2 * kQBlock * T + kQBlock);
#pragma omp for schedule(dynamic, 1)
    for (int64_t bh = 0; bh < tasks; ++bh) {
      const int64_t b = bh / H, h = bh % H, g = h / group;
      const E* kseq = k + b * T * ldk + g * hd;
      const E* vseq = v + b * T * ldk + g * hd;
      float* dkh = dk_part + bh * T * hd;
      float* dvh = dv_part + bh * T * hd;
      std::memset(dkh, 0, sizeof(float) * T * hd);
      std::memset(dvh, 0, sizeof(float) * T * hd);
      for (int64_t blk = 0; blk < nblk; ++blk) {
        const int64_t i0 = blk * kQBlock, i1 = std::min(T, i0 + kQBlock), m = i1 - i0;
        const int64_t k0 = first_key(doc_start, b, T, i0, i1), w = i1 - k0;  // keys [k0, i1)
        const E* kb = kseq + k0 * ldk;
        const E* vb = vseq + k0 * ldk;
        float* P = S.data();
        float* dP = S.data() + kQBlock * T;
        float* D = dP + kQBlock * T;
        const E* qb = q + (b * T + i0) * ldq + h * hd;
        const float* dob = dout + (b * T + i0) * ldq + h * hd;
        const Operand<E> dO = as_operand(dob, m, hd, ldq, static_cast<E*>(nullptr), 0);
        const float* ob = out + (b * T + i0) * ldq + h * hd;
        const float* lrow = lse + (b * H + h) * T + i0;
        mm(false, true, m, w, hd, scale, qb, ldq, kb, ldk, 0.0f, P, w);
        mm(false, true, m, w, hd, 1.0f, dO.p, dO.ld, vb, ldk, 0.0f, dP, w);
        for (int64_t i = 0; i < m; ++i) D[i] = dot(dob + i * ldq, ob + i * ldq, hd);
        for (int64_t i = 0; i < m; ++i) {
          const int64_t lo = doc_start ? doc_start[b * T + i0 + i] - k0 : 0;
          softmax_row_backward(P + i * w, dP + i * w, lrow[i], D[i], lo, i0 + i + 1 - k0, w);
        }
        // dQ = scale * dS K;  dK += scale * dS^T Q;  dV += P^T dO  (rows k0.. of dK, dV)
        const Operand<E> dS = as_operand(dP, m, w, w, static_cast<E*>(nullptr), 1);
        mm(false, false, m, hd, w, scale, dS.p, dS.ld, kb, ldk, 0.0f, dq + (b * T + i0) * ldq + h * hd, ldq);
        mm(true, false, w, hd, m, scale, dS.p, dS.ld, qb, ldq, 1.0f, dkh + k0 * hd, hd);
        const Operand<E> Pop = as_operand(P, m, w, w, static_cast<E*>(nullptr), 1);  // dS is done with
        mm(true, false, w, hd, m, 1.0f, Pop.p, Pop.ld, dO.p, dO.ld, 1.0f, dvh + k0 * hd, hd);
      }
    }
    // Sum the partials of each kv group into dk/dv [B, T, Hkv, hd].
#pragma omp for schedule(static)
    for (int64_t bt = 0; bt < B * T; ++bt) {
      const int64_t b = bt / T, t = bt % T;
      for (int64_t g = 0; g < Hkv; ++g) {
        float* dkr = dk + bt * ldk + g * hd;
        float* dvr = dv + bt * ldk + g * hd;
        const int64_t h0 = g * group;
        std::memcpy(dkr, dk_part + ((b * H + h0) * T + t) * hd, sizeof(float) * hd);
        std::memcpy(dvr, dv_part + ((b * H + h0) * T + t) * hd, sizeof(float) * hd);
        for (int64_t h = h0 + 1; h < h0 + group; ++h) {
          add_into(dkr, dk_part + ((b * H + h) * T + t) * hd, hd);
          add_into(dvr, dv_part + ((b * H + h) * T + t) * hd, hd);
        }
      }
    }
  }
}

}  // namespace

void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v, int64_t B,
                       int64_t T, int64_t H, int64_t Hkv, int64_t hd, const int32_t* doc_start) {
  attention_forward_impl(out, lse, q, k, v, B, T, H, Hkv, hd, doc_start);
}

void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* out, const float* lse,
                        const float* q, const float* k, const float* v, int64_t B, int64_t T, int64_t H,
                        int64_t Hkv, int64_t hd, const int32_t* doc_start) {
  attention_backward_impl(dq, dk, dv, dout, out, lse, q, k, v, B, T, H, Hkv, hd, doc_start);
}

void attention_forward_bf16(float* out, float* lse, const uint16_t* q, const uint16_t* k, const uint16_t* v,
                            int64_t B, int64_t T, int64_t H, int64_t Hkv, int64_t hd, const int32_t* doc_start) {
  attention_forward_impl(out, lse, q, k, v, B, T, H, Hkv, hd, doc_start);
}

void attention_backward_bf16(float* dq, float* dk, float* dv, const float* dout, const float* out,
                             const float* lse, const uint16_t* q, const uint16_t* k, const uint16_t* v, int64_t B,
                             int64_t T, int64_t H, int64_t Hkv, int64_t hd, const int32_t* doc_start) {
  attention_backward_impl(dq, dk, dv, dout, out, lse, q, k, v, B, T, H, Hkv, hd, doc_start);
}

}  // namespace stem::kernels
