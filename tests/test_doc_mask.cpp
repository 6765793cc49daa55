// Document masking in model::Transformer (set_doc_mask): with the mask on,
// the logits of every position of a batch of windows that each hold several
// documents equal those of its document run alone as its own sequence; with
// the mask off they do not. Covers dense, STEM and hash-MoE layers and GQA.
// Gradients with the mask are checked against the PyTorch reference through
// the doc_mask fixture (test_model_fixtures.cpp); the kernels on their own in
// test_kernels_attention.cpp and test_kernels.cpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "model/engine.h"
#include "model/transformer.h"
#include "stem/model.h"

namespace stem {
namespace {

constexpr int32_t kBos = 1, kEos = 2;

ModelConfig doc_config() {
  ModelConfig c;
  c.vocab_size = 29;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 32;
  c.ffn_types = {FfnType::Dense, FfnType::Stem, FfnType::HashMoe};
  c.num_hash_experts = 3;
  return c;
}

// Two windows of T = 16 and the documents they hold ([start, length)):
// window 0 opens inside a document (cut by the window) and holds three more;
// window 1 has a document of one BOS, and one that starts after an EOS
// without a BOS.
constexpr int64_t kB = 2, kT = 16;
const std::vector<int32_t> kTokens = {
    5, 9, 2, 1, 7, 8, 6, 2, 1, 3, 2, 1, 4, 4, 5, 6,          //
    1, 10, 11, 2, 1, 1, 12, 13, 2, 3, 14, 15, 16, 17, 18, 19};  //
struct Doc {
  int64_t b, start, len;
};
const std::vector<Doc> kDocs = {{0, 0, 3}, {0, 3, 5}, {0, 8, 3}, {0, 11, 5},
                                {1, 0, 4}, {1, 4, 1}, {1, 5, 4}, {1, 9, 7}};

// Max |logit diff| between each document's rows in `window` ([B*T, V]) and the
// document run alone (mask off, B = 1).
double max_diff_vs_alone(model::Transformer& t, const std::vector<float>& window) {
  const int64_t V = t.config().vocab_size;
  double worst = 0;
  for (const Doc& doc : kDocs) {
    const int32_t* ids = kTokens.data() + doc.b * kT + doc.start;
    t.forward(ids, 1, doc.len);
    const float* alone = t.logits();
    const float* got = window.data() + (doc.b * kT + doc.start) * V;
    for (int64_t i = 0; i < doc.len * V; ++i)
      worst = std::max(worst, std::fabs(static_cast<double>(got[i]) - alone[i]));
  }
  return worst;
}

TEST(DocMask, LogitsEqualEachDocumentAlone) {
  auto m = Model::init(doc_config(), 11);
  ASSERT_TRUE(m.ok()) << m.status().message();
  model::Transformer& t = engine(*m);
  const int64_t V = t.config().vocab_size;
  ASSERT_EQ(static_cast<int64_t>(kTokens.size()), kB * kT);

  t.set_doc_mask(kBos, kEos);
  EXPECT_TRUE(t.doc_mask());
  t.forward(kTokens.data(), kB, kT);
  const std::vector<float> masked(t.logits(), t.logits() + kB * kT * V);
  t.set_doc_mask(-1, -1);
  EXPECT_FALSE(t.doc_mask());
  const double on = max_diff_vs_alone(t, masked);
  std::printf("doc mask on: max |logit diff| vs documents alone %.3g\n", on);
  EXPECT_LE(on, 1e-5);

  // Alone with the mask on: no boundary inside a document, same logits.
  t.set_doc_mask(kBos, kEos);
  EXPECT_LE(max_diff_vs_alone(t, masked), 1e-5);

  // Mask off: documents after the first of a window read earlier ones.
  t.set_doc_mask(-1, -1);
  t.forward(kTokens.data(), kB, kT);
  const std::vector<float> plain(t.logits(), t.logits() + kB * kT * V);
  const double off = max_diff_vs_alone(t, plain);
  std::printf("doc mask off: max |logit diff| vs documents alone %.3g\n", off);
  EXPECT_GT(off, 1e-2);
}

// One rule at a time: EOS alone still splits after every EOS (the window-1
// document of one BOS then joins the next), BOS alone at every BOS.
TEST(DocMask, OneRuleAloneSplitsWhereItSays) {
  auto m = Model::init(doc_config(), 12);
  ASSERT_TRUE(m.ok()) << m.status().message();
  model::Transformer& t = engine(*m);
  const int64_t V = t.config().vocab_size;
  // Window 1 with EOS only: documents [0, 4), [4, 9), [9, 16).
  t.set_doc_mask(-1, kEos);
  t.forward(kTokens.data() + kT, 1, kT);
  const std::vector<float> eos_only(t.logits(), t.logits() + kT * V);
  t.set_doc_mask(-1, -1);
  t.forward(kTokens.data() + kT + 4, 1, 5);
  for (int64_t i = 0; i < 5 * V; ++i) ASSERT_NEAR(eos_only[4 * V + i], t.logits()[i], 1e-5) << i;
  // Window 1 with BOS only: the document at 9 (after an EOS, no BOS) stays
  // with the one at 5.
  t.set_doc_mask(kBos, -1);
  t.forward(kTokens.data() + kT, 1, kT);
  const std::vector<float> bos_only(t.logits(), t.logits() + kT * V);
  t.set_doc_mask(-1, -1);
  t.forward(kTokens.data() + kT + 5, 1, 11);
  for (int64_t i = 0; i < 11 * V; ++i) ASSERT_NEAR(bos_only[5 * V + i], t.logits()[i], 1e-5) << i;
}

// The loss still counts every position of the window, and backward runs with
// the mask of its forward: a finite, nonzero gradient that differs from the
// unmasked one (its values are checked against PyTorch by the doc_mask
// fixture).
TEST(DocMask, BackwardUsesTheMask) {
  auto m = Model::init(doc_config(), 13);
  ASSERT_TRUE(m.ok()) << m.status().message();
  std::map<std::string, HostTensor> on, off;
  engine(*m).set_doc_mask(kBos, kEos);
  auto l_on = m->grad(kTokens, kB, kT, &on);
  ASSERT_TRUE(l_on.ok()) << l_on.status().message();
  engine(*m).set_doc_mask(-1, -1);
  auto l_off = m->grad(kTokens, kB, kT, &off);
  ASSERT_TRUE(l_off.ok());
  EXPECT_NE(*l_on, *l_off);
  const std::string wq = "model.layers.0.self_attn.q_proj.weight";
  double diff = 0, norm = 0;
  for (size_t i = 0; i < on.at(wq).data.size(); ++i) {
    ASSERT_TRUE(std::isfinite(on.at(wq).data[i]));
    diff = std::max(diff, std::fabs(double(on.at(wq).data[i]) - off.at(wq).data[i]));
    norm = std::max(norm, std::fabs(double(on.at(wq).data[i])));
  }
  EXPECT_GT(norm, 0.0);
  EXPECT_GT(diff, 1e-3 * norm);
}

}  // namespace
}  // namespace stem
