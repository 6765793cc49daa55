// Inference and evaluation: the KV-cache Decoder against Transformer::forward
// at every position (one prefill, chunked prefill with odd boundaries, step by
// step, after reset), its context and id errors; the Sampler (greedy, top-k,
// top-p, seeding, the empirical distribution at temperature 1); windowed
// perplexity and its standard error; and the generate / eval subcommands as a
// user runs them.
#include <gtest/gtest.h>

#include "cli_test_util.h"
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>

#include "eval/perplexity.h"
#include "infer/decoder.h"
#include "infer/sampler.h"
#include "io/token_shards.h"
#include "io/tokenizer.h"
#include "kernel_test_util.h"
#include "model/engine.h"
#include "model/transformer.h"
#include "stem/model.h"

namespace stem {
namespace {
namespace fs = std::filesystem;
using test::near_rel;

// A small model mixing every FFN kind with GQA, long enough that a prefill
// crosses the decoder's prefill chunk (64 here).
ModelConfig mixed_config() {
  ModelConfig c;
  c.vocab_size = 61;
  c.hidden_size = 32;
  c.intermediate_size = 40;
  c.num_hidden_layers = 4;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 160;
  c.ffn_types = {FfnType::Dense, FfnType::Stem, FfnType::HashMoe, FfnType::Stem};
  c.num_hash_experts = 3;
  return c;
}

// Multi-query attention, tied embeddings, head dim 12.
ModelConfig mqa_tied_config() {
  ModelConfig c;
  c.vocab_size = 37;
  c.hidden_size = 24;
  c.intermediate_size = 20;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 1;
  c.max_position_embeddings = 90;
  c.tie_word_embeddings = true;
  c.ffn_types = {FfnType::HashMoe, FfnType::Stem};
  c.num_hash_experts = 4;
  return c;
}

// Init, then weights redrawn larger than the official init so that attention
// is far from uniform and logits are O(1): a wrong position or a missed row
// shows up well above round-off.
Model random_model(const ModelConfig& cfg, uint64_t seed) {
  auto m = Model::init(cfg, seed);
  EXPECT_TRUE(m.ok()) << m.status().message();
  std::mt19937 rng(static_cast<uint32_t>(seed));
  model::TensorList& w = engine(*m).weights();
  for (size_t i = 0; i < w.size(); ++i) {
    if (w[i].dtype() != DType::F32) continue;
    const bool norm = w.spec(i).kind == model::ParamKind::Norm;
    const int64_t in = w[i].shape().back();
    const float s = norm ? 0.5f : 1.5f / std::sqrt(static_cast<float>(in));
    std::uniform_real_distribution<float> dist(-s, s);
    float* p = w[i].f32();
    for (int64_t j = 0; j < w[i].numel(); ++j) p[j] = (norm ? 1.0f : 0.0f) + dist(rng);
  }
  return std::move(*m);
}

// Logits of forward at every position of one sequence, [T, V].
std::vector<float> full_logits(Model& m, const std::vector<int32_t>& ids) {
  const int64_t T = static_cast<int64_t>(ids.size()), V = m.config().vocab_size;
  engine(m).forward(ids.data(), 1, T);
  return std::vector<float>(engine(m).logits(), engine(m).logits() + T * V);
}

std::vector<float> row(const std::vector<float>& all, int64_t t, int64_t V) {
  return std::vector<float>(all.begin() + t * V, all.begin() + (t + 1) * V);
}
std::vector<float> row(const float* p, int64_t V) { return std::vector<float>(p, p + V); }

constexpr double kTol = 2e-5;

class DecoderMatch : public ::testing::TestWithParam<int> {
 protected:
  ModelConfig cfg() const { return GetParam() == 0 ? mixed_config() : mqa_tied_config(); }
};

TEST_P(DecoderMatch, StepByStepEqualsForwardAtEveryPosition) {
  const ModelConfig c = cfg();
  Model m = random_model(c, 11);
  std::mt19937 rng(5);
  const int64_t T = c.max_position_embeddings, V = c.vocab_size;
  const std::vector<int32_t> ids = test::rand_ids(rng, T, V);
  const std::vector<float> want = full_logits(m, ids);
  infer::Decoder dec(engine(m), 0);
  ASSERT_EQ(dec.capacity(), T);
  for (int64_t t = 0; t < T; ++t) {
    auto got = dec.step(ids[t]);
    ASSERT_TRUE(got.ok()) << got.status().message();
    ASSERT_TRUE(near_rel(row(*got, V), row(want, t, V), kTol)) << "position " << t;
  }
  EXPECT_EQ(dec.position(), T);
}

TEST_P(DecoderMatch, PrefillInOddChunksEqualsForward) {
  const ModelConfig c = cfg();
  Model m = random_model(c, 12);
  std::mt19937 rng(6);
  const int64_t T = c.max_position_embeddings, V = c.vocab_size;
  const std::vector<int32_t> ids = test::rand_ids(rng, T, V);
  const std::vector<float> want = full_logits(m, ids);
  infer::Decoder dec(engine(m), infer::DecoderOptions{T, 64});
  // One prefill of everything (crosses the internal chunk boundary).
  auto all = dec.prefill(ids.data(), T);
  ASSERT_TRUE(all.ok()) << all.status().message();
  EXPECT_TRUE(near_rel(row(*all, V), row(want, T - 1, V), kTol));
  // Pieces of odd sizes, some larger than the internal chunk, then steps.
  for (const std::vector<int64_t>& pieces :
       {std::vector<int64_t>{1, 2, 3, 65, 7, 13}, std::vector<int64_t>{63, 1, 64, 5},
        std::vector<int64_t>{T - 1}, std::vector<int64_t>{129, 17}}) {
    dec.reset();
    int64_t at = 0;
    for (int64_t n : pieces) {
      if (at == T) break;
      if (at + n > T) n = T - at;
      auto got = dec.prefill(ids.data() + at, n);
      ASSERT_TRUE(got.ok()) << got.status().message();
      at += n;
      ASSERT_TRUE(near_rel(row(*got, V), row(want, at - 1, V), kTol)) << "after " << at;
    }
    for (; at < T; ++at) {
      auto got = dec.step(ids[at]);
      ASSERT_TRUE(got.ok());
      ASSERT_TRUE(near_rel(row(*got, V), row(want, at, V), kTol)) << "step at " << at;
    }
  }
}

TEST_P(DecoderMatch, EveryPositionsLogitsAndRewindEqualForward) {
  // A shared prefix, then continuations after a rewind: each position's
  // logits (handed out for all n) equal forward's on prefix + continuation.
  const ModelConfig c = cfg();
  Model m = random_model(c, 14);
  std::mt19937 rng(8);
  const int64_t V = c.vocab_size, P = 70;
  const std::vector<int32_t> prefix = test::rand_ids(rng, P, V);
  infer::Decoder dec(engine(m), infer::DecoderOptions{c.max_position_embeddings, 64});
  std::vector<float> got(static_cast<size_t>((P + 9) * V));
  auto last = dec.prefill(prefix.data(), P, got.data());
  ASSERT_TRUE(last.ok()) << last.status().message();
  EXPECT_EQ(*last, got.data() + (P - 1) * V);
  const std::vector<float> want_prefix = full_logits(m, prefix);
  for (int64_t t = 0; t < P; ++t) ASSERT_TRUE(near_rel(row(got, t, V), row(want_prefix, t, V), kTol)) << t;
  for (int64_t n : {1, 9, 4}) {
    ASSERT_TRUE(dec.rewind(P).ok());
    const std::vector<int32_t> cont = test::rand_ids(rng, n, V);
    ASSERT_TRUE(dec.prefill(cont.data(), n, got.data()).ok());
    EXPECT_EQ(dec.position(), P + n);
    std::vector<int32_t> whole = prefix;
    whole.insert(whole.end(), cont.begin(), cont.end());
    const std::vector<float> want = full_logits(m, whole);
    for (int64_t k = 0; k < n; ++k) ASSERT_TRUE(near_rel(row(got, k, V), row(want, P + k, V), kTol)) << n << " " << k;
  }
  EXPECT_FALSE(dec.rewind(P + 100).ok());
  EXPECT_FALSE(dec.rewind(-1).ok());

  // Branches after (a shorter piece of) the prefix in one call (several per
  // pass, and more tokens than one pass takes): each equals forward on that
  // prefix + the branch alone.
  const std::vector<int64_t> lengths = {3, 1, 40, 9, 30};
  const int64_t P2 = std::min<int64_t>(P, c.max_position_embeddings - 83);
  const std::vector<int32_t> head(prefix.begin(), prefix.begin() + P2);
  ASSERT_TRUE(dec.rewind(P2).ok());
  std::vector<int32_t> ids;
  std::vector<std::vector<int32_t>> branches;
  for (int64_t n : lengths) {
    branches.push_back(test::rand_ids(rng, n, V));
    ids.insert(ids.end(), branches.back().begin(), branches.back().end());
  }
  std::vector<float> all(ids.size() * static_cast<size_t>(V));
  ASSERT_TRUE(dec.prefill_branches(ids.data(), lengths.data(), 5, all.data()).ok());
  EXPECT_EQ(dec.position(), P2);
  int64_t at = 0;
  for (size_t b = 0; b < branches.size(); ++b) {
    std::vector<int32_t> whole = head;
    whole.insert(whole.end(), branches[b].begin(), branches[b].end());
    const std::vector<float> want = full_logits(m, whole);
    for (int64_t k = 0; k < lengths[b]; ++k, ++at)
      ASSERT_TRUE(near_rel(row(all, at, V), row(want, P2 + k, V), kTol)) << "branch " << b << " token " << k;
  }
  // The prefix is intact: a step after the branches equals forward.
  const int32_t next = 7;
  auto step = dec.step(next);
  ASSERT_TRUE(step.ok());
  std::vector<int32_t> more = head;
  more.push_back(next);
  EXPECT_TRUE(near_rel(row(*step, V), row(full_logits(m, more), P2, V), kTol));
  const int64_t too_long[] = {65};
  EXPECT_FALSE(dec.prefill_branches(ids.data(), too_long, 1, all.data()).ok());  // longer than a pass
}

INSTANTIATE_TEST_SUITE_P(Decoder, DecoderMatch, ::testing::Values(0, 1),
                         [](const auto& info) { return info.param == 0 ? "MixedGqa" : "MqaTied"; });

TEST(Decoder, ShorterPrefixMatchesShorterForward) {
  // A forward of T' < max positions equals the decoder at those positions too.
  Model m = random_model(mixed_config(), 13);
  std::mt19937 rng(7);
  const int64_t V = m.config().vocab_size;
  const std::vector<int32_t> ids = test::rand_ids(rng, 37, V);
  const std::vector<float> want = full_logits(m, ids);
  infer::Decoder dec(engine(m), 50);
  auto got = dec.prefill(ids.data(), 37);
  ASSERT_TRUE(got.ok());
  EXPECT_TRUE(near_rel(row(*got, V), row(want, 36, V), kTol));
}

TEST(Decoder, ContextOverflowIsAnErrorAndChangesNothing) {
  Model m = random_model(mixed_config(), 14);
  infer::Decoder dec(engine(m), 10);
  EXPECT_EQ(dec.capacity(), 10);
  std::vector<int32_t> ids(12, 3);
  auto r = dec.prefill(ids.data(), 11);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("context of 10"), std::string::npos) << r.status().message();
  EXPECT_EQ(dec.position(), 0);
  ASSERT_TRUE(dec.prefill(ids.data(), 8).ok());
  EXPECT_FALSE(dec.prefill(ids.data(), 3).ok());
  EXPECT_EQ(dec.position(), 8);
  EXPECT_TRUE(dec.step(1).ok());
  EXPECT_TRUE(dec.step(2).ok());
  EXPECT_FALSE(dec.step(3).ok());
  EXPECT_EQ(dec.position(), 10);
  dec.reset();
  EXPECT_TRUE(dec.step(3).ok());
  // Capacity never exceeds the model's positions.
  infer::Decoder big(engine(m), 100000);
  EXPECT_EQ(big.capacity(), m.config().max_position_embeddings);
}

TEST(Decoder, BadIdsAndEmptyPrefillAreErrors) {
  Model m = random_model(mixed_config(), 15);
  infer::Decoder dec(engine(m), 0);
  std::vector<int32_t> ids = {1, 2, 61};
  auto r = dec.prefill(ids.data(), 3);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("61"), std::string::npos);
  EXPECT_FALSE(dec.step(-1).ok());
  EXPECT_FALSE(dec.prefill(ids.data(), 0).ok());
  EXPECT_EQ(dec.position(), 0);
}

