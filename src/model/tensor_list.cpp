// tensor_specs: names, shapes and roles of every tensor of a ModelConfig.
#include "model/tensor_list.h"

#include <cmath>

namespace stem::model {

const char* param_kind_name(ParamKind k) {
  switch (k) {
    case ParamKind::Embedding: return "embedding";
    case ParamKind::Attention: return "attention";
    case ParamKind::Norm: return "norm";
    case ParamKind::DenseFfn: return "dense_ffn";
    case ParamKind::StemGateDown: return "stem_gate_down";
    case ParamKind::StemTable: return "stem_table";
    case ParamKind::MoeExpert: return "moe_expert";
    case ParamKind::MoeRouter: return "moe_router";
    case ParamKind::Head: return "head";
  }
  return "?";
}

std::vector<TensorSpec> tensor_specs(const ModelConfig& cfg) {
  const int64_t V = cfg.vocab_size, d = cfg.hidden_size, f = cfg.intermediate_size;
  const int64_t H = cfg.num_attention_heads, Hkv = cfg.num_key_value_heads, hd = cfg.head_dim();
  const double sd = 1.0 / std::sqrt(static_cast<double>(d));
  const double sf = 1.0 / std::sqrt(static_cast<double>(f));
  std::vector<TensorSpec> out;
  auto add = [&](std::string name, Shape shape, ParamKind kind, InitKind init, double std,
                 int layer, int expert = -1) {
    TensorSpec s;
    s.name = std::move(name);
    s.shape = std::move(shape);
    s.kind = kind;
    s.init = init;
    s.init_std = std;
    s.layer = layer;
    s.expert = expert;
    s.decay = kind != ParamKind::Norm;
    out.push_back(std::move(s));
    return &out.back();
  };
  add("model.embed_tokens.weight", {V, d}, ParamKind::Embedding, InitKind::TruncNormal, sd, -1)
      ->row_sparse = !cfg.tie_word_embeddings;
  for (int i = 0; i < static_cast<int>(cfg.num_hidden_layers); ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    add(p + "input_layernorm.weight", {d}, ParamKind::Norm, InitKind::Ones, 0, i);
    add(p + "self_attn.q_proj.weight", {H * hd, d}, ParamKind::Attention, InitKind::TruncNormal, sd, i);
    add(p + "self_attn.k_proj.weight", {Hkv * hd, d}, ParamKind::Attention, InitKind::TruncNormal, sd, i);
    add(p + "self_attn.v_proj.weight", {Hkv * hd, d}, ParamKind::Attention, InitKind::TruncNormal, sd, i);
    add(p + "self_attn.o_proj.weight", {d, H * hd}, ParamKind::Attention, InitKind::TruncNormal, sd, i);
    add(p + "post_attention_layernorm.weight", {d}, ParamKind::Norm, InitKind::Ones, 0, i);
    switch (cfg.ffn_types.at(i)) {
      case FfnType::Dense:
        add(p + "mlp.gate_proj.weight", {f, d}, ParamKind::DenseFfn, InitKind::TruncNormal, sd, i);
        add(p + "mlp.up_proj.weight", {f, d}, ParamKind::DenseFfn, InitKind::TruncNormal, sd, i);
        add(p + "mlp.down_proj.weight", {d, f}, ParamKind::DenseFfn, InitKind::TruncNormal, sf, i);
        break;
      case FfnType::Stem:
        add(p + "mlp.gate_proj.weight", {f, d}, ParamKind::StemGateDown, InitKind::TruncNormal, sd, i);
        add(p + "mlp.stem_embedding.weight", {V, f}, ParamKind::StemTable, InitKind::XavierNormal,
            std::sqrt(2.0 / static_cast<double>(V + f)), i)
            ->row_sparse = true;
        add(p + "mlp.down_proj.weight", {d, f}, ParamKind::StemGateDown, InitKind::TruncNormal, sf, i);
        break;
      case FfnType::HashMoe: {
        TensorSpec* h = add(p + "mlp.hash_table", {V}, ParamKind::MoeRouter, InitKind::HashBalanced, 0, i);
        h->dtype = DType::I32;
        h->trainable = false;
        h->decay = false;
        h->expert_count = cfg.num_hash_experts;
        for (int e = 0; e < static_cast<int>(cfg.num_hash_experts); ++e) {
          const std::string q = p + "mlp.experts." + std::to_string(e) + ".";
          add(q + "gate_proj.weight", {f, d}, ParamKind::MoeExpert, InitKind::TruncNormal, sd, i, e);
          add(q + "up_proj.weight", {f, d}, ParamKind::MoeExpert, InitKind::TruncNormal, sd, i, e);
          add(q + "down_proj.weight", {d, f}, ParamKind::MoeExpert, InitKind::TruncNormal, sf, i, e);
        }
        break;
      }
    }
  }
  add("model.norm.weight", {d}, ParamKind::Norm, InitKind::Ones, 0, -1);
  if (!cfg.tie_word_embeddings)
    add("lm_head.weight", {V, d}, ParamKind::Head, InitKind::TruncNormal, sd, -1);
  return out;
}

}  // namespace stem::model
