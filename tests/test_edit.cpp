// Knowledge editing, the library (src/edit/):
//   - overlays: file round trip; malformed files (magic, version, truncation,
//     checksum, shape, entries) rejected with one-line errors naming the file;
//     apply then revert gives logits bitwise equal to the base model's;
//   - on a small STEM model trained on the synthetic fact corpus
//     (edit_test_util.h): swapping subject A's rows for B's makes the greedy
//     answers B's for >= 90% of pairs while answers about other subjects stay
//     for >= 95%; injection teaches a fact the model did not know and changes
//     only the rows it names; token forms, layer specs and mismatch rules;
//   - the analyses' forward pass against the Transformer, cosine statistics
//     and capacity on known inputs.
// The CLI is in test_edit_cli.cpp.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstring>
#include <random>

#include "cli_test_util.h"
#include "edit/analyze.h"
#include "edit/inject.h"
#include "edit/swap.h"
#include "edit_test_util.h"
#include "kernels/kernels.h"
#include "model/engine.h"

namespace stem {
namespace {
using namespace edit_test;

class EditFiles : public test::TempDirTest {};

TEST_F(EditFiles, OverlayRoundTrip) {
  const ModelConfig cfg = small_config();
  const edit::Overlay ov = random_overlay(cfg, 6, 1);
  ASSERT_TRUE(edit::write_overlay(ov, p("a.ovl")).ok());
  auto back = edit::read_overlay(p("a.ovl"));
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(back->shape, ov.shape);
  EXPECT_EQ(back->note, ov.note);
  EXPECT_EQ(back->keys, ov.keys);
  EXPECT_EQ(0, std::memcmp(back->rows.data(), ov.rows.data(), ov.rows.size() * 4));
  EXPECT_TRUE(edit::check_overlay(*back, cfg, "a.ovl").ok());
  EXPECT_EQ(fs::file_size(p("a.ovl")), 64u + 4 * 2 + ov.note.size() + 6 * (8 + 4 * 24) + 8);
}

TEST_F(EditFiles, MalformedOverlaysAreOneLineErrors) {
  const ModelConfig cfg = small_config();
  ASSERT_TRUE(edit::write_overlay(random_overlay(cfg, 3, 2), p("good.ovl")).ok());
  std::string bytes;
  {
    std::ifstream in(p("good.ovl"), std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  auto expect_error = [&](const std::string& name, const std::string& content, const std::string& needle) {
    std::ofstream(p(name), std::ios::binary) << content;
    auto r = edit::read_overlay(p(name));
    ASSERT_FALSE(r.ok()) << name;
    const std::string msg = r.status().message();
    EXPECT_NE(msg.find(p(name)), std::string::npos) << msg;
    EXPECT_NE(msg.find(needle), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  };
  expect_error("magic.ovl", "NOTANOVL" + bytes.substr(8), "not a stem edit overlay");
  expect_error("empty.ovl", "", "not a stem edit overlay");
  std::string v = bytes;
  v[8] = 9;
  expect_error("version.ovl", v, "version 9");
  expect_error("trunc.ovl", bytes.substr(0, bytes.size() - 13), "truncated");
  expect_error("header.ovl", bytes.substr(0, 30), "truncated");
  expect_error("trailing.ovl", bytes + "x", "trailing");
  std::string c = bytes;
  c[c.size() - 20] ^= 0x40;  // a row value
  expect_error("flip.ovl", c, "checksum");

  // A well-formed file whose first entry names a dense layer (checksum redone).
  std::string e = bytes;
  const size_t first_entry = 64 + 4 * 2 + std::string(R"({"kind":"test"})").size();
  e[first_entry] = 0;
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i + 8 < e.size(); ++i) h = (h ^ static_cast<unsigned char>(e[i])) * 0x100000001b3ull;
  std::memcpy(e.data() + e.size() - 8, &h, 8);
  expect_error("entry.ovl", e, "entry 0: layer 0 is not a STEM layer (STEM layers: 1,2)");
  // Shape mismatch against a model.
  auto other = small_config();
  other.vocab_size = 60;
  auto ov = edit::read_overlay(p("good.ovl"));
  ASSERT_TRUE(ov.ok());
  Status st = edit::check_overlay(*ov, other, "good.ovl");
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("vocab_size 50"), std::string::npos) << st.message();
  other = small_config();
  other.ffn_types = {FfnType::Stem, FfnType::Dense, FfnType::Stem};
  st = edit::check_overlay(*ov, other, "good.ovl");
  EXPECT_NE(st.message().find("STEM layers [1,2]"), std::string::npos) << st.message();
  // Entries: not a STEM layer, token out of range, twice, NaN.
  edit::Overlay bad = random_overlay(cfg, 2, 3);
  bad.keys[0].layer = 0;
  EXPECT_NE(edit::write_overlay(bad, p("x.ovl")).message().find("layer 0 is not a STEM layer"), std::string::npos);
  bad = random_overlay(cfg, 2, 3);
  bad.keys[1].token = 50;
  EXPECT_NE(edit::write_overlay(bad, p("x.ovl")).message().find("token 50 is outside"), std::string::npos);
  bad = random_overlay(cfg, 2, 3);
  bad.keys[1] = bad.keys[0];
  EXPECT_NE(edit::write_overlay(bad, p("x.ovl")).message().find("appears twice"), std::string::npos);
  bad = random_overlay(cfg, 2, 3);
  bad.rows[5] = NAN;
  EXPECT_NE(edit::write_overlay(bad, p("x.ovl")).message().find("NaN"), std::string::npos);
  EXPECT_FALSE(fs::exists(p("x.ovl")));
}


// ---------------------------------------------------------------- trained model

TEST(EditTrained, SubjectsAreSingleTokensAndTheModelKnowsTheFacts) {
  OneThread one_thread;
  LoadedModel lm = load_trained();
  const auto& c = trained().corpus;
  for (const auto& s : c.subjects) {
    auto forms = edit::token_forms(lm.tok, s.name, edit::FormSet::Words, "subject");
    ASSERT_TRUE(forms.ok());
    ASSERT_EQ(forms->size(), 1u) << s.name;  // start and mid forms agree (dummy prefix)
    EXPECT_EQ((*forms)[0].kinds, (std::vector<std::string>{"start", "mid"}));
    EXPECT_EQ((*forms)[0].ids.size(), 1u) << s.name << ": " << edit::show_pieces(lm.tok, (*forms)[0].ids);
    auto all = edit::token_forms(lm.tok, s.name, edit::FormSet::All, "subject");  // + after a newline, no space
    ASSERT_TRUE(all.ok());
    ASSERT_EQ(all->size(), 2u) << s.name;
    EXPECT_EQ((*all)[1].kinds, std::vector<std::string>{"line"});
  }
  int known = 0;
  for (const auto& q : c.queries) known += says(engine(lm.m), lm.tok, q.prompt, q.answer);
  const double rate = static_cast<double>(known) / static_cast<double>(c.queries.size());
  std::printf("[ base model ] %d of %zu queries answered (%.1f%%)\n", known, c.queries.size(), 100 * rate);
  EXPECT_GE(rate, 0.95);
}

TEST(EditTrained, SwapMakesTheModelAnswerWithTheOtherSubjectsFacts) {
  OneThread one_thread;
  LoadedModel lm = load_trained();
  model::Transformer& m = engine(lm.m);
  const auto& subs = trained().corpus.subjects;
  const ModelConfig& cfg = m.config();
  edit::SwapOptions opt;
  opt.layers = all_stem_layers(cfg);
  edit::TensorListRows rows(m.weights());
  const int n = static_cast<int>(subs.size());
  // What the base model says, per subject and attribute (template 0).
  std::vector<std::array<bool, 2>> base(n);
  const char* kAttrs[2] = {"capital", "language"};
  for (int k = 0; k < n; ++k)
    for (int a = 0; a < 2; ++a) base[k][a] = says(m, lm.tok, edit::fact_prompt(kAttrs[a], 0, subs[k].name), value(subs[k], kAttrs[a]));
  int flipped = 0, flipped_all = 0, pairs = 0, kept = 0, others = 0;
  int paraphrase = 0, paraphrases = 0;
  for (int i = 0; i < n; ++i) {
    const int j = (i + 1) % n;
    auto plan = edit::plan_swap(lm.tok, cfg, rows, subs[i].name, subs[j].name, opt);
    ASSERT_TRUE(plan.ok()) << plan.status().message();
    ASSERT_EQ(plan->overlay.size(), opt.layers.size());  // one token, every STEM layer
    auto undo = edit::apply_overlay(plan->overlay, m.weights());
    ASSERT_TRUE(undo.ok());
    bool all = true;
    for (int a = 0; a < 2; ++a) {
      const bool ok = says(m, lm.tok, edit::fact_prompt(kAttrs[a], 0, subs[i].name), value(subs[j], kAttrs[a]));
      flipped += ok;
      all = all && ok;
      ++pairs;
      for (int t = 1; t < edit::kFactTemplatesPerAttribute; ++t, ++paraphrases)
        paraphrase += says(m, lm.tok, edit::fact_prompt(kAttrs[a], t, subs[i].name), value(subs[j], kAttrs[a]));
    }
    flipped_all += all;
    for (int k = 0; k < n; ++k) {
      if (k == i) continue;
      for (int a = 0; a < 2; ++a, ++others)
        kept += says(m, lm.tok, edit::fact_prompt(kAttrs[a], 0, subs[k].name), value(subs[k], kAttrs[a])) == base[k][a];
    }
    ASSERT_TRUE(edit::apply_overlay(*undo, m.weights()).ok());
  }
  const double success = static_cast<double>(flipped) / pairs, locality = static_cast<double>(kept) / others;
  std::printf("[ swap ] answers flipped to the other subject's: %d/%d (%.1f%%), both attributes %d/%d; "
              "paraphrases %d/%d; other subjects' answers unchanged %d/%d (%.1f%%)\n",
              flipped, pairs, 100 * success, flipped_all, n, paraphrase, paraphrases, kept, others, 100 * locality);
  EXPECT_GE(success, 0.90);
  EXPECT_GE(locality, 0.95);
}

TEST(EditTrained, InjectionTeachesAFactAndChangesOnlyTheRowsItNames) {
  OneThread one_thread;
  LoadedModel lm = load_trained();
  model::Transformer& m = engine(lm.m);
  const auto& c = trained().corpus;
  const edit::FactSubject& s2 = c.subjects[2];
  const std::string new_capital = " " + c.subjects[3].capital;
  const std::string path = trained().facts + "/inject_facts.jsonl";
  auto facts = edit::read_facts(path);
  ASSERT_TRUE(facts.ok()) << facts.status().message();
  auto seqs = edit::fact_sequences(lm.tok, *facts, m.config().max_position_embeddings, path);
  ASSERT_TRUE(seqs.ok());
  auto tokens = edit::injection_tokens(lm.tok, *facts, *seqs, {}, path);
  ASSERT_TRUE(tokens.ok()) << tokens.status().message();
  ASSERT_EQ(tokens->size(), 1u);  // the subject, one token
  for (int t = 0; t < edit::kFactTemplatesPerAttribute; ++t)
    EXPECT_FALSE(says(m, lm.tok, edit::fact_prompt("capital", t, s2.name), new_capital)) << "already knew it";

  const model::TensorList& w = m.weights();
  std::vector<std::vector<char>> before(w.size());
  for (size_t i = 0; i < w.size(); ++i)
    before[i].assign(static_cast<const char*>(w[i].raw()), static_cast<const char*>(w[i].raw()) + w[i].nbytes());
  edit::InjectOptions opt;
  opt.layers = all_stem_layers(m.config());
  auto r = edit::inject_rows(m, *seqs, *tokens, opt);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_LT(r->loss_after, r->loss_before);
  for (size_t i = 0; i < w.size(); ++i)
    EXPECT_EQ(0, std::memcmp(w[i].raw(), before[i].data(), before[i].size())) << "inject left " << w.spec(i).name << " changed";
  ASSERT_EQ(r->overlay.size(), opt.layers.size());
  for (const auto& k : r->overlay.keys) EXPECT_EQ(k.token, (*tokens)[0]);

  auto undo = edit::apply_overlay(r->overlay, m.weights());
  ASSERT_TRUE(undo.ok());
  int learned = 0, kept = 0, others = 0;
  for (int t = 0; t < edit::kFactTemplatesPerAttribute; ++t) {
    learned += says(m, lm.tok, edit::fact_prompt("capital", t, s2.name), new_capital);
    kept += says(m, lm.tok, edit::fact_prompt("language", t, s2.name), " " + s2.language);
  }
  for (size_t k = 0; k < c.subjects.size(); ++k)
    if (k != 2) others += says(m, lm.tok, edit::fact_prompt("capital", 0, c.subjects[k].name), " " + c.subjects[k].capital);
  std::printf("[ inject ] loss %.3f -> %.3f; new capital stated in %d/3 templates, language kept %d/3, "
              "other subjects' capitals %d/%zu\n", r->loss_before, r->loss_after, learned, kept, others,
              c.subjects.size() - 1);
  EXPECT_EQ(learned, 3);
  EXPECT_EQ(kept, 3);
  EXPECT_EQ(others, static_cast<int>(c.subjects.size()) - 1);
  // Only the named rows differ from the base model: every other tensor and row bitwise equal.
  for (size_t i = 0; i < w.size(); ++i) {
    if (w.spec(i).kind != model::ParamKind::StemTable) {
      EXPECT_EQ(0, std::memcmp(w[i].raw(), before[i].data(), before[i].size())) << w.spec(i).name;
      continue;
    }
    const int64_t V = w[i].dim(0), f = w[i].dim(1);
    for (int64_t t = 0; t < V; ++t) {
      const bool named = r->overlay.find(w.spec(i).layer, static_cast<int32_t>(t)) >= 0;
      const bool same = std::memcmp(w[i].f32() + t * f, before[i].data() + t * f * 4, f * 4) == 0;
      EXPECT_NE(named, same) << w.spec(i).name << " row " << t;
    }
  }
  ASSERT_TRUE(edit::apply_overlay(*undo, m.weights()).ok());
  for (size_t i = 0; i < w.size(); ++i) EXPECT_EQ(0, std::memcmp(w[i].raw(), before[i].data(), before[i].size()));
}

TEST(EditTrained, LayersFormsAndMismatchRules) {
  OneThread one_thread;
  LoadedModel lm = load_trained();
  const ModelConfig& cfg = lm.m.config();
  const auto& subs = trained().corpus.subjects;
  auto layers = edit::parse_layers("all", cfg);
  ASSERT_TRUE(layers.ok());
  EXPECT_EQ(*layers, (std::vector<int32_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(*edit::parse_layers("1, 3-4", cfg), (std::vector<int32_t>{1, 3, 4}));
  EXPECT_EQ(edit::parse_layers("5", cfg).status().message(),
            "--layers: layer 5 is a dense layer, not a STEM layer (STEM layers: 0,1,2,3,4)");
  EXPECT_NE(edit::parse_layers("9", cfg).status().message().find("outside [0, 6)"), std::string::npos);
  EXPECT_NE(edit::parse_layers("x", cfg).status().message().find("'x' is not a layer index"), std::string::npos);
  EXPECT_EQ(edit::token_forms(lm.tok, "  ", edit::FormSet::Words, "--from").status().message(),
            "--from: empty string: nothing to tokenize");
  // "▁" alone (emitted before words that have no "▁word" piece) is never part of a form.
  const std::vector<int32_t> zq = lm.tok.encode("zq");
  ASSERT_TRUE(!zq.empty() && lm.tok.piece(zq[0]) == "\xE2\x96\x81") << edit::show_pieces(lm.tok, zq);
  auto rare = edit::token_forms(lm.tok, "zq", edit::FormSet::All, "--from");
  ASSERT_TRUE(rare.ok());
  for (const auto& f : *rare)
    for (int32_t id : f.ids) EXPECT_NE(lm.tok.piece(id), "\xE2\x96\x81") << f.kinds[0];

  edit::TensorListRows rows(engine(lm.m).weights());
  const int32_t A = edit::token_forms(lm.tok, subs[0].name, edit::FormSet::Words, "a")->at(0).ids[0];
  const int32_t B = edit::token_forms(lm.tok, subs[1].name, edit::FormSet::Words, "b")->at(0).ids[0];
  const int32_t C = edit::token_forms(lm.tok, subs[1].capital, edit::FormSet::Words, "c")->at(0).ids[0];
  const std::string two = subs[1].name + " " + subs[1].capital;  // tokens B C
  auto plan = [&](const std::string& from, const std::string& to, edit::Align al, edit::Mismatch mm,
                  std::vector<int32_t> subset = {}, bool exchange = false) {
    edit::SwapOptions o;
    o.layers = {0, 2};
    o.align = al;
    o.mismatch = mm;
    o.subset = std::move(subset);
    o.exchange = exchange;
    return edit::plan_swap(lm.tok, cfg, rows, from, to, o);
  };
  auto row = [&](int layer, int32_t token) {
    std::vector<float> r(cfg.intermediate_size);
    EXPECT_TRUE(rows.read_row(layer, token, r.data()).ok());
    return r;
  };
  auto got = [&](const edit::SwapPlan& p, int layer, int32_t token) {
    const int64_t i = p.overlay.find(layer, token);
    EXPECT_GE(i, 0);
    return std::vector<float>(p.overlay.row(i), p.overlay.row(i) + cfg.intermediate_size);
  };
  using edit::Align;
  using edit::Mismatch;
  // One source token, two target tokens.
  auto p = plan(subs[0].name, two, Align::Left, Mismatch::Pad);
  ASSERT_TRUE(p.ok()) << p.status().message();
  EXPECT_EQ(p->changed_tokens, std::vector<int32_t>{A});
  EXPECT_EQ(got(*p, 2, A), row(2, B));
  p = plan(subs[0].name, two, Align::Right, Mismatch::Pad);
  EXPECT_EQ(got(*p, 2, A), row(2, C));
  p = plan(subs[0].name, two, Align::Left, Mismatch::Subset, {1});
  EXPECT_EQ(got(*p, 0, A), row(0, C));
  p = plan(subs[0].name, two, Align::Left, Mismatch::Average);
  const auto avg = got(*p, 0, A), rb = row(0, B), rc = row(0, C);
  for (int64_t k = 0; k < cfg.intermediate_size; ++k) EXPECT_FLOAT_EQ(avg[k], (rb[k] + rc[k]) * 0.5f);
  EXPECT_NE(plan(subs[0].name, two, Align::Left, Mismatch::Subset, {0, 1}).status().message().find("2 indices given"),
            std::string::npos);
  EXPECT_NE(plan(subs[0].name, two, Align::Left, Mismatch::Subset, {2}).status().message().find("index 2"),
            std::string::npos);
  // Two source tokens, one target: pad keeps the unpaired one, copy fills it.
  const std::string src2 = subs[0].name + " " + subs[0].capital;
  const int32_t A2 = edit::token_forms(lm.tok, subs[0].capital, edit::FormSet::Words, "a2")->at(0).ids[0];
  p = plan(src2, subs[1].name, Align::Left, Mismatch::Pad);
  EXPECT_EQ(p->changed_tokens, std::vector<int32_t>{A});
  p = plan(src2, subs[1].name, Align::Right, Mismatch::Pad);
  EXPECT_EQ(p->changed_tokens, std::vector<int32_t>{A2});
  p = plan(src2, subs[1].name, Align::Left, Mismatch::Copy);
  EXPECT_EQ(p->changed_tokens, (std::vector<int32_t>{std::min(A, A2), std::max(A, A2)}));
  EXPECT_EQ(got(*p, 0, A2), row(0, B));
  // Conflicts, nothing to do, exchange.
  EXPECT_NE(plan(subs[0].name + " " + subs[0].name, two, Align::Left, Mismatch::Pad).status().message().find(
                "would take two different rows"),
            std::string::npos);
  EXPECT_NE(plan(subs[0].name, subs[0].name, Align::Left, Mismatch::Pad).status().message().find("nothing to change"),
            std::string::npos);
  p = plan(subs[0].name, subs[1].name, Align::Left, Mismatch::Pad, {}, /*exchange=*/true);
  EXPECT_EQ(p->changed_tokens, (std::vector<int32_t>{std::min(A, B), std::max(A, B)}));
  EXPECT_EQ(got(*p, 2, A), row(2, B));
  EXPECT_EQ(got(*p, 2, B), row(2, A));
}

// ---------------------------------------------------------------- small random models

std::vector<float> logits_of(Model& m, const std::vector<int32_t>& ids) {
  std::vector<float> out;
  auto r = m.score(ids, 1, static_cast<int64_t>(ids.size()), &out);
  EXPECT_TRUE(r.ok()) << r.status().message();
  return out;
}

TEST_F(EditFiles, ApplyThenRevertIsBitwise) {
  const ModelConfig cfg = small_config();
  auto m = Model::init(cfg, 5);
  ASSERT_TRUE(m.ok());
  const std::vector<int32_t> ids = {1, 3, 8, 13, 4, 18, 3, 23, 9, 2, 8, 28};
  const std::vector<float> base = logits_of(*m, ids);
  const model::TensorList& w = engine(*m).weights();
  std::vector<std::vector<char>> snap(w.size());
  for (size_t i = 0; i < w.size(); ++i)
    snap[i].assign(static_cast<const char*>(w[i].raw()), static_cast<const char*>(w[i].raw()) + w[i].nbytes());
  // Two overlays over overlapping rows, from files, applied in order, then reverted.
  ASSERT_TRUE(edit::write_overlay(random_overlay(cfg, 6, 9), p("a.ovl")).ok());
  ASSERT_TRUE(edit::write_overlay(random_overlay(cfg, 4, 10), p("b.ovl")).ok());
  std::vector<edit::Overlay> undo;
  ASSERT_TRUE(edit::apply_overlay_files({p("a.ovl"), p("b.ovl")}, cfg, engine(*m).weights(), &undo).ok());
  const std::vector<float> edited = logits_of(*m, ids);
  EXPECT_NE(0, std::memcmp(edited.data(), base.data(), base.size() * 4));
  auto b = edit::read_overlay(p("b.ovl"));
  const int64_t k = b->find(1, 3);
  ASSERT_GE(k, 0);
  const Tensor& t1 = w[w.find("model.layers.1.mlp.stem_embedding.weight")];
  EXPECT_EQ(0, std::memcmp(t1.f32() + 3 * cfg.intermediate_size, b->row(k), cfg.intermediate_size * 4));  // b wins
  ASSERT_TRUE(edit::revert_overlays(undo, engine(*m).weights()).ok());
  const std::vector<float> back = logits_of(*m, ids);
  EXPECT_EQ(0, std::memcmp(back.data(), base.data(), base.size() * 4));
  for (size_t i = 0; i < w.size(); ++i) EXPECT_EQ(0, std::memcmp(w[i].raw(), snap[i].data(), snap[i].size()));
  // A file that does not fit leaves the model as it was (all or nothing).
  ModelConfig other = cfg;
  other.vocab_size = 60;
  edit::Overlay wrong = random_overlay(other, 2, 3);
  ASSERT_TRUE(edit::write_overlay(wrong, p("wrong.ovl")).ok());
  Status st = edit::apply_overlay_files({p("a.ovl"), p("wrong.ovl")}, cfg, engine(*m).weights());
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find(p("wrong.ovl") + ": made for a model with vocab_size 60, but this model has 50"),
            std::string::npos) << st.message();
  for (size_t i = 0; i < w.size(); ++i) EXPECT_EQ(0, std::memcmp(w[i].raw(), snap[i].data(), snap[i].size()));
}

TEST(EditAnalyze, ObserverAndDenseUpOutputs) {
  auto cfg = ModelConfig::from_json(R"({"model_type": "stem", "vocab_size": 40, "hidden_size": 16,
    "intermediate_size": 24, "num_hidden_layers": 3, "num_attention_heads": 4,
    "num_key_value_heads": 2, "max_position_embeddings": 16, "rope_theta": 10000.0,
    "rms_norm_eps": 1e-5, "tie_word_embeddings": false,
    "ffn_types": ["dense", "stem", "hash_moe"], "num_hash_experts": 2})",
                                    "cfg");
  ASSERT_TRUE(cfg.ok());
  auto m = Model::init(*cfg, 3);
  ASSERT_TRUE(m.ok());
  const std::vector<int32_t> ids = {1, 5, 9, 33, 5, 12, 7, 0, 39, 2};
  const int64_t T = static_cast<int64_t>(ids.size()), d = 16, f = 24;
  const std::vector<float> want = logits_of(*m, ids);
  // The observer sees every layer's FFN input, and changes nothing.
  std::vector<int> layers;
  std::vector<float> x0;
  engine(*m).set_observer([&](int l, const float* x, int64_t N, int64_t dim) {
    layers.push_back(l);
    EXPECT_EQ(N, T);
    EXPECT_EQ(dim, d);
    if (l == 0) x0.assign(x, x + N * dim);
  });
  EXPECT_EQ(logits_of(*m, ids), want);
  engine(*m).set_observer(nullptr);
  EXPECT_EQ(layers, (std::vector<int>{0, 1, 2}));
  // W_up x of the dense layer 0 in windows of 4: the first window's positions
  // see the same (causal) context as in the whole sequence.
  const auto ups = edit::dense_up_outputs(engine(*m), ids, 4, 9);
  ASSERT_EQ(ups.size(), 1u);
  ASSERT_EQ(ups.at(0).size(), 9u * 24u);
  std::vector<float> u(T * f);
  kernels::linear_forward(u.data(), x0.data(), engine(*m).layer(0).w_up, T, d, f);
  for (int64_t i = 0; i < 4 * f; ++i) ASSERT_NEAR(ups.at(0)[i], u[i], 1e-5f) << i;
  EXPECT_EQ(logits_of(*m, ids), want);  // and the model is as it was
}

TEST(EditAnalyze, CosineStatsAndCapacity) {
  const std::vector<float> basis = {1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0};  // 3 orthogonal + 1 zero
  auto s = edit::cosine_stats(basis.data(), 4, 3, 1000, 0, 4);
  EXPECT_EQ(s.vectors, 3);
  EXPECT_EQ(s.pairs, 3);
  EXPECT_FALSE(s.sampled);
  EXPECT_DOUBLE_EQ(s.mean_abs_cos, 0.0);
  EXPECT_EQ(s.histogram, (std::vector<int64_t>{0, 0, 3, 0}));
  const std::vector<float> pm = {1, 2, -1, -2, 2, 4};
  s = edit::cosine_stats(pm.data(), 3, 2, 1000, 0, 4);
  EXPECT_NEAR(s.mean_cos, -1.0 / 3.0, 1e-12);
  EXPECT_NEAR(s.mean_abs_cos, 1.0, 1e-12);
  EXPECT_NEAR(s.p95_abs_cos, 1.0, 1e-12);
  std::vector<float> many(200 * 8);
  std::mt19937 rng(1);
  std::normal_distribution<float> nd;
  for (float& x : many) x = nd(rng);
  s = edit::cosine_stats(many.data(), 200, 8, 500, 4, 10);
  EXPECT_TRUE(s.sampled);
  EXPECT_EQ(s.pairs, 500);
  int64_t total = 0;
  for (int64_t c : s.histogram) total += c;
  EXPECT_EQ(total, 500);

  const ModelConfig cfg = small_config();  // 2 STEM layers, f = 24, V = 50
  std::vector<int32_t> ids;
  for (int r = 0; r < 3; ++r)
    for (int i = 0; i < 16; ++i) ids.push_back(i);
  auto curve = edit::capacity_curve(cfg, ids, 16, 4);
  ASSERT_TRUE(curve.ok());
  ASSERT_EQ(curve->size(), 5u);  // 1 2 4 8 16
  for (const auto& p : *curve) {
    EXPECT_DOUBLE_EQ(p.distinct_tokens, static_cast<double>(p.context));
    EXPECT_DOUBLE_EQ(p.stem_params, p.context * 24.0 * 2);
  }
  EXPECT_FALSE(edit::capacity_curve(cfg, {}, 16, 4).ok());
}

}  // namespace
}  // namespace stem