// ---------------------------------------------------------------- sampler

std::vector<float> random_logits(int64_t V, uint32_t seed, float scale = 3.0f) {
  std::mt19937 rng(seed);
  return test::randu(rng, V, scale);
}

TEST(Sampler, GreedyIsArgmax) {
  for (uint32_t s = 0; s < 20; ++s) {
    const std::vector<float> l = random_logits(500, s);
    const int32_t want = static_cast<int32_t>(std::max_element(l.begin(), l.end()) - l.begin());
    infer::Sampler greedy({.greedy = true, .seed = s}, 500);
    EXPECT_EQ(greedy.sample(l.data()), want);
    infer::Sampler cold({.temperature = 0.0f, .seed = s}, 500);
    EXPECT_EQ(cold.sample(l.data()), want);
    infer::Sampler top1({.temperature = 1.5f, .top_k = 1, .top_p = 1.0f, .seed = s}, 500);
    EXPECT_EQ(top1.sample(l.data()), want);
    infer::Sampler tiny_p({.temperature = 1.5f, .top_k = 0, .top_p = 1e-6f, .seed = s}, 500);
    EXPECT_EQ(tiny_p.sample(l.data()), want);
  }
  // Ties go to the lowest id.
  std::vector<float> tie = {0.0f, 2.0f, 1.0f, 2.0f};
  EXPECT_EQ(infer::Sampler::argmax(tie.data(), 4), 1);
}

