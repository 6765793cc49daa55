// Tests of ModelConfig (src/io/config.cpp): the contract's example parses and
// round-trips, and every rule refuses a bad value with one line naming the
// source, the field and the value.
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <limits>
#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "stem/config.h"

namespace stem {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

::testing::AssertionResult Has(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "\n  text: " << text << "\n  lacks: " << part;
}

// Verbatim from docs/model-format.md.
const char* kExample = R"({
  "model_type": "stem",
  "vocab_size": 4096,
  "hidden_size": 256,
  "intermediate_size": 688,
  "num_hidden_layers": 6,
  "num_attention_heads": 4,
  "num_key_value_heads": 4,
  "max_position_embeddings": 512,
  "rope_theta": 10000.0,
  "rms_norm_eps": 1e-5,
  "tie_word_embeddings": false,
  "ffn_types": ["dense", "stem", "stem", "stem", "stem", "stem"],
  "num_hash_experts": 0
})";

const char* kKeys[] = {"model_type",          "vocab_size",          "hidden_size",
                       "intermediate_size",   "num_hidden_layers",   "num_attention_heads",
                       "num_key_value_heads", "max_position_embeddings", "rope_theta",
                       "rms_norm_eps",        "tie_word_embeddings", "ffn_types",
                       "num_hash_experts"};

json example() { return json::parse(kExample); }

// The error from_json gives for `j`, or "" (and a test failure) if it parses.
std::string error_of(const json& j) {
  auto r = ModelConfig::from_json(j.dump(), "config.json");
  EXPECT_FALSE(r.ok()) << "accepted " << j.dump();
  if (r.ok()) return "";
  const std::string m = r.status().message();
  EXPECT_EQ(m.rfind("config.json: ", 0), 0u) << m;
  EXPECT_EQ(m.find('\n'), std::string::npos) << m;
  return m;
}

template <typename V>
std::string error_with(const std::string& key, const V& value) {
  json j = example();
  j[key] = value;
  return error_of(j);
}

bool same(const ModelConfig& a, const ModelConfig& b) {
  return a.vocab_size == b.vocab_size && a.hidden_size == b.hidden_size &&
         a.intermediate_size == b.intermediate_size && a.num_hidden_layers == b.num_hidden_layers &&
         a.num_attention_heads == b.num_attention_heads && a.num_key_value_heads == b.num_key_value_heads &&
         a.max_position_embeddings == b.max_position_embeddings && a.rope_theta == b.rope_theta &&
         a.rms_norm_eps == b.rms_norm_eps && a.tie_word_embeddings == b.tie_word_embeddings &&
         a.ffn_types == b.ffn_types && a.num_hash_experts == b.num_hash_experts;
}

TEST(ConfigParse, ContractExample) {
  auto r = ModelConfig::from_json(kExample, "config.json");
  ASSERT_TRUE(r.ok()) << r.status().message();
  const ModelConfig& c = *r;
  EXPECT_EQ(c.vocab_size, 4096);
  EXPECT_EQ(c.hidden_size, 256);
  EXPECT_EQ(c.intermediate_size, 688);
  EXPECT_EQ(c.num_hidden_layers, 6);
  EXPECT_EQ(c.num_attention_heads, 4);
  EXPECT_EQ(c.num_key_value_heads, 4);
  EXPECT_EQ(c.max_position_embeddings, 512);
  EXPECT_EQ(c.rope_theta, 10000.0);
  EXPECT_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_FALSE(c.tie_word_embeddings);
  ASSERT_EQ(c.ffn_types.size(), 6u);
  EXPECT_EQ(c.ffn_types[0], FfnType::Dense);
  EXPECT_EQ(c.ffn_types[5], FfnType::Stem);
  EXPECT_EQ(c.num_hash_experts, 0);
  EXPECT_EQ(c.head_dim(), 64);
  EXPECT_EQ(c.n_stem_layers(), 5);
  EXPECT_TRUE(c.has(FfnType::Dense));
  EXPECT_TRUE(c.has(FfnType::Stem));
  EXPECT_FALSE(c.has(FfnType::HashMoe));
  EXPECT_TRUE(c.validate().ok());
}

