// The contract's forward and backward, layer by layer, on the backend's ops
// (every piece of math, copy and clear goes through it).
// Saved per layer: the residual input, both normed inputs and their 1/rms, the
// roped q and k, v, the attention output and its log-sum-exp, the residual
// after attention, and the FFN's intermediate activations.
#include "model/transformer.h"

#include <algorithm>
#include <cstring>

#include "core/buffer.h"
#include "core/check.h"

namespace stem::model {

struct Transformer::LayerActs {
  float* resid_in;  // [N, d] residual stream entering the layer
  float* a;         // [N, d] input_layernorm output
  float* rstd1;     // [N]
  float* q;         // [N, H*hd] after RoPE
  float* k;         // [N, Hkv*hd] after RoPE
  float* v;         // [N, Hkv*hd]
  float* att;       // [N, H*hd] attention output (before o_proj)
  float* lse;       // [B, H, T]
  float* h_mid;     // [N, d] residual after attention
  float* x2;        // [N, d] post_attention_layernorm output
  float* rstd2;     // [N]
  float* g;         // [N, f] gate pre-activation (expert order for hash_moe)
  float* u;         // [N, f] up projection (dense, hash_moe)
  float* hact;      // [N, f] silu(g) * u
  float* xe;        // [N, d] x2 in expert order (hash_moe)
  // BF16 mode: the linear layers' inputs, rounded (a, x2 and hact are then
  // not kept in F32).
  uint16_t* a16;     // [N, d]
  uint16_t* q16;     // [N, H*hd] after RoPE (q, k, v are then not kept in F32)
  uint16_t* k16;     // [N, Hkv*hd]
  uint16_t* v16;     // [N, Hkv*hd]
  uint16_t* att16;   // [N, H*hd]
  uint16_t* x2_16;   // [N, d]
  uint16_t* hact16;  // [N, f]
};

struct Transformer::Acts {
  std::vector<LayerActs> layer;
  float* h_out;   // [N, d] residual after the last layer
  float* hf;      // [N, d] final norm output
  float* rstdf;   // [N]
  float* logits;  // [N, V] (becomes dlogits in backward)
  float* losses;  // [N]
  // scratch
  float* y;       // [N, d] FFN output / dy
  float* dh;      // [N, d] gradient of the residual stream
  float* dx;      // [N, d] gradient of a normed input
  float* datt;    // [N, H*hd]
  float* dq;      // [N, H*hd]
  float* dk;      // [N, Hkv*hd]
  float* dv;      // [N, Hkv*hd]
  float* s_a;     // [N, f]
  float* s_b;     // [N, f]
  float* dxe;     // [N, d]
  // BF16 mode
  uint16_t* hf16;  // [N, d] final norm output, rounded
  uint16_t* b16;   // [N, max(V, 2f, H*hd + 2*Hkv*hd)] output gradients, rounded
};

void Gradients::zero() {
  dense.zero();
  for (Tensor& t : rows)
    if (!t.empty()) dense.backend().stream().fill_zero(t.raw(), t.nbytes());
}

void Gradients::begin_step(const int32_t* tokens, int64_t n, int64_t V) {
  index = kernels::build_row_index(tokens, n, V);
  step_open = true;
  zero();
}

std::vector<float> Gradients::dense_copy(size_t i) const {
  const TensorSpec& s = dense.spec(i);
  backends::Stream& st = dense.backend().stream();
  std::vector<float> out(static_cast<size_t>(shape_numel(s.shape)), 0.0f);
  if (!dense[i].empty()) {
    st.copy(out.data(), dense[i].f32(), out.size() * sizeof(float));
  } else if (!rows[i].empty()) {
    const int64_t C = s.shape[1];
    for (int64_t u = 0; u < index.n_unique(); ++u)
      st.copy(out.data() + static_cast<int64_t>(index.unique[u]) * C, rows[i].f32() + u * C, C * sizeof(float));
  }
  STEM_CHECK(st.synchronize().ok());
  return out;
}

Transformer::Transformer(ModelConfig cfg, TensorList weights)
    : cfg_(std::move(cfg)), w_(std::move(weights)), be_(&w_.backend()) {
  auto idx = [&](const std::string& name) {
    const int i = w_.find(name);
    STEM_CHECKF(i >= 0, "tensor %s missing from the list", name.c_str());
    return i;
  };
  auto f32 = [&](int i) { return static_cast<const float*>(w_[i].raw()); };
  i_embed_ = idx("model.embed_tokens.weight");
  i_norm_ = idx("model.norm.weight");
  i_head_ = cfg_.tie_word_embeddings ? i_embed_ : idx("lm_head.weight");
  for (int l = 0; l < cfg_.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    LayerView v;
    v.type = cfg_.ffn_types[l];
    v.attn_norm = f32(v.i_attn_norm = idx(p + "input_layernorm.weight"));
    v.wq = f32(v.i_wq = idx(p + "self_attn.q_proj.weight"));
    v.wk = f32(v.i_wk = idx(p + "self_attn.k_proj.weight"));
    v.wv = f32(v.i_wv = idx(p + "self_attn.v_proj.weight"));
    v.wo = f32(v.i_wo = idx(p + "self_attn.o_proj.weight"));
    v.ffn_norm = f32(v.i_ffn_norm = idx(p + "post_attention_layernorm.weight"));
    if (v.type == FfnType::Dense || v.type == FfnType::Stem) {
      v.w_gate = f32(v.i_gate = idx(p + "mlp.gate_proj.weight"));
      v.w_down = f32(v.i_down = idx(p + "mlp.down_proj.weight"));
    }
    if (v.type == FfnType::Dense) v.w_up = f32(v.i_up = idx(p + "mlp.up_proj.weight"));
    if (v.type == FfnType::Stem) v.stem_table = f32(v.i_stem = idx(p + "mlp.stem_embedding.weight"));
    if (v.type == FfnType::HashMoe) {
      v.hash_table = w_[idx(p + "mlp.hash_table")].i32();
      for (int e = 0; e < cfg_.num_hash_experts; ++e) {
        const std::string q = p + "mlp.experts." + std::to_string(e) + ".";
        v.i_e_gate.push_back(idx(q + "gate_proj.weight"));
        v.i_e_up.push_back(idx(q + "up_proj.weight"));
        v.i_e_down.push_back(idx(q + "down_proj.weight"));
        v.e_gate.push_back(f32(v.i_e_gate.back()));
        v.e_up.push_back(f32(v.i_e_up.back()));
        v.e_down.push_back(f32(v.i_e_down.back()));
      }
    }
    layers_.push_back(std::move(v));
  }
  for (size_t i = 0; i < w_.size(); ++i)
    if (!w_[i].empty() && (w_[i].dtype() == DType::BF16 || w_[i].dtype() == DType::Q8)) f32_weights_ = false;
  for (const LayerView& v : layers_) stem_slot_.push_back(v.type == FfnType::Stem ? n_stem_++ : -1);
  const int64_t hd = cfg_.head_dim(), P = cfg_.max_position_embeddings;
  // RoPE tables, made on the host, kept on the device: [2, max_pos, hd/2].
  std::vector<float> host(static_cast<size_t>(P * hd));
  kernels::rope_tables(host.data(), host.data() + P * hd / 2, P, hd, cfg_.rope_theta);
  rope_ = backends::must_alloc(*be_, host.size() * sizeof(float));
  be_->stream().copy(rope_->data(), host.data(), host.size() * sizeof(float));
  STEM_CHECK(be_->stream().synchronize().ok());
  acts_ = std::make_unique<Acts>();
  rebind_stem_tables();  // the default row provider: the weight list's tables in place
}

Transformer::~Transformer() = default;

float* Transformer::alloc(int64_t n) {
  float* p = arena_ ? static_cast<float*>(arena_->data()) + arena_used_ : nullptr;
  arena_used_ += static_cast<int64_t>(core::align_up(static_cast<size_t>(n) * 4) / 4);
  return p;
}

void Transformer::ensure_workspace(int64_t B, int64_t T) {
  const int64_t N = B * T;
  B_ = B;
  T_ = T;
  if (N <= cap_tokens_ && T <= cap_T_ && acts_->layer.size() == layers_.size()) return;
  const int64_t d = cfg_.hidden_size, f = cfg_.intermediate_size, V = cfg_.vocab_size;
  const int64_t qd = cfg_.num_attention_heads * cfg_.head_dim();
  const int64_t kd = cfg_.num_key_value_heads * cfg_.head_dim();
  const int64_t H = cfg_.num_attention_heads;
  // Two passes: count, then carve (alloc() only advances an offset).
  for (int pass = 0; pass < 2; ++pass) {
    arena_used_ = 0;
    Acts& A = *acts_;
    A.layer.assign(layers_.size(), LayerActs{});
    for (size_t l = 0; l < layers_.size(); ++l) {
      LayerActs& L = A.layer[l];
      const FfnType t = layers_[l].type;
      L.resid_in = alloc(N * d);
      L.a = bf16() ? nullptr : alloc(N * d);
      L.rstd1 = alloc(N);
      L.q = bf16() ? nullptr : alloc(N * qd);
      L.k = bf16() ? nullptr : alloc(N * kd);
      L.v = bf16() ? nullptr : alloc(N * kd);
      L.att = alloc(N * qd);
      L.lse = alloc(B * H * T);
      L.h_mid = alloc(N * d);
      L.x2 = bf16() ? nullptr : alloc(N * d);
      L.rstd2 = alloc(N);
      L.g = alloc(N * f);
      L.u = t == FfnType::Stem ? nullptr : alloc(N * f);
      L.hact = bf16() ? nullptr : alloc(N * f);
      L.xe = t == FfnType::HashMoe ? alloc(N * d) : nullptr;
      L.a16 = bf16() ? alloc16(N * d) : nullptr;
      L.q16 = bf16() ? alloc16(N * qd) : nullptr;
      L.k16 = bf16() ? alloc16(N * kd) : nullptr;
      L.v16 = bf16() ? alloc16(N * kd) : nullptr;
      L.att16 = bf16() ? alloc16(N * qd) : nullptr;
      L.x2_16 = bf16() ? alloc16(N * d) : nullptr;
      L.hact16 = bf16() ? alloc16(N * f) : nullptr;
    }
    A.h_out = alloc(N * d);
    A.hf = alloc(N * d);
    A.rstdf = alloc(N);
    A.logits = alloc(N * V);
    A.losses = alloc(N);
    A.y = alloc(N * d);
    A.dh = alloc(N * d);
    A.dx = alloc(N * d);
    A.datt = alloc(N * qd);
    A.dq = alloc(N * qd);
    A.dk = alloc(N * kd);
    A.dv = alloc(N * kd);
    A.s_a = alloc(N * f);
    A.s_b = alloc(N * f);
    A.dxe = alloc(N * d);
    A.hf16 = bf16() ? alloc16(N * d) : nullptr;
    A.b16 = bf16() ? alloc16(N * std::max({V, 2 * f, qd + 2 * kd})) : nullptr;
    if (pass == 0) {
      arena_.reset();  // before the new one: no peak of both
      arena_ = backends::must_alloc(*be_, static_cast<size_t>(arena_used_) * 4);
    }
  }
  cap_tokens_ = N;
  cap_T_ = T;
}

int64_t Transformer::workspace_bytes() const { return arena_ ? static_cast<int64_t>(arena_->size()) : 0; }

const float* Transformer::logits() const {
  STEM_CHECK(have_forward_);
  return acts_->logits;
}

const float* Transformer::losses() const {
  STEM_CHECK(have_forward_);
  return acts_->losses;
}

double Transformer::forward(const int32_t* tokens, int64_t B, int64_t T) {
  const kernels::Ops& k = be_->ops();
  STEM_CHECK(B >= 1 && T >= 1 && T <= cfg_.max_position_embeddings);
  ensure_workspace(B, T);
  const int64_t N = B * T, d = cfg_.hidden_size, f = cfg_.intermediate_size, V = cfg_.vocab_size;
  const int64_t H = cfg_.num_attention_heads, Hkv = cfg_.num_key_value_heads, hd = cfg_.head_dim();
  const float eps = static_cast<float>(cfg_.rms_norm_eps);
  tokens_.assign(tokens, tokens + N);
  targets_.assign(N, -1);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t + 1 < T; ++t) targets_[b * T + t] = tokens_[b * T + t + 1];
  for (int64_t n = 0; n < N; ++n) STEM_CHECKF(tokens_[n] >= 0 && tokens_[n] < V, "token %d", tokens_[n]);
  doc_start_.clear();
  doc_pos_.clear();
  if (doc_mask()) {
    doc_start_.resize(N);
    doc_pos_.resize(N);
    kernels::doc_starts(doc_start_.data(), tokens_.data(), B, T, doc_bos_, doc_eos_);
    kernels::doc_positions(doc_pos_.data(), doc_start_.data(), B, T);
  }
  const int32_t* doc_start = doc_start_.empty() ? nullptr : doc_start_.data();
  const int32_t* pos = doc_pos_.empty() ? nullptr : doc_pos_.data();
  Acts& A = *acts_;
  routes_.assign(layers_.size(), kernels::RowIndex{});
  STEM_CHECKF(f32_weights_, "Transformer::forward needs F32 weights (load with F32 matrices)");
  if (bf16()) refresh_bf16_weights();
  RowProvider* current = given_rows_ ? given_rows_.get() : own_rows_.get();
  if (n_stem_ > 0 && (!current || prepared_by_ != current || prepared_ != tokens_)) {
    STEM_CHECKF(given_rows_ || !tables_, "forward with a table store needs prepare_rows() of the same tokens first");
    STEM_CHECK(prepare_rows(tokens_.data(), N).ok());  // in place or given: cannot fail
  }

