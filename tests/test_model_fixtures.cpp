// Whole-model test: stem::Model's logits, loss and every gradient against the
// fixtures that the PyTorch reference of the contract wrote
// (scripts/make_fixtures.py, tests/fixtures/README.md). Each fixture is loaded
// through the public API exactly as a user's checkpoint would be; a fixture
// whose metadata names bos_id and eos_id runs with the engine's document mask
// (Transformer::set_doc_mask), as training does.
// It does not test speed, optimizer steps or the CLI.
// Tolerances: logits 1e-4 relative (max abs diff / max |expected logit|),
// loss 1e-5 absolute, each gradient 1e-3 relative to the largest |entry| of
// its expected tensor. The reference's own float32-vs-float64 error is about
// 1e-6 on all three (make_fixtures.py --self-check), so the room is the
// engine's.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "model/engine.h"
#include "stem/model.h"

namespace {

constexpr double kLogitsRelTol = 1e-4;
constexpr double kLossAbsTol = 1e-5;
constexpr double kGradRelTol = 1e-3;
const char kGradPrefix[] = "grad.";

// tokens.txt: B non-empty lines of T whitespace-separated ids each.
struct TokenBatch {
  std::vector<int32_t> ids;  // [B, T] row-major
  int64_t B = 0;
  int64_t T = 0;
};

void read_tokens(const std::string& path, TokenBatch* out) {
  std::ifstream in(path);
  ASSERT_TRUE(in) << "cannot open " << path;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    std::vector<int32_t> row;
    int64_t id = 0;
    while (words >> id) row.push_back(static_cast<int32_t>(id));
    ASSERT_TRUE(words.eof()) << path << ": not an id in line '" << line << "'";
    if (row.empty()) continue;
    if (out->B == 0) out->T = static_cast<int64_t>(row.size());
    ASSERT_EQ(static_cast<int64_t>(row.size()), out->T) << path << ": ragged line " << out->B + 1;
    out->ids.insert(out->ids.end(), row.begin(), row.end());
    ++out->B;
  }
  ASSERT_GT(out->B, 0) << path << ": no tokens";
}

// Copies an F32 entry out of the mapping (memcpy: no alignment assumption).
void read_f32(const stem::io::SafetensorsFile& file, const stem::io::SafetensorsEntry& e,
              stem::HostTensor* out) {
  ASSERT_TRUE(e.dtype == stem::DType::F32)
      << file.path() << ": '" << e.name << "' is " << stem::dtype_name(e.dtype) << ", not F32";
  const int64_t n = stem::shape_numel(e.shape);
  ASSERT_EQ(e.nbytes, static_cast<size_t>(n) * sizeof(float)) << e.name;
  out->shape = e.shape;
  out->data.resize(static_cast<size_t>(n));
  if (n > 0) std::memcpy(out->data.data(), file.data(e), e.nbytes);
}

double max_abs(const std::vector<float>& v) {
  double m = 0.0;
  for (float x : v) m = std::max(m, std::fabs(static_cast<double>(x)));
  return m;
}

// Largest |a - b| and where it is; a and b have the same size.
struct Diff {
  double max = 0.0;
  size_t at = 0;
};
Diff max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  Diff d;
  for (size_t i = 0; i < a.size(); ++i) {
    const double x = std::fabs(static_cast<double>(a[i]) - static_cast<double>(b[i]));
    if (x > d.max) d = {x, i};
  }
  return d;
}

std::string join(const std::vector<std::string>& names) {
  std::string s;
  for (const auto& n : names) s += (s.empty() ? "" : ", ") + n;
  return s.empty() ? "(none)" : s;
}