TEST(Sampler, SeededDeterminism) {
  const std::vector<float> l = random_logits(300, 1, 1.0f);
  auto draw = [&](uint64_t seed) {
    infer::Sampler s({.temperature = 1.0f, .top_k = 50, .top_p = 0.9f, .seed = seed}, 300);
    std::vector<int32_t> out;
    for (int i = 0; i < 200; ++i) out.push_back(s.sample(l.data()));
    return out;
  };
  EXPECT_EQ(draw(42), draw(42));
  EXPECT_NE(draw(42), draw(43));
}

TEST(Sampler, TopKAndTopPKeepOnlyTheirSet) {
  const int64_t V = 200;
  const std::vector<float> l = random_logits(V, 9);
  std::vector<int32_t> order(V);
  for (int64_t i = 0; i < V; ++i) order[i] = static_cast<int32_t>(i);
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return l[a] > l[b]; });
  infer::Sampler k5({.temperature = 2.0f, .top_k = 5, .top_p = 1.0f, .seed = 3}, V);
  std::set<int32_t> top5(order.begin(), order.begin() + 5), seen;
  for (int i = 0; i < 2000; ++i) seen.insert(k5.sample(l.data()));
  EXPECT_EQ(seen, top5);
  // top-p: the smallest prefix reaching p of the softmax mass.
  std::vector<double> p(V);
  double z = 0;
  for (int64_t i = 0; i < V; ++i) z += (p[i] = std::exp(static_cast<double>(l[order[i]])));
  double mass = 0;
  size_t n = 0;
  while (mass < 0.5 * z) mass += p[n++];
  infer::Sampler p5({.temperature = 1.0f, .top_k = 0, .top_p = 0.5f, .seed = 4}, V);
  std::set<int32_t> nucleus(order.begin(), order.begin() + n);
  seen.clear();
  for (int i = 0; i < 5000; ++i) seen.insert(p5.sample(l.data()));
  EXPECT_EQ(seen, nucleus);
}

