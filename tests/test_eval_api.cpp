// stem::score_continuation (include/stem/eval.h): the log-likelihood of a
// continuation equals the sum, over its tokens, of log-softmax of the logits
// Model::score computes on the same ids (context BOS + encode(context), the
// continuation's tokens as they follow it), on every table tier; errors.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "stem/eval.h"
#include "stem/model.h"
#include "train_test_util.h"

namespace stem {
namespace {

TEST(EvalApi, ContinuationLogLikelihoodIsTheSumOfScoreLogits) {
  ModelConfig c;
  c.vocab_size = 400;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 64;
  c.ffn_types = {FfnType::Stem, FfnType::Dense};
  const std::string dir = (test::scratch() / "eval_api").string();
  {
    auto m = Model::init(c, 4);
    ASSERT_TRUE(m.ok());
    ASSERT_TRUE(m->save(dir).ok());
  }
  auto tok = Tokenizer::load(test::tiny().data + "/tokenizer.model");
  ASSERT_TRUE(tok.ok());
  const std::string ctx = "She was", cont = " not in the least";
  std::vector<int32_t> ids = {tok->bos_id()};
  for (int32_t id : tok->encode(ctx)) ids.push_back(id);
  const size_t P = ids.size();
  std::vector<int32_t> all = tok->encode(ctx + cont);
  ids.insert(ids.end(), all.begin() + static_cast<std::ptrdiff_t>(P - 1), all.end());
  const int64_t T = static_cast<int64_t>(ids.size()), V = c.vocab_size;
  for (const char* tier : {"ram", "disk"}) {
    LoadOptions lo;
    lo.tables = *parse_tables_in(tier);
    auto m = Model::load(dir, lo);
    ASSERT_TRUE(m.ok());
    std::vector<float> logits;
    ASSERT_TRUE(m->score(ids, 1, T, &logits).ok());
    double want = 0;
    for (int64_t t = static_cast<int64_t>(P); t < T; ++t) {
      const float* z = logits.data() + (t - 1) * V;
      double mx = -INFINITY, s = 0;
      for (int64_t i = 0; i < V; ++i) mx = std::max(mx, static_cast<double>(z[i]));
      for (int64_t i = 0; i < V; ++i) s += std::exp(static_cast<double>(z[i]) - mx);
      want += static_cast<double>(z[ids[t]]) - mx - std::log(s);
    }
    auto got = score_continuation(*m, *tok, ctx, cont);
    ASSERT_TRUE(got.ok()) << got.status().message();
    EXPECT_EQ(got->tokens, T - static_cast<int64_t>(P)) << tier;
    EXPECT_EQ(got->chars, static_cast<int64_t>(cont.size()));
    EXPECT_NEAR(got->logprob, want, 1e-9 * std::abs(want)) << tier;
    EXPECT_FALSE(score_continuation(*m, *tok, ctx, "").ok());
    EXPECT_NE(score_continuation(*m, *tok, std::string(300, 'x'), " y").status().message().find(
                  "more than max_position_embeddings"),
              std::string::npos);
  }
}

}  // namespace
}  // namespace stem
