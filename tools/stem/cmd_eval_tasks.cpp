// stem eval --task: multiple-choice and cloze tasks (stem/eval.h) on a loaded
// model, with lm-evaluation-harness's scoring rules. Parses nothing itself
// (cmd_eval.cpp does); runs each task with a progress bar and prints a table
// of accuracies with standard errors, or JSON.
#include <cmath>
#include <cstdio>

#include "cmd_eval_tasks.h"
#include "stem/capacity.h"
#include "stem/tokenizer.h"

namespace stem::cli {

void add_task_flags(CLI::App* sub, TaskFlags* f) {
  sub->add_option("--task", f->tasks,
                  "Task file (JSON lines: stem, ARC, PIQA or HellaSwag layout) or the name of DIR/NAME.jsonl "
                  "in --tasks-dir; repeat for several");
  sub->add_option("--tasks-dir", f->dir, "Where task names are looked up")->capture_default_str();
  sub->add_option("--format", f->format, "Task file layout: auto | stem | arc | piqa | hellaswag")
      ->capture_default_str();
  sub->add_option("--limit", f->limit, "Evaluate the first N examples of each task, or with --capacity the first N people (0: all)")
      ->capture_default_str();
  sub->add_option("--log-samples", f->samples, "Write every example's scores to this JSON lines file");
  sub->add_option("--capacity", f->capacity,
                  "Knowledge capacity: the bits the model holds of a bios.json table (stem tasks make --bios N)");
  sub->add_flag("--no-share-context", f->no_share,
                "Run each choice with its full context (slower; to measure what sharing the context saves)");
}

namespace {
nlohmann::json num(double v) { return std::isnan(v) ? nlohmann::json(nullptr) : nlohmann::json(v); }
}  // namespace

int run_tasks(Model& model, const TaskFlags& f, bool json) {
  const char* cmd = "eval";
  auto format = parse_task_format(f.format);
  if (!format.ok()) return fail(cmd, format.status());
  auto tok = Tokenizer::for_model(model.dir(), model.config().vocab_size, "to tokenize the tasks");
  if (!tok.ok()) return fail(cmd, tok.status());
  std::vector<Task> tasks;
  for (const std::string& t : f.tasks) {
    auto path = find_task(t, f.dir);
    if (!path.ok()) return fail(cmd, path.status());
    auto task = read_task(*path, *format);
    if (!task.ok()) return fail(cmd, task.status());
    tasks.push_back(std::move(*task));
  }
  TaskOptions opt;
  opt.limit = f.limit;
  opt.share_context = !f.no_share;
  opt.keep_samples = !f.samples.empty();
  std::vector<TaskResult> results;
  for (const Task& t : tasks) {
    Progress bar(t.name, opt.limit > 0 ? std::min<int64_t>(opt.limit, t.examples.size()) : t.examples.size());
    auto r = evaluate_task(model, *tok, t, opt, [&](int64_t done, int64_t) { bar.update(done); });
    bar.finish();
    if (!r.ok()) return fail(cmd, r.status());
    results.push_back(std::move(*r));
  }
  if (!f.samples.empty()) {
    std::vector<std::pair<const Task*, const TaskResult*>> runs;
    for (size_t i = 0; i < tasks.size(); ++i) runs.emplace_back(&tasks[i], &results[i]);
    if (Status st = write_task_samples(f.samples, runs); !st.ok()) return fail(cmd, st);
  }
  if (json) {
    nlohmann::json a = nlohmann::json::array();
    for (size_t i = 0; i < tasks.size(); ++i) {
      const TaskResult& r = results[i];
      nlohmann::json j = {{"task", r.task}, {"path", r.path}, {"format", name(tasks[i].format)},
                          {"kind", r.kind == TaskKind::Cloze ? "cloze" : "multiple_choice"},
                          {"examples", r.examples}, {"acc", r.acc}, {"acc_stderr", num(r.acc_se)},
                          {"truncated_examples", r.truncated_examples}, {"tokens_scored", r.tokens_scored},
                          {"seconds", r.seconds}, {"examples_per_second", r.examples_per_second}};
      if (r.kind == TaskKind::Cloze) {
        j["mean_logprob"] = r.mean_logprob;
        j["perplexity"] = r.perplexity;
      } else {
        j["acc_norm"] = r.acc_norm;
        j["acc_norm_stderr"] = num(r.acc_norm_se);
      }
      a.push_back(j);
    }
    print_json({{"model", model.dir()}, {"shared_context", opt.share_context}, {"tasks", a}});
    return 0;
  }
  std::printf("%-20s %-6s %6s %16s %16s %11s %9s\n", "task", "kind", "n", "acc +- SE", "acc_norm +- SE",
              "perplexity", "ex/s");
  for (const TaskResult& r : results) {
    const bool cloze = r.kind == TaskKind::Cloze;
    char norm[32] = "-", ppl[32] = "-";
    if (!cloze) std::snprintf(norm, sizeof norm, "%.4f +- %.4f", r.acc_norm, r.acc_norm_se);
    if (cloze) std::snprintf(ppl, sizeof ppl, "%.4g", r.perplexity);
    std::printf("%-20s %-6s %6ld %7.4f +- %.4f %16s %11s %9.1f\n", r.task.c_str(), cloze ? "cloze" : "mc",
                static_cast<long>(r.examples), r.acc, r.acc_se, norm, ppl, r.examples_per_second);
    if (r.truncated_examples > 0)
      std::printf("  %ld examples were longer than the model's positions: their contexts were cut on the left\n",
                  static_cast<long>(r.truncated_examples));
  }
  if (!f.samples.empty()) std::printf("samples: %s\n", f.samples.c_str());
  return 0;
}

int run_capacity(Model& model, const TaskFlags& f, bool json) {
  const char* cmd = "eval";
  auto bios = read_bios(f.capacity);
  if (!bios.ok()) return fail(cmd, bios.status());
  auto tok = Tokenizer::for_model(model.dir(), model.config().vocab_size, "to tokenize the biographies");
  if (!tok.ok()) return fail(cmd, tok.status());
  const int64_t n = static_cast<int64_t>(bios->people.size());
  Progress bar("capacity", (f.limit > 0 ? std::min(f.limit, n) : n) * static_cast<int64_t>(bios->attributes.size()));
  auto k = measure_knowledge(model, *tok, *bios, f.limit, [&](int64_t done, int64_t) { bar.update(done); });
  bar.finish();
  if (!k.ok()) return fail(cmd, k.status());
  if (json) {
    nlohmann::json a = nlohmann::json::array();
    for (const AttributeKnowledge& x : k->attributes)
      a.push_back({{"name", x.name}, {"set_size", x.set_size}, {"accuracy", x.accuracy}, {"bits", x.bits},
                   {"max_bits", x.max_bits}});
    print_json({{"model", model.dir()}, {"bios", f.capacity}, {"people", k->people}, {"attributes", a},
                {"bits", k->bits}, {"max_bits", k->max_bits}, {"bits_per_param", k->bits_per_param},
                {"bits_per_active_param", k->bits_per_active_param}, {"seconds", k->seconds}});
    return 0;
  }
  std::printf("%-12s %8s %9s %12s %12s\n", "attribute", "set", "accuracy", "bits", "of");
  for (const AttributeKnowledge& x : k->attributes)
    std::printf("%-12s %8ld %9.4f %12.1f %12.1f\n", x.name.c_str(), static_cast<long>(x.set_size), x.accuracy, x.bits,
                x.max_bits);
  std::printf("%ld people: %.1f of %.1f bits (%.1f%%); %.4g bits per parameter, %.4g per active parameter\n",
              static_cast<long>(k->people), k->bits, k->max_bits, k->max_bits > 0 ? 100 * k->bits / k->max_bits : 0.0,
              k->bits_per_param, k->bits_per_active_param);
  return 0;
}

}  // namespace stem::cli
