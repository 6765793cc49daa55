// Knowledge editing, the CLI as a user runs it: `stem edit facts|swap|inject|
// eval|apply|show`, `--edit` on generate/score/eval, `stem analyze
// spread|capacity`, on the trained fact model (edit_test_util.h); outputs
// checked against each other (an applied checkpoint scores like the base with
// --edit), bad input as one-line errors with exit code 1, usage errors 2.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <set>
#include <nlohmann/json.hpp>

#include "cli_test_util.h"
#include "edit_test_util.h"
#include "stem/facts.h"

namespace stem {
namespace {
using namespace edit_test;
using test::CmdResult;
using test::stem_cmd;

// ---------------------------------------------------------------- the CLI

class EditCli : public test::TempDirTest {
 protected:
  // The commands run on the tiny trained model: one thread each (see OneThread).
  void SetUp() override {
    TempDirTest::SetUp();
    if (const char* v = std::getenv("OMP_NUM_THREADS")) saved_threads_ = v;
    ::setenv("OMP_NUM_THREADS", "1", 1);
  }
  void TearDown() override {
    if (saved_threads_.empty()) ::unsetenv("OMP_NUM_THREADS");
    else ::setenv("OMP_NUM_THREADS", saved_threads_.c_str(), 1);
    TempDirTest::TearDown();
  }
  std::string saved_threads_;
  static std::string q(const std::string& s) { return "'" + s + "'"; }
  void train_several_piece_model();
  const std::string& model() const { return trained().model; }
  std::string facts(const std::string& f) const { return trained().facts + "/" + f; }
  const edit::FactSubject& subject(int i) const { return trained().corpus.subjects[i]; }
};

TEST_F(EditCli, HelpEverywhere) {
  for (const char* sub : {"edit facts", "edit swap", "edit inject", "edit eval", "edit apply", "edit show",
                          "analyze spread", "analyze capacity"}) {
    CmdResult r = stem_cmd(std::string(sub) + " --help");
    EXPECT_EQ(r.code, 0) << sub;
    EXPECT_NE(r.out.find("--json"), std::string::npos) << sub;
  }
  for (const char* sub : {"generate", "score", "eval"})
    EXPECT_NE(stem_cmd(std::string(sub) + " --help").out.find("--edit"), std::string::npos) << sub;
  EXPECT_EQ(stem_cmd("edit").code, 2);
  EXPECT_EQ(stem_cmd("edit swap --model x --from a --to b").code, 2);  // no --out
}

TEST_F(EditCli, SwapGenerateEvalApplyScore) {
  const std::string prompt = "The capital of " + subject(0).name + " is";
  CmdResult r = stem_cmd("edit swap --model " + model() + " --from " + q(subject(0).name) + " --to " +
                         q(subject(1).name) + " --out " + p("a.ovl") + " --json");
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["changed_tokens"].size(), 1u);
  EXPECT_EQ(j["rows"], 5);
  r = stem_cmd("edit swap --model " + model() + " --from " + q(subject(0).name) + " --to " + q(subject(1).name) +
               " --out " + p("text.ovl"));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("[pair]"), std::string::npos) << r.out;

