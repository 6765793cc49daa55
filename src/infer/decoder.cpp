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

#include "core/buffer.h"
#include "core/check.h"

namespace stem::infer {

namespace {
kernels::MatvecJob job(float* y, const WeightMat& W, int64_t out) {
  return kernels::MatvecJob{y, W.p, out, W.dtype == DType::BF16, false, W.dtype == DType::Q8};
}
}  // namespace

Decoder::Decoder(const model::Transformer& model, const DecoderOptions& opt)
    : m_(model), be_(model.backend()), k_(be_.ops()) {
  const ModelConfig& c = m_.config();
  const int64_t P = c.max_position_embeddings;
  cap_ = opt.max_context <= 0 ? P : std::min(opt.max_context, P);
  chunk_ = std::max<int64_t>(1, std::min(opt.prefill_chunk, cap_));
  V_ = c.vocab_size;
  d_ = c.hidden_size;
  f_ = c.intermediate_size;
  H_ = c.num_attention_heads;
  Hkv_ = c.num_key_value_heads;
  hd_ = c.head_dim();
  E_ = c.num_hash_experts;
  eps_ = static_cast<float>(c.rms_norm_eps);
  const int64_t L = m_.n_layers(), qd = H_ * hd_, kd = Hkv_ * hd_;
  const int64_t S = std::max<int64_t>(1, opt.slots);
  pos_.assign(S, 0);
  batch_ids_.assign(chunk_, 0);
  const bool moe = c.has(FfnType::HashMoe);
  if (moe) {
    by_expert_.assign(chunk_, 0);
    expert_count_.assign(E_ + 1, 0);
  }

  // Weight matrices as stored (F32, BF16 or Q8).
  int64_t widest = 0;
  bool bf16 = false, q8 = false;
  auto take = [&](int i) {
    const Mat m = mat(i);
    if (m.dtype != DType::F32) widest = std::max(widest, m_.weights()[i].numel());
    bf16 = bf16 || m.dtype == DType::BF16;
    q8 = q8 || m.dtype == DType::Q8;
    return m;
  };
  for (int l = 0; l < L; ++l) {
    const model::LayerView& W = m_.layer(l);
    LayerMats M;
    M.wq = take(W.i_wq);
    M.wk = take(W.i_wk);
    M.wv = take(W.i_wv);
    M.wo = take(W.i_wo);
    if (W.i_gate >= 0) M.gate = take(W.i_gate);
    if (W.i_up >= 0) M.up = take(W.i_up);
    if (W.i_down >= 0) M.down = take(W.i_down);
    for (size_t e = 0; e < W.i_e_gate.size(); ++e) {
      M.e_gate.push_back(take(W.i_e_gate[e]));
      M.e_up.push_back(take(W.i_e_up[e]));
      M.e_down.push_back(take(W.i_e_down[e]));
    }
    mats_.push_back(std::move(M));
  }
  const model::TensorList& w = m_.weights();
  embed_ = mat(w.find("model.embed_tokens.weight"));
  head_ = take(c.tie_word_embeddings ? w.find("model.embed_tokens.weight") : w.find("lm_head.weight"));
  STEM_CHECKF(!bf16 || (be_.supports(kernels::Op::matvec_bf16, DType::BF16) &&
                              be_.supports(kernels::Op::linear_forward_bf16, DType::BF16)),
              "decoder: the %s backend has no BF16 matrix ops (load with F32 weights)", be_.name());
  STEM_CHECKF(!q8 || (be_.supports(kernels::Op::matvec_q8, DType::Q8) &&
                      be_.supports(kernels::Op::linear_forward_q8, DType::Q8)),
              "decoder: the %s backend has no Q8 matrix ops (load with F32 or BF16 weights)", be_.name());
  const int64_t n_wide = widest > 0 && chunk_ > 1 ? kernels::linear_bf16_scratch(widest) : 0;

  // The cache and work buffers, in the backend's memory: each cache one
  // buffer, the rest one arena carved in order.
  k_cache_ = backends::must_alloc(be_, sizeof(float) * S * L * cap_ * kd);
  v_cache_ = backends::must_alloc(be_, sizeof(float) * S * L * cap_ * kd);
  const std::pair<float**, int64_t> parts[] = {
      {&h_, chunk_ * d_},   {&a_, chunk_ * d_},    {&rstd_, chunk_},      {&q_, chunk_ * qd},
      {&att_, chunk_ * qd}, {&g_, chunk_ * f_},    {&u_, chunk_ * f_},    {&hact_, chunk_ * f_},
      {&y_, chunk_ * d_},   {&xe_, moe ? chunk_ * d_ : 0}, {&ye_, moe ? chunk_ * d_ : 0},
      {&logits_, V_},       {&wide_, n_wide},
      {&scores_, kernels::attention_cached_scratch(chunk_, cap_ - chunk_, H_)},
      {&kv_, chunk_ * 2 * kd},  {&head_in_, S * d_},  {&head_out_, S * V_}};
  size_t total = 0;
  for (const auto& [ptr, n] : parts) total += core::align_up(static_cast<size_t>(n) * sizeof(float));
  work_ = backends::must_alloc(be_, total);
  auto* base = static_cast<std::byte*>(work_->data());
  for (const auto& [ptr, n] : parts) {
    *ptr = n > 0 ? reinterpret_cast<float*>(base) : nullptr;
    base += core::align_up(static_cast<size_t>(n) * sizeof(float));
  }

  // STEM table rows: the weight list's or the store's in place, or staged.
  std::vector<const float*> in_place;
  if (memory::TableStore* store = m_.table_store()) {
    for (int64_t t = 0; t < store->n_tables() && !opt.prefetch; ++t) in_place.push_back(store->direct(t));
    if (opt.prefetch || std::count(in_place.begin(), in_place.end(), nullptr) > 0) {
      // Rows already in RAM are copied faster than a thread hand-off.
      const bool async = opt.prefetch && store->tier() != memory::Tier::Ram;
      rows_ = model::rows_staged(*store, chunk_, async);
    }
  } else {
    for (int l = 0; l < L; ++l)
      if (m_.stem_slot(l) >= 0) in_place.push_back(m_.layer(l).stem_table);
  }
  if (!rows_) rows_ = model::rows_in_place(std::move(in_place));
}

Decoder::~Decoder() = default;

Decoder::Mat Decoder::mat(int i) const {
  STEM_CHECK(i >= 0);
  const Tensor& t = m_.weights()[i];
  STEM_CHECKF(!t.empty() && (t.dtype() == DType::F32 || t.dtype() == DType::BF16 || t.dtype() == DType::Q8),
              "decoder: weight %s missing or not F32/BF16/Q8", m_.weights().spec(i).name.c_str());
  return Mat{t.raw(), t.dtype()};
}

void Decoder::reset() { pos_[0] = 0; }

int64_t Decoder::memory_bytes() const {
  const size_t n = k_cache_->size() + v_cache_->size() + work_->size();
  return static_cast<int64_t>(n + (by_expert_.size() + expert_count_.size()) * 4) +
         (prefetcher() ? prefetcher()->staging_bytes() : 0);
}

Result<const float*> Decoder::prefill(const int32_t* ids, int64_t n) { return prefill(ids, n, nullptr); }

Status Decoder::rewind(int64_t position) {
  if (position < 0 || position > pos_[0])
    return Status::error("decoder: cannot rewind to position " + std::to_string(position) + " (at " +
                         std::to_string(pos_[0]) + ")");
  pos_[0] = position;
  return ok_status();
}

Result<const float*> Decoder::prefill(const int32_t* ids, int64_t n, float* logits) {
  if (n < 1) return Status::error("decoder: prefill needs at least one token");
  if (pos_[0] + n > cap_)
    return Status::error("decoder: " + std::to_string(n) + " more tokens at position " +
                         std::to_string(pos_[0]) + " exceed the context of " + std::to_string(cap_) +
                         " positions");
  for (int64_t i = 0; i < n; ++i)
    if (ids[i] < 0 || ids[i] >= V_)
      return Status::error("decoder: token id " + std::to_string(ids[i]) + " at index " +
                           std::to_string(i) + " is outside [0, vocab_size = " +
                           std::to_string(V_) + ")");
  const int64_t pos_before = pos_[0];
  using Ticket = model::RowProvider::Ticket;
  // The next chunk's rows are fetched while this one computes.
  Ticket ticket = rows_->submit(ids, std::min(chunk_, n));
  for (int64_t i = 0; i < n; i += chunk_) {
    const int64_t m = std::min(chunk_, n - i);
    Ticket next = -1;
    if (i + chunk_ < n) next = rows_->submit(ids + i + chunk_, std::min(chunk_, n - i - chunk_));
    Status st = forward_chunk(ids + i, m, ticket, logits ? logits + i * V_ : nullptr);
    rows_->release(ticket);
    ticket = next;
    if (!st.ok()) {
      if (next >= 0) rows_->release(next);
      pos_[0] = pos_before;
      return st;
    }
  }
  return logits ? static_cast<const float*>(logits + (n - 1) * V_) : static_cast<const float*>(logits_);
}

Result<const float*> Decoder::step(int32_t id) { return prefill(&id, 1, nullptr); }

void Decoder::linear(float* y, const float* x, const Mat& W, int64_t n, int64_t in, int64_t out,
                     bool accumulate) {
  if (W.dtype == DType::Q8) {
    const auto* w = static_cast<const uint8_t*>(W.p);
    if (n == 1)
      k_.matvec_q8(y, w, x, out, in, accumulate);
    else
      k_.linear_forward_q8(y, x, w, n, in, out, accumulate, wide_);
    return;
  }
  if (W.dtype == DType::BF16) {
    const auto* w = static_cast<const uint16_t*>(W.p);
    if (n == 1)
      k_.matvec_bf16(y, w, x, out, in, accumulate);
    else if (n <= kernels::kMatvecRowsMax)
      k_.matvec_rows_bf16(y, w, x, n, out, in, accumulate);
    else
      k_.linear_forward_bf16(y, x, w, n, in, out, accumulate, wide_);
    return;
  }
  const auto* w = static_cast<const float*>(W.p);
  if (n == 1)
    k_.matvec(y, w, x, out, in, accumulate);
  else if (n <= kernels::kMatvecRowsMax)
    k_.matvec_rows(y, w, x, n, out, in, accumulate);
  else
    k_.linear_forward(y, x, w, n, in, out, accumulate);
}

// y = down(silu(gate(x)) * up(x)) over n rows.
void Decoder::swiglu_ffn(float* y, const float* x, const Mat& Wg, const Mat& Wu, const Mat& Wd,
                         int64_t n) {
  if (n == 1) {  // one fork/join for gate and up
    const kernels::MatvecJob jobs[2] = {job(g_, Wg, f_), job(u_, Wu, f_)};
    k_.matvec_batch(jobs, 2, x, d_);
  } else {
    linear(g_, x, Wg, n, d_, f_);
    linear(u_, x, Wu, n, d_, f_);
  }
  k_.swiglu_forward(hact_, g_, u_, nullptr, n, f_);
  linear(y, hact_, Wd, n, f_, d_);
}

// Positions grouped by expert (counting sort, ascending within an expert, the
// order hash_moe_forward uses); each group a dense SwiGLU on gathered rows.
void Decoder::hash_moe_ffn(float* y, const float* x, const model::LayerView& W, const LayerMats& M,
                           const int32_t* ids, int64_t n) {
  if (n == 1) {
    const int32_t e = W.hash_table[ids[0]];
    swiglu_ffn(y, x, M.e_gate[e], M.e_up[e], M.e_down[e], 1);
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
    k_.gather_rows(xe_, x, by_expert_.data() + s0, m, d_);
    swiglu_ffn(ye_, xe_, M.e_gate[e], M.e_up[e], M.e_down[e], m);
    for (int64_t j = 0; j < m; ++j)
      be_.stream().copy(y + static_cast<int64_t>(by_expert_[s0 + j]) * d_, ye_ + j * d_, sizeof(float) * d_);
  }
}

Status Decoder::prefill_branches(const int32_t* ids, const int64_t* lengths, int64_t n_branches, float* logits) {
  int64_t n = 0;
  for (int64_t b = 0; b < n_branches; ++b) {
    if (lengths[b] < 1 || lengths[b] > chunk_)
      return Status::error("decoder: a branch of " + std::to_string(lengths[b]) + " tokens is outside [1, " +
                           std::to_string(chunk_) + "]");
    n += lengths[b];
  }
  if (n_branches < 1) return Status::error("decoder: no branches");
  if (pos_[0] + n > cap_)
    return Status::error("decoder: branches of " + std::to_string(n) + " tokens at position " + std::to_string(pos_[0]) +
                         " exceed the context of " + std::to_string(cap_) + " positions");
  for (int64_t i = 0; i < n; ++i)
    if (ids[i] < 0 || ids[i] >= V_)
      return Status::error("decoder: token id " + std::to_string(ids[i]) + " at index " + std::to_string(i) +
                           " is outside [0, vocab_size = " + std::to_string(V_) + ")");
  // Whole branches, as many as fit in a chunk, per pass.
  for (int64_t b = 0, at = 0; b < n_branches;) {
    int64_t e = b, m = 0;
    while (e < n_branches && m + lengths[e] <= chunk_) m += lengths[e++];
    const model::RowProvider::Ticket ticket = rows_->submit(ids + at, m);
    Status st = forward_chunk(ids + at, m, ticket, logits + at * V_, lengths + b, e - b);
    rows_->release(ticket);
    STEM_RETURN_IF_ERROR(st);
    at += m;
    b = e;
  }
  return ok_status();
}

float* Decoder::k_cache(int l, int64_t slot) const {
  const int64_t kd = Hkv_ * hd_;
  return static_cast<float*>(k_cache_->data()) + ((slot * m_.n_layers() + l) * cap_) * kd;
}

float* Decoder::v_cache(int l, int64_t slot) const {
  const int64_t kd = Hkv_ * hd_;
  return static_cast<float*>(v_cache_->data()) + ((slot * m_.n_layers() + l) * cap_) * kd;
}

Status Decoder::forward_slots(const SlotChunk* chunks, int64_t n_chunks) {
  if (n_chunks < 1) return Status::error("decoder: a batched pass needs at least one sequence");
  int64_t n = 0;
  std::vector<bool> seen(pos_.size(), false);
  for (int64_t c = 0; c < n_chunks; ++c) {
    const SlotChunk& s = chunks[c];
    const std::string where = "decoder: slot " + std::to_string(s.slot);
    if (s.slot < 0 || s.slot >= slots()) return Status::error(where + " is outside [0, " + std::to_string(slots()) + ")");
    if (seen[s.slot]) return Status::error(where + " appears twice in one pass");
    seen[s.slot] = true;
    if (s.n < 1) return Status::error(where + ": a chunk needs at least one token");
    if (pos_[s.slot] + s.n > cap_)
      return Status::error(where + ": " + std::to_string(s.n) + " more tokens at position " +
                           std::to_string(pos_[s.slot]) + " exceed the context of " + std::to_string(cap_) +
                           " positions");
    for (int64_t i = 0; i < s.n; ++i)
      if (s.ids[i] < 0 || s.ids[i] >= V_)
        return Status::error(where + ": token id " + std::to_string(s.ids[i]) + " is outside [0, vocab_size = " +
                             std::to_string(V_) + ")");
    n += s.n;
  }
  if (n > chunk_)
    return Status::error("decoder: a batched pass of " + std::to_string(n) + " tokens exceeds the chunk of " +
                         std::to_string(chunk_));
  for (int64_t c = 0, at = 0; c < n_chunks; at += chunks[c++].n)
    std::copy(chunks[c].ids, chunks[c].ids + chunks[c].n, batch_ids_.begin() + at);
  const model::RowProvider::Ticket ticket = rows_->submit(batch_ids_.data(), n);
  Status st = forward_chunk(batch_ids_.data(), n, ticket, nullptr, nullptr, 0, chunks, n_chunks);
  rows_->release(ticket);
  return st;
}

Status Decoder::forward_chunk(const int32_t* ids, int64_t n, model::RowProvider::Ticket ticket, float* all,
                             const int64_t* branch_len, int64_t n_branches, const SlotChunk* slots,
                             int64_t n_slots) {
  STEM_CHECK(n >= 1 && n <= chunk_ && (slots || pos_[0] + n <= cap_));
  const int64_t d = d_, f = f_, H = H_, Hkv = Hkv_, hd = hd_, qd = H * hd, kd = Hkv * hd;
  const int64_t pos0 = pos_[0];
  float* h = h_;
  if (embed_.dtype == DType::F32) {
    k_.embedding_forward(h, static_cast<const float*>(embed_.p), ids, n, d);
  } else if (embed_.dtype == DType::Q8) {
    for (int64_t i = 0; i < n; ++i)
      k_.dequantize_q8_row(h + i * d,
                           static_cast<const uint8_t*>(embed_.p) + static_cast<int64_t>(ids[i]) * kernels::q8_row_bytes(d),
                           d);
  } else {
    for (int64_t i = 0; i < n; ++i)
      k_.bf16_to_f32_row(h + i * d, static_cast<const uint16_t*>(embed_.p) + static_cast<int64_t>(ids[i]) * d, d);
  }
  model::StemRows rows;  // waited for at the first STEM layer
  bool have_rows = false;
  for (int l = 0; l < m_.n_layers(); ++l) {
    const model::LayerView& W = m_.layer(l);
    const LayerMats& M = mats_[l];
    float* kc = k_cache(l, 0);
    float* vc = v_cache(l, 0);
    // attention block
    k_.rmsnorm_forward(a_, rstd_, h, W.attn_norm, n, d, eps_);
    if (slots) {  // k and v of every sequence together, then to their caches
      linear(q_, a_, M.wq, n, d, qd);
      linear(kv_, a_, M.wk, n, d, kd);
      linear(kv_ + n * kd, a_, M.wv, n, d, kd);
      slot_attention(att_, l, slots, n_slots);
    } else {
      if (n == 1) {  // one fork/join for q, k and v
        const kernels::MatvecJob jobs[3] = {job(q_, M.wq, qd), job(kc + pos0 * kd, M.wk, kd),
                                            job(vc + pos0 * kd, M.wv, kd)};
        k_.matvec_batch(jobs, 3, a_, d);
      } else {
        linear(q_, a_, M.wq, n, d, qd);
        linear(kc + pos0 * kd, a_, M.wk, n, d, kd);
        linear(vc + pos0 * kd, a_, M.wv, n, d, kd);
      }
      if (!branch_len) {
        k_.rope_forward(q_, m_.rope_cos(), m_.rope_sin(), 1, n, H, hd, pos0, nullptr);
        k_.rope_forward(kc + pos0 * kd, m_.rope_cos(), m_.rope_sin(), 1, n, Hkv, hd, pos0, nullptr);
        k_.attention_cached_forward(att_, scores_, q_, kc, vc, n, pos0, H, Hkv, hd);
      } else {
        branch_attention(att_, kc, vc, branch_len, n_branches, pos0);
      }
    }
    linear(h, att_, M.wo, n, qd, d, /*accumulate=*/true);
    // FFN block
    k_.rmsnorm_forward(a_, rstd_, h, W.ffn_norm, n, d, eps_);
    switch (W.type) {
      case FfnType::Dense:
        swiglu_ffn(y_, a_, M.gate, M.up, M.down, n);
        break;
      case FfnType::Stem: {
        if (!have_rows) {
          Result<model::StemRows> r = rows_->wait(ticket);
          if (!r.ok()) return r.status().with_context("decoder");
          rows = *r;
          have_rows = true;
        }
        linear(g_, a_, M.gate, n, d, f);
        k_.swiglu_forward(hact_, g_, rows.rows[m_.stem_slot(l)], rows.row_of, n, f);
        if (slots) override_rows(ids, m_.stem_slot(l), slots, n_slots);
        linear(y_, hact_, M.down, n, f, d);
        break;
      }
      case FfnType::HashMoe:
        hash_moe_ffn(y_, a_, W, M, ids, n);
        break;
    }
    k_.add_inplace(h, y_, n * d);
  }
  if (!have_rows) {  // no STEM layer read them; still surface a fetch error
    Result<model::StemRows> r = rows_->wait(ticket);
    if (!r.ok()) return r.status().with_context("decoder");
  }
  if (slots) {  // the last token of each sequence that wants logits, through the head together
    int64_t m = 0;
    for (int64_t c = 0, at = 0; c < n_slots; at += slots[c++].n)
      if (slots[c].logits)
        k_.rmsnorm_forward(head_in_ + (m++) * d, rstd_, h + (at + slots[c].n - 1) * d, m_.final_norm(), 1, d, eps_);
    if (m > 0) linear(head_out_, head_in_, head_, m, d, V_);
    for (int64_t c = 0, j = 0; c < n_slots; ++c) {
      if (slots[c].logits) std::memcpy(slots[c].logits, head_out_ + (j++) * V_, sizeof(float) * V_);
      pos_[slots[c].slot] += slots[c].n;
    }
    return ok_status();
  }
  if (all) {  // every position reaches the head
    k_.rmsnorm_forward(a_, rstd_, h, m_.final_norm(), n, d, eps_);
    linear(all, a_, head_, n, d, V_);
  } else {  // only the last one
    k_.rmsnorm_forward(a_, rstd_, h + (n - 1) * d, m_.final_norm(), 1, d, eps_);
    linear(logits_, a_, head_, 1, d, V_);
  }
  if (!branch_len) pos_[0] += n;
  return ok_status();
}

// Each sequence's keys and values (kv_: [n, kd] k, then [n, kd] v) copied to
// its cache rows, q and k rotated at its positions, its queries attended
// against its own cache: the one-row chunks (generating sequences) all in one
// call, a prompt chunk on its own.
void Decoder::slot_attention(float* att, int l, const SlotChunk* slots, int64_t n_slots) {
  const int64_t qd = H_ * hd_, kd = Hkv_ * hd_;
  int64_t n = 0;
  for (int64_t c = 0; c < n_slots; ++c) n += slots[c].n;
  one_row_.clear();
  for (int64_t c = 0, at = 0; c < n_slots; at += slots[c++].n) {
    const SlotChunk& s = slots[c];
    const int64_t p = pos_[s.slot];
    float* kc = k_cache(l, s.slot);
    float* vc = v_cache(l, s.slot);
    be_.stream().copy(kc + p * kd, kv_ + at * kd, sizeof(float) * s.n * kd);
    be_.stream().copy(vc + p * kd, kv_ + (n + at) * kd, sizeof(float) * s.n * kd);
    k_.rope_forward(q_ + at * qd, m_.rope_cos(), m_.rope_sin(), 1, s.n, H_, hd_, p, nullptr);
    k_.rope_forward(kc + p * kd, m_.rope_cos(), m_.rope_sin(), 1, s.n, Hkv_, hd_, p, nullptr);
    if (s.n == 1)
      one_row_.push_back({at, s.slot, p + 1});
    else
      k_.attention_cached_forward(att + at * qd, scores_, q_ + at * qd, kc, vc, s.n, p, H_, Hkv_, hd_);
  }
  if (!one_row_.empty())
    k_.attention_cached_slots_forward(att, scores_, q_, k_cache(l, 0), v_cache(l, 0), m_.n_layers() * cap_ * kd,
                                      one_row_.data(), static_cast<int64_t>(one_row_.size()), H_, Hkv_, hd_);
}

// Positions of sequences with overrides: their SwiGLU recomputed with the
// override row where STEM layer j has one for their token.
void Decoder::override_rows(const int32_t* ids, int64_t j, const SlotChunk* slots, int64_t n_slots) {
  for (int64_t c = 0, at = 0; c < n_slots; at += slots[c++].n) {
    if (!slots[c].rows) continue;
    for (int64_t i = at; i < at + slots[c].n; ++i)
      if (const float* r = slots[c].rows->find(j, ids[i]))
        k_.swiglu_forward(hact_ + i * f_, g_ + i * f_, r, nullptr, 1, f_);
  }
}

// Each branch's q and k rotated from pos0; its keys and values moved down to
// rows [pos0, pos0 + len) (in blocks no longer than the distance, so that
// no copy overlaps) and attended there: the rows after pos0 then hold that
// branch alone. Branch 0 is already in place.
void Decoder::branch_attention(float* att, float* kc, float* vc, const int64_t* len, int64_t n_branches,
                               int64_t pos0) {
  const int64_t qd = H_ * hd_, kd = Hkv_ * hd_;
  for (int64_t b = 0, off = 0; b < n_branches; off += len[b++]) {
    k_.rope_forward(q_ + off * qd, m_.rope_cos(), m_.rope_sin(), 1, len[b], H_, hd_, pos0, nullptr);
    k_.rope_forward(kc + (pos0 + off) * kd, m_.rope_cos(), m_.rope_sin(), 1, len[b], Hkv_, hd_, pos0, nullptr);
  }
  for (int64_t b = 0, off = 0; b < n_branches; off += len[b++]) {
    for (int64_t j = 0; off > 0 && j < len[b]; j += off) {
      const int64_t rows = std::min(off, len[b] - j);
      be_.stream().copy(kc + (pos0 + j) * kd, kc + (pos0 + off + j) * kd, sizeof(float) * rows * kd);
      be_.stream().copy(vc + (pos0 + j) * kd, vc + (pos0 + off + j) * kd, sizeof(float) * rows * kd);
    }
    k_.attention_cached_forward(att + off * qd, scores_, q_ + off * qd, kc, vc, len[b], pos0, H_, Hkv_, hd_);
  }
}

}  // namespace stem::infer
