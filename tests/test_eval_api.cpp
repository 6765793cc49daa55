// The evaluation API (include/stem/eval.h). score_continuation: the
// log-likelihood of a continuation equals the sum, over its tokens, of
// log-softmax of the logits Model::score computes on the same ids (context BOS
// + encode(context), the continuation's tokens as they follow it), on every
// table tier; errors. evaluate_perplexity: the loss of score() over the same
// windows, whatever the data's form; errors.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "stem/data.h"
#include "stem/eval.h"
#include "stem/model.h"
#include "train_test_util.h"

namespace stem {
namespace {

TEST(EvalApi, ContinuationLogLikelihoodIsTheSumOfScoreLogits) {
  ModelConfig c = test::two_layer_config(400);  // the tiny corpus's tokenizer
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

// evaluate_perplexity reads a data directory's held-out split, a .tok shard
// or a file of ids, and gives the same loss as Model::score over the same
// windows; bad data is an error naming it.
TEST(EvalApi, PerplexityOfADataDirectoryAndOfIdsAgreeWithScore) {
  ModelConfig c = test::two_layer_config(400);  // the tiny corpus's tokenizer
  c.ffn_types = *stem_layout(2, "all");
  EXPECT_EQ(c.ffn_types, (std::vector<FfnType>{FfnType::Dense, FfnType::Stem}));
  auto m = Model::init(c, 9);
  ASSERT_TRUE(m.ok());
  const std::string ids_path = (test::scratch() / "ppl_ids.txt").string();
  std::vector<int32_t> ids;
  {
    std::ofstream f(ids_path);
    for (int i = 0; i < 100; ++i) {
      ids.push_back((i * 37 + 11) % 400);
      f << ids.back() << (i % 10 == 9 ? "\n" : " ");
    }
  }
  PerplexityOptions po;
  po.seq = 32;
  po.batch = 2;
  auto r = evaluate_perplexity(*m, ids_path, po);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->data, ids_path);
  EXPECT_EQ(r->windows, 3);  // 100 ids: three windows of 32, 4 left over
  EXPECT_EQ(r->tokens_dropped, 4);
  auto want = m->score(std::vector<int32_t>(ids.begin(), ids.begin() + 96), 3, 32);
  ASSERT_TRUE(want.ok());
  EXPECT_NEAR(r->mean_loss, *want, 1e-6 * *want);
  // Each window's loss, and two models compared window by window.
  ASSERT_EQ(r->window_loss.size(), 3u);
  for (int w = 0; w < 3; ++w) {
    auto one = m->score(std::vector<int32_t>(ids.begin() + 32 * w, ids.begin() + 32 * (w + 1)), 1, 32);
    ASSERT_TRUE(one.ok());
    EXPECT_NEAR(r->window_loss[w], *one, 1e-6 * *one) << "window " << w;
  }
  auto m_other = Model::init(c, 10);
  ASSERT_TRUE(m_other.ok());
  auto r_other = evaluate_perplexity(*m_other, ids_path, po);
  ASSERT_TRUE(r_other.ok());
  auto diff = paired_difference(*r, *r_other);
  ASSERT_TRUE(diff.ok()) << diff.status().message();
  double dsum = 0, dsq = 0;
  for (int w = 0; w < 3; ++w) dsum += r->window_loss[w] - r_other->window_loss[w];
  for (int w = 0; w < 3; ++w) dsq += std::pow(r->window_loss[w] - r_other->window_loss[w] - dsum / 3, 2);
  EXPECT_EQ(diff->windows, 3);
  EXPECT_NEAR(diff->mean, r->mean_loss - r_other->mean_loss, 1e-12);
  EXPECT_NEAR(diff->se, std::sqrt(dsq / 2 / 3), 1e-12);
  auto self = paired_difference(*r, *r);
  ASSERT_TRUE(self.ok());
  EXPECT_EQ(self->mean, 0.0);
  EXPECT_EQ(self->se, 0.0);
  PerplexityOptions shorter = po;
  shorter.seq = 16;
  auto r_short = evaluate_perplexity(*m, ids_path, shorter);
  ASSERT_TRUE(r_short.ok());
  auto mismatch_windows = paired_difference(*r, *r_short);
  ASSERT_FALSE(mismatch_windows.ok());
  EXPECT_NE(mismatch_windows.status().message().find("not the same windows"), std::string::npos);
  auto batch = read_token_batch(ids_path, 400, /*lines=*/true);
  ASSERT_TRUE(batch.ok());
  EXPECT_EQ(batch->B, 10);
  EXPECT_EQ(batch->T, 10);
  EXPECT_EQ(batch->ids, ids);
  EXPECT_FALSE(read_token_batch(ids_path, 300).ok());  // ids >= 300
  auto missing = evaluate_perplexity(*m, (test::scratch() / "nope").string(), po);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("nope"), std::string::npos);
  auto split = evaluate_perplexity(*m, test::tiny().data, po);  // a data directory: its held-out split
  ASSERT_TRUE(split.ok()) << split.status().message();
  EXPECT_NE(split->data.find("val.tok"), std::string::npos) << split->data;
  ModelConfig other = c;
  other.vocab_size = 512;
  auto m2 = Model::init(other, 1);
  ASSERT_TRUE(m2.ok());
  auto mismatch = evaluate_perplexity(*m2, test::tiny().data, po);
  ASSERT_FALSE(mismatch.ok());
  EXPECT_NE(mismatch.status().message().find("does not match the model's vocab_size 512"), std::string::npos)
      << mismatch.status().message();
  EXPECT_FALSE(stem_layout(3, "most").ok());
  EXPECT_EQ(*stem_layout(6, "every3"), (std::vector<FfnType>{FfnType::Dense, FfnType::Dense, FfnType::Stem,
                                                             FfnType::Dense, FfnType::Dense, FfnType::Stem}));
  EXPECT_EQ(*stem_layout(2, "full"), (std::vector<FfnType>{FfnType::Stem, FfnType::Stem}));
  EXPECT_EQ(*stem_layout(2, "all"), (std::vector<FfnType>{FfnType::Dense, FfnType::Stem}));
}

}  // namespace
}  // namespace stem