  k.embedding_forward(A.layer.empty() ? A.h_out : A.layer[0].resid_in, w_[i_embed_].f32(),
                       tokens_.data(), N, d);
  for (size_t l = 0; l < layers_.size(); ++l) {
    const LayerView& W = layers_[l];
    LayerActs& L = A.layer[l];
    // attention block
    // BF16 mode: a, q, k and v are kept rounded only (F32 in backward's scratch meanwhile).
    float* a = bf16() ? A.dx : L.a;
    float *q = bf16() ? A.dq : L.q, *kk = bf16() ? A.dk : L.k, *v = bf16() ? A.dv : L.v;
    k.rmsnorm_forward(a, L.rstd1, L.resid_in, W.attn_norm, N, d, eps);
    if (bf16()) {
      k.round_to_bf16(L.a16, a, N * d);
      linear16_forward(q, L.a16, W.i_wq, N, d, H * hd, false);
      linear16_forward(kk, L.a16, W.i_wk, N, d, Hkv * hd, false);
      linear16_forward(v, L.a16, W.i_wv, N, d, Hkv * hd, false);
    } else {
      k.linear_forward(q, a, W.wq, N, d, H * hd, false);
      k.linear_forward(kk, a, W.wk, N, d, Hkv * hd, false);
      k.linear_forward(v, a, W.wv, N, d, Hkv * hd, false);
    }
    k.rope_forward(q, rope_cos(), rope_sin(), B, T, H, hd, 0, pos);
    k.rope_forward(kk, rope_cos(), rope_sin(), B, T, Hkv, hd, 0, pos);
    if (bf16()) {
      k.round_to_bf16(L.q16, q, N * H * hd);
      k.round_to_bf16(L.k16, kk, N * Hkv * hd);
      k.round_to_bf16(L.v16, v, N * Hkv * hd);
      k.attention_forward_bf16(L.att, L.lse, L.q16, L.k16, L.v16, B, T, H, Hkv, hd, doc_start);
    } else {
      k.attention_forward(L.att, L.lse, q, kk, v, B, T, H, Hkv, hd, doc_start);
    }
    be_->stream().copy(L.h_mid, L.resid_in, sizeof(float) * N * d);
    if (bf16()) {
      k.round_to_bf16(L.att16, L.att, N * H * hd);
      linear16_forward(L.h_mid, L.att16, W.i_wo, N, H * hd, d, /*accumulate=*/true);
    } else {
      k.linear_forward(L.h_mid, L.att, W.wo, N, H * hd, d, /*accumulate=*/true);
    }
    // FFN block
    float* x2 = bf16() ? A.dx : L.x2;
    k.rmsnorm_forward(x2, L.rstd2, L.h_mid, W.ffn_norm, N, d, eps);
    if (observer_) observer_(static_cast<int>(l), x2, N, d);
    if (bf16()) {
      k.round_to_bf16(L.x2_16, x2, N * d);
      ffn_forward_bf16(static_cast<int>(l));
    } else switch (W.type) {
      case FfnType::Dense:
        k.dense_ffn_forward(A.y, L.g, L.u, L.hact, L.x2, W.w_gate, W.w_up, W.w_down, N, d, f);
        break;
      case FfnType::Stem:
        k.stem_ffn_forward(A.y, L.g, L.hact, L.x2, W.w_gate, W.w_down, stem_rows(l),
                            stem_row_of(), N, d, f);
        break;
      case FfnType::HashMoe: {
        std::vector<int32_t> expert(N);
        for (int64_t n = 0; n < N; ++n) expert[n] = W.hash_table[tokens_[n]];
        routes_[l] = kernels::build_row_index(expert.data(), N, cfg_.num_hash_experts);
        kernels::MoeWeights mw{W.e_gate.data(), W.e_up.data(), W.e_down.data()};
        k.hash_moe_forward(A.y, L.xe, L.g, L.u, L.hact, A.dx, L.x2, mw, routes_[l], N, d, f);
        break;
      }
    }
    float* next = l + 1 < layers_.size() ? A.layer[l + 1].resid_in : A.h_out;
    k.add(next, L.h_mid, A.y, N * d);
  }
  k.rmsnorm_forward(A.hf, A.rstdf, A.h_out, w_[i_norm_].f32(), N, d, eps);
  if (bf16()) {
    k.round_to_bf16(A.hf16, A.hf, N * d);
    linear16_forward(A.logits, A.hf16, i_head_, N, d, V, false);
  } else {
    k.linear_forward(A.logits, A.hf, w_[i_head_].f32(), N, d, V, false);
  }
  have_forward_ = true;
  teacher_ = next_teacher_;
  next_teacher_ = Teacher{};
  if (T < 2) return last_ce_ = 0.0;
  const double positions = static_cast<double>(B * (T - 1));
  last_ce_ = k.cross_entropy_forward(A.losses, A.logits, targets_.data(), N, V) / positions;
  if (!teacher_.logits) return last_ce_;
  return k.distill_forward(A.losses, A.logits, teacher_.logits, targets_.data(), teacher_.alpha, teacher_.tau, N, V) /
         positions;
}