  r = stem_cmd("generate --model " + model() + " --prompt " + q(prompt) + " --greedy -n 1 --json");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["text"], " " + subject(0).capital);
  r = stem_cmd("generate --model " + model() + " --prompt " + q(prompt) + " --greedy -n 1 --json --edit " + p("a.ovl"));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["text"], " " + subject(1).capital);

  r = stem_cmd("edit eval --model " + model() + " --edit " + p("a.ovl") + " --cases " + facts("swap_cases.jsonl") +
               " --controls " + facts("controls.txt") + " --json");
  ASSERT_EQ(r.code, 0) << r.err;
  j = nlohmann::json::parse(r.out);
  std::printf("[ edit eval swap ] %s\n", j["summary"].dump().c_str());
  EXPECT_GE(j["summary"]["efficacy"].get<double>(), 0.8);
  EXPECT_EQ(j["summary"]["base_knows"].get<double>(), 1.0);
  EXPECT_EQ(j["summary"]["controls_same_top"].get<double>(), 1.0);
  EXPECT_EQ(j["summary"]["max_kl"].get<double>(), 0.0);  // controls never mention the edited token
  r = stem_cmd("edit eval --model " + model() + " --edit " + p("a.ovl") + " --cases " + facts("swap_cases.jsonl"));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("KL(base || edited)"), std::string::npos) << r.out;

  // apply -> a new checkpoint equal to the base with --edit.
  r = stem_cmd("edit apply --model " + model() + " --edit " + p("a.ovl") + " --out " + p("m2") + " --json");
  ASSERT_EQ(r.code, 0) << r.err;
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.model"}) EXPECT_TRUE(fs::exists(p("m2/") + f)) << f;
  auto tok = io::Tokenizer::load(model() + "/tokenizer.model");
  std::string ids = std::to_string(tok->bos_id());
  for (int32_t id : tok->encode(prompt + " " + subject(0).language)) ids += " " + std::to_string(id);
  write("ids.txt", ids);
  r = stem_cmd("score --model " + p("m2") + " --tokens-file " + p("ids.txt") + " --logits-out " + p("l2.npy"));
  ASSERT_EQ(r.code, 0) << r.err;
  r = stem_cmd("score --model " + model() + " --edit " + p("a.ovl") + " --tokens-file " + p("ids.txt") +
               " --logits-out " + p("l1.npy"));
  ASSERT_EQ(r.code, 0) << r.err;
  r = stem_cmd("score --model " + model() + " --tokens-file " + p("ids.txt") + " --logits-out " + p("l0.npy"));
  auto slurp = [&](const std::string& f) {
    std::ifstream in(p(f), std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  EXPECT_EQ(slurp("l1.npy"), slurp("l2.npy"));
  EXPECT_NE(slurp("l0.npy"), slurp("l1.npy"));
  r = stem_cmd("eval --model " + model() + " --data " + p("ids.txt") + " --seq 4 --json --edit " + p("a.ovl"));
  EXPECT_EQ(r.code, 0) << r.err;
  // --compare: the edit's effect on the same windows (the compared model loads without it);
  // two windows, each the whole prompt.
  write("ids2.txt", ids + "\n" + ids);
  const std::string whole = std::to_string(std::count(ids.begin(), ids.end(), ' ') + 1);
  r = stem_cmd("eval --model " + model() + " --data " + p("ids2.txt") + " --seq " + whole + " --json --edit " +
               p("a.ovl") + " --compare " + model());
  ASSERT_EQ(r.code, 0) << r.err;
  const auto cmp = nlohmann::json::parse(r.out);
  EXPECT_NE(cmp["compare"]["difference"].get<double>(), 0.0);
  EXPECT_NEAR(cmp["compare"]["difference"].get<double>(),
              cmp["loss"].get<double>() - cmp["compare"]["loss"].get<double>(), 1e-12);
  r = stem_cmd("eval --model " + model() + " --data " + p("ids2.txt") + " --seq 4 --json --compare " + model());
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["compare"]["difference"].get<double>(), 0.0);
  EXPECT_EQ(nlohmann::json::parse(r.out)["compare"]["difference_se"].get<double>(), 0.0);
  r = stem_cmd("eval --model " + model() + " --compare " + model() + " --task x");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("give --data"), std::string::npos) << r.err;
  // The base checkpoint is never the output, and an existing model needs --force.
  r = stem_cmd("edit apply --model " + model() + " --edit " + p("a.ovl") + " --out " + model());
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("never change a checkpoint in place"), std::string::npos) << r.err;
  r = stem_cmd("edit apply --model " + model() + " --edit " + p("a.ovl") + " --out " + p("m2"));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("already holds a model"), std::string::npos) << r.err;
  r = stem_cmd("edit show --edit " + p("a.ovl") + " --model " + model() + " --json");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["rows"], 5);
  EXPECT_EQ(nlohmann::json::parse(r.out)["note"]["kind"], "swap");
}

TEST_F(EditCli, InjectThenEval) {
  CmdResult r = stem_cmd("edit inject --model " + model() + " --facts " + facts("inject_facts.jsonl") + " --out " +
                         p("inj.ovl") + " --json");
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["tokens"].size(), 1u);
  EXPECT_LT(j["loss_after"].get<double>(), j["loss_before"].get<double>());
  r = stem_cmd("edit eval --model " + model() + " --edit " + p("inj.ovl") + " --cases " + facts("inject_cases.jsonl") +
               " --json");
  ASSERT_EQ(r.code, 0) << r.err;
  j = nlohmann::json::parse(r.out);
  std::printf("[ edit eval inject ] %s\n", j["summary"].dump().c_str());
  EXPECT_EQ(j["summary"]["efficacy"].get<double>(), 1.0);  // new capital, language kept, every template
  // --tokens names rows explicitly; a name in no fact is an error.
  r = stem_cmd("edit inject --model " + model() + " --facts " + facts("inject_facts.jsonl") + " --tokens " +
               q(subject(5).name) + " --out " + p("x.ovl"));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("does not occur in any fact"), std::string::npos) << r.err;
  write("bad.jsonl", "{\"subject\": \"x\", \"text\": \"ok\"}\n{\"subject\": \"y\"}\n");
  r = stem_cmd("edit inject --model " + model() + " --facts " + p("bad.jsonl") + " --out " + p("x.ovl"));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find(p("bad.jsonl") + ":2: \"text\" must be a non-empty string (missing)"), std::string::npos) << r.err;
}

