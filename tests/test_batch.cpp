// Continuous batching: Decoder::forward_slots against one Decoder per
// sequence (pieces of several sequences in one pass, per-sequence row
// overrides, errors that move nothing; one-token passes bit for bit), and stem::BatchGenerator against
// stem::generate() on the trained fact model: greedy tokens equal with and
// without an edit, requests running concurrently, tables in RAM and on disk;
// cancelling, refusals and shutdown.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <memory>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "edit_test_util.h"
#include "infer/decoder.h"
#include "model/engine.h"
#include "stem/batch.h"
#include "stem/bench.h"
#include "stem/edit.h"
#include "stem/generate.h"

namespace stem {
namespace {
namespace fs = std::filesystem;

ModelConfig batch_config() {
  ModelConfig c;
  c.vocab_size = 300;
  c.hidden_size = 32;
  c.intermediate_size = 40;
  c.num_hidden_layers = 4;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 48;
  c.num_hash_experts = 2;
  c.ffn_types = {FfnType::Stem, FfnType::Dense, FfnType::HashMoe, FfnType::Stem};
  return c;
}

std::vector<int32_t> random_ids(int64_t n, uint64_t seed, int64_t V) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> ids(n);
  for (auto& id : ids) id = static_cast<int32_t>(rng() % V);
  return ids;
}

// Overrides from a map, for the decoder test.
struct MapRows final : infer::RowOverrides {
  std::map<std::pair<int64_t, int32_t>, std::vector<float>> rows;
  const float* find(int64_t j, int32_t token) const override {
    auto it = rows.find({j, token});
    return it == rows.end() ? nullptr : it->second.data();
  }
};

float max_diff(const float* a, const float* b, int64_t n) {
  float m = 0;
  for (int64_t i = 0; i < n; ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

// A pass of one new token for each of several sequences multiplies every
// matrix with all their rows at once (matvec_rows), and each row's products
// equal the one-row matvec bit for bit; so, after the same prompts, the
// batched steps give each sequence exactly the logits it gets decoded alone.
// Dense, STEM and hash-MoE layers (the config above, wider), 3 sequences;
// F32 weights, and BF16 ones (matvec_rows_bf16 against matvec_bf16).
void expect_one_token_passes_equal_decoding_alone(Model* m) {
  const int64_t V = m->config().vocab_size, S = 3, prompt = 6, steps = 12;
  infer::DecoderOptions opt;
  opt.prefill_chunk = 8;
  opt.slots = S;
  infer::Decoder dec(engine(*m), opt);
  std::vector<std::unique_ptr<infer::Decoder>> alone;
  std::vector<std::vector<int32_t>> seq;
  std::vector<std::vector<float>> got(S, std::vector<float>(V));
  for (int64_t s = 0; s < S; ++s) {
    seq.push_back(random_ids(prompt + steps, 10 + s, V));
    alone.push_back(std::make_unique<infer::Decoder>(engine(*m), int64_t{0}));
    const infer::SlotChunk c{static_cast<int32_t>(s), seq[s].data(), prompt, got[s].data(), nullptr};
    ASSERT_TRUE(dec.forward_slots(&c, 1).ok());
    auto want = alone[s]->prefill(seq[s].data(), prompt);
    ASSERT_TRUE(want.ok());
    ASSERT_EQ(0, std::memcmp(got[s].data(), *want, sizeof(float) * V)) << "prompt of " << s;
  }
  for (int64_t t = prompt; t < prompt + steps; ++t) {
    std::vector<infer::SlotChunk> chunks;
    for (int64_t s = 0; s < S; ++s)
      chunks.push_back({static_cast<int32_t>(s), seq[s].data() + t, 1, got[s].data(), nullptr});
    ASSERT_TRUE(dec.forward_slots(chunks.data(), S).ok());
    for (int64_t s = 0; s < S; ++s) {
      auto want = alone[s]->step(seq[s][t]);
      ASSERT_TRUE(want.ok());
      ASSERT_EQ(0, std::memcmp(got[s].data(), *want, sizeof(float) * V)) << "sequence " << s << " at " << t;
    }
  }
}

TEST(BatchDecoder, OneTokenPassesEqualDecodingAloneBitForBit) {
  ModelConfig c = batch_config();
  c.hidden_size = 128;
  c.intermediate_size = 200;
  auto m = Model::init(c, 5);
  ASSERT_TRUE(m.ok());
  {
    SCOPED_TRACE("F32");
    expect_one_token_passes_equal_decoding_alone(&*m);
  }
  const fs::path dir = fs::temp_directory_path() / ("stem-batch-bf16-" + std::to_string(::getpid()));
  ASSERT_TRUE(m->save(dir.string()).ok());
  LoadOptions o;
  o.dtype = WeightDType::BF16;
  auto b = Model::load(dir.string(), o);
  fs::remove_all(dir);
  ASSERT_TRUE(b.ok()) << b.status().message();
  SCOPED_TRACE("BF16");
  expect_one_token_passes_equal_decoding_alone(&*b);
}

TEST(BatchDecoder, SlotsGiveEachSequenceItsOwnLogits) {
  auto m = Model::init(batch_config(), 3);
  ASSERT_TRUE(m.ok());
  const ModelConfig& c = m->config();
  const int64_t V = c.vocab_size;
  // Sequence 1 reads its own rows for two tokens of each STEM layer.
  const std::vector<int32_t> seq[3] = {random_ids(20, 1, V), random_ids(14, 2, V), random_ids(9, 3, V)};
  MapRows over;
  std::mt19937_64 rng(4);
  std::normal_distribution<float> nd;
  for (int64_t j = 0; j < 2; ++j)
    for (int32_t tok : {seq[1][0], seq[1][5]}) {
      std::vector<float> row(c.intermediate_size);
      for (float& x : row) x = nd(rng);
      over.rows[{j, tok}] = row;
    }
  // The references: one decoder per sequence; sequence 1 on the model with
  // those rows written into its tables.
  auto edited = Model::init(batch_config(), 3);
  ASSERT_TRUE(edited.ok());
  for (const auto& [key, row] : over.rows)
    ASSERT_TRUE(write_table_row(*edited, key.first == 0 ? 0 : 3, key.second, row).ok());
  infer::DecoderOptions opt;
  opt.prefill_chunk = 16;
  opt.slots = 3;
  infer::Decoder dec(engine(*m), opt);
  std::vector<std::vector<float>> got(3, std::vector<float>(V));
  // Passes of mixed pieces: (slot, from, count); logits of a piece's last token.
  const std::vector<std::vector<std::array<int64_t, 3>>> passes = {
      {{0, 0, 7}, {1, 0, 5}},
      {{1, 5, 9}, {0, 7, 1}, {2, 0, 4}},
      {{0, 8, 1}, {2, 4, 5}},
      {{2, 9, 0}, {0, 9, 6}},  // n = 0: left out below
      {{0, 15, 5}, {1, 14, 0}},
  };
  for (const auto& pass : passes) {
    std::vector<infer::SlotChunk> chunks;
    for (const auto& [s, from, n] : pass) {
      if (n == 0) continue;
      chunks.push_back({static_cast<int32_t>(s), seq[s].data() + from, n, got[s].data(), s == 1 ? &over : nullptr});
    }
    ASSERT_TRUE(dec.forward_slots(chunks.data(), static_cast<int64_t>(chunks.size())).ok());
    for (const auto& [s, from, n] : pass) {
      if (n == 0) continue;
      ASSERT_EQ(dec.slot_position(s), from + n);
      infer::Decoder ref(engine(s == 1 ? *edited : *m), int64_t{0});
      auto want = ref.prefill(seq[s].data(), from + n);
      ASSERT_TRUE(want.ok());
      EXPECT_LT(max_diff(got[s].data(), *want, V), 2e-4f) << "slot " << s << " after " << from + n;
    }
  }
  // Errors leave every position as it was.
  const int64_t before[3] = {dec.slot_position(0), dec.slot_position(1), dec.slot_position(2)};
  const int32_t ids[20] = {};
  const int32_t bad[1] = {static_cast<int32_t>(V)};
  const std::vector<std::vector<infer::SlotChunk>> wrong = {
      {{0, ids, 1, nullptr, nullptr}, {0, ids, 1, nullptr, nullptr}},  // a slot twice
      {{3, ids, 1, nullptr, nullptr}},                                  // no such slot
      {{0, ids, 10, nullptr, nullptr}, {1, ids, 10, nullptr, nullptr}}, // more than a chunk
      {{1, ids, 1, nullptr, nullptr}, {2, bad, 1, nullptr, nullptr}},   // an id outside V
      {{0, ids, 16, nullptr, nullptr}, {1, ids, 0, nullptr, nullptr}},  // an empty piece
  };
  for (const auto& w : wrong) EXPECT_FALSE(dec.forward_slots(w.data(), static_cast<int64_t>(w.size())).ok());
  EXPECT_EQ(dec.slot_position(0), before[0]);
  EXPECT_EQ(dec.slot_position(1), before[1]);
  EXPECT_EQ(dec.slot_position(2), before[2]);
  infer::SlotChunk full{0, ids, 16, nullptr, nullptr};
  ASSERT_TRUE(dec.forward_slots(&full, 1).ok());   // slot 0 at 36 of 48
  EXPECT_FALSE(dec.forward_slots(&full, 1).ok());  // past the context
  EXPECT_EQ(dec.slot_position(0), before[0] + 16);
}


// ---------------------------------------------------------------- the generator

// Subject 0's rows in place of subject 1's in every STEM layer: "The capital of
// <1>" then answers as <0>'s.
std::string swap_overlay(Model& m, const Tokenizer& tok, const fs::path& path) {
  const auto& subjects = edit_test::trained().corpus.subjects;
  const std::vector<int32_t> from = tok.encode(subjects[1].name), to = tok.encode(subjects[0].name);
  EXPECT_EQ(from.size(), 1u);
  EXPECT_EQ(to.size(), 1u);
  edit::Overlay ov;
  ov.shape = edit::OverlayShape::of(m.config());
  for (int32_t l : ov.shape.stem_layers) {
    auto row = read_table_row(m, l, to[0]);
    EXPECT_TRUE(row.ok());
    ov.add(l, from[0], row->data());
  }
  EXPECT_TRUE(edit::write_overlay(ov, path.string()).ok());
  return path.string();
}

struct Completion {
  std::vector<int32_t> ids;
  std::string text;
  StopReason stop = StopReason::Length;
};

Completion collect(BatchStream& s) {
  Completion c;
  BatchEvent ev;
  while (s.next(&ev, std::chrono::seconds(60))) {
    EXPECT_TRUE(ev.error.ok()) << ev.error.message();
    c.text += ev.text;
    if (ev.done)
      c.stop = ev.stop;
    else
      c.ids.push_back(ev.id);
  }
  EXPECT_FALSE(s.timed_out());
  return c;
}

class BatchGenerate : public ::testing::TestWithParam<TablesIn> {};

TEST_P(BatchGenerate, GreedyTokensEqualGenerateWithAndWithoutTheEditWhileOthersRun) {
  edit_test::OneThread one;
  const auto& t = edit_test::trained();
  LoadOptions lo;
  lo.tables = GetParam();
  auto m = Model::load(t.model, lo);
  ASSERT_TRUE(m.ok()) << m.status().message();
  auto tok = Tokenizer::load(t.model + "/tokenizer.model");
  ASSERT_TRUE(tok.ok());
  const fs::path dir = fs::temp_directory_path() / ("stem_batch_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  BatchOptions bo;
  bo.slots = 3;
  bo.step_tokens = 16;  // prompts take several passes, beside generating sequences
  bo.edits = {{"swap", swap_overlay(*m, *tok, dir / "swap.ovl")}};
  // Prompts about the subjects; those of subject 1 (whose rows the edit
  // replaces) and every other one edited.
  std::vector<std::string> prompts;
  std::vector<bool> edited;
  for (const auto& q : t.corpus.queries)
    if (q.subject < 3 && q.template_index == 0) {
      prompts.push_back(q.prompt);
      edited.push_back(q.subject == 1 || prompts.size() % 2 == 0);
    }
  ASSERT_GE(prompts.size(), 6u);
  GenerateOptions g;
  g.sampler.greedy = true;
  g.max_new_tokens = 12;
  g.stop_at_eos = false;
  // What generate() gives, one request at a time, with the edit applied or not.
  std::vector<Completion> want;
  int moved = 0;  // subject 1's answers the edit changed
  for (size_t i = 0; i < prompts.size(); ++i) {
    auto plain = generate(*m, *tok, prompts[i], g);
    ASSERT_TRUE(plain.ok());
    std::optional<AppliedEdits> applied;
    if (edited[i]) {
      auto a = apply_overlays(*m, {bo.edits[0].second});
      ASSERT_TRUE(a.ok()) << a.status().message();
      applied.emplace(std::move(*a));
    }
    auto r = generate(*m, *tok, prompts[i], g);
    ASSERT_TRUE(r.ok()) << r.status().message();
    want.push_back({r->ids, r->text, r->stop});
    moved += edited[i] && r->ids != plain->ids;
    if (applied) {
      ASSERT_TRUE(applied->revert().ok());
    }
  }
  auto gen = BatchGenerator::start(*m, *tok, bo);
  ASSERT_TRUE(gen.ok()) << gen.status().message();
  std::vector<std::unique_ptr<BatchStream>> streams;
  for (size_t i = 0; i < prompts.size(); ++i) {
    BatchRequest req;
    req.prompt = prompts[i];
    req.gen = g;
    req.edit = edited[i] ? "swap" : "";
    auto s = (*gen)->submit(req);
    ASSERT_TRUE(s.ok()) << s.status().message();
    streams.push_back(std::move(*s));
  }
  for (size_t i = 0; i < prompts.size(); ++i) {
    const Completion got = collect(*streams[i]);
    EXPECT_EQ(got.ids, want[i].ids) << prompts[i] << (edited[i] ? " (edited)" : "");
    EXPECT_EQ(got.text, want[i].text);
    EXPECT_EQ(got.stop, want[i].stop);
  }
  EXPECT_GE(moved, 2);  // subject 1's capital and language
  const BatchStats st = (*gen)->stats();
  EXPECT_EQ(st.requests, static_cast<int64_t>(prompts.size()));
  EXPECT_EQ(st.busy_slots, 0);
  EXPECT_EQ(st.queued, 0);
  EXPECT_LT(st.passes, static_cast<int64_t>(prompts.size()) * 13);  // sequences shared passes
  (*gen)->shutdown(false);
  fs::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Tiers, BatchGenerate, ::testing::Values(TablesIn::Ram, TablesIn::Disk),
                         [](const auto& info) { return std::string(name(info.param)); });

TEST(BatchGenerator, CancelRefusalsAndShutdown) {
  edit_test::OneThread one;
  const auto& t = edit_test::trained();
  auto m = Model::load(t.model);
  ASSERT_TRUE(m.ok());
  auto tok = Tokenizer::load(t.model + "/tokenizer.model");
  ASSERT_TRUE(tok.ok());
  BatchOptions bo;
  bo.slots = 1;
  bo.max_queue = 1;
  auto gen = BatchGenerator::start(*m, *tok, bo);
  ASSERT_TRUE(gen.ok());
  BatchRequest req;
  req.prompt = t.corpus.queries[0].prompt;
  req.gen.max_new_tokens = 40;
  req.gen.stop_at_eos = false;
  // More completions than the slot and the queue hold: refused whole.
  Refusal why;
  BatchRequest many = req;
  many.n = 3;
  EXPECT_FALSE((*gen)->submit(many, &why).ok());
  EXPECT_EQ(why, Refusal::Busy);
  // 16 completions through the one slot; cancelled after the first token,
  // those not finished end with StopReason::Callback and free the slot.
  many.n = 16;
  bo.max_queue = 16;
  auto gen16 = BatchGenerator::start(*m, *tok, bo);
  ASSERT_TRUE(gen16.ok());
  auto first = (*gen16)->submit(many);
  ASSERT_TRUE(first.ok()) << first.status().message();
  BatchEvent ev;
  ASSERT_TRUE((*first)->next(&ev));
  (*first)->cancel();
  int cancelled = 0, done = 0;
  while ((*first)->next(&ev))
    if (ev.done) {
      ++done;
      cancelled += ev.stop == StopReason::Callback;
    }
  EXPECT_EQ(done, 16);
  EXPECT_GE(cancelled, 8);  // at most a few ran to the end meanwhile
  EXPECT_EQ((*gen16)->stats().busy_slots, 0);
  auto second = (*gen16)->submit(req);
  ASSERT_TRUE(second.ok());
  const Completion c = collect(**second);
  EXPECT_EQ(c.ids.size(), 40u);
  // Refusals, each with its reason.
  BatchRequest bad = req;
  bad.gen.max_new_tokens = 0;
  EXPECT_FALSE((*gen)->submit(bad, &why).ok());
  EXPECT_EQ(why, Refusal::Invalid);
  bad = req;
  bad.edit = "nope";
  auto r = (*gen)->submit(bad, &why);
  EXPECT_EQ(why, Refusal::UnknownEdit);
  EXPECT_NE(r.status().message().find("nope"), std::string::npos);
  bad = req;
  bad.prompt_ids.assign(m->config().max_position_embeddings + 1, 5);
  EXPECT_FALSE((*gen)->submit(bad, &why).ok());
  EXPECT_EQ(why, Refusal::TooLong);
  bad = req;
  bad.prompt_ids = {-1};
  EXPECT_FALSE((*gen)->submit(bad, &why).ok());
  EXPECT_EQ(why, Refusal::Invalid);
  // Shutdown lets a running request finish, then refuses.
  auto last = (*gen)->submit(req);
  ASSERT_TRUE(last.ok());
  std::thread stopper([&] { (*gen)->shutdown(false); });
  EXPECT_EQ(collect(**last).ids.size(), 40u);
  stopper.join();
  EXPECT_FALSE((*gen)->submit(req, &why).ok());
  EXPECT_EQ(why, Refusal::ShuttingDown);
  // Bad options and edits are errors at start.
  bo.slots = 0;
  EXPECT_FALSE(BatchGenerator::start(*m, *tok, bo).ok());
  bo.slots = 2;
  bo.edits = {{"x", "/nonexistent.ovl"}};
  auto e = BatchGenerator::start(*m, *tok, bo);
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.status().message().find("/nonexistent.ovl"), std::string::npos);
}

// stem bench batch's figures: one point per stream count, each round's
// tokens/s, the speed-up against the first count, and bad options refused
// before any work. Every OpenMP thread in use, so that the sequences of a
// pass sample in parallel. Speed itself is not asserted.
TEST(BatchGenerator, BenchReportsEveryStreamCount) {
  const auto& t = edit_test::trained();
  auto m = Model::load(t.model);
  ASSERT_TRUE(m.ok());
  auto tok = Tokenizer::load(t.model + "/tokenizer.model");
  ASSERT_TRUE(tok.ok());
  BatchBenchOptions o;
  o.streams = {1, 3};
  o.tokens = 6;
  o.prompt = 4;
  o.reps = 2;
  auto r = bench_batch(*m, *tok, o);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->slots, 3);
  ASSERT_EQ(r->points.size(), 2u);
  for (size_t k = 0; k < 2; ++k) {
    const BatchBenchPoint& p = r->points[k];
    EXPECT_EQ(p.streams, o.streams[k]);
    EXPECT_EQ(p.tokens_per_second_all.size(), 2u);
    EXPECT_GT(p.tokens_per_second, 0.0);
    EXPECT_GT(p.pass_ms, 0.0);
    EXPECT_LE(p.ttft_p50_ms, p.ttft_p99_ms);
    EXPECT_LE(p.itl_p50_ms, p.itl_p99_ms);
  }
  EXPECT_DOUBLE_EQ(r->points[0].speedup, 1.0);
  EXPECT_DOUBLE_EQ(r->points[1].speedup, r->points[1].tokens_per_second / r->points[0].tokens_per_second);
  o.streams = {};
  EXPECT_FALSE(bench_batch(*m, *tok, o).ok());
  o.streams = {1, 0};
  EXPECT_FALSE(bench_batch(*m, *tok, o).ok());
  o.streams = {2};
  o.prompt = m->config().max_position_embeddings;
  auto bad = bench_batch(*m, *tok, o);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("max_position_embeddings"), std::string::npos);
}

}  // namespace
}  // namespace stem