TEST(Sampler, TemperatureOneMatchesSoftmax) {
  const int64_t V = 10, draws = 200000;
  const std::vector<float> l = random_logits(V, 21, 1.5f);
  infer::Sampler s({.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .seed = 77}, V);
  std::vector<int64_t> count(V, 0);
  for (int64_t i = 0; i < draws; ++i) ++count[s.sample(l.data())];
  double z = 0;
  for (float x : l) z += std::exp(static_cast<double>(x));
  double chi2 = 0;
  for (int64_t i = 0; i < V; ++i) {
    const double e = draws * std::exp(static_cast<double>(l[i])) / z;
    chi2 += (count[i] - e) * (count[i] - e) / e;
  }
  // 9 degrees of freedom: P(chi2 > 33) < 2e-4.
  EXPECT_LT(chi2, 33.0);
  // At temperature 2 the distribution flattens: softmax(l / 2).
  infer::Sampler hot({.temperature = 2.0f, .top_k = 0, .top_p = 1.0f, .seed = 78}, V);
  std::fill(count.begin(), count.end(), 0);
  for (int64_t i = 0; i < draws; ++i) ++count[hot.sample(l.data())];
  z = 0;
  for (float x : l) z += std::exp(0.5 * x);
  chi2 = 0;
  for (int64_t i = 0; i < V; ++i) {
    const double e = draws * std::exp(0.5 * l[i]) / z;
    chi2 += (count[i] - e) * (count[i] - e) / e;
  }
  EXPECT_LT(chi2, 33.0);
}

// ---------------------------------------------------------------- eval

