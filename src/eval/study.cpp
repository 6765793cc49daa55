// The architecture study (stem/study.h): tasks, data, one training run per
// model and seed, every task on each, capacity runs, then the report. Each
// run's measurements are kept in RUN/study_eval.json next to its checkpoint,
// so an interrupted study re-measures nothing it finished. The report and
// the JSON are written by study_report.cpp.
#include "stem/study.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "io/files.h"
#include "stem/accounting.h"
#include "stem/data.h"
#include "stem/model.h"
#include "stem/train.h"

namespace stem {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void report(const StudyProgress& p, const std::string& stage, int64_t done, int64_t total, const std::string& extra = "") {
  if (p) p(stage, done, total, extra);
}

// -------- caches of finished measurements

json task_to_json(const TaskResult& t) {
  return {{"task", t.task}, {"path", t.path}, {"kind", t.kind == TaskKind::Cloze ? "cloze" : "multiple_choice"},
          {"examples", t.examples}, {"acc", t.acc}, {"acc_se", t.acc_se}, {"acc_norm", t.acc_norm},
          {"acc_norm_se", t.acc_norm_se}, {"mean_logprob", t.mean_logprob}, {"perplexity", t.perplexity},
          {"truncated_examples", t.truncated_examples}, {"seconds", t.seconds},
          {"examples_per_second", t.examples_per_second}};
}

// NaN is stored as null by nlohmann; read it back as NaN.
double num(const json& j, const char* key) {
  const auto it = j.find(key);
  return it == j.end() || it->is_null() ? NAN : it->get<double>();
}

TaskResult task_from_json(const json& j) {
  TaskResult t;
  t.task = j.at("task").get<std::string>();
  t.path = j.at("path").get<std::string>();
  t.kind = j.at("kind") == "cloze" ? TaskKind::Cloze : TaskKind::MultipleChoice;
  t.examples = j.at("examples").get<int64_t>();
  t.acc = num(j, "acc");
  t.acc_se = num(j, "acc_se");
  t.acc_norm = num(j, "acc_norm");
  t.acc_norm_se = num(j, "acc_norm_se");
  t.mean_logprob = num(j, "mean_logprob");
  t.perplexity = num(j, "perplexity");
  t.truncated_examples = j.at("truncated_examples").get<int64_t>();
  t.seconds = num(j, "seconds");
  t.examples_per_second = num(j, "examples_per_second");
  return t;
}

json run_measures_to_json(const StudyRun& r) {
  json tasks = json::array();
  for (const TaskResult& t : r.tasks) tasks.push_back(task_to_json(t));
  return {{"checkpoint", r.checkpoint}, {"final_val_loss", r.final_val_loss}, {"final_val_se", r.final_val_se},
          {"tasks", tasks}, {"needle_lengths", r.needle_lengths}, {"needle_depths", r.needle_depths},
          {"needle_acc", r.needle_acc}};
}

// Fills r's measurements from RUN/study_eval.json when it was made for this
// checkpoint and these tasks; false when it must be measured.
bool load_measures(StudyRun& r, const std::vector<Task>& tasks, int64_t limit) {
  auto text = io::read_text((fs::path(r.dir) / "study_eval.json").string());
  if (!text.ok()) return false;
  try {
    const json j = json::parse(*text);
    if (j.at("checkpoint") != r.checkpoint || j.at("limit") != limit || j.at("tasks").size() != tasks.size())
      return false;
    for (size_t i = 0; i < tasks.size(); ++i)
      if (j["tasks"][i].at("path") != tasks[i].path) return false;
    r.final_val_loss = num(j, "final_val_loss");
    r.final_val_se = num(j, "final_val_se");
    for (const json& t : j["tasks"]) r.tasks.push_back(task_from_json(t));
    r.needle_lengths = j.at("needle_lengths").get<std::vector<int64_t>>();
    r.needle_depths = j.at("needle_depths").get<std::vector<double>>();
    for (const json& row : j.at("needle_acc")) {
      std::vector<double> v;
      for (const json& x : row) v.push_back(x.is_null() ? NAN : x.get<double>());
      r.needle_acc.push_back(v);
    }
    return true;
  } catch (const json::exception&) {
    return false;  // an older or damaged cache: measure again
  }
}

// -------- steps

Result<std::string> prepare_once(const std::vector<std::string>& inputs, const std::string& out, int64_t vocab,
                                 double val_fraction, int64_t doc_bytes, uint64_t seed, const StudyProgress& p,
                                 const std::string& stage) {
  std::error_code ec;
  if (fs::exists(fs::path(out) / "data.json", ec)) return out;
  PrepareOptions po;
  po.inputs = inputs;
  po.out = out;
  po.vocab_size = vocab;
  po.val_fraction = val_fraction;
  po.doc_bytes = doc_bytes;
  po.seed = seed;
  auto made = prepare_data(po, [&](const std::string& s, int64_t done, int64_t total) {
    report(p, stage + " (" + s + ")", done, total);
  });
  if (!made.ok()) return Status::error(stage + ": " + made.status().message());
  return out;
}

struct TrainSpec {
  ModelConfig config;
  std::string data, dir, stage;
  int64_t steps, batch, seq;
  float lr;
  uint64_t seed;
  bool validate;  // evaluate the held-out split during training
};

// Trains (or finishes) one run; returns its checkpoint.
Result<std::string> train_run(const TrainSpec& s, const StudyProgress& p) {
  std::error_code ec;
  fs::create_directories(s.dir, ec);
  if (ec) return Status::error(s.dir + ": cannot create: " + ec.message());
  TrainOptions t;
  t.config = s.config;
  t.data_dir = s.data;
  t.out_dir = s.dir;
  t.steps = s.steps;
  t.batch = s.batch;
  t.seq = s.seq;
  t.lr = s.lr;
  t.warmup = std::max<int64_t>(10, s.steps / 20);
  t.eval_every = s.validate ? std::max<int64_t>(1, s.steps / 12) : 0;
  t.eval_tokens = 1 << 16;
  t.save_every = std::max<int64_t>(1, s.steps / 4);
  t.keep = 1;
  t.seed = s.seed;
  t.resume = true;
  STEM_ASSIGN_OR_RETURN(auto trainer, Trainer::create(t));
  if (trainer->start_step() < s.steps) {
    auto ran = trainer->run([&](const StepRecord& r) {
      char extra[64];
      std::snprintf(extra, sizeof extra, "loss %.3f %.0f tok/s", r.loss, r.tokens_per_second);
      report(p, s.stage, r.step, s.steps, extra);
    });
    if (!ran.ok()) return Status::error(s.stage + ": " + ran.status().message());
  }
  return resolve_model_dir(s.dir);
}

// The needle cells of one task's samples: ids "needle_lenL_depthD_...".
void add_needle(StudyRun& r, const Task& task, const TaskResult& res) {
  std::map<double, std::pair<int64_t, int64_t>> by_depth;  // depth -> (right, all)
  int64_t length = -1;
  for (const TaskSample& s : res.samples) {
    const std::string& id = task.examples[static_cast<size_t>(s.index)].id;
    const size_t l = id.find("_len"), d = id.find("_depth");
    if (l == std::string::npos || d == std::string::npos) continue;
    length = std::atoll(id.c_str() + l + 4);
    auto& cell = by_depth[std::atof(id.c_str() + d + 6)];
    cell.first += s.correct;
    cell.second += 1;
  }
  if (length < 0) return;
  std::vector<double> row;
  for (auto& [depth, cell] : by_depth) {
    auto it = std::find(r.needle_depths.begin(), r.needle_depths.end(), depth);
    if (it == r.needle_depths.end()) r.needle_depths.push_back(depth);
  }
  std::sort(r.needle_depths.begin(), r.needle_depths.end());
  for (double depth : r.needle_depths) {
    auto it = by_depth.find(depth);
    row.push_back(it == by_depth.end() ? NAN
                                       : static_cast<double>(it->second.first) / static_cast<double>(it->second.second));
  }
  r.needle_lengths.push_back(length);
  r.needle_acc.push_back(row);
}

Status measure_run(StudyRun& r, const std::vector<Task>& tasks, const StudyOptions& opt, const std::string& data,
                   const std::string& tokenizer, const StudyProgress& p) {
  if (load_measures(r, tasks, opt.task_limit)) return ok_status();
  STEM_ASSIGN_OR_RETURN(Model m, Model::load(r.checkpoint));
  STEM_ASSIGN_OR_RETURN(Tokenizer tok, Tokenizer::load(tokenizer));
  const std::string name = fs::path(r.dir).filename().string();
  PerplexityOptions po;
  po.seq = opt.seq;
  po.batch = opt.batch;
  STEM_ASSIGN_OR_RETURN(PerplexityResult val, evaluate_perplexity(m, data, po, [&](int64_t d, int64_t t, double) {
                          report(p, "val " + name, d, t);
                        }));
  r.final_val_loss = val.mean_loss;
  r.final_val_se = val.se;
  for (const Task& task : tasks) {
    TaskOptions to;
    to.limit = opt.task_limit;
    to.keep_samples = task.name.rfind("needle_", 0) == 0;
    const std::string stage = "eval " + name + " " + task.name;
    STEM_ASSIGN_OR_RETURN(TaskResult res,
                          evaluate_task(m, tok, task, to, [&](int64_t d, int64_t t) { report(p, stage, d, t); }));
    if (to.keep_samples) add_needle(r, task, res);
    res.samples.clear();
    r.tasks.push_back(std::move(res));
  }
  json j = run_measures_to_json(r);
  j["limit"] = opt.task_limit;
  return io::write_text_atomic((fs::path(r.dir) / "study_eval.json").string(), j.dump(1));
}

void summarize(StudyRun& r, const StudyOptions& opt) {
  double sum = 0, var = 0;
  for (const TaskResult& t : r.tasks) {
    sum += t.acc;
    if (std::isfinite(t.acc_se)) var += t.acc_se * t.acc_se;
  }
  const double n = static_cast<double>(r.tasks.size());
  r.average = n > 0 ? sum / n : NAN;
  r.average_se = n > 0 ? std::sqrt(var) / n : NAN;
  const Account a = account(r.config, opt.seq, opt.seq);
  r.params_total = a.params_total;
  r.active_params = a.active_params;
  r.train_flops_per_token = a.train_flops_per_token;
}

// Curves, speed, spikes and the time spent in training steps (summed over
// steps, so it is whole across resumes) from the run's metrics.jsonl.
Status fill_curves(StudyRun& r, const SpikeRule& rule, int64_t tokens_per_step) {
  STEM_ASSIGN_OR_RETURN(std::vector<StepRecord> records, read_metrics(r.dir));
  std::vector<double> losses, tps;
  for (const StepRecord& s : records) {
    r.train_loss.emplace_back(static_cast<double>(s.step), s.loss);
    if (!std::isnan(s.val_loss)) r.val_loss.emplace_back(static_cast<double>(s.step), s.val_loss);
    losses.push_back(s.loss);
    if (s.step > 2) tps.push_back(s.tokens_per_second);
    if (s.tokens_per_second > 0) r.train_seconds += static_cast<double>(tokens_per_step) / s.tokens_per_second;
  }
  std::sort(tps.begin(), tps.end());
  r.tokens_per_second = tps.empty() ? 0 : tps[tps.size() / 2];
  r.spike_steps = loss_spikes(losses, rule);
  return ok_status();
}

Result<std::vector<StudyCapacity>> capacity_runs(const StudyOptions& opt, const StudyProgress& p) {
  std::vector<StudyCapacity> out;
  for (int64_t n : opt.capacity_people) {
    const fs::path dir = fs::path(opt.out) / "capacity" / std::to_string(n);
    const std::string tasks = (dir / "tasks").string();
    MakeTasksOptions mo;
    mo.seed = opt.tasks.seed;
    mo.bios_people = n;
    report(p, "capacity " + std::to_string(n) + " biographies", 0, 0);
    STEM_ASSIGN_OR_RETURN(auto made, make_tasks(TaskSources{}, mo, tasks));
    (void)made;
    STEM_ASSIGN_OR_RETURN(std::string data,
                          prepare_once({(fs::path(tasks) / "bios_train.txt").string()}, (dir / "data").string(),
                                       opt.capacity_vocab, 0.0, 512, opt.tasks.seed, p,
                                       "capacity " + std::to_string(n) + " prepare"));
    STEM_ASSIGN_OR_RETURN(Bios bios, read_bios((fs::path(tasks) / "bios.json").string()));
    STEM_ASSIGN_OR_RETURN(DataInfo info, describe_data(data));
    for (const std::string& model : opt.capacity_models.empty() ? opt.models : opt.capacity_models) {
      StudyCapacity c;
      c.model = model;
      c.people = n;
      c.seed = opt.seeds.front();
      TrainSpec s;
      STEM_ASSIGN_OR_RETURN(s.config, study_model_config(model, info.vocab_size, opt.d, opt.f, opt.layers, opt.heads,
                                                         opt.experts, std::max<int64_t>(512, opt.seq)));
      s.data = data;
      s.dir = (dir / model).string();
      s.stage = "capacity " + std::to_string(n) + " train " + model;
      s.steps = opt.capacity_steps;
      s.batch = opt.batch;
      s.seq = opt.seq;
      s.lr = opt.lr;
      s.seed = c.seed;
      s.validate = false;
      STEM_ASSIGN_OR_RETURN(std::string ckpt, train_run(s, p));
      const Account a = account(s.config, opt.seq, opt.seq);
      c.params_total = a.params_total;
      c.active_params = a.active_params;
      const std::string cache = (fs::path(s.dir) / "knowledge.json").string();
      auto cached = io::read_text(cache);
      json j;
      if (cached.ok()) {
        try {
          j = json::parse(*cached);
          if (j.at("checkpoint") != ckpt) j = json();
        } catch (const json::exception&) {
          j = json();
        }
      }
      if (j.is_null()) {
        STEM_ASSIGN_OR_RETURN(Model m, Model::load(ckpt));
        STEM_ASSIGN_OR_RETURN(Tokenizer tok, Tokenizer::load(info.tokenizer_path));
        STEM_ASSIGN_OR_RETURN(Knowledge k, measure_knowledge(m, tok, bios, 0, [&](int64_t d, int64_t t) {
                                report(p, "capacity " + std::to_string(n) + " measure " + model, d, t);
                              }));
        json attrs = json::array();
        for (const AttributeKnowledge& a2 : k.attributes)
          attrs.push_back({{"name", a2.name}, {"set_size", a2.set_size}, {"accuracy", a2.accuracy}, {"bits", a2.bits},
                           {"max_bits", a2.max_bits}});
        j = {{"checkpoint", ckpt}, {"people", k.people}, {"bits", k.bits}, {"max_bits", k.max_bits},
             {"bits_per_param", k.bits_per_param}, {"bits_per_active_param", k.bits_per_active_param},
             {"seconds", k.seconds}, {"attributes", attrs}};
        STEM_RETURN_IF_ERROR(io::write_text_atomic(cache, j.dump(1)));
      }
      Knowledge& k = c.knowledge;
      k.people = j.at("people").get<int64_t>();
      k.bits = j.at("bits").get<double>();
      k.max_bits = j.at("max_bits").get<double>();
      k.bits_per_param = j.at("bits_per_param").get<double>();
      k.bits_per_active_param = j.at("bits_per_active_param").get<double>();
      k.seconds = j.at("seconds").get<double>();
      for (const json& a2 : j.at("attributes"))
        k.attributes.push_back({a2.at("name").get<std::string>(), a2.at("set_size").get<int64_t>(),
                                a2.at("accuracy").get<double>(), a2.at("bits").get<double>(),
                                a2.at("max_bits").get<double>()});
      out.push_back(std::move(c));
    }
  }
  return out;
}

}  // namespace

