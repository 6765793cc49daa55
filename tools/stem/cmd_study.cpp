// stem study: the architecture comparison end to end (stem/study.h): dense,
// STEM layouts and hash-MoE trained with several seeds, every built-in task,
// knowledge capacity and loss spikes, written as OUT/report.html and
// OUT/study.json. It parses, calls run_study with progress bars, and prints
// the table; re-running reuses every finished run and measurement.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "commands.h"
#include "stem/study.h"

namespace stem::cli {
namespace fs = std::filesystem;

void register_study(CLI::App& app) {
  struct Opts {
    StudyOptions s;
    std::string book, wordnet, countries;
    std::vector<int64_t> needle = study_tasks().needle_lengths;
    std::vector<std::string> capacity = {"300", "1000", "3000"};
    bool force = false, json = false;
  };
  auto o = std::make_shared<Opts>();
  StudyOptions& s = o->s;
  CLI::App* sub = app.add_subcommand(
      "study", "Train dense, STEM and hash-MoE models with several seeds, run every task, write report.html");
  sub->add_option("--out", s.out, "Study directory (tasks, data, one run per model and seed, report.html, study.json)")
      ->capture_default_str();
  sub->add_option("--corpus", s.corpus, "Text files or folders to train on (the world-facts sentences are added)")
      ->capture_default_str();
  sub->add_option("--models", s.models, "Models: dense, stem-third, stem-half, stem-all, stem-full, moe")
      ->delimiter(',')
      ->check(CLI::IsMember(study_model_names()))
      ->capture_default_str();
  sub->add_option("--facts-repeat", s.facts_repeat, "Times the world-facts sentences go into the corpus")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  sub->add_option("--seeds", s.seeds, "Seeds; each model is trained once per seed")->delimiter(',')->capture_default_str();
  sub->add_option("--steps", s.steps, "Training steps of each run")->capture_default_str();
  sub->add_option("--batch", s.batch, "Sequences per step")->capture_default_str();
  sub->add_option("--seq", s.seq, "Tokens per sequence")->capture_default_str();
  sub->add_option("--lr", s.lr, "Peak learning rate")->capture_default_str();
  sub->add_option("--vocab-size", s.vocab, "Tokenizer vocabulary")->capture_default_str();
  sub->add_option("--hidden", s.d, "Hidden size d")->capture_default_str();
  sub->add_option("--ffn", s.f, "FFN width f")->capture_default_str();
  sub->add_option("--layers", s.layers, "Layers L")->capture_default_str();
  sub->add_option("--heads", s.heads, "Attention heads H")->capture_default_str();
  sub->add_option("--experts", s.experts, "Experts per hash-MoE layer")->capture_default_str();
  sub->add_option("--limit", s.task_limit, "Examples per task (0: all)")->capture_default_str();
  sub->add_option("--book", o->book, "Held-out book (cloze, needle); none: skip [default: data/task-sources/emma.txt]");
  sub->add_option("--wordnet", o->wordnet, "WordNet dict folder (definitions); none: skip [default: /usr/share/wordnet]");
  sub->add_option("--countries", o->countries,
                  "countries-list folder (world facts); none: skip [default: data/task-sources/countries-list]");
  sub->add_option("--needle-lengths", o->needle, "Needle context lengths in tokens")->delimiter(',')->capture_default_str();
  sub->add_option("--needle-per-depth", s.tasks.needle_per_cell, "Needle examples per length and depth")
      ->capture_default_str();
  sub->add_option("--cloze", s.tasks.cloze_examples, "Cloze examples")->capture_default_str();
  sub->add_option("--definitions", s.tasks.definition_examples, "Definition examples")->capture_default_str();
  sub->add_option("--capacity-people", o->capacity, "Biography counts N of the capacity runs; none: no capacity runs")
      ->delimiter(',')
      ->capture_default_str();
  sub->add_option("--capacity-models", s.capacity_models, "Models of the capacity runs")
      ->delimiter(',')
      ->check(CLI::IsMember(study_model_names()))
      ->capture_default_str();
  sub->add_option("--capacity-steps", s.capacity_steps, "Training steps of each capacity run")->capture_default_str();
  sub->add_option("--capacity-vocab", s.capacity_vocab, "Vocabulary of the biographies' tokenizer")->capture_default_str();
  sub->add_option("--spike-window", s.spikes.window, "Loss spikes: steps in the running median")->capture_default_str();
  sub->add_option("--spike-ratio", s.spikes.ratio, "Loss spikes: loss above this times the running median")
      ->capture_default_str();
  sub->add_option("--spike-margin", s.spikes.margin,
                  "Spikes against dense: excess loss above its running median by this many nats")
      ->capture_default_str();
  sub->add_flag("--force", o->force, "Start over (delete the study directory first)");
  sub->add_flag("--json", o->json, "Print study.json's summary as JSON");
  add_command(sub, [o] {
    const char* cmd = "study";
    StudyOptions s = o->s;
    s.sources = task_sources(o->book, o->wordnet, o->countries);
    s.tasks.needle_lengths = o->needle;
    s.capacity_people.clear();
    for (const std::string& c : o->capacity) {
      if (c == "none") continue;
      char* end = nullptr;
      const long n = std::strtol(c.c_str(), &end, 10);
      if (c.empty() || *end || n < 1) return fail(cmd, Status::error("--capacity-people: '" + c + "' is not a count >= 1"));
      s.capacity_people.push_back(n);
    }
    for (const std::string& k : skipped_tasks(s.sources)) std::fprintf(stderr, "skipped %s\n", k.c_str());
    if (o->force) {
      std::error_code ec;
      fs::remove_all(s.out, ec);
    }
    std::unique_ptr<Progress> bar;
    std::string stage;
    auto made = run_study(s, [&](const std::string& st, int64_t done, int64_t total, const std::string& extra) {
      if (st != stage) {
        if (bar) bar->finish();
        bar.reset();
        stage = st;
        if (total > 0) bar = std::make_unique<Progress>(st, total);
        else std::fprintf(stderr, "%s\n", st.c_str());
      }
      if (bar) bar->update(done, extra);
    });
    if (bar) bar->finish();
    if (!made.ok()) return fail(cmd, made.status());
    if (o->json) {
      print_json({{"report", made->report}, {"json", made->json}, {"seconds", made->seconds}});
      return 0;
    }
    std::printf("%-11s %5s %9s", "model", "seed", "val loss");
    for (const std::string& t : made->task_names) std::printf(" %*s", static_cast<int>(std::max<size_t>(6, t.size())), t.c_str());
    std::printf(" %8s %7s %9s\n", "average", "spikes", "vs dense");
    for (const StudyRun& r : made->runs) {
      std::printf("%-11s %5lu %9.4f", r.model.c_str(), static_cast<unsigned long>(r.seed), r.final_val_loss);
      for (size_t i = 0; i < r.tasks.size(); ++i)
        std::printf(" %*.1f", static_cast<int>(std::max<size_t>(6, made->task_names[i].size())), 100 * r.tasks[i].acc);
      std::printf(" %8.1f %7zu %9zu\n", 100 * r.average, r.spike_steps.size(), r.excess_spike_steps.size());
    }
    std::printf("%-11s %5s %9s", "(chance)", "", "");
    double chance = 0;
    for (size_t i = 0; i < made->task_chance.size(); ++i) {
      std::printf(" %*.1f", static_cast<int>(std::max<size_t>(6, made->task_names[i].size())), 100 * made->task_chance[i]);
      chance += made->task_chance[i] / static_cast<double>(made->task_chance.size());
    }
    std::printf(" %8.1f\n", 100 * chance);
    for (const StudyCapacity& c : made->capacity)
      std::printf("capacity %-11s N=%-6ld %8.0f of %8.0f bits  %.5f bits/active param\n", c.model.c_str(),
                  static_cast<long>(c.people), c.knowledge.bits, c.knowledge.max_bits, c.knowledge.bits_per_active_param);
    std::printf("report: %s\njson: %s\n", fs::absolute(made->report).c_str(), fs::absolute(made->json).c_str());
    return 0;
  });
}

}  // namespace stem::cli
