// The built-in tasks (include/stem/tasks.h) made from small sources written
// here: a book, WordNet data files, a countries-list folder. Each task reads
// back with read_task; the cloze rule (the target occurs earlier in the
// passage), definitions with distractors of the same part of speech, world
// facts whose probes never appear in the training sentences, needle contexts
// within their token budget with the key at its depth; the same seed gives the
// same files; bad sources are errors naming the file.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "cli_test_util.h"
#include "task_test_util.h"
#include "eval/make_tasks.h"
#include "stem/eval.h"
#include "stem/tasks.h"
#include "train_test_util.h"

namespace stem {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

std::string read_all(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

class MakeTasks : public test::TempDirTest {
 protected:
  void SetUp() override {
    test::TempDirTest::SetUp();
    test::write_book(p("book.txt"));
    fs::create_directories(p("wn"));
    const std::string header = "  1 This software and database is being provided to you\n  2 license text  \n";
    auto pos_file = [&](const std::string& pos, char type, const std::vector<std::string>& words) {
      std::string s = header;
      for (size_t i = 0; i < words.size(); ++i)
        s += std::to_string(1000 + i) + " 03 " + type + " 01 " + words[i] + " 0 000 | the meaning of " +
             words[i].substr(0, words[i].find('(')) + " number " + std::to_string(i) + "; \"an example\"  \n";
      write("wn/data." + pos, s);
    };
    pos_file("noun", 'n', {"apple", "river", "mill", "basket", "village", "morning", "family", "week"});
    pos_file("verb", 'v', {"walk", "rain", "know", "carry", "pass", "grow"});
    pos_file("adj", 's', {"quiet", "old", "ill", "many", "kind(a)"});
    pos_file("adv", 'r', {"quietly", "slowly", "often", "never"});
    test::write_countries_list(p("cl"));
  }

  TaskSources sources() const {
    TaskSources s;
    s.book = p("book.txt");
    s.wordnet = p("wn");
    s.countries = p("cl");
    s.tokenizer = test::tiny().data + "/tokenizer.model";
    return s;
  }
  MakeTasksOptions options() const {
    MakeTasksOptions o;
    o.cloze_examples = 30;
    o.definition_examples = 12;
    o.needle_lengths = {128, 256};
    o.needle_depths = {0.0, 0.5, 1.0};
    o.needle_per_cell = 2;
    return o;
  }
};

TEST_F(MakeTasks, EveryTaskFollowsItsRuleAndReadsBack) {
  auto made = make_tasks(sources(), options(), p("out"));
  ASSERT_TRUE(made.ok()) << made.status().message();
  std::set<std::string> names;
  for (const MadeTask& t : *made) names.insert(t.name);
  EXPECT_EQ(names, (std::set<std::string>{"cloze", "definitions", "world_facts_train", "world_facts_mc",
                                          "world_facts_cloze", "needle_128", "needle_256"}));
  const json manifest = json::parse(read_all(p("out/tasks.json")));
  EXPECT_EQ(manifest["format"], "stem-tasks");
  EXPECT_EQ(manifest["tasks"].size(), 7u);

  auto cloze = read_task(p("out/cloze.jsonl"));
  ASSERT_TRUE(cloze.ok()) << cloze.status().message();
  EXPECT_EQ(cloze->kind, TaskKind::Cloze);
  EXPECT_EQ(cloze->examples.size(), 30u);
  for (const TaskExample& e : cloze->examples) {
    bool earlier = false;  // the target occurs earlier as a whole word
    for (size_t at = 0; (at = e.context.find(e.target, at)) != std::string::npos; ++at)
      earlier = earlier || ((at == 0 || !std::isalpha(static_cast<unsigned char>(e.context[at - 1]))) &&
                            !std::isalpha(static_cast<unsigned char>(e.context[at + e.target.size()])));
    EXPECT_TRUE(earlier) << e.target;
    EXPECT_NE(e.context.back(), ' ');
    EXPECT_EQ(e.context.find("CHAPTER"), std::string::npos);  // headings are not text
  }

  auto defs = read_task(p("out/definitions.jsonl"));
  ASSERT_TRUE(defs.ok()) << defs.status().message();
  const std::vector<std::set<std::string>> pos = {
      {"apple", "river", "mill", "basket", "village", "morning", "family", "week"},
      {"walk", "rain", "know", "carry", "pass", "grow"},
      {"quiet", "old", "ill", "many", "kind"},
      {"quietly", "slowly", "often", "never"}};
  for (const TaskExample& e : defs->examples) {
    ASSERT_EQ(e.choices.size(), 4u);
    EXPECT_EQ(std::set<std::string>(e.choices.begin(), e.choices.end()).size(), 4u);
    EXPECT_NE(e.context.find("the meaning of " + e.choices[e.gold] + " number"), std::string::npos) << e.context;
    EXPECT_EQ(e.context.find("an example"), std::string::npos);  // the gloss without its examples
    int same = 0;
    for (const auto& words : pos) same += std::all_of(e.choices.begin(), e.choices.end(), [&](const std::string& w) { return words.count(w); });
    EXPECT_EQ(same, 1) << "distractors of another part of speech in " << e.context;
  }

  const std::string train = read_all(p("out/world_facts_train.txt"));
  EXPECT_NE(train.find("The capital of Borvia is Bort."), std::string::npos);
  EXPECT_EQ(train.find("Zedland"), std::string::npos);
  for (const char* f : {"out/world_facts_mc.jsonl", "out/world_facts_cloze.jsonl"}) {
    auto t = read_task(p(f));
    ASSERT_TRUE(t.ok()) << t.status().message();
    for (const TaskExample& e : t->examples) {
      EXPECT_EQ(train.find(e.context), std::string::npos) << "a probe is a training sentence: " << e.context;
      if (e.id.rfind("capital_", 0) == 0) {
        const std::string country = e.id.substr(8);
        const std::string gold = t->kind == TaskKind::Cloze ? e.target : e.choices[e.gold];
        EXPECT_NE(train.find("The capital of " + country + " is " + gold + "."), std::string::npos) << e.id;
      }
    }
  }

  const Tokenizer tok = *Tokenizer::load(test::tiny().data + "/tokenizer.model");
  for (int64_t L : {128, 256}) {
    auto t = read_task(p("out/needle_" + std::to_string(L) + ".jsonl"));
    ASSERT_TRUE(t.ok()) << t.status().message();
    EXPECT_EQ(t->examples.size(), 6u);
    for (const TaskExample& e : t->examples) {
      const int64_t n = 1 + static_cast<int64_t>(tok.encode(e.context + " " + e.target).size());
      EXPECT_LE(n, L);
      EXPECT_GE(n, L / 2);
      const size_t at = e.context.find("The pass key is " + e.target + ".");
      ASSERT_NE(at, std::string::npos);
      if (e.id.find("depth0.00") != std::string::npos) {
        EXPECT_EQ(at, 0u);
      }
      if (e.id.find("depth1.00") != std::string::npos) {  // after all the filler: only the question follows
        EXPECT_EQ(e.context.substr(at), "The pass key is " + e.target + ". Remember it. " + e.target +
                                            " is the pass key. What is the pass key? The pass key is");
      }
    }
  }
}

TEST_F(MakeTasks, TheSameSeedGivesTheSameFiles) {
  ASSERT_TRUE(make_tasks(sources(), options(), p("a")).ok());
  ASSERT_TRUE(make_tasks(sources(), options(), p("b")).ok());
  MakeTasksOptions other = options();
  other.seed = 2;
  ASSERT_TRUE(make_tasks(sources(), other, p("c")).ok());
  for (const char* f : {"cloze.jsonl", "definitions.jsonl", "world_facts_mc.jsonl", "needle_128.jsonl"}) {
    EXPECT_EQ(read_all(p("a/") + f), read_all(p("b/") + f)) << f;
    EXPECT_NE(read_all(p("a/") + f), read_all(p("c/") + f)) << f;
  }
}

TEST_F(MakeTasks, OnlyTheTasksWhoseSourcesAreGivenAndBadSourcesNameTheFile) {
  TaskSources only_wordnet;
  only_wordnet.wordnet = p("wn");
  auto made = make_tasks(only_wordnet, options(), p("w"));
  ASSERT_TRUE(made.ok()) << made.status().message();
  ASSERT_EQ(made->size(), 1u);
  EXPECT_EQ((*made)[0].name, "definitions");

  MakeTasksOptions many = options();
  many.cloze_examples = 100000;
  auto short_book = make_tasks(sources(), many, p("x"));
  ASSERT_FALSE(short_book.ok());
  EXPECT_NE(short_book.status().message().find(p("book.txt") + ": only "), std::string::npos) << short_book.status().message();

  write("wn/data.verb", "00001 03 v zz walk\n");
  auto bad_wn = make_tasks(only_wordnet, options(), p("y"));
  ASSERT_FALSE(bad_wn.ok());
  EXPECT_NE(bad_wn.status().message().find(p("wn/data.verb") + ":1: "), std::string::npos) << bad_wn.status().message();

  TaskSources no_countries;
  no_countries.countries = p("nowhere");
  auto missing = make_tasks(no_countries, options(), p("z"));
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("countries.min.json"), std::string::npos) << missing.status().message();
}

TEST_F(MakeTasks, CliWritesWhatItCanAndSaysWhatItSkipped) {
  auto r = test::stem_cmd("tasks make --out " + p("t") + " --wordnet " + p("wn") + " --countries " + p("cl") +
                          " --definitions 5 --json");
  ASSERT_EQ(r.code, 0) << r.err;
  const json j = json::parse(r.out);
  std::set<std::string> names;  // and cloze, when run where data/task-sources/emma.txt exists
  for (const json& t : j["tasks"]) names.insert(t["name"].get<std::string>());
  for (const char* n : {"definitions", "world_facts_train", "world_facts_mc", "world_facts_cloze"}) EXPECT_TRUE(names.count(n)) << n;
  auto ran = test::stem_cmd("eval --help");
  EXPECT_NE(ran.out.find("--task"), std::string::npos);
  auto bad = test::stem_cmd("tasks make --out " + p("u") + " --wordnet " + p("nowhere"));
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.err.find(p("nowhere") + "/data.noun"), std::string::npos) << bad.err;
  auto lengths = test::stem_cmd("tasks make --out " + p("v") + " --needle-lengths 128,x");
  EXPECT_EQ(lengths.code, 1);
  EXPECT_NE(lengths.err.find("--needle-lengths: 'x'"), std::string::npos) << lengths.err;
}

TEST(MakeTasksText, SentencesKeepTitlesAndQuotes) {
  const auto s = eval::sentences_of("Mr. Knightley came.  \"Is it so?\" said Emma. She smiled!\nThe end");
  ASSERT_EQ(s.size(), 5u);
  EXPECT_EQ(s[0], "Mr. Knightley came.");
  EXPECT_EQ(s[1], "\"Is it so?\"");
  EXPECT_EQ(s[2], "said Emma.");
  EXPECT_EQ(s[4], "The end");
  EXPECT_EQ(eval::without_headings("CHAPTER IV\nSome text.\nVOLUME II\n"), "Some text.\n");
}

}  // namespace
}  // namespace stem