// Injection of a capital the model never saw, of several pieces, for a
// subject of several pieces (a tokenizer of 450 pieces: names of about three),
// on a 4-layer all-STEM model that knows the corpus: with the defaults
// (train until every fact is predicted, at most 500 steps, lr 0.05) the new
// capital is stated in all three templates, the language kept, and other
// subjects' answers unchanged. The former defaults (60 fixed steps, lr 0.02)
// stated it in 1 of 3 here (docs/editing.md), so this fails if they return.
// A 4-layer all-STEM model (d=64) trained on 24 made-up countries under a
// 450-piece tokenizer, so that names are 2-4 pieces: p("run").
void EditCli::train_several_piece_model() {
  ASSERT_EQ(stem_cmd("edit facts --out " + p("facts") + " --seed 1 --subjects 24").code, 0);
  CmdResult r = stem_cmd("prepare --input " + p("facts/facts.txt") + " --out " + p("data") +
                         " --doc-bytes 32 --val-fraction 0 --vocab-size 450");
  ASSERT_EQ(r.code, 0) << r.err;
  write("c.json", R"({"model_type": "stem", "vocab_size": 450, "hidden_size": 64, "intermediate_size": 256,
    "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 4, "max_position_embeddings": 64,
    "rope_theta": 10000.0, "rms_norm_eps": 1e-5, "tie_word_embeddings": false,
    "ffn_types": ["stem", "stem", "stem", "stem"], "num_hash_experts": 0})");
  r = stem_cmd("train --config " + p("c.json") + " --data " + p("data") + " --out " + p("run") +
               " --steps 600 --batch 16 --seq 32 --lr 5e-3 --warmup 20 --weight-decay 0 --seed 1"
               " --eval-every 0 --save-every 0 --keep 1 --peak-gflops 100");
  ASSERT_EQ(r.code, 0) << r.err;
}

TEST_F(EditCli, InjectOfASeveralPieceCapitalTrainsUntilLearned) {
  train_several_piece_model();
  if (HasFatalFailure()) return;
  CmdResult r;
  edit::FactOptions fo;
  fo.seed = 1;
  fo.subjects = 24;
  const edit::FactCorpus c = *edit::make_fact_corpus(fo);
  const edit::FactSubject& s = c.subjects[2];
  const std::string capital = "Vekiholm";  // in no sentence of the corpus
  std::string facts_jsonl, cases;
  for (int t = 0; t < edit::kFactTemplatesPerAttribute; ++t) {
    facts_jsonl += nlohmann::json({{"subject", s.name}, {"text", edit::fact_sentence("capital", t, s.name, capital)}}).dump() + "\n";
    cases += nlohmann::json({{"prompt", edit::fact_prompt("capital", t, s.name)}, {"before", " " + s.capital},
                             {"after", " " + capital}}).dump() + "\n";
  }
  for (int t = 0; t < edit::kFactTemplatesPerAttribute; ++t) {
    facts_jsonl += nlohmann::json({{"subject", s.name}, {"text", edit::fact_sentence("language", t, s.name, s.language)}}).dump() + "\n";
    cases += nlohmann::json({{"prompt", edit::fact_prompt("language", t, s.name)}, {"before", " " + s.language},
                             {"after", " " + s.language}}).dump() + "\n";
  }
  for (size_t k = 0; k < c.subjects.size(); ++k)
    if (k != 2) cases += nlohmann::json({{"control", edit::fact_prompt("capital", 0, c.subjects[k].name)}}).dump() + "\n";
  write("f.jsonl", facts_jsonl);
  write("cases.jsonl", cases);
  r = stem_cmd("edit inject --model " + p("run") + " --facts " + p("f.jsonl") + " --out " + p("i.ovl") + " --json");
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  std::printf("[ inject several pieces ] %ld steps, learned %d, tokens %s\n", j["steps"].get<long>(),
              j["learned"].get<bool>(), j["tokens"].dump().c_str());
  EXPECT_TRUE(j["learned"].get<bool>());
  EXPECT_GT(j["tokens"].size(), 1u);
  EXPECT_LT(j["steps"].get<int64_t>(), 500);
  r = stem_cmd("edit eval --model " + p("run") + " --edit " + p("i.ovl") + " --cases " + p("cases.jsonl") + " --json");
  ASSERT_EQ(r.code, 0) << r.err;
  j = nlohmann::json::parse(r.out);
  int stated = 0, kept = 0, knew = 0;
  for (size_t k = 0; k < j["cases"].size(); ++k) {
    knew += j["cases"][k]["before_base"]["greedy"].get<bool>();
    (k < 3 ? stated : kept) += j["cases"][k]["after_edit"]["greedy"].get<bool>();
  }
  int same = 0;
  for (const auto& ctl : j["controls"]) same += ctl["top_base"] == ctl["top_edit"];
  EXPECT_EQ(knew, 6);  // the model knew the old capital and the language
  EXPECT_EQ(stated, 3);
  EXPECT_EQ(kept, 3);
  EXPECT_GE(same, 22);  // of 23: a shared piece may move one
}

