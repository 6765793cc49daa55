// ModelConfig <-> config.json (docs/model-format.md). Parses with nlohmann::json,
// requires every key of the contract's example, ignores unknown keys, and
// validates every rule of the contract plus upper bounds that refuse sizes no
// machine could hold. It does not look at tensors (model/weights does that).
// Errors are one line: "<where>: field 'name' = <value> <what is wrong>".
#include "stem/config.h"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <iterator>
#include <limits>
#include <string>
#include <utility>

#include <nlohmann/json.hpp>

#include "io/files.h"
#include "io/json_text.h"

namespace stem {

namespace {

using json = nlohmann::json;
using io::shown;
using io::strip_json_prefix;

// Bounds that keep every derived size (element counts, byte sizes, int32 token
// ids, int layer and expert indices) far from overflow.
constexpr int64_t kMaxDim = (int64_t{1} << 31) - 1;   // V, d, f, heads, positions
constexpr int64_t kMaxLayers = int64_t{1} << 16;      // L
constexpr int64_t kMaxExperts = int64_t{1} << 16;     // E
constexpr int64_t kMaxParams = int64_t{1} << 40;      // total elements of all tensors

const char* json_type(const json& v) {
  if (v.is_number_float()) return "float";
  if (v.is_number()) return "integer";
  return v.type_name();
}

Status field_error(const std::string& where, const std::string& field, const std::string& what) {
  return Status::error(where + ": field '" + field + "' " + what);
}

Result<const json*> require(const json& root, const std::string& key, const std::string& where) {
  auto it = root.find(key);
  if (it == root.end()) return Status::error(where + ": missing field '" + key + "'");
  return &*it;
}

Result<int64_t> get_int(const json& root, const std::string& key, const std::string& where) {
  STEM_ASSIGN_OR_RETURN(const json* v, require(root, key, where));
  if (v->is_number_integer() && !v->is_number_unsigned()) return v->get<int64_t>();
  if (v->is_number_unsigned()) {
    uint64_t u = v->get<uint64_t>();
    if (u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return static_cast<int64_t>(u);
    return field_error(where, key, "= " + shown(*v) + " is out of range");
  }
  return field_error(where, key, "must be an integer, got " + shown(*v));
}

Result<double> get_number(const json& root, const std::string& key, const std::string& where) {
  STEM_ASSIGN_OR_RETURN(const json* v, require(root, key, where));
  if (!v->is_number()) return field_error(where, key, "must be a number, got " + shown(*v));
  return v->get<double>();
}

Result<bool> get_bool(const json& root, const std::string& key, const std::string& where) {
  STEM_ASSIGN_OR_RETURN(const json* v, require(root, key, where));
  if (!v->is_boolean()) return field_error(where, key, "must be true or false, got " + shown(*v));
  return v->get<bool>();
}

Result<std::string> get_string(const json& root, const std::string& key, const std::string& where) {
  STEM_ASSIGN_OR_RETURN(const json* v, require(root, key, where));
  if (!v->is_string()) return field_error(where, key, "must be a string, got " + shown(*v));
  return v->get<std::string>();
}

Result<FfnType> parse_ffn_type(const json& v, size_t i, const std::string& where) {
  const std::string field = "ffn_types'[" + std::to_string(i) + "]";
  if (v.is_string()) {
    const std::string& s = v.get_ref<const std::string&>();
    for (FfnType t : {FfnType::Dense, FfnType::Stem, FfnType::HashMoe})
      if (s == ffn_type_name(t)) return t;
  }
  // "field 'ffn_types'[2] = ...": the index sits outside the quotes.
  return Status::error(where + ": field '" + field + " = " + shown(v) +
                       " is not one of dense, stem, hash_moe");
}

std::string int_str(int64_t v) { return std::to_string(v); }

// Shortest text that reads back to the same double; JSON has no inf or nan.
std::string num_str(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return json(v).dump();
}

// Elements of every tensor of tensor_specs(cfg), in 128-bit so no input can
// overflow it (each factor is bounded by the checks before).
__int128 param_count(const ModelConfig& c) {
  using I = __int128;
  const I V = c.vocab_size, d = c.hidden_size, f = c.intermediate_size;
  const I H = c.num_attention_heads, Hkv = c.num_key_value_heads, hd = c.head_dim();
  I n = V * d + d;                    // embed_tokens, norm
  if (!c.tie_word_embeddings) n += V * d;  // lm_head
  for (FfnType t : c.ffn_types) {
    n += 2 * d + H * hd * d * 2 + Hkv * hd * d * 2;  // norms, q/o, k/v
    switch (t) {
      case FfnType::Dense: n += 3 * f * d; break;
      case FfnType::Stem: n += 2 * f * d + V * f; break;
      case FfnType::HashMoe: n += V + static_cast<I>(c.num_hash_experts) * 3 * f * d; break;
    }
  }
  return n;
}

Status validate_config(const ModelConfig& c, const std::string& where) {
  struct Size {
    const char* name;
    int64_t value;
    int64_t max;
  };
  const Size sizes[] = {
      {"vocab_size", c.vocab_size, kMaxDim},
      {"hidden_size", c.hidden_size, kMaxDim},
      {"intermediate_size", c.intermediate_size, kMaxDim},
      {"num_hidden_layers", c.num_hidden_layers, kMaxLayers},
      {"num_attention_heads", c.num_attention_heads, kMaxDim},
      {"num_key_value_heads", c.num_key_value_heads, kMaxDim},
      {"max_position_embeddings", c.max_position_embeddings, kMaxDim},
  };
  for (const Size& s : sizes) {
    if (s.value <= 0) return field_error(where, s.name, "= " + int_str(s.value) + " must be positive");
    if (s.value > s.max)
      return field_error(where, s.name,
                         "= " + int_str(s.value) + " exceeds the limit of " + int_str(s.max));
  }
  if (c.hidden_size % c.num_attention_heads != 0)
    return field_error(where, "hidden_size",
                       "= " + int_str(c.hidden_size) + " must be divisible by num_attention_heads = " +
                           int_str(c.num_attention_heads));
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    return field_error(where, "num_key_value_heads",
                       "= " + int_str(c.num_key_value_heads) + " must divide num_attention_heads = " +
                           int_str(c.num_attention_heads));
  if (c.head_dim() % 2 != 0)
    return field_error(where, "hidden_size",
                       "= " + int_str(c.hidden_size) + " gives head_dim = hidden_size / num_attention_heads = " +
                           int_str(c.head_dim()) + ", which must be even (RoPE rotates pairs)");
  if (!(c.rope_theta > 0) || !std::isfinite(c.rope_theta))
    return field_error(where, "rope_theta", "= " + num_str(c.rope_theta) + " must be positive and finite");
  if (!(c.rms_norm_eps > 0) || !std::isfinite(c.rms_norm_eps))
    return field_error(where, "rms_norm_eps",
                       "= " + num_str(c.rms_norm_eps) + " must be positive and finite");
  if (static_cast<int64_t>(c.ffn_types.size()) != c.num_hidden_layers)
    return field_error(where, "ffn_types",
                       "has " + std::to_string(c.ffn_types.size()) +
                           " entries, expected num_hidden_layers = " + int_str(c.num_hidden_layers));
  if (c.num_hash_experts < 0)
    return field_error(where, "num_hash_experts", "= " + int_str(c.num_hash_experts) + " must be >= 0");
  if (c.num_hash_experts > kMaxExperts)
    return field_error(where, "num_hash_experts",
                       "= " + int_str(c.num_hash_experts) + " exceeds the limit of " + int_str(kMaxExperts));
  for (size_t i = 0; i < c.ffn_types.size(); ++i) {
    if (c.ffn_types[i] == FfnType::HashMoe && c.num_hash_experts < 1)
      return field_error(where, "num_hash_experts",
                         "= " + int_str(c.num_hash_experts) + " must be >= 1 when a layer is hash_moe (ffn_types[" +
                             std::to_string(i) + "])");
  }
  const __int128 n = param_count(c);
  if (n > kMaxParams) {
    const double billions = static_cast<double>(n) / 1e9;
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.4g", billions);
    return Status::error(where + ": the config describes " + buf +
                         " billion parameters, over the limit of 2^40 (" + int_str(kMaxParams) + ")");
  }
  return ok_status();
}

}  // namespace

const char* ffn_type_name(FfnType t) {
  switch (t) {
    case FfnType::Dense: return "dense";
    case FfnType::Stem: return "stem";
    case FfnType::HashMoe: return "hash_moe";
  }
  return "?";
}

const char* precision_name(Precision p) { return p == Precision::BF16 ? "bf16" : "f32"; }

Result<Precision> parse_precision(const std::string& s) {
  if (s == "f32") return Precision::F32;
  if (s == "bf16") return Precision::BF16;
  return Status::error("precision: unknown value '" + s + "' (expected f32 or bf16)");
}

Result<std::vector<FfnType>> stem_layout(int64_t n_layers, const std::string& which) {
  if (which != "all" && which != "full" && which != "every2" && which != "every3" && which != "none")
    return Status::error("stem layers: unknown layout '" + which + "' (expected all, full, every2, every3 or none)");
  std::vector<FfnType> out;
  for (int64_t i = 0; i < n_layers; ++i) {
    const bool s = (which == "all" && i >= 1) || which == "full" || (which == "every2" && i % 2 == 1) || (which == "every3" && i % 3 == 2);
    out.push_back(s ? FfnType::Stem : FfnType::Dense);
  }
  return out;
}

int64_t ModelConfig::n_stem_layers() const {
  int64_t n = 0;
  for (FfnType t : ffn_types) n += t == FfnType::Stem;
  return n;
}

bool ModelConfig::has(FfnType t) const {
  for (FfnType u : ffn_types)
    if (u == t) return true;
  return false;
}

Status ModelConfig::validate() const { return validate_config(*this, "config"); }

Result<ModelConfig> ModelConfig::from_json(const std::string& text, const std::string& where) {
  json root;
  try {
    root = json::parse(text);
  } catch (const json::exception& e) {
    return Status::error(where + ": malformed JSON: " + strip_json_prefix(e.what()));
  }
  if (!root.is_object())
    return Status::error(where + ": expected a JSON object, got " + std::string(json_type(root)));

  ModelConfig c;
  STEM_ASSIGN_OR_RETURN(std::string model_type, get_string(root, "model_type", where));
  if (model_type != "stem")
    return field_error(where, "model_type", "= " + json(model_type).dump() + " must be \"stem\"");
  STEM_ASSIGN_OR_RETURN(c.vocab_size, get_int(root, "vocab_size", where));
  STEM_ASSIGN_OR_RETURN(c.hidden_size, get_int(root, "hidden_size", where));
  STEM_ASSIGN_OR_RETURN(c.intermediate_size, get_int(root, "intermediate_size", where));
  STEM_ASSIGN_OR_RETURN(c.num_hidden_layers, get_int(root, "num_hidden_layers", where));
  STEM_ASSIGN_OR_RETURN(c.num_attention_heads, get_int(root, "num_attention_heads", where));
  STEM_ASSIGN_OR_RETURN(c.num_key_value_heads, get_int(root, "num_key_value_heads", where));
  STEM_ASSIGN_OR_RETURN(c.max_position_embeddings, get_int(root, "max_position_embeddings", where));
  STEM_ASSIGN_OR_RETURN(c.rope_theta, get_number(root, "rope_theta", where));
  STEM_ASSIGN_OR_RETURN(c.rms_norm_eps, get_number(root, "rms_norm_eps", where));
  STEM_ASSIGN_OR_RETURN(c.tie_word_embeddings, get_bool(root, "tie_word_embeddings", where));
  STEM_ASSIGN_OR_RETURN(const json* types, require(root, "ffn_types", where));
  if (!types->is_array())
    return field_error(where, "ffn_types", "must be an array of strings, got " + shown(*types));
  for (size_t i = 0; i < types->size(); ++i) {
    STEM_ASSIGN_OR_RETURN(FfnType t, parse_ffn_type((*types)[i], i, where));
    c.ffn_types.push_back(t);
  }
  STEM_ASSIGN_OR_RETURN(c.num_hash_experts, get_int(root, "num_hash_experts", where));
  STEM_RETURN_IF_ERROR(validate_config(c, where));
  return c;
}

Result<ModelConfig> ModelConfig::load(const std::string& path) {
  STEM_ASSIGN_OR_RETURN(std::string text, io::read_text(path));
  return from_json(text, path);
}

std::string ModelConfig::to_json() const {
  // Written by hand rather than json::dump(2) so ffn_types stays on one line as
  // in the contract; each value goes through json::dump so doubles round-trip.
    std::string types = "[";
  for (size_t i = 0; i < ffn_types.size(); ++i) {
    if (i) types += ", ";
    types += json(ffn_type_name(ffn_types[i])).dump();
  }
  types += "]";
  const std::pair<const char*, std::string> fields[] = {
      {"model_type", "\"stem\""},
      {"vocab_size", int_str(vocab_size)},
      {"hidden_size", int_str(hidden_size)},
      {"intermediate_size", int_str(intermediate_size)},
      {"num_hidden_layers", int_str(num_hidden_layers)},
      {"num_attention_heads", int_str(num_attention_heads)},
      {"num_key_value_heads", int_str(num_key_value_heads)},
      {"max_position_embeddings", int_str(max_position_embeddings)},
      {"rope_theta", num_str(rope_theta)},
      {"rms_norm_eps", num_str(rms_norm_eps)},
      {"tie_word_embeddings", tie_word_embeddings ? "true" : "false"},
      {"ffn_types", types},
      {"num_hash_experts", int_str(num_hash_experts)},
  };
  std::string out = "{\n";
  for (size_t i = 0; i < std::size(fields); ++i) {
    out += "  \"";
    out += fields[i].first;
    out += "\": ";
    out += fields[i].second;
    out += i + 1 < std::size(fields) ? ",\n" : "\n";
  }
  return out + "}\n";
}

Status ModelConfig::save(const std::string& path) const {
  // Never write a file that load() would refuse.
  STEM_RETURN_IF_ERROR(validate_config(*this, path));
  return io::write_text_atomic(path, to_json());
}

}  // namespace stem
