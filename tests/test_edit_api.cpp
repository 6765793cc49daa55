// The public editing and analysis API (include/stem/edit.h, analyze.h,
// data.h's read_corpus_tokens) on stem::Model, against the engine-level
// functions it wraps (src/edit/), on the trained fact model of
// edit_test_util.h: the same overlays bit for bit, and the same rows whether
// the tables are in RAM or read from disk (a swap can be planned on a model
// whose tables never enter memory).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <fstream>

#include "edit/edit_eval.h"
#include "edit/inject.h"
#include "edit/swap.h"
#include "edit_test_util.h"
#include "model/engine.h"
#include "stem/analyze.h"
#include "stem/data.h"
#include "stem/edit.h"

namespace stem {
namespace {
using namespace edit_test;

void expect_same_overlay(const edit::Overlay& a, const edit::Overlay& b) {
  ASSERT_EQ(a.keys, b.keys);
  ASSERT_EQ(a.rows.size(), b.rows.size());
  EXPECT_EQ(0, std::memcmp(a.rows.data(), b.rows.data(), a.rows.size() * sizeof(float)));
}

std::vector<int32_t> stem_layers(const ModelConfig& cfg) {
  std::vector<int32_t> out;
  for (int32_t l = 0; l < cfg.num_hidden_layers; ++l)
    if (cfg.ffn_types[l] == FfnType::Stem) out.push_back(l);
  return out;
}

TEST(EditApi, SwapPlansAndRowsAreTheSameWhereverTheTablesLive) {
  OneThread one_thread;
  LoadedModel lm = load_trained();
  auto disk = Model::load(trained().model, LoadOptions{.tables = TablesIn::Disk});
  ASSERT_TRUE(disk.ok()) << disk.status().message();
  const auto& subs = trained().corpus.subjects;
  edit::SwapOptions opt;
  opt.layers = stem_layers(lm.m.config());

  edit::TensorListRows rows(engine(lm.m).weights());
  auto engine_plan = edit::plan_swap(lm.tok, lm.m.config(), rows, subs[0].name, subs[1].name, opt);
  auto ram_plan = edit::plan_swap(lm.m, lm.tok, subs[0].name, subs[1].name, opt);
  auto disk_plan = edit::plan_swap(*disk, lm.tok, subs[0].name, subs[1].name, opt);
  ASSERT_TRUE(engine_plan.ok() && ram_plan.ok() && disk_plan.ok());
  expect_same_overlay(ram_plan->overlay, engine_plan->overlay);
  expect_same_overlay(disk_plan->overlay, engine_plan->overlay);
  EXPECT_EQ(ram_plan->changed_tokens, disk_plan->changed_tokens);

  const std::vector<int32_t> tokens = {0, 5, 700, 5};
  for (int32_t l : opt.layers) {
    auto a = edit::stem_rows_of(lm.m, l, tokens);
    auto b = edit::stem_rows_of(*disk, l, tokens);
    ASSERT_TRUE(a.ok() && b.ok());
    ASSERT_EQ(a->size(), tokens.size() * static_cast<size_t>(lm.m.config().intermediate_size));
    EXPECT_EQ(*a, *b) << "layer " << l;
    const int64_t f = lm.m.config().intermediate_size;  // row 1 of the result is token 5's
    EXPECT_EQ(0, std::memcmp(a->data() + f, table_data(lm.m, l) + 5 * f, sizeof(float) * f));
  }
  EXPECT_FALSE(edit::stem_rows_of(lm.m, 5, tokens).ok());  // the dense layer
  EXPECT_FALSE(edit::stem_rows_of(lm.m, 0, {768}).ok());   // token out of range
}

TEST(EditApi, InjectAndEvaluateMatchTheEngine) {
  OneThread one_thread;
  LoadedModel lm = load_trained();
  const std::string path = trained().facts + "/inject_facts.jsonl";
  auto facts = edit::read_facts(path);
  ASSERT_TRUE(facts.ok()) << facts.status().message();
  edit::InjectOptions opt;
  opt.layers = stem_layers(lm.m.config());
  opt.steps = 8;

  auto seqs = edit::fact_sequences(lm.tok, *facts, lm.m.config().max_position_embeddings, path);
  ASSERT_TRUE(seqs.ok());
  auto tokens = edit::injection_tokens(lm.tok, *facts, *seqs, {}, path);
  ASSERT_TRUE(tokens.ok());
  edit::InjectOptions eopt = opt;  // the facts name no answer: their tokens are the subjects'
  auto keep = edit::keep_for(engine(lm.m), lm.tok, eopt, *tokens, *tokens);
  ASSERT_TRUE(keep.ok()) << keep.status().message();
  EXPECT_EQ(keep->size(), 0u);  // a sample holding a trained token holds the subject
  EXPECT_FALSE(eopt.keep_kl);
  EXPECT_EQ(edit::InjectOptions{}.keep_samples, 1024);  // the default the study measured (docs/editing.md)
  auto by_engine = edit::inject_rows(engine(lm.m), *seqs, *tokens, eopt, nullptr, *keep);
  int64_t calls = 0;
  auto by_api = edit::inject_facts(lm.m, lm.tok, *facts, {}, opt, [&](int64_t, int64_t, double) { ++calls; }, path);
  ASSERT_TRUE(by_engine.ok() && by_api.ok()) << by_api.status().message();
  expect_same_overlay(by_api->overlay, by_engine->overlay);
  EXPECT_EQ(by_api->losses, by_engine->losses);
  EXPECT_EQ(calls, by_api->steps);  // one report an update; learned before the 8 steps here
  EXPECT_TRUE(by_api->learned);
  EXPECT_LT(by_api->steps, opt.steps);
  EXPECT_EQ(by_api->losses.size(), static_cast<size_t>(by_api->steps + 1));  // and the pass that found it learned
  edit::InjectOptions all = opt;
  all.until_learned = false;
  auto fixed = edit::inject_rows(engine(lm.m), *seqs, *tokens, all);
  ASSERT_TRUE(fixed.ok());
  EXPECT_EQ(fixed->steps, opt.steps);
  EXPECT_EQ(fixed->losses.size(), static_cast<size_t>(opt.steps));

  auto cases = edit::read_cases(trained().facts + "/inject_cases.jsonl");
  ASSERT_TRUE(cases.ok());
  auto e1 = edit::evaluate_edits(engine(lm.m), lm.tok, *cases, {by_api->overlay});
  auto e2 = edit::evaluate_edits(lm.m, lm.tok, *cases, {by_api->overlay});
  ASSERT_TRUE(e1.ok() && e2.ok());
  EXPECT_EQ(e1->summary.efficacy, e2->summary.efficacy);
  EXPECT_EQ(e1->summary.mean_kl, e2->summary.mean_kl);

  // Errors name what is wrong: an overlay made for another model, a fact
  // whose subject is not in its sentence.
  edit::Overlay other = by_api->overlay;
  other.shape.vocab_size += 1;
  auto bad = edit::evaluate_edits(lm.m, lm.tok, *cases, {other});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("vocab_size"), std::string::npos) << bad.status().message();
  std::vector<edit::Fact> wrong = {{"Nowhere", "The capital of Kavoria is Dunemot.", 1}};
  auto no_subject = edit::inject_facts(lm.m, lm.tok, wrong, {}, opt, nullptr, "my.jsonl");
  ASSERT_FALSE(no_subject.ok());
  EXPECT_NE(no_subject.status().message().find("my.jsonl"), std::string::npos) << no_subject.status().message();
}

// The keep sentences an injection holds by default: sampled by the unedited
// model from BOS, deterministic, each reading a trained row and no subject
// token; none with keep_samples 0; the user's sentences instead of samples.
TEST(EditApi, SampledKeepSentencesReadATrainedRowAndNoSubjectToken) {
  OneThread one_thread;
  LoadedModel lm = load_trained();
  const std::vector<int32_t> is = lm.tok.encode("is"), subject = lm.tok.encode(trained().corpus.subjects[0].name);
  ASSERT_EQ(is.size(), 1u);
  std::vector<int32_t> trained_ids = subject;
  trained_ids.push_back(is[0]);
  edit::InjectOptions opt;
  opt.keep_samples = 128;
  auto a = edit::keep_for(engine(lm.m), lm.tok, opt, trained_ids, subject);
  ASSERT_TRUE(a.ok()) << a.status().message();
  EXPECT_TRUE(opt.keep_kl);
  ASSERT_GT(a->size(), 10u);
  for (const auto& s : *a) {
    ASSERT_GE(s.size(), 3u);
    ASSERT_LE(s.size(), 32u);
    EXPECT_EQ(s[0], lm.tok.bos_id());
    EXPECT_NE(std::find(s.begin(), s.end(), is[0]), s.end());
    for (int32_t t : subject) EXPECT_EQ(std::find(s.begin(), s.end(), t), s.end());
  }
  edit::InjectOptions again;
  again.keep_samples = 128;
  auto b = edit::keep_for(engine(lm.m), lm.tok, again, trained_ids, subject);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(*a, *b);
  edit::InjectOptions none;
  none.keep_samples = 0;
  auto c = edit::keep_for(engine(lm.m), lm.tok, none, trained_ids, subject);
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(c->empty());
  EXPECT_FALSE(none.keep_kl);
  edit::InjectOptions given;
  given.keep = {"The capital of Nowhere is Here."};
  auto d = edit::keep_for(engine(lm.m), lm.tok, given, trained_ids, subject);
  ASSERT_TRUE(d.ok());
  ASSERT_EQ(d->size(), 1u);
  EXPECT_EQ(d->front().front(), lm.tok.bos_id());
  EXPECT_FALSE(given.keep_kl);
}

TEST(EditApi, CorpusTokensFromTextShardOrDataDirectory) {
  const Trained& t = trained();
  auto tok = Tokenizer::load(t.model + "/tokenizer.model");
  ASSERT_TRUE(tok.ok());
  const std::string text_path = ::testing::TempDir() + "/edit_api_corpus.txt";
  std::ofstream(text_path) << "The capital of " << t.corpus.subjects[0].name << " is";
  auto ids = read_corpus_tokens(text_path, t.model, kVocab);
  ASSERT_TRUE(ids.ok()) << ids.status().message();
  EXPECT_EQ(*ids, tok->encode("The capital of " + t.corpus.subjects[0].name + " is"));
  auto shard = read_corpus_tokens(t.data + "/train.tok", t.model, kVocab);
  ASSERT_TRUE(shard.ok()) << shard.status().message();
  EXPECT_GT(shard->size(), 1000u);
  auto other_vocab = read_corpus_tokens(t.data + "/train.tok", t.model, kVocab + 1);
  ASSERT_FALSE(other_vocab.ok());
  EXPECT_NE(other_vocab.status().message().find("vocab_size 768"), std::string::npos) << other_vocab.status().message();
  EXPECT_FALSE(read_corpus_tokens(text_path, "/nonexistent-model", kVocab).ok());  // no tokenizer
}

}  // namespace
}  // namespace stem