const std::vector<std::string>& study_model_names() {
  static const std::vector<std::string> names = {"dense", "stem-third", "stem-half", "stem-all", "stem-full", "moe"};
  return names;
}

Result<ModelConfig> study_model_config(const std::string& name, int64_t vocab, int64_t d, int64_t f, int64_t layers,
                                       int64_t heads, int64_t experts, int64_t max_positions) {
  ModelConfig c;
  c.vocab_size = vocab;
  c.hidden_size = d;
  c.intermediate_size = f;
  c.num_hidden_layers = layers;
  c.num_attention_heads = heads;
  c.num_key_value_heads = heads;
  c.max_position_embeddings = max_positions;
  static const std::map<std::string, std::string> layouts = {
      {"dense", "none"}, {"stem-third", "every3"}, {"stem-half", "every2"}, {"stem-all", "all"}, {"stem-full", "full"},
      {"moe", "all"}};
  const auto it = layouts.find(name);
  if (it == layouts.end())
    return Status::error("study: unknown model '" + name +
                         "' (expected dense, stem-third, stem-half, stem-all, stem-full or moe)");
  STEM_ASSIGN_OR_RETURN(c.ffn_types, stem_layout(layers, it->second));
  if (name == "moe") {
    for (FfnType& t : c.ffn_types)
      if (t == FfnType::Stem) t = FfnType::HashMoe;
    c.num_hash_experts = experts;
  }
  STEM_RETURN_IF_ERROR(c.validate());
  return c;
}