void Transformer::set_teacher(const float* teacher_logits, float alpha, float tau) {
  STEM_CHECKF(alpha >= 0 && alpha <= 1 && tau > 0, "distillation alpha %g, temperature %g", alpha, tau);
  next_teacher_ = Teacher{teacher_logits, alpha, tau};
}

void Transformer::set_doc_mask(int32_t bos_id, int32_t eos_id) {
  doc_bos_ = bos_id < 0 ? -1 : bos_id;
  doc_eos_ = eos_id < 0 ? -1 : eos_id;
}

void Transformer::set_table_store(std::shared_ptr<memory::TableStore> store) {
  if (store) {
    STEM_CHECKF(store->n_tables() == n_stem_ && store->n_rows() == cfg_.vocab_size &&
                    store->cols() == cfg_.intermediate_size,
                "table store of %lld x [%lld, %lld] does not fit the model", static_cast<long long>(store->n_tables()),
                static_cast<long long>(store->n_rows()), static_cast<long long>(store->cols()));
  }
  release_rows();
  tables_ = std::move(store);
  own_rows_cap_ = 0;
  if (!tables_) rebind_stem_tables();
  else own_rows_.reset();  // made by prepare_rows(), sized to its ids
}

void Transformer::set_row_provider(std::shared_ptr<RowProvider> rows) {
  release_rows();
  given_rows_ = std::move(rows);
}