TEST(ConfigParse, FfnTypeNames) {
  EXPECT_STREQ(ffn_type_name(FfnType::Dense), "dense");
  EXPECT_STREQ(ffn_type_name(FfnType::Stem), "stem");
  EXPECT_STREQ(ffn_type_name(FfnType::HashMoe), "hash_moe");
}

TEST(ConfigParse, ToJsonRoundTripsInContractOrder) {
  auto r = ModelConfig::from_json(kExample, "config.json");
  ASSERT_TRUE(r.ok());
  const std::string text = r->to_json();
  // Same JSON value as the contract's example.
  EXPECT_EQ(json::parse(text), example());
  // Keys in the contract's order, two-space indented.
  size_t last = 0;
  for (const char* k : kKeys) {
    size_t at = text.find(std::string("\n  \"") + k + "\": ");
    ASSERT_NE(at, std::string::npos) << k;
    EXPECT_GT(at, last) << k;
    last = at;
  }
  EXPECT_EQ(text.rfind("{\n", 0), 0u);
  EXPECT_EQ(text.substr(text.size() - 2), "}\n");
  auto back = ModelConfig::from_json(text, "again");
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_TRUE(same(*r, *back));
  EXPECT_EQ(back->to_json(), text);
}

TEST(ConfigParse, HashMoeAndOddDoublesRoundTrip) {
  json j = example();
  j["ffn_types"] = {"dense", "hash_moe", "stem", "hash_moe", "dense", "stem"};
  j["num_hash_experts"] = 3;
  j["rope_theta"] = 500000;  // an integer is a valid number
  j["rms_norm_eps"] = 1.0 / 3.0;
  j["tie_word_embeddings"] = true;
  j["num_key_value_heads"] = 2;
  auto r = ModelConfig::from_json(j.dump(), "c");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->rope_theta, 500000.0);
  EXPECT_TRUE(r->has(FfnType::HashMoe));
  EXPECT_EQ(r->n_stem_layers(), 2);
  auto back = ModelConfig::from_json(r->to_json(), "c");
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_TRUE(same(*r, *back));
  EXPECT_EQ(back->rms_norm_eps, 1.0 / 3.0);
}

TEST(ConfigParse, UnknownKeysIgnored) {
  json j = example();
  j["architectures"] = {"StemForCausalLM"};
  j["torch_dtype"] = "float32";
  auto r = ModelConfig::from_json(j.dump(), "config.json");
  EXPECT_TRUE(r.ok()) << r.status().message();
}

class ConfigFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "stem_config_XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string dir_;
};

using ConfigFile = ConfigFileTest;

TEST_F(ConfigFile, SaveAndLoad) {
  auto c = ModelConfig::from_json(kExample, "x");
  ASSERT_TRUE(c.ok());
  const std::string p = dir_ + "/config.json";
  ASSERT_TRUE(c->save(p).ok());
  auto back = ModelConfig::load(p);
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_TRUE(same(*c, *back));
  size_t n = 0;
  for (const auto& e : fs::directory_iterator(dir_)) n += e.path().filename() == "config.json" ? 1 : 100;
  EXPECT_EQ(n, 1u);  // no temporary file left behind
}

TEST_F(ConfigFile, LoadErrorsNameThePath) {
  auto missing = ModelConfig::load(dir_ + "/none.json");
  ASSERT_FALSE(missing.ok());
  EXPECT_TRUE(Has(missing.status().message(), dir_ + "/none.json"));

  const std::string p = dir_ + "/config.json";
  std::ofstream(p) << R"({"model_type": "stem"})";
  auto bad = ModelConfig::load(p);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(), p + ": missing field 'vocab_size'");
}

TEST_F(ConfigFile, SaveRefusesInvalidConfigAndWritesNothing) {
  ModelConfig c;  // all sizes zero
  Status s = c.save(dir_ + "/config.json");
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(Has(s.message(), dir_ + "/config.json: field 'vocab_size' = 0 must be positive"));
  EXPECT_TRUE(fs::is_empty(dir_));
}