// The 1-based steps i (after the first `window`) where keep(v[i], median of
// the `window` values before it) is false.
template <typename Keep>
std::vector<int64_t> above_running_median(const std::vector<double>& v, int64_t window, Keep keep) {
  std::vector<int64_t> out;
  const size_t w = static_cast<size_t>(std::max<int64_t>(1, window));
  std::vector<double> win;
  for (size_t i = w; i < v.size(); ++i) {
    win.assign(v.begin() + static_cast<std::ptrdiff_t>(i - w), v.begin() + static_cast<std::ptrdiff_t>(i));
    std::nth_element(win.begin(), win.begin() + static_cast<std::ptrdiff_t>(w / 2), win.end());
    double median = win[w / 2];
    if (w % 2 == 0) median = (median + *std::max_element(win.begin(), win.begin() + static_cast<std::ptrdiff_t>(w / 2))) / 2;
    if (!keep(v[i], median)) out.push_back(static_cast<int64_t>(i) + 1);
  }
  return out;
}

std::vector<int64_t> loss_spikes(const std::vector<double>& losses, const SpikeRule& rule) {
  return above_running_median(losses, rule.window, [&](double x, double m) { return x <= rule.ratio * m; });
}

std::vector<int64_t> excess_spikes(const std::vector<double>& losses, const std::vector<double>& reference,
                                   const SpikeRule& rule) {
  std::vector<double> excess(std::min(losses.size(), reference.size()));
  for (size_t i = 0; i < excess.size(); ++i) excess[i] = losses[i] - reference[i];
  return above_running_median(excess, rule.window, [&](double x, double m) { return x <= m + rule.margin; });
}

