// KV-cache forward of one sequence (see decoder.h). A chunk of n new tokens
// runs through every layer as a [n, *] block: projections through GEMM (or
// matvec for a one-token step), k and v written straight into the cache rows of
// their positions, RoPE at absolute positions, attention of the chunk's queries
// against the whole cache. Only the last position goes through the final norm
// and the head.
#include "infer/decoder.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "core/check.h"
#include "core/simd.h"
#include "kernels/infer_kernels.h"
#include "kernels/kernels.h"

namespace stem::infer {

namespace k = kernels;

namespace {
STEM_SIMD void add_into(float* STEM_RESTRICT dst, const float* STEM_RESTRICT src, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] += src[i];
}
}  // namespace

Decoder::Decoder(const model::Transformer& model, int64_t max_context) : m_(model) {
  const ModelConfig& c = m_.config();
  const int64_t P = c.max_position_embeddings;
  cap_ = max_context <= 0 ? P : std::min(max_context, P);
  chunk_ = std::min(kPrefillChunk, cap_);
  V_ = c.vocab_size;
  d_ = c.hidden_size;
  f_ = c.intermediate_size;
  H_ = c.num_attention_heads;
  Hkv_ = c.num_key_value_heads;
  hd_ = c.head_dim();
  E_ = c.num_hash_experts;
  eps_ = static_cast<float>(c.rms_norm_eps);
  const int64_t L = m_.n_layers(), qd = H_ * hd_, kd = Hkv_ * hd_;
  k_cache_.assign(L * cap_ * kd, 0.0f);
  v_cache_.assign(L * cap_ * kd, 0.0f);
  h_.assign(chunk_ * d_, 0.0f);
  a_.assign(chunk_ * d_, 0.0f);
  rstd_.assign(chunk_, 0.0f);
  q_.assign(chunk_ * qd, 0.0f);
  att_.assign(chunk_ * qd, 0.0f);
  scores_.assign(k::attention_cached_scratch(chunk_, cap_ - chunk_, H_), 0.0f);
  g_.assign(chunk_ * f_, 0.0f);
  u_.assign(chunk_ * f_, 0.0f);
  hact_.assign(chunk_ * f_, 0.0f);
  y_.assign(chunk_ * d_, 0.0f);
  if (c.has(FfnType::HashMoe)) {
    xe_.assign(chunk_ * d_, 0.0f);
    ye_.assign(chunk_ * d_, 0.0f);
    by_expert_.assign(chunk_, 0);
    expert_count_.assign(E_ + 1, 0);
  }
  logits_.assign(V_, 0.0f);
}

void Decoder::reset() { pos_ = 0; }

int64_t Decoder::memory_bytes() const {
  size_t n = k_cache_.size() + v_cache_.size() + h_.size() + a_.size() + rstd_.size() +
             q_.size() + att_.size() + scores_.size() + g_.size() + u_.size() + hact_.size() +
             y_.size() + xe_.size() + ye_.size() + logits_.size();
  return static_cast<int64_t>(n * sizeof(float) + (by_expert_.size() + expert_count_.size()) * 4);
}

Result<const float*> Decoder::prefill(const int32_t* ids, int64_t n) {
  if (n < 1) return Status::error("decoder: prefill needs at least one token");
  if (pos_ + n > cap_)
    return Status::error("decoder: " + std::to_string(n) + " more tokens at position " +
                         std::to_string(pos_) + " exceed the context of " + std::to_string(cap_) +
                         " positions");
  for (int64_t i = 0; i < n; ++i)
    if (ids[i] < 0 || ids[i] >= V_)
      return Status::error("decoder: token id " + std::to_string(ids[i]) + " at index " +
                           std::to_string(i) + " is outside [0, vocab_size = " +
                           std::to_string(V_) + ")");
  for (int64_t i = 0; i < n; i += chunk_) forward_chunk(ids + i, std::min(chunk_, n - i));
  return static_cast<const float*>(logits_.data());
}

Result<const float*> Decoder::step(int32_t id) { return prefill(&id, 1); }

void Decoder::linear(float* y, const float* x, const float* W, int64_t n, int64_t in,
                     int64_t out, bool accumulate) {
  if (n == 1)
    k::matvec(y, W, x, out, in, accumulate);
  else
    k::linear_forward(y, x, W, n, in, out, accumulate);
}

// y = down(silu(gate(x)) * up(x)) over n rows.
void Decoder::swiglu_ffn(float* y, const float* x, const float* Wg, const float* Wu,
                         const float* Wd, int64_t n) {
  linear(g_.data(), x, Wg, n, d_, f_);
  linear(u_.data(), x, Wu, n, d_, f_);
  k::swiglu_forward(hact_.data(), g_.data(), u_.data(), nullptr, n, f_);
  linear(y, hact_.data(), Wd, n, f_, d_);
}