void Transformer::release_rows() {
  if (prepared_by_ && ticket_ >= 0) prepared_by_->release(ticket_);
  prepared_by_ = nullptr;
  ticket_ = -1;
  view_ = StemRows{};
  prepared_.clear();
}

Status Transformer::prepare_rows(const int32_t* tokens, int64_t n) {
  STEM_CHECK(n >= 1);
  release_rows();
  if (!given_rows_ && tables_ && n > own_rows_cap_) {  // staging sized for the largest set seen
    own_rows_cap_ = n;
    own_rows_ = rows_staged(*tables_, n, /*async=*/false);
  }
  RowProvider& p = row_provider();
  const RowProvider::Ticket t = p.submit(tokens, n);
  Result<StemRows> r = p.wait(t);
  if (!r.ok()) {
    p.release(t);
    return r.status();
  }
  prepared_by_ = &p;
  ticket_ = t;
  view_ = *r;
  prepared_.assign(tokens, tokens + n);
  return ok_status();
}

void Transformer::rebind_stem_tables() {
  release_rows();
  std::vector<const float*> tables(static_cast<size_t>(n_stem_), nullptr);
  for (size_t l = 0; l < layers_.size(); ++l) {
    LayerView& v = layers_[l];
    if (v.type != FfnType::Stem) continue;
    v.stem_table = static_cast<const float*>(w_[v.i_stem].raw());
    tables[stem_slot_[l]] = v.stem_table;
  }
  if (!tables_) {
    own_rows_ = rows_in_place(std::move(tables));
    own_rows_cap_ = 0;
  }
}

