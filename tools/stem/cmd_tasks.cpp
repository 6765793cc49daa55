// stem tasks make: the built-in evaluation tasks (stem/tasks.h) written into
// a folder, from the sources a user has (`scripts/setup.sh --tasks DIR`
// fetches them into data/task-sources by default). A task whose source is
// missing is skipped with a line saying how to get it.
#include <cstdio>
#include <sstream>

#include "commands.h"
#include "stem/tasks.h"

namespace stem::cli {

void register_tasks(CLI::App& app) {
  struct Opts {
    std::string out = "tasks", book, wordnet, countries, tokenizer, lengths = "128,256,512";
    MakeTasksOptions m;
    bool json = false;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* tasks = app.add_subcommand("tasks", "Built-in evaluation tasks");
  tasks->require_subcommand(1);
  CLI::App* sub = tasks->add_subcommand(
      "make", "Write the built-in tasks (cloze, definitions, world facts, needle) made from local text");
  sub->add_option("--out", o->out, "Output folder (read by `stem eval --task NAME --tasks-dir`)")->capture_default_str();
  sub->add_option("--book", o->book, "A book held out from training, plain text (cloze; needle filler); none: "
                                     "skip [default: data/task-sources/emma.txt]");
  sub->add_option("--wordnet", o->wordnet, "WordNet's dict folder (definitions); none: skip [default: /usr/share/wordnet]");
  sub->add_option("--countries", o->countries,
                  "The countries-list package folder (world facts); none: skip "
                  "[default: data/task-sources/countries-list]");
  sub->add_option("--tokenizer", o->tokenizer, "The model's tokenizer.model: sizes the needle contexts in its tokens");
  sub->add_option("--needle-lengths", o->lengths, "Needle context lengths in tokens")->capture_default_str();
  sub->add_option("--needle-per-depth", o->m.needle_per_cell, "Needle examples per length and depth")->capture_default_str();
  sub->add_option("--cloze", o->m.cloze_examples, "Cloze examples")->capture_default_str();
  sub->add_option("--definitions", o->m.definition_examples, "Definition examples")->capture_default_str();
  sub->add_option("--bios", o->m.bios_people,
                  "Also N synthetic biographies for `stem eval --capacity` (bios_train.txt, bios.json)")
      ->capture_default_str();
  sub->add_option("--seed", o->m.seed, "Seed of every draw")->capture_default_str();
  sub->add_flag("--json", o->json, "Machine-readable output");
  add_command(sub, [o] {
    const char* cmd = "tasks make";
    TaskSources s = task_sources(o->book, o->wordnet, o->countries);
    s.tokenizer = o->tokenizer;
    MakeTasksOptions m = o->m;
    m.needle_lengths.clear();
    std::stringstream ls(o->lengths);
    for (std::string item; std::getline(ls, item, ',');) {
      char* end = nullptr;
      const long v = std::strtol(item.c_str(), &end, 10);
      if (item.empty() || *end || v < 32) return fail(cmd, Status::error("--needle-lengths: '" + item + "' is not a length >= 32"));
      m.needle_lengths.push_back(v);
    }
    auto made = make_tasks(s, m, o->out);
    if (!made.ok()) return fail(cmd, made.status());
    std::vector<std::string> skipped = skipped_tasks(s);
    if (!s.book.empty() && s.tokenizer.empty()) skipped.push_back("needle: no --tokenizer (the model's tokenizer.model)");
    if (o->json) {
      nlohmann::json a = nlohmann::json::array();
      for (const MadeTask& t : *made)
        a.push_back({{"name", t.name}, {"path", t.path}, {"kind", t.kind}, {"examples", t.examples}, {"source", t.source}});
      print_json({{"out", o->out}, {"seed", m.seed}, {"tasks", a}, {"skipped", skipped}});
      return 0;
    }
    for (const MadeTask& t : *made)
      std::printf("%-20s %-16s %6ld  %s\n", t.name.c_str(), t.kind.c_str(), static_cast<long>(t.examples), t.path.c_str());
    for (const std::string& k : skipped) std::printf("skipped %s\n", k.c_str());
    std::printf("next: stem eval --model DIR --tasks-dir %s --task cloze --task definitions ...\n", o->out.c_str());
    return 0;
  });
}

}  // namespace stem::cli