// Positions grouped by expert (counting sort, ascending within an expert, the
// order hash_moe_forward uses); each group a dense SwiGLU on gathered rows.
void Decoder::hash_moe_ffn(float* y, const float* x, const model::LayerView& W,
                           const int32_t* ids, int64_t n) {
  if (n == 1) {
    const int32_t e = W.hash_table[ids[0]];
    swiglu_ffn(y, x, W.e_gate[e], W.e_up[e], W.e_down[e], 1);
    return;
  }
  std::fill(expert_count_.begin(), expert_count_.end(), 0);
  for (int64_t i = 0; i < n; ++i) ++expert_count_[W.hash_table[ids[i]] + 1];
  for (int64_t e = 0; e < E_; ++e) expert_count_[e + 1] += expert_count_[e];
  // expert_count_[e] is now the start of expert e; advance a copy while filling.
  for (int64_t i = 0; i < n; ++i) by_expert_[expert_count_[W.hash_table[ids[i]]]++] = static_cast<int32_t>(i);
  for (int64_t e = E_; e > 0; --e) expert_count_[e] = expert_count_[e - 1];
  expert_count_[0] = 0;
  for (int64_t e = 0; e < E_; ++e) {
    const int64_t s0 = expert_count_[e], m = expert_count_[e + 1] - s0;
    if (m == 0) continue;
    k::gather_rows(xe_.data(), x, by_expert_.data() + s0, m, d_);
    swiglu_ffn(ye_.data(), xe_.data(), W.e_gate[e], W.e_up[e], W.e_down[e], m);
    for (int64_t j = 0; j < m; ++j)
      std::memcpy(y + static_cast<int64_t>(by_expert_[s0 + j]) * d_, ye_.data() + j * d_,
                  sizeof(float) * d_);
  }
}

void Decoder::forward_chunk(const int32_t* ids, int64_t n) {
  STEM_CHECK(n >= 1 && n <= chunk_ && pos_ + n <= cap_);
  const int64_t d = d_, f = f_, H = H_, Hkv = Hkv_, hd = hd_, qd = H * hd, kd = Hkv * hd;
  const int64_t pos0 = pos_;
  float* h = h_.data();
  k::embedding_forward(h, m_.embed_table(), ids, n, d);
  for (int l = 0; l < m_.n_layers(); ++l) {
    const model::LayerView& W = m_.layer(l);
    float* kc = k_cache_.data() + (static_cast<int64_t>(l) * cap_) * kd;
    float* vc = v_cache_.data() + (static_cast<int64_t>(l) * cap_) * kd;
    // attention block
    k::rmsnorm_forward(a_.data(), rstd_.data(), h, W.attn_norm, n, d, eps_);
    linear(q_.data(), a_.data(), W.wq, n, d, qd);
    linear(kc + pos0 * kd, a_.data(), W.wk, n, d, kd);
    linear(vc + pos0 * kd, a_.data(), W.wv, n, d, kd);
    k::rope_forward(q_.data(), m_.rope_cos(), m_.rope_sin(), 1, n, H, hd, pos0);
    k::rope_forward(kc + pos0 * kd, m_.rope_cos(), m_.rope_sin(), 1, n, Hkv, hd, pos0);
    k::attention_cached_forward(att_.data(), scores_.data(), q_.data(), kc, vc, n, pos0, H, Hkv,
                                hd);
    linear(h, att_.data(), W.wo, n, qd, d, /*accumulate=*/true);
    // FFN block
    k::rmsnorm_forward(a_.data(), rstd_.data(), h, W.ffn_norm, n, d, eps_);
    switch (W.type) {
      case FfnType::Dense:
        swiglu_ffn(y_.data(), a_.data(), W.w_gate, W.w_up, W.w_down, n);
        break;
      case FfnType::Stem:
        linear(g_.data(), a_.data(), W.w_gate, n, d, f);
        k::swiglu_forward(hact_.data(), g_.data(), W.stem_table, ids, n, f);
        linear(y_.data(), hact_.data(), W.w_down, n, f, d);
        break;
      case FfnType::HashMoe:
        hash_moe_ffn(y_.data(), a_.data(), W, ids, n);
        break;
    }
    add_into(h, y_.data(), n * d);
  }
  // Only the last position reaches the head.
  const float* last = h + (n - 1) * d;
  k::rmsnorm_forward(a_.data(), rstd_.data(), last, m_.final_norm(), 1, d, eps_);
  k::matvec(logits_.data(), m_.head_weight(), a_.data(), V_, d);
  pos_ += n;
}

}  // namespace stem::infer