// One fixture directory: the model, its tokens and the reference's answers.
class ModelFixtureTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    dir_ = std::string(STEM_FIXTURES_DIR) + "/" + GetParam();
    ASSERT_NO_FATAL_FAILURE(read_tokens(dir_ + "/tokens.txt", &tokens_));

    auto file = stem::io::SafetensorsFile::open(dir_ + "/expected.safetensors");
    ASSERT_TRUE(file.ok()) << file.status().message();
    for (const auto& e : file->entries()) {
      stem::HostTensor t;
      ASSERT_NO_FATAL_FAILURE(read_f32(*file, e, &t));
      expected_[e.name] = std::move(t);
    }
    ASSERT_TRUE(expected_.count("logits")) << dir_ << ": expected.safetensors has no logits";
    ASSERT_TRUE(expected_.count("loss")) << dir_ << ": expected.safetensors has no loss";
    // The full-precision loss is in the metadata; the F32 tensor is a fallback.
    const auto& meta = file->metadata();
    auto it = meta.find("loss");
    expected_loss_ = it != meta.end() ? std::stod(it->second) : expected_.at("loss").data.at(0);
    if (auto b = meta.find("B"); b != meta.end()) {
      ASSERT_EQ(std::stoll(b->second), tokens_.B) << dir_ << ": B in metadata vs tokens.txt";
    }
    if (auto t = meta.find("T"); t != meta.end()) {
      ASSERT_EQ(std::stoll(t->second), tokens_.T) << dir_ << ": T in metadata vs tokens.txt";
    }

    auto model = stem::Model::load(dir_);
    ASSERT_TRUE(model.ok()) << model.status().message();
    model_ = std::move(model).value();
    auto bos = meta.find("bos_id"), eos = meta.find("eos_id");
    ASSERT_EQ(bos == meta.end(), eos == meta.end()) << dir_ << ": bos_id and eos_id go together";
    if (bos != meta.end())
      stem::engine(model_).set_doc_mask(std::stoi(bos->second), std::stoi(eos->second));
  }

  std::string dir_;
  TokenBatch tokens_;
  std::map<std::string, stem::HostTensor> expected_;  // name in expected.safetensors -> tensor
  double expected_loss_ = 0.0;
  stem::Model model_;
};

TEST_P(ModelFixtureTest, LogitsAndLossMatchPyTorch) {
  const int64_t V = model_.config().vocab_size;
  const stem::HostTensor& want = expected_.at("logits");
  ASSERT_EQ(want.shape, (stem::Shape{tokens_.B * tokens_.T, V}));

  std::vector<float> logits;
  auto loss = model_.score(tokens_.ids, tokens_.B, tokens_.T, &logits);
  ASSERT_TRUE(loss.ok()) << loss.status().message();
  EXPECT_NEAR(*loss, expected_loss_, kLossAbsTol) << dir_;

  ASSERT_EQ(logits.size(), want.data.size()) << dir_ << ": logits size";
  const Diff d = max_abs_diff(logits, want.data);
  const double scale = max_abs(want.data);
  EXPECT_LE(d.max / scale, kLogitsRelTol)
      << dir_ << ": logits max abs diff " << d.max << " at [" << d.at / V << ", " << d.at % V
      << "] (engine " << logits[d.at] << ", reference " << want.data[d.at]
      << "), max |logit| " << scale;
}

TEST_P(ModelFixtureTest, GradientsMatchPyTorch) {
  std::map<std::string, stem::HostTensor> grads;
  auto loss = model_.grad(tokens_.ids, tokens_.B, tokens_.T, &grads);
  ASSERT_TRUE(loss.ok()) << loss.status().message();
  EXPECT_NEAR(*loss, expected_loss_, kLossAbsTol) << dir_;

  // Same set of names: every trainable tensor, and nothing else.
  std::set<std::string> want_names;
  for (const auto& [name, t] : expected_)
    if (name.rfind(kGradPrefix, 0) == 0) want_names.insert(name.substr(sizeof(kGradPrefix) - 1));
  std::vector<std::string> missing, extra;
  for (const auto& n : want_names)
    if (!grads.count(n)) missing.push_back(n);
  for (const auto& [n, t] : grads)
    if (!want_names.count(n)) extra.push_back(n);
  EXPECT_TRUE(missing.empty() && extra.empty())
      << dir_ << ": gradients missing: " << join(missing) << "; unexpected: " << join(extra);

  for (const auto& name : want_names) {
    auto it = grads.find(name);
    if (it == grads.end()) continue;  // reported above
    const stem::HostTensor& want = expected_.at(kGradPrefix + name);
    const stem::HostTensor& got = it->second;
    ASSERT_EQ(got.shape, want.shape) << dir_ << ": grad of " << name;
    ASSERT_EQ(got.data.size(), want.data.size()) << dir_ << ": grad of " << name;
    const Diff d = max_abs_diff(got.data, want.data);
    // An all-zero expected gradient must come back exactly zero.
    const double scale = std::max(max_abs(want.data), 1e-30);
    EXPECT_LE(d.max / scale, kGradRelTol)
        << dir_ << ": grad of " << name << " max abs diff " << d.max << " at flat index " << d.at
        << " (engine " << got.data[d.at] << ", reference " << want.data[d.at]
        << "), max |grad| " << scale;
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ModelFixtureTest,
                         ::testing::Values("mixed_gqa", "stem_tied", "dense_mha", "moe_only",
                                           "doc_mask"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

}  // namespace
