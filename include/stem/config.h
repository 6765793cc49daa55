// ModelConfig: the hyper-parameters of config.json (see docs/model-format.md),
// parsed and validated. Plain data; the tensor list is derived from it
// (src/model/tensor_list.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "stem/status.h"

namespace stem {

enum class FfnType { Dense, Stem, HashMoe };
const char* ffn_type_name(FfnType t);  // "dense", "stem", "hash_moe"

// The precision of a training step's matrix products: F32 throughout, or
// BF16 operands with F32 accumulation beside F32 master weights, optimizer
// state, loss, softmax, norms and reductions (docs/precision.md).
enum class Precision { F32, BF16 };
const char* precision_name(Precision p);  // "f32", "bf16"
// "f32" or "bf16"; anything else is an error naming the value.
Result<Precision> parse_precision(const std::string& s);

struct ModelConfig {
  int64_t vocab_size = 0;               // V
  int64_t hidden_size = 0;              // d
  int64_t intermediate_size = 0;        // f
  int64_t num_hidden_layers = 0;        // L
  int64_t num_attention_heads = 0;      // H
  int64_t num_key_value_heads = 0;      // Hkv
  int64_t max_position_embeddings = 0;
  double rope_theta = 10000.0;
  double rms_norm_eps = 1e-5;
  bool tie_word_embeddings = false;
  std::vector<FfnType> ffn_types;       // [L]
  int64_t num_hash_experts = 0;         // E

  int64_t head_dim() const { return hidden_size / num_attention_heads; }  // hd
  int64_t n_stem_layers() const;
  bool has(FfnType t) const;

  // Every rule of the contract: required keys, positive sizes, head divisibility,
  // ffn_types length and values, experts when any layer is hash_moe.
  Status validate() const;

  // `where` names the source in errors ("run/config.json").
  static Result<ModelConfig> from_json(const std::string& text, const std::string& where);
  static Result<ModelConfig> load(const std::string& path);
  std::string to_json() const;  // config.json text, keys in the contract's order
  Status save(const std::string& path) const;  // atomic: temporary file + rename
};

// The FFN types of L layers with STEM where `which` says, dense elsewhere:
// "all" (layers 1..L-1, the paper's layout: layer 0 stays dense), "full"
// (every layer, layer 0 too), "every2"
// (odd layers), "every3" (layers 2, 5, 8, ...), "none".
Result<std::vector<FfnType>> stem_layout(int64_t n_layers, const std::string& which);

}  // namespace stem
