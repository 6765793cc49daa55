// Tasks (include/stem/eval.h): every multiple-choice and cloze log-likelihood
// equals the sum of log-softmax over Model::score's logits (what `stem score`
// prints) on the tokens lm-evaluation-harness's rules give, written out here
// independently, with the context shared or not and with left truncation; the
// acc_norm rule on hand-made numbers; the ARC, PIQA and HellaSwag readers on
// small files; bad task files as one-line errors naming file, line and field;
// the CLI's output and exit codes.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cli_test_util.h"
#include "eval/harness.h"
#include "stem/capacity.h"
#include "stem/eval.h"
#include "stem/model.h"
#include "train_test_util.h"

namespace stem {
namespace {
namespace fs = std::filesystem;

Tokenizer tiny_tokenizer() {
  auto t = Tokenizer::load(test::tiny().data + "/tokenizer.model");
  EXPECT_TRUE(t.ok()) << t.status().message();
  return std::move(*t);
}

Model random_model(int64_t positions = 64) {
  ModelConfig c = test::two_layer_config(400);
  c.ffn_types = {FfnType::Stem, FfnType::Dense};
  c.max_position_embeddings = positions;
  auto m = Model::init(c, 3);
  EXPECT_TRUE(m.ok());
  return std::move(*m);
}

// The reference: the harness's split written out, then one Model::score over
// the window the harness keeps, summing log-softmax in double.
double reference_logprob(Model& m, const Tokenizer& tok, std::string ctx, std::string cont) {
  while (!ctx.empty() && ctx.back() == ' ') {
    cont = " " + cont;
    ctx.pop_back();
  }
  const std::vector<int32_t> c = tok.encode(ctx), whole = tok.encode(ctx + cont);
  std::vector<int32_t> ids = {tok.bos_id()};
  ids.insert(ids.end(), c.begin(), c.end());
  const std::vector<int32_t> k(whole.begin() + static_cast<std::ptrdiff_t>(c.size()), whole.end());
  ids.insert(ids.end(), k.begin(), k.end());
  ids.pop_back();  // the last continuation token is predicted, never fed
  const int64_t cap = m.config().max_position_embeddings;
  if (static_cast<int64_t>(ids.size()) > cap) ids.erase(ids.begin(), ids.end() - cap);
  const int64_t T = static_cast<int64_t>(ids.size()), V = m.config().vocab_size;
  std::vector<float> logits;  // [T, V]: every position's, whatever the loss
  EXPECT_TRUE(m.score(ids, 1, T, &logits).ok());
  double sum = 0;
  for (size_t j = 0; j < k.size(); ++j) {
    const float* z = logits.data() + (T - static_cast<int64_t>(k.size()) + static_cast<int64_t>(j)) * V;
    double mx = z[0], s = 0;
    for (int64_t i = 0; i < V; ++i) mx = std::max(mx, static_cast<double>(z[i]));
    for (int64_t i = 0; i < V; ++i) s += std::exp(z[i] - mx);
    sum += z[k[j]] - mx - std::log(s);
  }
  return sum;
}

class EvalTasks : public test::TempDirTest {
 protected:
  std::string put(const std::string& name, const std::string& text) {
    write(name, text);
    return p(name);
  }
};

TEST_F(EvalTasks, LogLikelihoodsEqualScoreOnTheSameTokens) {
  Model m = random_model();
  const Tokenizer tok = tiny_tokenizer();
  const std::string long_ctx = [] {
    std::string s;
    for (int i = 0; i < 40; ++i) s += "the cat sat on the mat and ";
    return s + "then";
  }();
  // A context that leaves room for each choice, not for all of them at once
  // (they run one after another from the rewound cache).
  const std::vector<std::string> far = {"dog ran around the house quickly", "bird flew over the old barn",
                                        "horse walked into the quiet town"};
  std::string near_full;
  for (bool fits = false; !fits;) {
    near_full += "the cat sat. ";
    const int64_t C = static_cast<int64_t>(eval::encode_pair(tok, near_full, " x").context.size());
    int64_t all = 0, most = 0;
    for (const std::string& c : far) {
      const int64_t K = static_cast<int64_t>(eval::encode_pair(tok, near_full, " " + c).continuation.size());
      all += K - 1;
      most = std::max(most, K);
    }
    ASSERT_LE(C + most - 1, 64) << "no context length separates the two cases";
    fits = C + all > 64;
  }
  const std::string path = put("mc.jsonl",
                                 R"({"context": "The cat sat on the", "choices": ["mat", "dog house", "a"], "gold": 0})"
                                 "\n"
                                 R"({"context": "Once upon a time ", "choices": ["there was", "the end"], "gold": 1})"
                                 "\n" +
                                     nlohmann::json({{"context", long_ctx}, {"choices", {"slept", "ran away"}}, {"gold", 0}})
                                         .dump() +
                                     "\n" +
                                     nlohmann::json({{"context", near_full}, {"choices", far}, {"gold", 2}})
                                         .dump() +
                                     "\n");
  auto task = read_task(path);
  ASSERT_TRUE(task.ok()) << task.status().message();
  ASSERT_EQ(task->kind, TaskKind::MultipleChoice);
  for (bool share : {true, false}) {
    TaskOptions opt;
    opt.share_context = share;
    opt.keep_samples = true;
    auto r = evaluate_task(m, tok, *task, opt);
    ASSERT_TRUE(r.ok()) << r.status().message();
    ASSERT_EQ(r->samples.size(), 4u);
    EXPECT_EQ(r->truncated_examples, 1);  // the long context does not fit 64 positions
    for (size_t e = 0; e < 4; ++e)
      for (size_t c = 0; c < task->examples[e].choices.size(); ++c) {
        const double want = reference_logprob(m, tok, task->examples[e].context, " " + task->examples[e].choices[c]);
        EXPECT_NEAR(r->samples[e].logprobs[c], want, 1e-4 * std::max(1.0, std::abs(want)))
            << "example " << e << " choice " << c << (share ? " shared" : " separate");
      }
  }
  // Cloze: the target's log-likelihood and greedy match, as score_continuation gives them.
  const std::string cpath = put("cloze.jsonl", R"({"context": "The cat sat on the", "target": "mat"})" "\n");
  auto cloze = read_task(cpath);
  ASSERT_TRUE(cloze.ok());
  ASSERT_EQ(cloze->kind, TaskKind::Cloze);
  auto r = evaluate_task(m, tok, *cloze, {.keep_samples = true});
  ASSERT_TRUE(r.ok()) << r.status().message();
  auto sc = score_continuation(m, tok, "The cat sat on the", " mat");
  ASSERT_TRUE(sc.ok());
  EXPECT_NEAR(r->samples[0].logprobs[0], sc->logprob, 1e-4 * std::max(1.0, std::abs(sc->logprob)));
  EXPECT_EQ(r->samples[0].greedy[0], sc->greedy);
  EXPECT_DOUBLE_EQ(r->perplexity, std::exp(-r->mean_logprob));
  EXPECT_TRUE(std::isnan(r->acc_se));  // one example: no standard error
}

TEST(EvalTaskRules, AccNormDividesByCharactersNotBytesOrTokens) {
  // acc picks the larger sum; acc_norm the larger sum per character.
  EXPECT_EQ(eval::pick_choices({-4.0, -6.0}, {"ab", "abcdef"}).pred, 0);
  EXPECT_EQ(eval::pick_choices({-4.0, -6.0}, {"ab", "abcdef"}).pred_norm, 1);  // -2.0 vs -1.0
  // Characters, not bytes: "ab€" is 3 characters (5 bytes). Per character
  // -1.5 against -1.05 picks "abcd"; per byte (-0.9) it would pick "ab€".
  EXPECT_EQ(eval::pick_choices({-4.5, -4.2}, {"ab€", "abcd"}).pred_norm, 1);
  EXPECT_EQ(eval::code_points("ab€"), 3);
  // Ties go to the first choice, for both.
  EXPECT_EQ(eval::pick_choices({-1.0, -1.0}, {"a", "b"}).pred, 0);
  EXPECT_EQ(eval::pick_choices({-2.0, -1.0}, {"aa", "b"}).pred_norm, 0);
}

TEST(EvalTaskRules, TrailingSpacesOfTheContextMoveToTheContinuation) {
  const Tokenizer tok = tiny_tokenizer();
  const eval::EncodedPair a = eval::encode_pair(tok, "Once upon a ", " time");
  const eval::EncodedPair b = eval::encode_pair(tok, "Once upon a", "  time");
  EXPECT_EQ(a.context, b.context);
  EXPECT_EQ(a.continuation, b.continuation);
  EXPECT_EQ(a.context.front(), tok.bos_id());
  const std::vector<int32_t> whole = tok.encode("Once upon a  time"), c = tok.encode("Once upon a");
  EXPECT_EQ(a.continuation, std::vector<int32_t>(whole.begin() + static_cast<std::ptrdiff_t>(c.size()), whole.end()));
}

TEST_F(EvalTasks, ArcPiqaAndHellaSwagLayouts) {
  auto arc = read_task(put("arc.jsonl",
      R"({"id": "q1", "question": {"stem": "Which is a gas?", "choices": [{"text": "ice", "label": "A"}, {"text": "steam", "label": "B"}, {"text": "rock", "label": "C"}]}, "answerKey": "B"})" "\n"
      R"({"id": "q2", "question": "What melts?", "choices": {"text": ["snow", "glass"], "label": ["1", "2"]}, "answerKey": "1"})" "\n"));
  ASSERT_TRUE(arc.ok()) << arc.status().message();
  EXPECT_EQ(arc->format, TaskFormat::Arc);
  EXPECT_EQ(arc->name, "arc");
  EXPECT_EQ(arc->examples[0].context, "Question: Which is a gas?\nAnswer:");
  EXPECT_EQ(arc->examples[0].choices, (std::vector<std::string>{"ice", "steam", "rock"}));
  EXPECT_EQ(arc->examples[0].gold, 1);
  EXPECT_EQ(arc->examples[0].id, "q1");
  EXPECT_EQ(arc->examples[1].context, "Question: What melts?\nAnswer:");
  EXPECT_EQ(arc->examples[1].gold, 0);

  // PIQA as shipped: the labels in a sibling file; or a "label" field.
  const std::string piqa = put("valid.jsonl",
      R"({"goal": "Dry a towel", "sol1": "hang it", "sol2": "soak it"})" "\n"
      R"({"goal": "Cut paper", "sol1": "use a spoon", "sol2": "use scissors"})" "\n");
  auto no_labels = read_task(piqa);
  ASSERT_FALSE(no_labels.ok());
  EXPECT_NE(no_labels.status().message().find(piqa + ":1: \"label\""), std::string::npos) << no_labels.status().message();
  put("valid-labels.lst", "0\n1\n");
  auto p = read_task(piqa);
  ASSERT_TRUE(p.ok()) << p.status().message();
  EXPECT_EQ(p->format, TaskFormat::Piqa);
  EXPECT_EQ(p->examples[0].context, "Question: Dry a towel\nAnswer:");
  EXPECT_EQ(p->examples[1].choices, (std::vector<std::string>{"use a spoon", "use scissors"}));
  EXPECT_EQ(p->examples[0].gold, 0);
  EXPECT_EQ(p->examples[1].gold, 1);
  auto hf = read_task(put("piqa_hf.jsonl", R"({"goal": "g", "sol1": "a", "sol2": "b", "label": 1})" "\n"));
  ASSERT_TRUE(hf.ok());
  EXPECT_EQ(hf->examples[0].gold, 1);

  // HellaSwag: "{activity}: {ctx_a} {Ctx_b}", tags removed, label as a string.
  auto h = read_task(put("hs.jsonl",
      R"({"ind": 24, "activity_label": "Roof shingle removal", "ctx_a": "A man is sitting on a roof.", "ctx_b": "he", "endings": ["is using wrap to wrap a pair of skis.", "starts pulling up roofing [header] on a roof.", "is ripping level tiles off.", "holds a rubik's cube."], "label": "3"})" "\n"));
  ASSERT_TRUE(h.ok()) << h.status().message();
  EXPECT_EQ(h->format, TaskFormat::HellaSwag);
  EXPECT_EQ(h->examples[0].context, "Roof shingle removal: A man is sitting on a roof. He");
  EXPECT_EQ(h->examples[0].choices[1], "starts pulling up roofing on a roof.");
  EXPECT_EQ(h->examples[0].gold, 3);
  EXPECT_EQ(h->examples[0].id, "24");
  auto titled = read_task(put("hs2.jsonl",
      R"({"activity_label": "Home", "ctx_a": "Clean it. [title] Step two", "ctx_b": "", "endings": ["x", "y"], "label": 0})" "\n"));
  ASSERT_TRUE(titled.ok());
  EXPECT_EQ(titled->examples[0].context, "Home: Clean it.. Step two");  // as lm-evaluation-harness makes it
}

TEST_F(EvalTasks, BadTaskFilesAreOneLineErrorsNamingFileLineAndField) {
  auto error_of = [&](const std::string& text) {
    const std::string path = put("bad.jsonl", text);
    auto t = read_task(path);
    EXPECT_FALSE(t.ok());
    const std::string msg = t.ok() ? "" : t.status().message();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    EXPECT_EQ(msg.rfind(path + ":", 0), 0u) << msg;
    return msg;
  };
  const std::string ok = R"({"context": "c", "choices": ["a", "b"], "gold": 0})" "\n";
  EXPECT_NE(error_of(ok + R"({"context": "c", "choices": ["a", "b"]})").find(":2: \"gold\" must be an integer (missing)"),
            std::string::npos);
  EXPECT_NE(error_of(ok + R"({"context": "c", "choices": ["a", "b"], "gold": 2})").find(":2: gold 2 is out of range for 2 choices"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"context": "c", "choices": [], "gold": 0})").find(":1: \"choices\" needs at least 2 choices"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"context": "c", "choices": ["a", ""], "gold": 0})").find("choice 1 is empty"), std::string::npos);
  EXPECT_NE(error_of(R"({"context": 3, "choices": ["a", "b"], "gold": 0})").find(":1: \"context\" must be a string (got 3)"),
            std::string::npos);
  EXPECT_NE(error_of(ok + "{not json\n").find(":2: not JSON"), std::string::npos);
  EXPECT_NE(error_of(ok + R"({"context": "c", "target": "t"})").find(":2: a cloze example in a task whose first"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"question": "q", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "E"})")
                .find("answerKey \"E\" is not one of the labels A, B"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"prompt": "p"})").find("unknown task layout (fields: prompt)"), std::string::npos);
  auto empty = read_task(put("empty.jsonl", "\n\n"));
  ASSERT_FALSE(empty.ok());
  EXPECT_NE(empty.status().message().find("no examples"), std::string::npos);
  EXPECT_FALSE(parse_task_format("mmlu").ok());
  EXPECT_FALSE(find_task("nonexistent_task", dir_.string()).ok());
}

TEST_F(EvalTasks, CliPrintsAccuraciesWritesSamplesAndFailsCleanly) {
  Model m = random_model();
  ASSERT_TRUE(m.save(p("model")).ok());
  fs::copy_file(test::tiny().data + "/tokenizer.model", p("model/tokenizer.model"));
  fs::create_directories(p("tasks"));
  put("tasks/toy.jsonl", R"({"context": "The cat sat on the", "choices": ["mat", "dog"], "gold": 0})" "\n"
                           R"({"context": "Once upon a", "choices": ["time", "cat"], "gold": 0})" "\n");
  auto r = test::stem_cmd("eval --model " + p("model") + " --task toy --tasks-dir " + p("tasks") + " --json --log-samples " +
                         p("s.jsonl"));
  ASSERT_EQ(r.code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["tasks"][0]["examples"], 2);
  EXPECT_EQ(j["tasks"][0]["kind"], "multiple_choice");
  std::ifstream samples(p("s.jsonl"));
  std::string line;
  int n = 0;
  while (std::getline(samples, line)) {
    const auto s = nlohmann::json::parse(line);
    EXPECT_EQ(s["task"], "toy");
    EXPECT_EQ(s["logprobs"].size(), 2u);
    ++n;
  }
  EXPECT_EQ(n, 2);
  auto bad = test::stem_cmd("eval --model " + p("model") + " --task " + put("b.jsonl", "{\"context\": \"c\"}\n"));
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.err.find("b.jsonl:1: "), std::string::npos) << bad.err;
  // Knowledge capacity of a bios table (stem/capacity.h), the first 2 people.
  auto bios = make_bios(5, 1);
  ASSERT_TRUE(bios.ok());
  ASSERT_TRUE(write_bios(*bios, p("bios.json")).ok());
  auto cap = test::stem_cmd("eval --model " + p("model") + " --capacity " + p("bios.json") + " --limit 2 --json");
  ASSERT_EQ(cap.code, 0) << cap.err;
  const auto cj = nlohmann::json::parse(cap.out);
  EXPECT_EQ(cj["people"], 2);
  EXPECT_EQ(cj["attributes"].size(), 5u);
  auto neither = test::stem_cmd("eval --model " + p("model"));
  EXPECT_EQ(neither.code, 1);
  EXPECT_NE(neither.err.find("--data"), std::string::npos) << neither.err;
}

}  // namespace
}  // namespace stem