TEST(Eval, MeanAndStandardError) {
  eval::MeanSe r = eval::mean_and_se({1.0, 2.0, 3.0, 4.0});
  EXPECT_DOUBLE_EQ(r.mean, 2.5);
  EXPECT_NEAR(r.se, std::sqrt(5.0 / 3.0) / 2.0, 1e-12);  // sample sd / sqrt(n)
  EXPECT_TRUE(std::isnan(eval::mean_and_se({3.0}).se));
  eval::PerplexityResult p;
  eval::summarize({1.0, 2.0, 3.0, 4.0}, p);
  EXPECT_NEAR(p.perplexity, std::exp(2.5), 1e-9);
  EXPECT_NEAR(p.ppl_low, std::exp(2.5 - 1.96 * r.se), 1e-9);
  EXPECT_NEAR(p.ppl_high, std::exp(2.5 + 1.96 * r.se), 1e-9);
}

TEST(Eval, StandardErrorCoversTheTrueMean) {
  // Synthetic windows: i.i.d. means around 3.0 with sd 0.5; over many trials
  // the 95% interval contains 3.0 about 95% of the time, and SE ~ 0.5/sqrt(n).
  std::mt19937_64 rng(1);
  std::normal_distribution<double> dist(3.0, 0.5);
  int covered = 0;
  const int trials = 2000, n = 50;
  double se_sum = 0;
  for (int t = 0; t < trials; ++t) {
    std::vector<double> v(n);
    for (double& x : v) x = dist(rng);
    const eval::MeanSe r = eval::mean_and_se(v);
    se_sum += r.se;
    covered += std::abs(r.mean - 3.0) <= 1.96 * r.se;
  }
  EXPECT_NEAR(se_sum / trials, 0.5 / std::sqrt(n), 0.005);
  EXPECT_NEAR(covered / static_cast<double>(trials), 0.95, 0.02);
}

TEST(Eval, PerplexityEqualsPerWindowScores) {
  Model m = random_model(mixed_config(), 16);
  std::mt19937 rng(8);
  const int64_t V = m.config().vocab_size, T = 20;
  const std::vector<int32_t> stream = test::rand_ids(rng, 7 * T + 9, V);  // 7 windows + tail
  auto read = [&](int64_t off, int64_t n, int32_t* out) {
    std::copy(stream.begin() + off, stream.begin() + off + n, out);
  };
  std::vector<double> want;
  for (int64_t w = 0; w < 7; ++w) {
    std::vector<int32_t> win(stream.begin() + w * T, stream.begin() + (w + 1) * T);
    auto loss = m.score(win, 1, T);
    ASSERT_TRUE(loss.ok());
    want.push_back(*loss);
  }
  const eval::MeanSe ms = eval::mean_and_se(want);
  for (int64_t B : {1, 3, 7, 16}) {
    auto r = eval::perplexity(engine(m), read, static_cast<int64_t>(stream.size()),
                              {.seq = T, .batch = B});
    ASSERT_TRUE(r.ok()) << r.status().message();
    EXPECT_EQ(r->windows, 7);
    EXPECT_EQ(r->predicted, 7 * (T - 1));
    EXPECT_EQ(r->tokens_dropped, 9);
    EXPECT_NEAR(r->mean_loss, ms.mean, 1e-5 * ms.mean) << "batch " << B;
    EXPECT_NEAR(r->se, ms.se, 1e-4 * ms.se) << "batch " << B;
    EXPECT_NEAR(r->perplexity, std::exp(ms.mean), 1e-4 * std::exp(ms.mean));
    EXPECT_EQ(r->path, "forward");
  }
  // The same windows one token at a time through the decoder.
  auto dec = eval::perplexity(engine(m), read, static_cast<int64_t>(stream.size()), {.seq = T, .decode = true});
  ASSERT_TRUE(dec.ok()) << dec.status().message();
  EXPECT_EQ(dec->path, "decode");
  ASSERT_EQ(dec->window_loss.size(), want.size());
  for (size_t w = 0; w < want.size(); ++w) EXPECT_NEAR(dec->window_loss[w], want[w], 1e-5 * want[w]) << "window " << w;
  // max_tokens limits the windows.
  auto r = eval::perplexity(engine(m), read, static_cast<int64_t>(stream.size()),
                            {.seq = T, .batch = 2, .max_tokens = 3 * T + 5});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->windows, 3);
}

