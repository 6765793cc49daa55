// The architecture study: dense, STEM in several layouts and hash-MoE models
// of one shape, trained on the same data for the same steps with several
// seeds, then measured on every built-in task, on held-out perplexity, on
// knowledge capacity (synthetic biographies, several N) and on training
// stability (loss spikes); written as OUT/report.html and OUT/study.json.
//
//   OUT/tasks/       stem tasks make (world facts, definitions, cloze, needle)
//   OUT/data/        the corpus + the world-facts sentences, prepared
//   OUT/MODEL-sSEED/ one training run each (resumed when present)
//   OUT/capacity/N/  biographies of N people, their data and one run per model
//
// Every step reuses what an earlier, interrupted study left: finished runs
// are not trained again. It builds on stem/train.h, stem/eval.h,
// stem/tasks.h and stem/capacity.h; it prints nothing (callbacks report).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "stem/capacity.h"
#include "stem/config.h"
#include "stem/eval.h"
#include "stem/status.h"
#include "stem/tasks.h"

namespace stem {

// The models a study may train, by name, all of the study's shape (d, f, L,
// H): "dense"; "stem-third" (every third layer STEM: 2, 5, ...), "stem-half"
// (odd layers), "stem-all" (all but layer 0, the paper's layout), "stem-full"
// (every layer); "moe" (hash-MoE in layers 1..L-1, `experts` experts of width
// f each, so its active parameters are the dense model's).
const std::vector<std::string>& study_model_names();
Result<ModelConfig> study_model_config(const std::string& name, int64_t vocab, int64_t d, int64_t f, int64_t layers,
                                       int64_t heads, int64_t experts, int64_t max_positions);

// A loss spike: a step after the first `window` whose training loss exceeds
// `ratio` times the median of the `window` steps before it. Runs of one seed
// see the same batches, so a hard batch raises every model's loss at the same
// step; a spike against a reference run (the dense model of the same seed) is
// a step whose excess loss over the reference's exceeds the median excess of
// the `window` steps before it by `margin` nats: the model's own instability.
struct SpikeRule {
  int64_t window = 50;
  double ratio = 1.10;
  double margin = 0.25;
};
// The 1-based steps of `losses` (losses[i] is step i + 1) that are spikes.
std::vector<int64_t> loss_spikes(const std::vector<double>& losses, const SpikeRule& rule);
// The same against `reference` (over the steps both have).
std::vector<int64_t> excess_spikes(const std::vector<double>& losses, const std::vector<double>& reference,
                                   const SpikeRule& rule);

// The built-in tasks' defaults with needle lengths the study's models train at (128, 256).
inline MakeTasksOptions study_tasks() {
  MakeTasksOptions o;
  o.needle_lengths = {128, 256};
  return o;
}

struct StudyOptions {
  std::string out = "runs/study";
  std::vector<std::string> corpus = {"corpus/builtin"};  // text files or folders
  TaskSources sources;             // book, wordnet, countries ("" : that task is skipped)
  MakeTasksOptions tasks = study_tasks();  // example counts, needle lengths and depths
  std::vector<std::string> models = study_model_names();
  int64_t facts_repeat = 8;        // the world-facts sentences go into the corpus this many times
  std::vector<uint64_t> seeds = {1, 2};
  int64_t vocab = 4096, d = 128, f = 344, layers = 6, heads = 4, experts = 4;
  int64_t steps = 1500, batch = 8, seq = 256;
  float lr = 3e-3f;
  int64_t task_limit = 0;          // examples per task (0: all)
  std::vector<int64_t> capacity_people = {300, 1000, 3000};  // empty: no capacity runs
  std::vector<std::string> capacity_models = {"dense", "stem-all", "moe"};  // empty: `models`
  int64_t capacity_steps = 1000;   // per capacity run (first seed only)
  int64_t capacity_vocab = 2048;
  SpikeRule spikes;
};

struct StudyRun {
  std::string model;               // a study_model_names() entry
  uint64_t seed = 0;
  std::string dir, checkpoint;
  ModelConfig config;
  int64_t params_total = 0, active_params = 0;
  double train_flops_per_token = 0;
  std::vector<std::pair<double, double>> train_loss, val_loss;  // (step, loss)
  double final_val_loss = 0, final_val_se = 0;  // held-out split, after training
  double train_seconds = 0, tokens_per_second = 0;  // median step speed
  std::vector<int64_t> spike_steps;
  std::vector<int64_t> excess_spike_steps;  // against the dense run of the same seed (none without one)
  std::vector<TaskResult> tasks;   // in the study's task order (no samples)
  // Needle accuracy by (length, depth), from the needle tasks' samples:
  std::vector<int64_t> needle_lengths;
  std::vector<double> needle_depths;
  std::vector<std::vector<double>> needle_acc;  // [length][depth]
  double average = 0, average_se = 0;  // mean acc over the tasks; its standard error
};

struct StudyCapacity {
  std::string model;
  int64_t people = 0;
  uint64_t seed = 0;
  int64_t params_total = 0, active_params = 0;
  Knowledge knowledge;
};

struct StudyResult {
  std::vector<MadeTask> tasks_made;
  std::vector<std::string> task_names;  // the evaluated tasks, in order
  std::vector<double> task_chance;      // accuracy of a uniform guess (cloze: 0), per task
  std::vector<StudyRun> runs;           // model-major, then seed
  std::vector<StudyCapacity> capacity;
  double seconds = 0;
  std::string report, json;             // paths written
};

// (stage, done, total, extra): stages "tasks", "prepare", "train MODEL-sSEED",
// "eval MODEL-sSEED TASK", "capacity N MODEL", ...; done/total in the stage's
// units (steps, examples), total 0 for a stage without a count.
using StudyProgress = std::function<void(const std::string& stage, int64_t done, int64_t total,
                                         const std::string& extra)>;

// Runs (or finishes) the study and writes OUT/report.html and OUT/study.json.
// Errors name the stage and the file: a missing corpus, an unknown model
// name, a needle length above seq, a run that diverged.
Result<StudyResult> run_study(const StudyOptions& opt, const StudyProgress& progress = nullptr);

// The report and the JSON of a finished study (run_study writes both).
Status write_study_report(const StudyOptions& opt, const StudyResult& r, const std::string& path);
Status write_study_json(const StudyOptions& opt, const StudyResult& r, const std::string& path);

}  // namespace stem
