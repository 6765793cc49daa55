// Parameter, FLOP and byte accounting of a model config: what `stem inspect`
// prints and what MFU is computed from. Pure arithmetic on the config; no
// weights. Conventions: a multiply-add is 2 FLOPs; matmul FLOPs only plus
// attention scores (QK^T and PV); element-wise work is not counted. A training
// step is 3x the forward FLOPs (forward, and backward's two GEMMs per forward
// GEMM).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "stem/config.h"

namespace stem {

struct LayerAccount {
  int layer = 0;
  FfnType type = FfnType::Dense;
  int64_t params_attention = 0;  // q, k, v, o
  int64_t params_norm = 0;       // both RMSNorm weights
  int64_t params_ffn = 0;        // dense gate/up/down, STEM gate/down, MoE experts
  int64_t params_table = 0;      // STEM table
  int64_t active_params = 0;     // read by one token
  double fwd_flops_matmul = 0;   // per token, projections only
};

struct Account {
  std::vector<LayerAccount> layers;
  // totals by kind (ParamKind order) and overall
  std::vector<std::pair<std::string, int64_t>> params_by_kind;
  int64_t params_total = 0;
  int64_t active_params = 0;       // per token: one embedding row, all dense weights, one table row per STEM layer, one expert per MoE layer, the head
  double fwd_flops_matmul = 0;     // per token, all layers + head
  // per token, at the given lengths:
  double train_flops_per_token = 0;   // 3 x (matmul + attention averaged over a causal sequence of train_seq)
  double decode_flops_per_token = 0;  // forward at context length `context`
  double decode_weight_bytes = 0;     // weights read to decode one token (F32)
  double decode_kv_bytes = 0;         // KV cache read at `context`
  int64_t train_seq = 0, context = 0;
};

// Attention FLOPs of one query at context length c (scores and weighted sum).
double attention_flops(const ModelConfig& cfg, double context);
Account account(const ModelConfig& cfg, int64_t train_seq, int64_t context, int bytes_per_weight = 4);

}  // namespace stem
