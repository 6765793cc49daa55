// stem::generate() and TextStream (include/stem/generate.h): the same tokens
// as a hand-written decoder + sampler loop, every stop rule, streamed text
// that concatenates to the result (UTF-8 held back, stop strings cut), and
// several threads generating at once from one model (tables in RAM and on
// disk) giving what each gives alone. A model of random weights over the tiny
// corpus's tokenizer (train_test_util.h).
#include <gtest/gtest.h>

#include <random>

#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "infer/decoder.h"
#include "infer/sampler.h"
#include "model/engine.h"
#include "model/transformer.h"
#include "stem/generate.h"
#include "stem/model.h"
#include "train_test_util.h"

namespace stem {
namespace {
namespace fs = std::filesystem;

ModelConfig tiny_config() {
  ModelConfig c;
  c.vocab_size = 400;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 64;
  c.ffn_types = {FfnType::Stem, FfnType::Dense, FfnType::Stem};
  return c;
}

Tokenizer tiny_tokenizer() {
  auto t = Tokenizer::load(test::tiny().data + "/tokenizer.model");
  EXPECT_TRUE(t.ok()) << t.status().message();
  return std::move(*t);
}

// The loop generate() replaces, written out: prefill, then sample and step.
std::vector<int32_t> reference_ids(Model& m, const std::vector<int32_t>& prompt, const SamplerConfig& sc, int64_t n,
                                   int32_t eos) {
  infer::Decoder dec(engine(m), 0);
  infer::Sampler s(sc, m.config().vocab_size);
  auto logits = dec.prefill(prompt.data(), static_cast<int64_t>(prompt.size()));
  EXPECT_TRUE(logits.ok());
  std::vector<int32_t> out;
  for (int64_t i = 0; i < n && logits.ok(); ++i) {
    const int32_t id = s.sample(*logits);
    if (id == eos) break;
    out.push_back(id);
    if (i + 1 < n) logits = dec.step(id);
  }
  return out;
}

TEST(Generate, SameTokensAsTheDecoderLoopAndTextStreamsWhole) {
  auto m = Model::init(tiny_config(), 5);
  ASSERT_TRUE(m.ok());
  const Tokenizer tok = tiny_tokenizer();
  for (bool greedy : {true, false}) {
    GenerateOptions o;
    o.sampler.greedy = greedy;
    o.sampler.seed = 3;
    o.max_new_tokens = 40;
    std::string streamed;
    int calls = 0;
    auto r = generate(*m, tok, "It was a truth", o, [&](const GeneratedToken& t) {
      streamed += t.text;
      EXPECT_TRUE(t.id == -1 || t.logits != nullptr);
      ++calls;
      return true;
    });
    ASSERT_TRUE(r.ok()) << r.status().message();
    std::vector<int32_t> prompt = {tok.bos_id()};
    for (int32_t id : tok.encode("It was a truth")) prompt.push_back(id);
    EXPECT_EQ(r->prompt_ids, prompt);
    EXPECT_EQ(r->ids, reference_ids(*m, prompt, o.sampler, 40, tok.eos_id())) << "greedy " << greedy;
    EXPECT_EQ(streamed, r->text);
    std::vector<int32_t> cont(prompt.begin() + 1, prompt.end());
    const std::string before = tok.decode(cont);
    cont.insert(cont.end(), r->ids.begin(), r->ids.end());
    EXPECT_EQ(before + r->text, tok.decode(cont));
    EXPECT_GE(calls, static_cast<int>(r->ids.size()));
  }
}

TEST(Generate, StopRules) {
  auto m = Model::init(tiny_config(), 5);
  ASSERT_TRUE(m.ok());
  const Tokenizer tok = tiny_tokenizer();
  GenerateOptions o;
  o.sampler.greedy = true;
  o.max_new_tokens = 30;
  auto full = generate(*m, tok, "She said", o);
  ASSERT_TRUE(full.ok());
  EXPECT_EQ(full->stop, StopReason::Length);
  ASSERT_GE(full->text.size(), 6u);
  // A stop string from the middle of the text: cut there, never streamed.
  const std::string stop = full->text.substr(3, 3);
  o.stop = {stop};
  std::string streamed;
  auto cut = generate(*m, tok, "She said", o, [&](const GeneratedToken& t) {
    streamed += t.text;
    return true;
  });
  ASSERT_TRUE(cut.ok());
  EXPECT_EQ(cut->stop, StopReason::StopString);
  EXPECT_EQ(cut->text, full->text.substr(0, full->text.find(stop)));
  EXPECT_EQ(streamed, cut->text);
  // The callback stops it; the context stops it.
  o.stop.clear();
  auto cb = generate(*m, tok, "She said", o, [](const GeneratedToken& t) { return t.index < 4; });
  ASSERT_TRUE(cb.ok());
  EXPECT_EQ(cb->stop, StopReason::Callback);
  EXPECT_EQ(cb->ids.size(), 5u);
  o.max_context = 8;
  auto ctx = generate(*m, std::vector<int32_t>{5, 6, 7}, o);
  ASSERT_TRUE(ctx.ok());
  EXPECT_EQ(ctx->stop, StopReason::Context);
  EXPECT_EQ(ctx->ids.size(), 6u);  // 8 positions: 3 fed, 5 generated and fed, 1 more sampled
  EXPECT_TRUE(ctx->text.empty());
  // Errors, each naming what is wrong.
  o.max_context = 0;
  o.max_new_tokens = 0;
  EXPECT_NE(generate(*m, tok, "x", o).status().message().find("max_new_tokens = 0"), std::string::npos);
  o.max_new_tokens = 4;
  EXPECT_NE(generate(*m, std::vector<int32_t>{1, 400}, o).status().message().find("token id 400 at index 1"),
            std::string::npos);
  EXPECT_NE(generate(*m, std::vector<int32_t>(65, 1), o).status().message().find("longer than the context"),
            std::string::npos);
  o.stop = {""};
  EXPECT_NE(generate(*m, tok, "x", o).status().message().find("stop string is empty"), std::string::npos);
}

TEST(Generate, TextStreamHoldsBackPartialCharactersAndStopPrefixes) {
  const Tokenizer tok = tiny_tokenizer();
  // "é" is two bytes, each its own byte-fallback piece in a 400-piece vocabulary.
  const std::vector<int32_t> ids = tok.encode("caf\xC3\xA9 au lait");
  TextStream plain(tok, {});
  std::string got;
  for (int32_t id : ids) {
    const std::string s = plain.push(id);
    // never half a character
    EXPECT_TRUE(s.empty() || (static_cast<unsigned char>(s.back()) & 0xC0) != 0xC0) << s;
    got += s;
  }
  got += plain.finish();
  EXPECT_EQ(got, tok.decode(ids));
  // A stop string is held back while it may still complete, and cut when it does.
  TextStream st(tok, {}, {"au l"});
  got.clear();
  for (int32_t id : ids) got += st.push(id);
  EXPECT_TRUE(st.stopped());
  EXPECT_EQ(got, std::string("caf\xC3\xA9 "));
  EXPECT_EQ(st.text(), got);
}

// TextStream decodes a window of a few tokens per push, not the whole
// sequence: what it returns, pushed one id at a time, is what decoding
// everything gives after the context, for random ids (byte-fallback pieces
// of broken characters included) and for text with multi-byte characters.
TEST(Generate, TextStreamWindowsEqualTheWholeDecode) {
  const Tokenizer tok = tiny_tokenizer();
  std::mt19937 rng(7);
  std::uniform_int_distribution<int32_t> any(0, static_cast<int32_t>(tok.vocab_size() - 1));
  auto check = [&](const std::vector<int32_t>& context, const std::vector<int32_t>& gen) {
    const std::string before = tok.decode(context);
    if (!before.empty() && before.back() & 0x80) return false;  // a context cut inside a character: no clean base
    TextStream st(tok, context);
    std::string got;
    for (int32_t id : gen) got += st.push(id);
    got += st.finish();
    std::vector<int32_t> all = context;
    all.insert(all.end(), gen.begin(), gen.end());
    const std::string whole = tok.decode(all);
    EXPECT_EQ(got, whole.substr(std::min(before.size(), whole.size()))) << "context " << context.size();
    return true;
  };
  int checked = 0;
  for (int round = 0; round < 300; ++round) {
    std::vector<int32_t> context(static_cast<size_t>(rng() % 6)), gen(static_cast<size_t>(1 + rng() % 40));
    for (auto& id : context) id = any(rng);
    for (auto& id : gen) id = any(rng);
    checked += check(context, gen);
  }
  EXPECT_GT(checked, 200);
  const std::vector<int32_t> text = tok.encode("It was a caf\xC3\xA9 \xE2\x82\xAC5, na\xC3\xAFve, \xF0\x9F\x99\x82 and so on");
  for (size_t k = 0; k < 6; ++k)
    EXPECT_TRUE(check({text.begin(), text.begin() + static_cast<std::ptrdiff_t>(k)},
                      {text.begin() + static_cast<std::ptrdiff_t>(k), text.end()}));
}

TEST(Generate, ThreadsSharingAModelGetWhatEachGetsAlone) {
  // Two and three decoders on one model at once, tables in RAM and on disk
  // (a shared table store with a row cache).
  const fs::path dir = test::scratch() / "gen_shared";
  {
    auto m = Model::init(tiny_config(), 9);
    ASSERT_TRUE(m.ok());
    ASSERT_TRUE(m->save(dir.string()).ok());
  }
  const Tokenizer tok = tiny_tokenizer();
  const std::vector<std::string> prompts = {"It was", "The weather", "Anne had not"};
  for (const char* tier : {"ram", "disk"}) {
    LoadOptions lo;
    lo.tables = *parse_tables_in(tier);
    lo.table_cache_mb = 0;  // every fetch reads the file
    auto m = Model::load(dir.string(), lo);
    ASSERT_TRUE(m.ok()) << m.status().message();
    std::vector<GenerateResult> alone;
    GenerateOptions o;
    o.max_new_tokens = 24;
    for (size_t i = 0; i < prompts.size(); ++i) {
      o.sampler.seed = i;
      auto r = generate(*m, tok, prompts[i], o);
      ASSERT_TRUE(r.ok()) << r.status().message();
      alone.push_back(*r);
    }
    for (int round = 0; round < 3; ++round) {
      std::vector<Result<GenerateResult>> together(prompts.size(), Status::error("not run"));
      std::vector<std::thread> threads;
      for (size_t i = 0; i < prompts.size(); ++i)
        threads.emplace_back([&, i] {
          GenerateOptions oi = o;
          oi.sampler.seed = i;
          together[i] = generate(*m, tok, prompts[i], oi);
        });
      for (auto& t : threads) t.join();
      for (size_t i = 0; i < prompts.size(); ++i) {
        ASSERT_TRUE(together[i].ok()) << together[i].status().message();
        EXPECT_EQ(together[i]->ids, alone[i].ids) << tier << " prompt " << i << " round " << round;
      }
    }
  }
}

}  // namespace
}  // namespace stem