const float* Transformer::stem_rows(int l) const {
  const float* rows = view_.rows ? view_.rows[stem_slot_[l]] : nullptr;
  STEM_CHECKF(rows, "layer %d: STEM table not in memory and no rows given", l);
  return rows;
}

Gradients Transformer::make_gradients(int64_t max_tokens) const {
  Gradients g;
  g.dense = TensorList::allocate(w_.specs(), [](const TensorSpec& s) { return s.trainable && !s.row_sparse; }, *be_);
  g.rows.resize(w_.size());
  for (size_t i = 0; i < w_.size(); ++i) {
    const TensorSpec& s = w_.spec(i);
    if (!s.trainable || !s.row_sparse) continue;
    const Shape shape{max_tokens, s.shape[1]};
    auto buf = backends::must_alloc(*be_, static_cast<size_t>(shape_numel(shape)) * sizeof(float));
    g.rows[i] = Tensor::view(DType::F32, shape, buf->data(), buf, be_->device());
  }
  return g;
}

void Transformer::backward(Gradients& G, float loss_scale, const GradsReady& ready) {
  const kernels::Ops& k = be_->ops();
  STEM_CHECK(have_forward_ && T_ >= 2);
  have_forward_ = false;
  const int64_t B = B_, T = T_, N = B * T, d = cfg_.hidden_size, f = cfg_.intermediate_size;
  const int64_t V = cfg_.vocab_size, H = cfg_.num_attention_heads, Hkv = cfg_.num_key_value_heads;
  const int64_t hd = cfg_.head_dim();
  const int32_t* doc_start = doc_start_.empty() ? nullptr : doc_start_.data();  // the forward's
  const int32_t* pos = doc_pos_.empty() ? nullptr : doc_pos_.data();
  Acts& A = *acts_;
  // Rows of this batch's distinct tokens, and where each lands in G's rows.
  kernels::RowIndex local = kernels::build_row_index(tokens_.data(), N, V);
  if (!G.step_open) {
    G.index = local;
  } else {
    local.dest.resize(local.unique.size());
    for (size_t u = 0; u < local.unique.size(); ++u) {
      auto it = std::lower_bound(G.index.unique.begin(), G.index.unique.end(), local.unique[u]);
      STEM_CHECKF(it != G.index.unique.end() && *it == local.unique[u], "token %d not in the step's rows",
                  local.unique[u]);
      local.dest[u] = static_cast<int32_t>(it - G.index.unique.begin());
    }
  }
  auto dense = [&](int i) { return G.dense[i].empty() ? nullptr : G.dense[i].f32(); };
  auto rows = [&](int i) {
    if (G.rows[i].empty()) return static_cast<float*>(nullptr);
    STEM_CHECKF(G.rows[i].dim(0) >= G.index.n_unique(), "row gradient capacity %ld < %ld",
                static_cast<long>(G.rows[i].dim(0)), static_cast<long>(G.index.n_unique()));
    return G.rows[i].f32();
  };

  // loss -> logits -> final norm
  const float scale = loss_scale / static_cast<float>(B * (T - 1));
  if (teacher_.logits) {
    k.distill_backward(A.logits, A.logits, teacher_.logits, targets_.data(), teacher_.alpha, teacher_.tau, scale, N, V);
  } else {
    k.cross_entropy_backward(A.logits, A.logits, targets_.data(), scale, N, V);
  }
  if (bf16()) {
    k.round_to_bf16(A.b16, A.logits, N * V);
    linear16_backward(A.dx, dense(cfg_.tie_word_embeddings ? i_embed_ : i_head_), A.b16, A.hf16, i_head_, N, d,
                      V, false);
  } else if (cfg_.tie_word_embeddings) {
    k.linear_backward(A.dx, dense(i_embed_), A.logits, A.hf, w_[i_head_].f32(), N, d, V, false);
  } else {
    k.linear_backward(A.dx, dense(i_head_), A.logits, A.hf, w_[i_head_].f32(), N, d, V, false);
  }
  be_->stream().fill_zero(A.dh, sizeof(float) * N * d);
  k.rmsnorm_backward(A.dh, dense(i_norm_), A.dx, A.h_out, w_[i_norm_].f32(), A.rstdf, N, d);
  if (ready) ready(n_layers());

  for (int l = static_cast<int>(layers_.size()) - 1; l >= 0; --l) {
    const LayerView& W = layers_[l];
    LayerActs& L = A.layer[l];
    // FFN block: dh is the gradient of the layer's output residual.
    be_->stream().fill_zero(A.dx, sizeof(float) * N * d);
    if (bf16()) {
      ffn_backward_bf16(l, A.dx, dense(W.i_gate), W.i_up >= 0 ? dense(W.i_up) : nullptr, dense(W.i_down),
                        W.i_stem >= 0 ? rows(W.i_stem) : nullptr, local);
    } else switch (W.type) {
      case FfnType::Dense:
        k.dense_ffn_backward(A.dx, dense(W.i_gate), dense(W.i_up), dense(W.i_down), A.dh, L.x2,
                              L.g, L.u, L.hact, W.w_gate, W.w_up, W.w_down, A.s_a, A.s_b, N, d, f);
        break;
      case FfnType::Stem:
        k.stem_ffn_backward(A.dx, dense(W.i_gate), dense(W.i_down), rows(W.i_stem), A.dh, L.x2,
                             L.g, L.hact, W.w_gate, W.w_down, stem_rows(l), stem_row_of(),
                             local, A.s_a, A.s_b, N, d, f);
        break;
      case FfnType::HashMoe: {
        std::vector<float*> dg, du, dd;
        for (size_t e = 0; e < W.i_e_gate.size(); ++e) {
          dg.push_back(dense(W.i_e_gate[e]));
          du.push_back(dense(W.i_e_up[e]));
          dd.push_back(dense(W.i_e_down[e]));
        }
        kernels::MoeWeights mw{W.e_gate.data(), W.e_up.data(), W.e_down.data()};
        kernels::MoeGrads mg{dg.data(), du.data(), dd.data()};
        k.hash_moe_backward(A.dx, mg, A.dh, L.xe, L.g, L.u, L.hact, mw, routes_[l], A.y, A.dxe,
                             A.s_a, A.s_b, N, d, f);
        break;
      }
    }
    k.rmsnorm_backward(A.dh, dense(W.i_ffn_norm), A.dx, L.h_mid, W.ffn_norm, L.rstd2, N, d);
    // attention block: dh is now the gradient of h_mid.
    if (bf16()) {
      k.round_to_bf16(A.b16, A.dh, N * d);
      linear16_backward(A.datt, dense(W.i_wo), A.b16, L.att16, W.i_wo, N, H * hd, d, false);
    } else {
      k.linear_backward(A.datt, dense(W.i_wo), A.dh, L.att, W.wo, N, H * hd, d, false);
    }
    if (bf16()) {
      k.attention_backward_bf16(A.dq, A.dk, A.dv, A.datt, L.att, L.lse, L.q16, L.k16, L.v16, B, T, H, Hkv, hd,
                                doc_start);
    } else {
      k.attention_backward(A.dq, A.dk, A.dv, A.datt, L.att, L.lse, L.q, L.k, L.v, B, T, H, Hkv, hd, doc_start);
    }
    k.rope_backward(A.dq, rope_cos(), rope_sin(), B, T, H, hd, 0, pos);
    k.rope_backward(A.dk, rope_cos(), rope_sin(), B, T, Hkv, hd, 0, pos);
    if (bf16()) {
      uint16_t *dq16 = A.b16, *dk16 = dq16 + N * H * hd, *dv16 = dk16 + N * Hkv * hd;
      k.round_to_bf16(dq16, A.dq, N * H * hd);
      k.round_to_bf16(dk16, A.dk, N * Hkv * hd);
      k.round_to_bf16(dv16, A.dv, N * Hkv * hd);
      linear16_backward(A.dx, dense(W.i_wq), dq16, L.a16, W.i_wq, N, d, H * hd, false);
      linear16_backward(A.dx, dense(W.i_wk), dk16, L.a16, W.i_wk, N, d, Hkv * hd, true);
      linear16_backward(A.dx, dense(W.i_wv), dv16, L.a16, W.i_wv, N, d, Hkv * hd, true);
    } else {
      k.linear_backward(A.dx, dense(W.i_wq), A.dq, L.a, W.wq, N, d, H * hd, false);
      k.linear_backward(A.dx, dense(W.i_wk), A.dk, L.a, W.wk, N, d, Hkv * hd, true);
      k.linear_backward(A.dx, dense(W.i_wv), A.dv, L.a, W.wv, N, d, Hkv * hd, true);
    }
    k.rmsnorm_backward(A.dh, dense(W.i_attn_norm), A.dx, L.resid_in, W.attn_norm, L.rstd1, N, d);
    if (ready) ready(l);
  }
  // embedding: row-sparse when untied; added into the dense head gradient when tied.
  if (cfg_.tie_word_embeddings) {
    k.embedding_backward_dense(dense(i_embed_), A.dh, local, d);
  } else {
    k.embedding_backward(rows(i_embed_), A.dh, local, d);
  }
  if (ready) ready(-1);
}