// Swapping names of several pieces: copying rows moves part of the answers;
// training the source's rows on the model's answers for the target (--prompts)
// moves all of them and keeps the other countries' answers. Pieces that other
// names share are refused by default, naming them.
TEST_F(EditCli, SwapOfSeveralPieceNamesByTrainingMovesEveryAnswer) {
  train_several_piece_model();
  if (HasFatalFailure()) return;
  edit::FactOptions fo;
  fo.seed = 1;
  fo.subjects = 24;
  const edit::FactCorpus c = *edit::make_fact_corpus(fo);
  int copied = 0, trained = 0, cases = 0, same = 0, controls = 0;
  for (size_t i = 0; i < 4; ++i) {
    const edit::FactSubject &a = c.subjects[i], &b = c.subjects[i + 1];
    std::string prompts, case_lines;
    for (const char* attr : {"capital", "language"})
      for (int t = 0; t < edit::kFactTemplatesPerAttribute; ++t) {
        const std::string pr = edit::fact_prompt(attr, t, a.name);
        prompts += nlohmann::json({{"prompt", pr}}).dump() + "\n";
        const std::string was = std::string(" ") + (attr == std::string("capital") ? a.capital : a.language);
        const std::string now = std::string(" ") + (attr == std::string("capital") ? b.capital : b.language);
        case_lines += nlohmann::json({{"prompt", pr}, {"before", was}, {"after", now}}).dump() + "\n";
      }
    for (size_t k = 0; k < c.subjects.size(); ++k)
      if (k != i) case_lines += nlohmann::json({{"control", edit::fact_prompt("capital", 0, c.subjects[k].name)}}).dump() + "\n";
    write("p.jsonl", prompts);
    write("cases.jsonl", case_lines);
    const std::string base = "edit swap --model " + p("run") + " --from " + a.name + " --to " + b.name;
    if (i == 0) {  // the default refuses shared pieces, naming them
      CmdResult r = stem_cmd(base + " --prompts " + p("p.jsonl") + " --out " + p("x.ovl"));
      EXPECT_EQ(r.code, 1);
      EXPECT_NE(r.err.find("other words share"), std::string::npos) << r.err;
      EXPECT_NE(r.err.find("--shared"), std::string::npos) << r.err;
      EXPECT_FALSE(fs::exists(p("x.ovl")));
    }
    CmdResult r = stem_cmd(base + " --shared allow --out " + p("copy.ovl"));
    ASSERT_EQ(r.code, 0) << r.err;
    r = stem_cmd(base + " --shared allow --prompts " + p("p.jsonl") + " --out " + p("train.ovl") + " --json");
    ASSERT_EQ(r.code, 0) << r.err;
    const auto j = nlohmann::json::parse(r.out);
    EXPECT_TRUE(j["learned"].get<bool>());
    ASSERT_EQ(j["facts"].size(), 6u);
    EXPECT_EQ(j["facts"][0]["answer"].get<std::string>(), " " + b.capital + ".");  // the model's own answer for b
    for (const char* ovl : {"copy.ovl", "train.ovl"}) {
      r = stem_cmd("edit eval --model " + p("run") + " --edit " + p(ovl) + " --cases " + p("cases.jsonl") + " --json");
      ASSERT_EQ(r.code, 0) << r.err;
      const auto e = nlohmann::json::parse(r.out);
      for (const auto& cs : e["cases"]) {
        ASSERT_TRUE(cs["before_base"]["greedy"].get<bool>());  // the model knew a's answers
        (ovl[0] == 'c' ? copied : trained) += cs["after_edit"]["greedy"].get<bool>();
        cases += ovl[0] == 't';
      }
      if (ovl[0] == 't')
        for (const auto& ctl : e["controls"]) {
          same += ctl["top_base"] == ctl["top_edit"];
          ++controls;
        }
    }
  }
  std::printf("[ swap several pieces ] copied rows: %d of %d answers; trained: %d of %d; controls kept %d of %d\n",
              copied, cases, trained, cases, same, controls);
  EXPECT_EQ(trained, cases);
  EXPECT_LT(copied, trained);
  EXPECT_GE(same, controls * 95 / 100);
}

