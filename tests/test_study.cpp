// The study (include/stem/study.h): the spike rule on hand-made losses, the
// model layouts and their active parameters, and a whole tiny study (three
// models, two seeds, every kind of task, one capacity size) whose report and
// JSON hold every run, and whose second invocation reuses every run and
// measurement instead of redoing them. Also the report's new parts (x-y
// chart, heat map) on hand-made data.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "cli_test_util.h"
#include "stem/accounting.h"
#include "stem/report.h"
#include "stem/study.h"
#include "task_test_util.h"

namespace stem {
namespace {
namespace fs = std::filesystem;

std::string read_all(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST(Study, SpikesAreStepsAboveTheRunningMedianByTheRatio) {
  // Window 4: steps 5.. are judged against the median of the 4 before.
  const std::vector<double> losses = {5.0, 4.0, 4.0, 4.0, 4.0, 4.39, 4.41, 4.0, 6.0, 4.0};
  const std::vector<int64_t> spikes = loss_spikes(losses, SpikeRule{4, 1.10});
  EXPECT_EQ(spikes, (std::vector<int64_t>{7, 9}));  // 4.41 > 1.1 * 4; 6 > 1.1 * 4; 4.39 is not
  EXPECT_TRUE(loss_spikes({4.0, 4.0}, SpikeRule{4, 1.1}).empty());  // shorter than the window
  EXPECT_EQ(loss_spikes({1, 1, 1, NAN}, SpikeRule{2, 1.1}), (std::vector<int64_t>{4}));  // NaN counts
}

TEST(Study, SpikesAgainstAReferenceIgnoreBatchesThatAreHardForBoth) {
  // Step 5 is a hard batch for both runs: a spike by the ratio rule, none
  // against the reference. Step 7 is the model's own (its excess over the
  // reference jumps from 0.2 to 0.5), too small for the ratio rule.
  const std::vector<double> ref = {4.0, 4.0, 4.0, 4.0, 6.0, 4.0, 4.0, 4.0};
  const std::vector<double> run = {4.2, 4.2, 4.2, 4.2, 6.2, 4.2, 4.5, 4.2};
  SpikeRule rule{4, 1.10, 0.10};
  EXPECT_EQ(loss_spikes(run, rule), (std::vector<int64_t>{5}));
  EXPECT_EQ(excess_spikes(run, ref, rule), (std::vector<int64_t>{7}));
  EXPECT_EQ(excess_spikes(run, {4.0, 4.0}, rule), std::vector<int64_t>{});  // only the common steps
}

TEST(Study, ModelsShareAShapeAndMoeMatchesDenseActiveParameters) {
  auto cfg = [](const std::string& name) {
    auto c = study_model_config(name, 512, 64, 128, 6, 4, 4, 256);
    EXPECT_TRUE(c.ok()) << name << ": " << c.status().message();
    return *c;
  };
  EXPECT_EQ(cfg("dense").n_stem_layers(), 0);
  EXPECT_EQ(cfg("stem-third").n_stem_layers(), 2);
  EXPECT_EQ(cfg("stem-half").n_stem_layers(), 3);
  EXPECT_EQ(cfg("stem-all").n_stem_layers(), 5);
  EXPECT_EQ(cfg("stem-all").ffn_types[0], FfnType::Dense);
  EXPECT_EQ(cfg("stem-full").n_stem_layers(), 6);
  const ModelConfig moe = cfg("moe");
  EXPECT_EQ(moe.ffn_types[0], FfnType::Dense);
  EXPECT_EQ(moe.ffn_types[5], FfnType::HashMoe);
  EXPECT_EQ(account(moe, 64, 64).active_params, account(cfg("dense"), 64, 64).active_params);
  EXPECT_LT(account(cfg("stem-all"), 64, 64).active_params, account(cfg("dense"), 64, 64).active_params);
  auto bad = study_model_config("stem-most", 512, 64, 128, 6, 4, 4, 256);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("stem-most"), std::string::npos);
}

TEST(Study, ReportDrawsChartsAndHeatMaps) {
  Report r;
  r.title = "t";
  ReportSection s{"Capacity", {"words"}, {{"a", "b"}, {{"1", "2"}}}, {}, {}};
  s.charts.push_back({"people", "bits", true, {{"dense", "#000", {{100, 1}, {1000, 5}}, {}}}});
  s.heatmaps.push_back({"needle", "length", "depth", {"128"}, {"0%", "50%"}, {{1.0, NAN}}});
  r.sections.push_back(s);
  const std::string html = render_html(r);
  EXPECT_NE(html.find("<h2>Capacity</h2>"), std::string::npos);
  EXPECT_NE(html.find("<svg"), std::string::npos);
  EXPECT_NE(html.find(">people</text>"), std::string::npos);
  EXPECT_NE(html.find(">1.00</td>"), std::string::npos);
  EXPECT_NE(html.find("<td></td>"), std::string::npos);  // NaN: an empty cell
  EXPECT_EQ(html.find("Loss curves"), std::string::npos);  // no curves, no chart
}

class StudyRunTest : public test::TempDirTest {};

TEST_F(StudyRunTest, TinyStudyWritesEveryRunAndReusesThemWhenRunAgain) {
  test::write_book(p("book.txt"));
  test::write_countries_list(p("cl"));
  StudyOptions o;
  o.out = p("study");
  o.corpus = {p("book.txt")};
  o.sources.book = p("book.txt");
  o.sources.countries = p("cl");
  o.tasks.cloze_examples = 6;
  o.tasks.needle_lengths = {128};
  o.tasks.needle_depths = {0.0, 1.0};
  o.tasks.needle_per_cell = 2;
  o.models = {"dense", "stem-all", "moe"};
  o.seeds = {1, 2};
  o.vocab = 300;
  o.d = 32;
  o.f = 48;
  o.layers = 2;
  o.heads = 2;
  o.experts = 2;
  o.steps = 3;
  o.batch = 2;
  o.seq = 64;
  o.task_limit = 4;
  o.capacity_people = {4};
  o.capacity_steps = 2;
  o.capacity_vocab = 400;
  o.spikes.window = 1;
  auto r = run_study(o);
  ASSERT_TRUE(r.ok()) << r.status().message();
  ASSERT_EQ(r->runs.size(), 6u);
  EXPECT_EQ(r->runs[0].model, "dense");
  EXPECT_EQ(r->runs[1].seed, 2u);
  EXPECT_NE(r->runs[0].final_val_loss, r->runs[1].final_val_loss);  // the seed matters
  ASSERT_FALSE(r->task_names.empty());
  ASSERT_EQ(r->task_chance.size(), r->task_names.size());
  for (size_t i = 0; i < r->task_names.size(); ++i) {
    const bool mc = r->task_names[i] == "world_facts_mc";
    EXPECT_EQ(r->task_chance[i] > 0, mc) << r->task_names[i];  // cloze and needle: no chance
    EXPECT_LE(r->task_chance[i], 0.5);
  }
  for (const StudyRun& run : r->runs) {
    ASSERT_EQ(run.tasks.size(), r->task_names.size());
    EXPECT_EQ(run.train_loss.size(), 3u);
    ASSERT_EQ(run.needle_lengths, (std::vector<int64_t>{128}));
    ASSERT_EQ(run.needle_acc.size(), 1u);
    EXPECT_EQ(run.needle_acc[0].size(), 2u);
  }
  ASSERT_EQ(r->capacity.size(), 3u);
  EXPECT_GT(r->capacity[0].knowledge.max_bits, 0);
  const nlohmann::json j = nlohmann::json::parse(read_all(r->json));
  EXPECT_EQ(j["runs"].size(), 6u);
  EXPECT_EQ(j["models"].size(), 3u);
  EXPECT_EQ(j["comparison_with_dense"].size(), 2u);
  const std::string html = read_all(r->report);
  for (const char* s : {"stem-all", "moe", "Loss spikes", "Knowledge capacity", "Needle in a haystack", "world_facts_mc"})
    EXPECT_NE(html.find(s), std::string::npos) << s;

  // Again: nothing is trained or measured anew (the caches are kept as they were).
  const auto stamp = fs::last_write_time(fs::path(r->runs[0].dir) / "study_eval.json");
  int trained = 0;
  auto again = run_study(o, [&](const std::string& stage, int64_t, int64_t, const std::string&) {
    trained += stage.rfind("train ", 0) == 0 || stage.rfind("eval ", 0) == 0;
  });
  ASSERT_TRUE(again.ok()) << again.status().message();
  EXPECT_EQ(trained, 0);
  EXPECT_EQ(fs::last_write_time(fs::path(r->runs[0].dir) / "study_eval.json"), stamp);
  EXPECT_EQ(again->runs[3].tasks[0].acc, r->runs[3].tasks[0].acc);
}

TEST_F(StudyRunTest, BadOptionsAreErrorsBeforeAnyWork) {
  StudyOptions o;
  o.out = p("study");
  o.models = {"dense", "bogus"};
  auto r = run_study(o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("bogus"), std::string::npos);
  o.models = {"dense"};
  o.corpus = {p("missing")};
  r = run_study(o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("missing"), std::string::npos);
  o.corpus = {p(".")};
  o.tasks.needle_lengths = {1024};
  r = run_study(o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("needle length 1024"), std::string::npos);
  EXPECT_FALSE(fs::exists(p("study/data")));
}

}  // namespace
}  // namespace stem