TEST(ConfigValidate, DefaultConfigIsInvalid) {
  ModelConfig c;
  Status s = c.validate();
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(Has(s.message(), "field 'vocab_size' = 0 must be positive"));
}

TEST(ConfigValidate, MalformedJsonGivesPosition) {
  auto r = ModelConfig::from_json("{\n  \"vocab_size\": 12,\n  oops\n}", "config.json");
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(Has(r.status().message(), "config.json: malformed JSON: "));
  EXPECT_TRUE(Has(r.status().message(), "line 3, column"));
  EXPECT_EQ(r.status().message().find('\n'), std::string::npos);
  auto empty = ModelConfig::from_json("", "config.json");
  ASSERT_FALSE(empty.ok());
  EXPECT_TRUE(Has(empty.status().message(), "malformed JSON"));
}

TEST(ConfigValidate, NotAnObject) {
  EXPECT_TRUE(Has(error_of(json::array({1, 2})), "config.json: expected a JSON object, got array"));
}

TEST(ConfigValidate, EveryKeyIsRequired) {
  for (const char* k : kKeys) {
    json j = example();
    j.erase(k);
    EXPECT_EQ(error_of(j), std::string("config.json: missing field '") + k + "'");
  }
}

TEST(ConfigValidate, ModelType) {
  EXPECT_EQ(error_with("model_type", "llama"), "config.json: field 'model_type' = \"llama\" must be \"stem\"");
  EXPECT_TRUE(Has(error_with("model_type", 1), "field 'model_type' must be a string, got 1"));
}

TEST(ConfigValidate, IntegerFieldsMustBeIntegers) {
  EXPECT_EQ(error_with("hidden_size", "abc"), "config.json: field 'hidden_size' must be an integer, got \"abc\"");
  EXPECT_TRUE(Has(error_with("vocab_size", 4096.5), "field 'vocab_size' must be an integer, got 4096.5"));
  EXPECT_TRUE(Has(error_with("num_hidden_layers", true), "field 'num_hidden_layers' must be an integer, got true"));
  EXPECT_TRUE(Has(error_with("num_hash_experts", nullptr), "field 'num_hash_experts' must be an integer, got null"));
  EXPECT_TRUE(Has(error_with("max_position_embeddings", 18446744073709551615ull),
                  "field 'max_position_embeddings' = 18446744073709551615 is out of range"));
}

TEST(ConfigValidate, NumberAndBoolFields) {
  EXPECT_TRUE(Has(error_with("rope_theta", "big"), "field 'rope_theta' must be a number, got \"big\""));
  EXPECT_TRUE(Has(error_with("rms_norm_eps", false), "field 'rms_norm_eps' must be a number, got false"));
  EXPECT_TRUE(Has(error_with("tie_word_embeddings", 0), "field 'tie_word_embeddings' must be true or false, got 0"));
}

TEST(ConfigValidate, SizesMustBePositive) {
  for (const char* k : {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                        "num_attention_heads", "num_key_value_heads", "max_position_embeddings"}) {
    for (int v : {0, -3}) {
      json j = example();
      j[k] = v;
      if (std::string(k) == "num_hidden_layers") j["ffn_types"] = json::array();
      EXPECT_EQ(error_of(j), std::string("config.json: field '") + k + "' = " + std::to_string(v) +
                                 " must be positive");
    }
  }
}

TEST(ConfigValidate, HiddenSizeDivisibleByHeads) {
  EXPECT_EQ(error_with("hidden_size", 258),
            "config.json: field 'hidden_size' = 258 must be divisible by num_attention_heads = 4");
}

TEST(ConfigValidate, KvHeadsDivideHeads) {
  EXPECT_EQ(error_with("num_key_value_heads", 3),
            "config.json: field 'num_key_value_heads' = 3 must divide num_attention_heads = 4");
  EXPECT_TRUE(Has(error_with("num_key_value_heads", 8), "'num_key_value_heads' = 8 must divide"));
}

TEST(ConfigValidate, HeadDimEven) {
  json j = example();
  j["hidden_size"] = 20;  // head_dim 5
  EXPECT_TRUE(Has(error_of(j), "field 'hidden_size' = 20 gives head_dim = hidden_size / num_attention_heads = 5, "
                               "which must be even"));
}