// A capital no sentence names, injected into a one-piece subject: its rows
// alone do not state it (the answer's later pieces are produced where the
// input is its earlier piece); with the answer's rows ("answer" in the facts)
// and the corpus's other sentences as --keep, every template states it and
// every other country keeps its answers.
TEST_F(EditCli, InjectOfANewCapitalTrainsTheAnswersRowsAndKeepsTheRest) {
  const edit::FactSubject& s = subject(3);
  const std::string capital = "Vekiholm";  // in no sentence of the corpus
  auto facts_file = [&](bool answer) {
    std::string out;
    for (const char* attr : {"capital", "language"})
      for (int t = 0; t < edit::kFactTemplatesPerAttribute; ++t) {
        const bool cap = attr == std::string("capital");
        nlohmann::json f = {{"subject", s.name},
                            {"text", edit::fact_sentence(attr, t, s.name, cap ? capital : s.language)}};
        if (answer && cap) f["answer"] = capital;
        out += f.dump() + "\n";
      }
    return out;
  };
  std::string cases, keep;
  for (int t = 0; t < edit::kFactTemplatesPerAttribute; ++t)
    cases += nlohmann::json({{"prompt", edit::fact_prompt("capital", t, s.name)}, {"before", " " + s.capital},
                             {"after", " " + capital}}).dump() + "\n";
  for (const auto& o : trained().corpus.subjects) {
    if (o.name == s.name) continue;
    for (const char* attr : {"capital", "language"})
      for (int t = 0; t < edit::kFactTemplatesPerAttribute; ++t) {
        const std::string v = value(o, attr);  // " Liloburg"
        cases += nlohmann::json({{"prompt", edit::fact_prompt(attr, t, o.name)}, {"before", v}, {"after", v}}).dump() + "\n";
        keep += edit::fact_sentence(attr, t, o.name, v.substr(1)) + "\n";
      }
  }
  write("cases.jsonl", cases);
  write("keep.txt", keep);
  auto stated = [&](const std::string& ovl, int* others_kept, int* others_known) {
    CmdResult r = stem_cmd("edit eval --model " + model() + " --edit " + ovl + " --cases " + p("cases.jsonl") + " --json");
    EXPECT_EQ(r.code, 0) << r.err;
    const auto j = nlohmann::json::parse(r.out);
    int n = 0;
    *others_kept = *others_known = 0;
    for (size_t k = 0; k < j["cases"].size(); ++k) {
      const auto& c = j["cases"][k];
      if (k < 3) {
        n += c["after_edit"]["greedy"].get<bool>();
      } else if (c["before_base"]["greedy"].get<bool>()) {
        ++*others_known;
        *others_kept += c["after_edit"]["greedy"].get<bool>();
      }
    }
    return n;
  };
  int kept = 0, known = 0;
  write("subject.jsonl", facts_file(false));
  CmdResult r = stem_cmd("edit inject --model " + model() + " --facts " + p("subject.jsonl") + " --steps 200 --out " +
                         p("subject.ovl"));
  ASSERT_EQ(r.code, 0) << r.err;
  const int by_subject = stated(p("subject.ovl"), &kept, &known);
  write("answer.jsonl", facts_file(true));
  r = stem_cmd("edit inject --model " + model() + " --facts " + p("answer.jsonl") + " --keep " + p("keep.txt") +
               " --out " + p("answer.ovl") + " --json");
  ASSERT_EQ(r.code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_TRUE(j["learned"].get<bool>());
  EXPECT_EQ(j["keep"].get<size_t>(), 6u * (trained().corpus.subjects.size() - 1));
  EXPECT_GT(j["tokens"].size(), 1u);  // the subject and the answer's pieces
  const int by_answer = stated(p("answer.ovl"), &kept, &known);
  std::printf("[ inject new capital ] subject rows (200 steps): %d of 3; with the answer's rows and --keep: %d of 3 "
              "in %ld steps; other countries' answers kept %d of %d\n",
              by_subject, by_answer, j["steps"].get<long>(), kept, known);
  EXPECT_LT(by_subject, 3);
  EXPECT_EQ(by_answer, 3);
  EXPECT_GT(known, 100);
  EXPECT_GE(kept, known * 95 / 100);
  // Without keep sentences, by default: sentences the model samples itself
  // that read the answer's rows are held (KL); with --keep-samples 0 nothing.
  int kept_default = 0, known_default = 0, kept_bare = 0, known_bare = 0;
  r = stem_cmd("edit inject --model " + model() + " --facts " + p("answer.jsonl") + " --out " + p("default.ovl") +
               " --json");
  ASSERT_EQ(r.code, 0) << r.err;
  const auto jd = nlohmann::json::parse(r.out);
  EXPECT_EQ(jd["keep_loss"], jd["keep_sampled"].get<int>() > 0 ? "kl" : "text");
  const int by_default = stated(p("default.ovl"), &kept_default, &known_default);
  EXPECT_EQ(by_default, 3);
  EXPECT_GE(kept_default, known_default * 95 / 100);
  r = stem_cmd("edit inject --model " + model() + " --facts " + p("answer.jsonl") + " --keep-samples 0 --out " +
               p("bare.ovl") + " --json");
  ASSERT_EQ(r.code, 0) << r.err;
  const int by_bare = stated(p("bare.ovl"), &kept_bare, &known_bare);
  std::printf("[ inject new capital ] answer's rows by default (%d sampled sentences held): %d of 3, other answers "
              "kept %d of %d; with --keep-samples 0: %d of 3, kept %d of %d\n",
              jd["keep_sampled"].get<int>(), by_default, kept_default, known_default, by_bare, kept_bare, known_bare);
  // The keep sentences holding the unedited distributions (a KL term).
  r = stem_cmd("edit inject --model " + model() + " --facts " + p("answer.jsonl") + " --keep " + p("keep.txt") +
               " --keep-kl --out " + p("kl.ovl") + " --json");
  ASSERT_EQ(r.code, 0) << r.err;
  const auto jkl = nlohmann::json::parse(r.out);
  EXPECT_EQ(jkl["keep_loss"], "kl");
  EXPECT_TRUE(jkl["learned"].get<bool>());
  int kept_kl = 0, known_kl = 0;
  const int by_kl = stated(p("kl.ovl"), &kept_kl, &known_kl);
  std::printf("[ inject new capital ] with --keep-kl: %d of 3 in %ld steps; other answers kept %d of %d\n", by_kl,
              jkl["steps"].get<long>(), kept_kl, known_kl);
  EXPECT_EQ(by_kl, 3);
  EXPECT_GE(kept_kl, known_kl * 95 / 100);
  r = stem_cmd("edit inject --model " + model() + " --facts " + p("answer.jsonl") + " --keep-kl --keep-samples 0 --out " +
               p("x.ovl"));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("--keep-kl without keep sentences"), std::string::npos) << r.err;
  // An answer that is not in its fact's text is an error naming the line.
  write("bad.jsonl", nlohmann::json({{"subject", s.name}, {"text", "The capital of " + s.name + " is Dunemot."},
                                     {"answer", capital}}).dump() + "\n");
  r = stem_cmd("edit inject --model " + model() + " --facts " + p("bad.jsonl") + " --out " + p("bad.ovl"));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find(p("bad.jsonl") + ":1: answer 'Vekiholm'"), std::string::npos) << r.err;
}