Result<StudyResult> run_study(const StudyOptions& opt, const StudyProgress& p) {
  const auto t0 = std::chrono::steady_clock::now();
  if (opt.models.empty() || opt.seeds.empty()) return Status::error("study: no models or no seeds");
  std::vector<std::string> all_models = opt.models;
  all_models.insert(all_models.end(), opt.capacity_models.begin(), opt.capacity_models.end());
  for (const std::string& m : all_models)
    STEM_RETURN_IF_ERROR(study_model_config(m, opt.vocab, opt.d, opt.f, opt.layers, opt.heads, opt.experts, 512).status());
  for (int64_t L : opt.tasks.needle_lengths)
    if (L > std::max<int64_t>(512, opt.seq))
      return Status::error("study: needle length " + std::to_string(L) + " is beyond the models' " +
                           std::to_string(std::max<int64_t>(512, opt.seq)) + " positions");
  std::error_code ec;
  for (const std::string& c : opt.corpus)
    if (!fs::exists(c, ec)) return Status::error("study: corpus " + c + ": not found");
  fs::create_directories(opt.out, ec);
  if (ec) return Status::error(opt.out + ": cannot create: " + ec.message());
  StudyResult res;

  // Tasks without the needle first: the world-facts sentences join the corpus.
  const std::string tasks_dir = (fs::path(opt.out) / "tasks").string();
  const std::string data_dir = (fs::path(opt.out) / "data").string();
  std::vector<std::string> inputs = opt.corpus;
  if (!opt.sources.countries.empty()) {
    TaskSources facts;
    facts.countries = opt.sources.countries;
    report(p, "tasks", 0, 0);
    STEM_ASSIGN_OR_RETURN(auto made, make_tasks(facts, opt.tasks, tasks_dir));
    for (const MadeTask& t : made) {
      if (t.kind != "train") continue;
      if (opt.facts_repeat <= 1) {
        inputs.push_back(t.path);
        continue;
      }
      // prepare reads each file once: the repeats go into a file of their own.
      STEM_ASSIGN_OR_RETURN(std::string text, io::read_text(t.path));
      std::string repeated;
      for (int64_t k = 0; k < opt.facts_repeat; ++k) repeated += text + "\n";
      const std::string path =
          (fs::path(opt.out) / (t.name + "_x" + std::to_string(opt.facts_repeat) + ".txt")).string();
      STEM_RETURN_IF_ERROR(io::write_text_atomic(path, repeated));
      inputs.push_back(path);
    }
  }
  STEM_ASSIGN_OR_RETURN(std::string data, prepare_once(inputs, data_dir, opt.vocab, 0.05, 4096, 0, p, "prepare"));
  STEM_ASSIGN_OR_RETURN(DataInfo info, describe_data(data));
  TaskSources all = opt.sources;
  all.tokenizer = info.tokenizer_path;
  report(p, "tasks", 0, 0);
  STEM_ASSIGN_OR_RETURN(res.tasks_made, make_tasks(all, opt.tasks, tasks_dir));
  std::vector<Task> tasks;
  for (const MadeTask& t : res.tasks_made) {
    if (t.kind != "multiple_choice" && t.kind != "cloze") continue;
    STEM_ASSIGN_OR_RETURN(Task task, read_task(t.path));
    res.task_names.push_back(task.name);
    double chance = 0;
    const size_t n = opt.task_limit > 0 ? std::min<size_t>(task.examples.size(), static_cast<size_t>(opt.task_limit))
                                        : task.examples.size();
    if (task.kind == TaskKind::MultipleChoice)
      for (size_t i = 0; i < n; ++i) chance += 1.0 / static_cast<double>(task.examples[i].choices.size()) / static_cast<double>(n);
    res.task_chance.push_back(chance);
    tasks.push_back(std::move(task));
  }
  if (tasks.empty()) return Status::error("study: no task was made (give a book, WordNet or the countries)");

  for (const std::string& model : opt.models) {
    for (uint64_t seed : opt.seeds) {
      StudyRun r;
      r.model = model;
      r.seed = seed;
      const std::string name = model + "-s" + std::to_string(seed);
      r.dir = (fs::path(opt.out) / name).string();
      STEM_ASSIGN_OR_RETURN(r.config, study_model_config(model, info.vocab_size, opt.d, opt.f, opt.layers, opt.heads,
                                                         opt.experts, std::max<int64_t>(512, opt.seq)));
      TrainSpec s{r.config, data, r.dir, "train " + name, opt.steps, opt.batch, opt.seq, opt.lr, seed, true};
      STEM_ASSIGN_OR_RETURN(r.checkpoint, train_run(s, p));
      STEM_RETURN_IF_ERROR(fill_curves(r, opt.spikes, opt.batch * opt.seq));
      STEM_RETURN_IF_ERROR(measure_run(r, tasks, opt, data, info.tokenizer_path, p));
      summarize(r, opt);
      res.runs.push_back(std::move(r));
    }
  }
  // Spikes against the dense run of the same seed, which saw the same batches.
  auto losses = [](const StudyRun& r) {
    std::vector<double> v;
    for (auto [step, loss] : r.train_loss) v.push_back(loss);
    return v;
  };
  for (StudyRun& r : res.runs)
    for (const StudyRun& d : res.runs)
      if (d.model == "dense" && d.seed == r.seed && &d != &r) r.excess_spike_steps = excess_spikes(losses(r), losses(d), opt.spikes);
  STEM_ASSIGN_OR_RETURN(res.capacity, capacity_runs(opt, p));
  res.seconds = seconds_since(t0);
  res.report = (fs::path(opt.out) / "report.html").string();
  res.json = (fs::path(opt.out) / "study.json").string();
  STEM_RETURN_IF_ERROR(write_study_json(opt, res, res.json));
  STEM_RETURN_IF_ERROR(write_study_report(opt, res, res.report));
  return res;
}

}  // namespace stem