TEST(ConfigValidate, FfnTypesLength) {
  EXPECT_EQ(error_with("ffn_types", json::array({"dense", "stem"})),
            "config.json: field 'ffn_types' has 2 entries, expected num_hidden_layers = 6");
}

TEST(ConfigValidate, FfnTypesValues) {
  EXPECT_EQ(error_with("ffn_types", json::array({"dense", "stem", "moe", "stem", "stem", "stem"})),
            "config.json: field 'ffn_types'[2] = \"moe\" is not one of dense, stem, hash_moe");
  EXPECT_TRUE(Has(error_with("ffn_types", json::array({"dense", 4})), "field 'ffn_types'[1] = 4 is not one of"));
  EXPECT_TRUE(Has(error_with("ffn_types", "dense"), "field 'ffn_types' must be an array of strings, got \"dense\""));
}

TEST(ConfigValidate, HashExperts) {
  EXPECT_EQ(error_with("num_hash_experts", -1), "config.json: field 'num_hash_experts' = -1 must be >= 0");
  json j = example();
  j["ffn_types"][3] = "hash_moe";
  EXPECT_EQ(error_of(j),
            "config.json: field 'num_hash_experts' = 0 must be >= 1 when a layer is hash_moe (ffn_types[3])");
  j["num_hash_experts"] = 1;
  EXPECT_TRUE(ModelConfig::from_json(j.dump(), "c").ok());
  j["num_hash_experts"] = 1 << 20;
  EXPECT_TRUE(Has(error_of(j), "field 'num_hash_experts' = 1048576 exceeds the limit of 65536"));
}

TEST(ConfigValidate, RopeThetaAndEpsPositive) {
  EXPECT_EQ(error_with("rope_theta", 0.0), "config.json: field 'rope_theta' = 0.0 must be positive and finite");
  EXPECT_TRUE(Has(error_with("rope_theta", -5), "field 'rope_theta' = -5.0 must be positive"));
  auto c = ModelConfig::from_json(kExample, "c");
  ASSERT_TRUE(c.ok());
  c->rope_theta = std::numeric_limits<double>::infinity();
  EXPECT_EQ(c->validate().message(), "config: field 'rope_theta' = inf must be positive and finite");
  c->rope_theta = 1e4;
  c->rms_norm_eps = std::nan("");
  EXPECT_EQ(c->validate().message(), "config: field 'rms_norm_eps' = nan must be positive and finite");
  EXPECT_EQ(error_with("rms_norm_eps", -1e-6), "config.json: field 'rms_norm_eps' = -1e-06 must be positive and finite");
  EXPECT_TRUE(Has(error_with("rms_norm_eps", 0), "field 'rms_norm_eps' = 0.0 must be positive"));
}

TEST(ConfigValidate, AbsurdSizesRefused) {
  EXPECT_TRUE(Has(error_with("vocab_size", int64_t{1} << 31),
                  "field 'vocab_size' = 2147483648 exceeds the limit of 2147483647"));
  EXPECT_TRUE(Has(error_with("num_hidden_layers", int64_t{1} << 40), "field 'num_hidden_layers' = 1099511627776 exceeds"));
  // Each size within its bound, but 2^31 x 2^20 parameters in the embedding alone.
  json j = example();
  j["vocab_size"] = (int64_t{1} << 31) - 1;
  j["hidden_size"] = 1 << 20;
  EXPECT_TRUE(Has(error_of(j), "billion parameters, over the limit of 2^40"));
  // The largest sizes still stay exact in 128-bit arithmetic.
  j["intermediate_size"] = (int64_t{1} << 31) - 1;
  j["num_hidden_layers"] = 1 << 16;
  j["ffn_types"] = std::vector<std::string>(1 << 16, "hash_moe");
  j["num_hash_experts"] = 1 << 16;
  j["hidden_size"] = (int64_t{1} << 31) - 4;
  j["num_attention_heads"] = 2;
  j["num_key_value_heads"] = 1;
  EXPECT_TRUE(Has(error_of(j), "over the limit of 2^40"));
}

}  // namespace
}  // namespace stem
