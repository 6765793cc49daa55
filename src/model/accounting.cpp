// Parameter, FLOP and byte accounting (see include/stem/accounting.h).
#include "model/accounting.h"

#include <map>

#include "model/tensor_list.h"

namespace stem {

using model::ParamKind;
using model::TensorSpec;
using model::param_kind_name;
using model::tensor_specs;

double attention_flops(const ModelConfig& cfg, double context) {
  // QK^T and PV: 2 FLOPs per multiply-add, H heads of hd, `context` keys each.
  return 4.0 * context * static_cast<double>(cfg.num_attention_heads * cfg.head_dim()) *
         static_cast<double>(cfg.num_hidden_layers);
}

Account account(const ModelConfig& cfg, int64_t train_seq, int64_t context, int bytes_per_weight) {
  Account a;
  a.train_seq = train_seq;
  a.context = context;
  const int64_t V = cfg.vocab_size, d = cfg.hidden_size, f = cfg.intermediate_size;
  std::map<ParamKind, int64_t> by_kind;
  const std::vector<TensorSpec> specs = tensor_specs(cfg);
  for (const TensorSpec& s : specs) {
    by_kind[s.kind] += shape_numel(s.shape);
    a.params_total += shape_numel(s.shape);
  }
  for (auto& [k, n] : by_kind) a.params_by_kind.emplace_back(param_kind_name(k), n);
  a.layers.resize(cfg.num_hidden_layers);
  for (const TensorSpec& s : specs) {
    if (s.layer < 0) continue;
    LayerAccount& L = a.layers[s.layer];
    const int64_t n = shape_numel(s.shape);
    switch (s.kind) {
      case ParamKind::Attention: L.params_attention += n; break;
      case ParamKind::Norm: L.params_norm += n; break;
      case ParamKind::DenseFfn: case ParamKind::StemGateDown: case ParamKind::MoeExpert: L.params_ffn += n; break;
      case ParamKind::StemTable: L.params_table += n; break;
      default: break;
    }
  }
  for (int l = 0; l < cfg.num_hidden_layers; ++l) {
    LayerAccount& L = a.layers[l];
    L.layer = l;
    L.type = cfg.ffn_types[l];
    int64_t ffn_matmul = 0;  // weights multiplied per token
    switch (L.type) {
      case FfnType::Dense: ffn_matmul = 3 * f * d; break;
      case FfnType::Stem: ffn_matmul = 2 * f * d; break;
      case FfnType::HashMoe: ffn_matmul = 3 * f * d; break;  // one expert
    }
    L.active_params = L.params_attention + L.params_norm + ffn_matmul + (L.type == FfnType::Stem ? f : 0);
    L.fwd_flops_matmul = 2.0 * static_cast<double>(L.params_attention + ffn_matmul);
    a.active_params += L.active_params;
    a.fwd_flops_matmul += L.fwd_flops_matmul;
  }
  a.active_params += d /* embedding row */ + d /* final norm */ + V * d /* head */;
  a.fwd_flops_matmul += 2.0 * static_cast<double>(V * d);
  // causal training: position p attends to p+1 keys; mean (T+1)/2
  const double mean_ctx = (static_cast<double>(train_seq) + 1.0) / 2.0;
  a.train_flops_per_token = 3.0 * (a.fwd_flops_matmul + attention_flops(cfg, mean_ctx));
  a.decode_flops_per_token = a.fwd_flops_matmul + attention_flops(cfg, static_cast<double>(context));
  a.decode_weight_bytes = static_cast<double>(a.active_params) * bytes_per_weight;
  a.decode_kv_bytes = 2.0 * static_cast<double>(context) *
                      static_cast<double>(cfg.num_key_value_heads * cfg.head_dim()) *
                      static_cast<double>(cfg.num_hidden_layers) * 4.0;
  return a;
}

}  // namespace stem