Status Transformer::set_precision(Precision p) {
  if (p == precision_) return ok_status();
  if (p == Precision::BF16) {
    for (size_t l = 0; l < layers_.size(); ++l)
      if (layers_[l].type == FfnType::HashMoe)
        return Status::error("precision bf16: layer " + std::to_string(l) +
                             " is hash_moe, which trains in f32 only (use --precision f32)");
    if (!be_->ops().gemm_bf16 || !be_->ops().round_to_bf16)
      return Status::error(std::string("precision bf16: backend ") + be_->name() + " has no BF16 GEMM");
    std::vector<int> mats{i_head_};
    for (const LayerView& v : layers_)
      for (int i : {v.i_wq, v.i_wk, v.i_wv, v.i_wo, v.i_gate, v.i_up, v.i_down})
        if (i >= 0) mats.push_back(i);
    int64_t total = 0;
    for (int i : mats) total += (shape_numel(w_.spec(i).shape) + 31) / 32 * 32;
    w16_buf_ = backends::must_alloc(*be_, static_cast<size_t>(total) * sizeof(uint16_t));
    w16_.assign(w_.size(), nullptr);
    uint16_t* at = static_cast<uint16_t*>(w16_buf_->data());
    for (int i : mats) {
      w16_[i] = at;
      at += (shape_numel(w_.spec(i).shape) + 31) / 32 * 32;
    }
  } else {
    w16_buf_.reset();
    w16_.clear();
  }
  precision_ = p;
  cap_tokens_ = 0;  // the workspace's layout differs: carve it again
  arena_.reset();
  return ok_status();
}

