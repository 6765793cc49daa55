// The one list of a model's tensors, derived from its config. It drives load
// and save (names, shapes, dtypes), init, the optimizer (which tensors train,
// which have row-sparse gradients, which decay) and, later, tier placement.
// Order: embed_tokens, then each layer's tensors, then norm, then lm_head.
#pragma once

#include <string>
#include <vector>

#include "stem/config.h"
#include "tensor/tensor.h"

namespace stem::model {

enum class ParamKind {
  Embedding,     // model.embed_tokens.weight
  Attention,     // q/k/v/o projections
  Norm,          // RMSNorm weights
  DenseFfn,      // gate/up/down of dense layers
  StemGateDown,  // gate/down of STEM layers
  StemTable,     // STEM embedding tables [V, f]
  MoeExpert,     // gate/up/down of hash-MoE experts
  MoeRouter,     // hash tables [V] (I32, not trained)
  Head,          // lm_head
};
const char* param_kind_name(ParamKind k);

enum class InitKind {
  TruncNormal,   // truncated normal at +-3 sigma, sigma = `init_std`
  Ones,          // norms
  XavierNormal,  // normal, sigma = sqrt(2 / (fan_in + fan_out)) = `init_std`
  HashBalanced,  // balanced random token -> expert assignment
};

struct TensorSpec {
  std::string name;
  Shape shape;
  DType dtype = DType::F32;
  ParamKind kind = ParamKind::Attention;
  InitKind init = InitKind::TruncNormal;
  double init_std = 0.0;
  int layer = -1;            // -1 for embed_tokens, norm, lm_head
  int expert = -1;           // hash-MoE expert index, else -1
  int64_t expert_count = 0;  // E, for hash tables
  bool trainable = true;     // false: hash tables
  bool row_sparse = false;   // gradient holds only the rows of the step's tokens
  bool decay = true;         // weight decay applies (off for norms)
};

std::vector<TensorSpec> tensor_specs(const ModelConfig& cfg);

}  // namespace stem::model