TEST(Eval, Errors) {
  Model m = random_model(mixed_config(), 17);
  std::vector<int32_t> stream(100, 1);
  auto read = [&](int64_t off, int64_t n, int32_t* out) {
    std::copy(stream.begin() + off, stream.begin() + off + n, out);
  };
  EXPECT_FALSE(eval::perplexity(engine(m), read, 100, {.seq = 161}).ok());  // > max positions
  EXPECT_FALSE(eval::perplexity(engine(m), read, 100, {.seq = 1}).ok());
  auto few = eval::perplexity(engine(m), read, 100, {.seq = 101});
  EXPECT_FALSE(few.ok());
  stream[57] = 61;  // == V
  auto bad = eval::perplexity(engine(m), read, 100, {.seq = 10});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("offset 57"), std::string::npos) << bad.status().message();
}


// ---------------------------------------------------------------- CLI

using stem::test::CmdResult;
using stem::test::stem_cmd;

// One line on stderr, "stem CMD: ...", containing every one of `parts`.
::testing::AssertionResult one_line_error(const CmdResult& r, const std::string& cmd,
                                          const std::vector<std::string>& parts) {
  if (r.code != 1) return ::testing::AssertionFailure() << "exit " << r.code << ", stderr: " << r.err;
  if (r.err.rfind("stem " + cmd + ": ", 0) != 0 || r.err.find('\n') != r.err.size() - 1)
    return ::testing::AssertionFailure() << "not one 'stem " << cmd << ":' line: " << r.err;
  for (const auto& p : parts)
    if (r.err.find(p) == std::string::npos)
      return ::testing::AssertionFailure() << "'" << p << "' missing from: " << r.err;
  return ::testing::AssertionSuccess();
}

size_t io_tokenizer_encode_size(const std::string& model, const std::string& text) {
  auto t = io::Tokenizer::load(model);
  EXPECT_TRUE(t.ok());
  return t.ok() ? t->encode(text).size() : 0;
}

const char* kCliConfig = R"({"model_type": "stem", "vocab_size": 64, "hidden_size": 32,
  "intermediate_size": 48, "num_hidden_layers": 3, "num_attention_heads": 4,
  "num_key_value_heads": 2, "max_position_embeddings": 24, "rope_theta": 10000.0,
  "rms_norm_eps": 1e-5, "tie_word_embeddings": false,
  "ffn_types": ["dense", "stem", "hash_moe"], "num_hash_experts": 2})";

class InferCli : public stem::test::TempDirTest {
 protected:
  // A random model in DIR/name from a config text.
  void init(const std::string& name, const std::string& config, int seed = 3) {
    write(name + ".json", config);
    CmdResult r = stem_cmd("init --config " + p(name + ".json") + " --out " + p(name) +
                           " --seed " + std::to_string(seed));
    ASSERT_EQ(r.code, 0) << r.err;
  }
  // A prepared data folder (vocabulary 300) from prose with multi-byte characters.
  void prepare(const std::string& name) {
    std::mt19937 rng(4);
    const std::vector<std::string> words = {"the", "café", "naïve", "river", "—", "über", "garden",
                                            "Zoë", "smiled", "at", "東京", "and", "walked", "home",
                                            "🙂", "again", "quietly", "light"};
    std::string text;
    for (int para = 0; para < 80; ++para) {
      for (int w = 0; w < 40; ++w) text += (w ? " " : "") + words[rng() % words.size()];
      text += ".\n\n";
    }
    write(name + ".txt", text);
    CmdResult r = stem_cmd("prepare --input " + p(name + ".txt") + " --out " + p(name) +
                           " --vocab-size 300 --doc-bytes 300 --val-fraction 0.25");
    ASSERT_EQ(r.code, 0) << r.err;
  }
};

TEST_F(InferCli, HelpListsOptions) {
  for (const char* sub : {"generate", "eval"}) {
    CmdResult r = stem_cmd(std::string(sub) + " --help");
    EXPECT_EQ(r.code, 0) << sub;
    EXPECT_NE(r.out.find("--json"), std::string::npos) << sub;
    EXPECT_NE(r.out.find("--model"), std::string::npos) << sub;
  }
}