void Transformer::refresh_bf16_weights() {
  for (size_t i = 0; i < w16_.size(); ++i)
    if (w16_[i]) be_->ops().round_to_bf16(w16_[i], w_[i].f32(), shape_numel(w_.spec(i).shape));
}

void Transformer::linear16_forward(float* y, const uint16_t* x16, int i, int64_t N, int64_t in, int64_t out,
                                   bool accumulate) const {
  be_->ops().gemm_bf16(false, true, N, out, in, 1.0f, x16, in, w16_[i], in, accumulate ? 1.0f : 0.0f, y, out);
}

void Transformer::linear16_backward(float* dx, float* dW, const uint16_t* dy16, const uint16_t* x16, int i,
                                    int64_t N, int64_t in, int64_t out, bool accumulate_dx) const {
  const kernels::Ops& k = be_->ops();
  if (dW) k.gemm_bf16(true, false, out, in, N, 1.0f, dy16, out, x16, in, 1.0f, dW, in);
  if (dx) k.gemm_bf16(false, false, N, in, out, 1.0f, dy16, out, w16_[i], in, accumulate_dx ? 1.0f : 0.0f, dx, in);
}

void Transformer::ffn_forward_bf16(int l) {
  const kernels::Ops& k = be_->ops();
  const LayerView& W = layers_[l];
  LayerActs& L = acts_->layer[l];
  Acts& A = *acts_;
  const int64_t N = B_ * T_, d = cfg_.hidden_size, f = cfg_.intermediate_size;
  linear16_forward(L.g, L.x2_16, W.i_gate, N, d, f, false);
  if (W.type == FfnType::Stem) {
    k.swiglu_forward(A.s_a, L.g, stem_rows(l), stem_row_of(), N, f);
  } else {
    linear16_forward(L.u, L.x2_16, W.i_up, N, d, f, false);
    k.swiglu_forward(A.s_a, L.g, L.u, nullptr, N, f);
  }
  k.round_to_bf16(L.hact16, A.s_a, N * f);
  linear16_forward(A.y, L.hact16, W.i_down, N, f, d, false);
}