TEST_F(EditCli, BadInputIsAOneLineErrorWithExitCode1) {
  auto expect_fail = [&](const std::string& args, const std::string& needle) {
    CmdResult r = stem_cmd(args);
    EXPECT_EQ(r.code, 1) << args << "\n" << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << args << "\n" << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  };
  const std::string gen = "generate --model " + model() + " --prompt x -n 1 --edit ";
  write("junk.ovl", "this is not an overlay at all");
  expect_fail(gen + p("junk.ovl"), p("junk.ovl") + ": not a stem edit overlay");
  ASSERT_TRUE(edit::write_overlay(random_overlay(small_config(), 2, 1), p("small.ovl")).ok());
  expect_fail(gen + p("small.ovl"), p("small.ovl") + ": made for a model with vocab_size 50, but this model has 768");
  std::string bytes;
  {
    std::ifstream in(p("small.ovl"), std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  write("cut.ovl", bytes.substr(0, bytes.size() / 2));
  expect_fail("edit eval --model " + model() + " --edit " + p("cut.ovl") + " --cases " + facts("swap_cases.jsonl"),
              "truncated");
  expect_fail(gen + p("missing.ovl"), p("missing.ovl") + ": cannot open");
  const std::string swap = "edit swap --model " + model() + " --out " + p("o.ovl") + " ";
  expect_fail(swap + "--from '' --to " + q(subject(1).name), "--from: empty string");
  expect_fail(swap + "--from " + q(subject(0).name) + " --to ' '", "--to: empty string");
  expect_fail(swap + "--from " + q(subject(0).name) + " --to " + q(subject(1).name) + " --layers 5",
              "--layers: layer 5 is a dense layer, not a STEM layer (STEM layers: 0,1,2,3,4)");
  expect_fail(swap + "--from " + q(subject(0).name) + " --to " + q(subject(1).name) + " --mismatch nope",
              "--mismatch: 'nope' is not one of");
  expect_fail(swap + "--from " + q(subject(0).name) + " --to " + q(subject(1).name) + " --mismatch subset",
              "needs --subset");
  const std::string pair = swap + "--from " + q(subject(0).name) + " --to " + q(subject(1).name);
  expect_fail(pair + " --prompts " + p("none.txt"), p("none.txt") + ": cannot open");
  write("elsewhere.txt", "The capital of " + subject(2).name + " is\n");
  expect_fail(pair + " --prompts " + p("elsewhere.txt"),
              p("elsewhere.txt") + ": swap: prompt 1 ('The capital of " + subject(2).name + " is') does not mention");
  write("empty.txt", "\n\n");
  expect_fail(pair + " --prompts " + p("empty.txt"), p("empty.txt") + ": no prompts");
  expect_fail(pair + " --prompts " + p("elsewhere.txt") + " --exchange", "--exchange");
  expect_fail(pair + " --prompts " + p("elsewhere.txt") + " --answer-tokens 0", "--answer-tokens 0");
  expect_fail("edit show --edit " + p("junk.ovl"), "not a stem edit overlay");
  EXPECT_FALSE(fs::exists(p("o.ovl")));
}

TEST_F(EditCli, SharedPiecesAreRefusedSkippedOrAllowed) {
  // A word the fact corpus never saw is split into pieces other words share.
  const std::string word = "Zqxvwpj";
  const std::string swap = "edit swap --model " + model() + " --out " + p("o.ovl") + " ";
  CmdResult r = stem_cmd(swap + "--from " + word + " --to " + q(subject(1).name));
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_NE(r.err.find("which other words share"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--shared skip"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("swap: swap:"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(p("o.ovl")));
  // the same under --exchange, where the target's pieces would be edited
  r = stem_cmd(swap + "--from " + q(subject(0).name) + " --to " + word + " --exchange");
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_NE(r.err.find("which other words share"), std::string::npos) << r.err;
  // skip: nothing of the word is its own
  r = stem_cmd(swap + "--from " + word + " --to " + q(subject(1).name) + " --shared skip");
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_NE(r.err.find("nothing left to change"), std::string::npos) << r.err;
  // skip with --exchange: the subject's own piece is edited, the word's pieces are not
  r = stem_cmd(swap + "--from " + q(subject(0).name) + " --to " + word + " --exchange --shared skip --json");
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["changed_tokens"].size(), 1u) << r.out;
  EXPECT_FALSE(j["shared_tokens"].empty()) << r.out;
  EXPECT_NE(r.err.find("left alone"), std::string::npos) << r.err;
  // allow: edited, with a warning
  r = stem_cmd(swap + "--from " + word + " --to " + q(subject(1).name) + " --shared allow");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("warning: pieces other words share were edited"), std::string::npos) << r.err;
  // a single-piece subject is its own: the default goes through, silently
  r = stem_cmd(swap + "--from " + q(subject(0).name) + " --to " + q(subject(1).name));
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.err.find("warning"), std::string::npos) << r.err;
}

// Names of several pieces: `edit facts --tokenizer T --pieces 2-4` draws
// every name until it is 2-4 pieces of T as it follows a space, and `prepare
// --tokenizer T` encodes the corpus with T itself (copied, its vocabulary),
// so the pieces hold in the prepared data. Errors name the file or value.
TEST_F(EditCli, FactsOfSeveralPiecesUnderAGivenTokenizer) {
  fs::create_directories(p("text"));
  {
    std::ifstream in(std::string(STEM_SOURCE_DIR) + "/corpus/builtin/persuasion.txt");
    std::string buf(80000, '\0');
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    buf.resize(static_cast<size_t>(in.gcount()));
    std::ofstream(p("text/a.txt")) << buf;
  }
  CmdResult r = stem_cmd("prepare --input " + p("text") + " --out " + p("base") + " --vocab-size 800");
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string tok_path = p("base/tokenizer.model");
  r = stem_cmd("edit facts --out " + p("f") + " --seed 4 --subjects 12 --tokenizer " + tok_path + " --pieces 2-4 --json");
  ASSERT_EQ(r.code, 0) << r.err;
  auto tok = Tokenizer::load(tok_path);
  ASSERT_TRUE(tok.ok());
  const size_t a = tok->encode("a").size();
  std::set<size_t> lengths;
  const nlohmann::json made = nlohmann::json::parse(r.out);
  for (const auto& s : made["subjects"])
    for (const char* k : {"subject", "capital", "language"}) {
      const size_t n = tok->encode("a " + s[k].get<std::string>()).size() - a;
      EXPECT_GE(n, 2u) << s[k];
      EXPECT_LE(n, 4u) << s[k];
      lengths.insert(n);
    }
  EXPECT_GT(lengths.size(), 1u);  // not all of one length
  std::ifstream meta(p("f/facts.json"));
  EXPECT_EQ(nlohmann::json::parse(meta)["pieces"], nlohmann::json({2, 4}));
  r = stem_cmd("prepare --input " + p("f/facts.txt") + " --out " + p("d") + " --doc-bytes 32 --val-fraction 0 "
               "--tokenizer " + tok_path + " --json");
  ASSERT_EQ(r.code, 0) << r.err;
  const auto d = nlohmann::json::parse(r.out);
  EXPECT_EQ(d["vocab_size"].get<int64_t>(), tok->vocab_size());
  EXPECT_EQ(d["tokenizer"]["copied_from"], tok_path);
  auto bytes = [](const std::string& f) {
    std::ifstream in(f, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  EXPECT_EQ(bytes(p("d/tokenizer.model")), bytes(tok_path));
  // Errors.
  EXPECT_EQ(stem_cmd("prepare --input " + p("f/facts.txt") + " --out " + p("x") + " --tokenizer " + tok_path +
                     " --vocab-size 500").code, 2);
  write("junk.model", "not a model");
  r = stem_cmd("prepare --input " + p("f/facts.txt") + " --out " + p("x") + " --tokenizer " + p("junk.model"));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find(p("junk.model") + ": not a SentencePiece model"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(p("x")));
  r = stem_cmd("edit facts --out " + p("g") + " --tokenizer " + tok_path + " --pieces 4-2");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("4-2"), std::string::npos) << r.err;
  r = stem_cmd("edit facts --out " + p("g") + " --tokenizer " + tok_path + " --pieces 30-40");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("widen --pieces"), std::string::npos) << r.err;
}

TEST_F(EditCli, FactsAndAnalyses) {
  CmdResult r = stem_cmd("edit facts --out " + p("f") + " --seed 3 --subjects 6 --json");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["subjects"].size(), 6u);
  for (const char* f : {"facts.txt", "subjects.jsonl", "queries.jsonl", "swap_cases.jsonl", "inject_facts.jsonl",
                        "inject_cases.jsonl", "controls.txt", "facts.json"})
    EXPECT_TRUE(fs::exists(p("f/") + f)) << f;
  EXPECT_EQ(stem_cmd("edit facts --out " + p("g") + " --subjects 2").code, 1);
  // The same seed makes the same corpus.
  ASSERT_EQ(stem_cmd("edit facts --out " + p("f2") + " --seed 3 --subjects 6").code, 0);
  auto slurp = [&](const std::string& f) {
    std::ifstream in(p(f));
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  EXPECT_EQ(slurp("f/facts.txt"), slurp("f2/facts.txt"));

  r = stem_cmd("analyze spread --model " + model() + " --data " + facts("facts.txt") + " --json");
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["layers"].size(), 6u);  // five STEM layers and the dense one
  for (const auto& l : j["layers"]) {
    std::printf("[ spread ] layer %d %-6s mean|cos| %.3f P95 %.3f (%ld vectors)\n", l["layer"].get<int>(),
                l["kind"].get<std::string>().c_str(), l["stats"]["mean_abs_cos"].get<double>(),
                l["stats"]["p95_abs_cos"].get<double>(), static_cast<long>(l["stats"]["vectors"].get<int64_t>()));
    EXPECT_GT(l["stats"]["pairs"].get<int64_t>(), 0);
  }
  r = stem_cmd("analyze capacity --model " + model() + " --data " + facts("facts.txt") + " --json");
  ASSERT_EQ(r.code, 0) << r.err;
  j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["points"].size(), 7u);  // contexts 1 .. 64
  double last = 0;
  for (const auto& pt : j["points"]) {
    EXPECT_GE(pt["distinct_tokens"].get<double>(), last);
    last = pt["distinct_tokens"].get<double>();
  }
  r = stem_cmd("analyze capacity --model " + model() + " --data " + facts("facts.txt"));
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(stem_cmd("analyze capacity --model " + model() + " --data " + p("nope.txt")).code, 1);
}

}  // namespace
}  // namespace stem