TEST_F(InferCli, GeneratePromptIds) {
  init("m", kCliConfig);
  // Streaming: N ids on stdout, stats on stderr.
  CmdResult r = stem_cmd("generate --model " + p("m") + " --prompt-ids \"1 2 3\" -n 12 --seed 5");
  ASSERT_EQ(r.code, 0) << r.err;
  std::istringstream in(r.out);
  std::vector<int32_t> streamed;
  for (int32_t id; in >> id;) streamed.push_back(id);
  EXPECT_EQ(streamed.size(), 12u) << r.out;
  for (int32_t id : streamed) EXPECT_TRUE(id >= 0 && id < 64);
  // --json: the same ids for the same seed.
  r = stem_cmd("generate --model " + p("m") + " --prompt-ids \"1 2 3\" -n 12 --seed 5 --json");
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["ids"].get<std::vector<int32_t>>(), streamed);
  EXPECT_EQ(j["generated_tokens"], 12);
  EXPECT_EQ(j["prompt_tokens"], 3);
  EXPECT_EQ(j["stop"], "length");
  EXPECT_GT(j["tokens_per_second"].get<double>(), 0.0);
  EXPECT_FALSE(j.contains("text"));

  // Greedy decoding equals argmax of a full forward over the growing sequence.
  r = stem_cmd("generate --model " + p("m") + " --prompt-ids \"1 2 3\" -n 10 --greedy --json");
  ASSERT_EQ(r.code, 0) << r.err;
  const auto got = nlohmann::json::parse(r.out)["ids"].get<std::vector<int32_t>>();
  auto m = Model::load(p("m"));
  ASSERT_TRUE(m.ok());
  std::vector<int32_t> seq = {1, 2, 3}, want;
  for (int i = 0; i < 10; ++i) {
    const std::vector<float> l = full_logits(*m, seq);
    const int32_t id = infer::Sampler::argmax(l.data() + (seq.size() - 1) * 64, 64);
    want.push_back(id);
    seq.push_back(id);
  }
  EXPECT_EQ(got, want);

  // The context fills: a prompt of 22 of 24 positions leaves room for 3 tokens.
  std::string long_prompt;
  for (int i = 0; i < 22; ++i) long_prompt += std::to_string(i) + " ";
  r = stem_cmd("generate --model " + p("m") + " --prompt-ids \"" + long_prompt + "\" -n 10 --json");
  ASSERT_EQ(r.code, 0) << r.err;
  j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["generated_tokens"], 3);
  EXPECT_EQ(j["stop"], "context");
}

TEST_F(InferCli, GenerateErrors) {
  init("m", kCliConfig);
  std::string too_long;
  for (int i = 0; i < 25; ++i) too_long += "1 ";
  EXPECT_TRUE(one_line_error(stem_cmd("generate --model " + p("m") + " --prompt-ids \"" + too_long + "\""),
                             "generate", {"25", "24"}));
  EXPECT_TRUE(one_line_error(stem_cmd("generate --model " + p("m") + " --prompt hello"), "generate",
                             {"tokenizer.model"}));
  EXPECT_TRUE(one_line_error(stem_cmd("generate --model " + p("m") + " --prompt-ids \"1 64\""), "generate",
                             {"64", "vocab_size"}));
  EXPECT_TRUE(one_line_error(stem_cmd("generate --model " + p("m") + " --prompt-ids \"1 x\""), "generate", {"'x'"}));
  EXPECT_TRUE(one_line_error(stem_cmd("generate --model " + p("m") + " --prompt-ids \"\""), "generate", {"no token ids"}));
  EXPECT_TRUE(one_line_error(stem_cmd("generate --model " + p("m") + " --prompt-ids 1 -n 0"), "generate", {"-n 0"}));
  EXPECT_TRUE(one_line_error(stem_cmd("generate --model " + p("absent") + " --prompt-ids 1"), "generate", {"absent"}));
  EXPECT_NE(stem_cmd("generate --prompt-ids 1").code, 0);  // --model is required
}

TEST_F(InferCli, GenerateTextStreamsWhatJsonReports) {
  prepare("data");
  std::string cfg = kCliConfig;
  cfg.replace(cfg.find("\"vocab_size\": 64"), 16, "\"vocab_size\": 300");
  cfg.replace(cfg.find("\"max_position_embeddings\": 24"), 29, "\"max_position_embeddings\": 96");
  init("m", cfg);
  fs::copy_file(p("data/tokenizer.model"), p("m/tokenizer.model"));
  // A random model emits byte pieces that split multi-byte characters: the
  // stream must still print exactly the decoded continuation.
  for (int seed : {1, 2, 3}) {
    const std::string args = "generate --model " + p("m") + " --prompt \"the café\" -n 60 --temperature 1.5 "
                             "--top-k 0 --top-p 1 --seed " + std::to_string(seed);
    CmdResult s = stem_cmd(args);
    ASSERT_EQ(s.code, 0) << s.err;
    CmdResult j = stem_cmd(args + " --json");
    ASSERT_EQ(j.code, 0) << j.err;
    const auto js = nlohmann::json::parse(j.out);
    EXPECT_EQ(s.out, js["text"].get<std::string>() + "\n") << "seed " << seed;
    EXPECT_EQ(js["prompt_tokens"].get<int>(), 1 + static_cast<int>(
        io_tokenizer_encode_size(p("m/tokenizer.model"), "the café")));
  }
  // A tokenizer whose size disagrees with the model's vocabulary.
  init("small", kCliConfig);
  fs::copy_file(p("data/tokenizer.model"), p("small/tokenizer.model"));
  EXPECT_TRUE(one_line_error(stem_cmd("generate --model " + p("small") + " --prompt hi"), "generate",
                             {"300", "64"}));
}