void Transformer::ffn_backward_bf16(int l, float* dx, float* dWg, float* dWu, float* dWd, float* drows,
                                    const kernels::RowIndex& local) {
  const kernels::Ops& k = be_->ops();
  const LayerView& W = layers_[l];
  LayerActs& L = acts_->layer[l];
  Acts& A = *acts_;
  const int64_t N = B_ * T_, d = cfg_.hidden_size, f = cfg_.intermediate_size;
  const bool stem = W.type == FfnType::Stem;
  float* du = A.s_a;  // d(hact) first, then du in place
  float* dg = A.s_b;
  k.round_to_bf16(A.b16, A.dh, N * d);
  linear16_backward(du, dWd, A.b16, L.hact16, W.i_down, N, f, d, false);
  k.swiglu_backward(dg, du, du, L.g, stem ? stem_rows(l) : L.u, stem ? stem_row_of() : nullptr, N, f);
  if (stem && drows) k.scatter_add_rows(drows, du, local, f);
  uint16_t *dg16 = A.b16, *du16 = A.b16 + N * f;
  k.round_to_bf16(dg16, dg, N * f);
  linear16_backward(dx, dWg, dg16, L.x2_16, W.i_gate, N, d, f, true);
  if (!stem) {
    k.round_to_bf16(du16, du, N * f);
    linear16_backward(dx, dWu, du16, L.x2_16, W.i_up, N, d, f, true);
  }
}

int Transformer::grad_stage(const TensorSpec& spec, int n_layers) {
  if (spec.layer >= 0) return spec.layer;
  return spec.kind == ParamKind::Embedding ? -1 : n_layers;  // embed_tokens; norm and lm_head
}

}  // namespace stem::model