TEST_F(InferCli, Eval) {
  prepare("data");
  std::string cfg = kCliConfig;
  cfg.replace(cfg.find("\"vocab_size\": 64"), 16, "\"vocab_size\": 300");
  init("m", cfg);
  CmdResult r = stem_cmd("eval --model " + p("m") + " --data " + p("data") + " --json");
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["seq"], 24);  // min(512, max_position_embeddings)
  EXPECT_GT(j["windows"].get<int>(), 5);
  EXPECT_EQ(j["predicted_tokens"].get<int>(), j["windows"].get<int>() * 23);
  const double loss = j["loss"], se = j["loss_se"];
  EXPECT_GT(se, 0.0);
  EXPECT_NEAR(j["perplexity"].get<double>(), std::exp(loss), 1e-6 * std::exp(loss));
  EXPECT_NEAR(j["perplexity_low"].get<double>(), std::exp(loss - 1.96 * se), 1e-6 * std::exp(loss));
  EXPECT_NEAR(j["perplexity_high"].get<double>(), std::exp(loss + 1.96 * se), 1e-6 * std::exp(loss));
  // The shard itself, and the same ids as a text file: the same numbers.
  CmdResult s = stem_cmd("eval --model " + p("m") + " --data " + p("data/val.tok") + " --batch 3 --json");
  ASSERT_EQ(s.code, 0) << s.err;
  EXPECT_NEAR(nlohmann::json::parse(s.out)["loss"].get<double>(), loss, 1e-6 * loss);
  {
    auto shard = io::TokenShard::open(p("data/val.tok"));
    ASSERT_TRUE(shard.ok());
    std::vector<int32_t> ids(shard->size());
    shard->read(0, shard->size(), ids.data());
    std::ofstream f(p("val.txt"));
    for (int32_t id : ids) f << id << '\n';
  }
  s = stem_cmd("eval --model " + p("m") + " --data " + p("val.txt") + " --json");
  ASSERT_EQ(s.code, 0) << s.err;
  EXPECT_NEAR(nlohmann::json::parse(s.out)["loss"].get<double>(), loss, 1e-6 * loss);
  // --seq and --max-tokens.
  s = stem_cmd("eval --model " + p("m") + " --data " + p("data") + " --seq 10 --max-tokens 35 --json");
  ASSERT_EQ(s.code, 0) << s.err;
  EXPECT_EQ(nlohmann::json::parse(s.out)["windows"], 3);
  // Text output.
  s = stem_cmd("eval --model " + p("m") + " --data " + p("data"));
  ASSERT_EQ(s.code, 0) << s.err;
  EXPECT_NE(s.out.find("perplexity"), std::string::npos);

  // Errors: vocabulary mismatch (both sizes named), window too long, no data.
  init("v64", kCliConfig);
  EXPECT_TRUE(one_line_error(stem_cmd("eval --model " + p("v64") + " --data " + p("data")), "eval", {"300", "64"}));
  EXPECT_TRUE(one_line_error(stem_cmd("eval --model " + p("v64") + " --data " + p("data/val.tok")), "eval",
                             {"300", "64"}));
  EXPECT_TRUE(one_line_error(stem_cmd("eval --model " + p("m") + " --data " + p("data") + " --seq 25"), "eval",
                             {"25", "24"}));
  EXPECT_TRUE(one_line_error(stem_cmd("eval --model " + p("m") + " --data " + p("nothing")), "eval", {"nothing"}));
  write("bad.txt", "1 2 3 300\n");
  EXPECT_TRUE(one_line_error(stem_cmd("eval --model " + p("m") + " --data " + p("bad.txt")), "eval", {"300"}));
  write("short.txt", "1 2 3\n");
  EXPECT_TRUE(one_line_error(stem_cmd("eval --model " + p("m") + " --data " + p("short.txt")), "eval",
                             {"fewer than one window"}));
}

}  // namespace
}  // namespace stem
