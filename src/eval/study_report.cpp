// The study's report.html and study.json (stem/study.h): per-model means over
// seeds with 95% intervals, every seed's numbers, the comparison with the
// dense model against the seed-to-seed spread, loss spikes, validation
// curves, capacity curves and needle heat maps. It computes summaries of
// what run_study measured; it measures nothing.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>

#include "io/files.h"
#include "stem/report.h"
#include "stem/study.h"

namespace stem {
namespace {
using json = nlohmann::json;

std::string fmt(const char* f, double x) {
  char b[64];
  std::snprintf(b, sizeof b, f, x);
  return b;
}

// A mean over seeds of per-seed estimates with their standard errors: the
// 95% interval is that of the evaluation sample (1.96 * sqrt(sum se^2) / k);
// the spread is the range of the seeds' values.
struct Pooled {
  double mean = NAN, ci95 = NAN, lo = NAN, hi = NAN;
  std::vector<double> values;
};

Pooled pool(const std::vector<double>& v, const std::vector<double>& se) {
  Pooled p;
  p.values = v;
  if (v.empty()) return p;
  double s = 0, var = 0;
  for (size_t i = 0; i < v.size(); ++i) {
    s += v[i];
    if (std::isfinite(se[i])) var += se[i] * se[i];
  }
  const double k = static_cast<double>(v.size());
  p.mean = s / k;
  p.ci95 = 1.96 * std::sqrt(var) / k;
  p.lo = *std::min_element(v.begin(), v.end());
  p.hi = *std::max_element(v.begin(), v.end());
  return p;
}

struct ModelSummary {
  std::string model;
  std::vector<const StudyRun*> runs;
  std::vector<Pooled> tasks;  // acc, per task
  Pooled average, val_loss;
  int64_t spikes = 0, excess_spikes = 0;
};

std::vector<ModelSummary> summarize(const StudyResult& r) {
  std::vector<ModelSummary> out;
  for (const StudyRun& run : r.runs) {
    if (out.empty() || out.back().model != run.model) out.push_back({run.model, {}, {}, {}, {}, 0});
    out.back().runs.push_back(&run);
  }
  for (ModelSummary& m : out) {
    for (size_t t = 0; t < r.task_names.size(); ++t) {
      std::vector<double> v, se;
      for (const StudyRun* run : m.runs) {
        v.push_back(run->tasks[t].acc);
        se.push_back(run->tasks[t].acc_se);
      }
      m.tasks.push_back(pool(v, se));
    }
    std::vector<double> av, ase, vl, vse;
    for (const StudyRun* run : m.runs) {
      av.push_back(run->average);
      ase.push_back(run->average_se);
      vl.push_back(run->final_val_loss);
      vse.push_back(run->final_val_se);
      m.spikes += static_cast<int64_t>(run->spike_steps.size());
      m.excess_spikes += static_cast<int64_t>(run->excess_spike_steps.size());
    }
    m.average = pool(av, ase);
    m.val_loss = pool(vl, vse);
  }
  return out;
}

// Model vs dense: the difference of the averages, its 95% interval, and the
// larger of the two models' seed ranges.
struct Comparison {
  std::string model;
  double diff = NAN, ci95 = NAN, spread = NAN;
  bool beyond_interval = false, beyond_spread = false;
  double val_diff = NAN, val_ci95 = NAN, val_spread = NAN;  // the same for the held-out loss
};

std::vector<Comparison> compare(const std::vector<ModelSummary>& ms) {
  std::vector<Comparison> out;
  const ModelSummary* dense = nullptr;
  for (const ModelSummary& m : ms)
    if (m.model == "dense") dense = &m;
  if (!dense) return out;
  for (const ModelSummary& m : ms) {
    if (&m == dense) continue;
    Comparison c;
    c.model = m.model;
    c.diff = m.average.mean - dense->average.mean;
    c.ci95 = std::hypot(m.average.ci95, dense->average.ci95);
    c.spread = std::max(m.average.hi - m.average.lo, dense->average.hi - dense->average.lo);
    c.beyond_interval = std::abs(c.diff) > c.ci95;
    c.beyond_spread = std::abs(c.diff) > c.spread;
    c.val_diff = m.val_loss.mean - dense->val_loss.mean;
    c.val_ci95 = std::hypot(m.val_loss.ci95, dense->val_loss.ci95);
    c.val_spread = std::max(m.val_loss.hi - m.val_loss.lo, dense->val_loss.hi - dense->val_loss.lo);
    out.push_back(c);
  }
  return out;
}

const char* color_of(size_t i) {
  static const char* palette[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"};
  return palette[i % 8];
}

std::string pct(const Pooled& p) { return fmt("%.1f", 100 * p.mean) + " ± " + fmt("%.1f", 100 * p.ci95); }

std::string depth_label(double d) { return fmt("%.0f%%", 100 * d); }

}  // namespace

Status write_study_json(const StudyOptions& opt, const StudyResult& r, const std::string& path) {
  json runs = json::array();
  for (const StudyRun& run : r.runs) {
    json tasks = json::object();
    for (const TaskResult& t : run.tasks)
      tasks[t.task] = {{"acc", t.acc}, {"acc_stderr", t.acc_se}, {"acc_norm", t.acc_norm},
                       {"acc_norm_stderr", t.acc_norm_se}, {"perplexity", t.perplexity}, {"examples", t.examples},
                       {"examples_per_second", t.examples_per_second}};
    runs.push_back({{"model", run.model}, {"seed", run.seed}, {"dir", run.dir}, {"checkpoint", run.checkpoint},
                    {"params_total", run.params_total}, {"active_params", run.active_params},
                    {"train_flops_per_token", run.train_flops_per_token}, {"val_loss", run.final_val_loss},
                    {"val_loss_stderr", run.final_val_se}, {"train_seconds", run.train_seconds},
                    {"tokens_per_second", run.tokens_per_second}, {"spike_steps", run.spike_steps},
                    {"excess_spike_steps", run.excess_spike_steps},
                    {"tasks", tasks}, {"average", run.average}, {"average_stderr", run.average_se},
                    {"needle", {{"lengths", run.needle_lengths}, {"depths", run.needle_depths}, {"acc", run.needle_acc}}},
                    {"val_curve", run.val_loss}});
  }
  json models = json::array();
  auto pooled = [](const Pooled& p) {
    return json{{"mean", p.mean}, {"ci95", p.ci95}, {"min", p.lo}, {"max", p.hi}, {"seeds", p.values}};
  };
  const auto ms = summarize(r);
  for (const ModelSummary& m : ms) {
    json tasks = json::object();
    for (size_t t = 0; t < r.task_names.size(); ++t) tasks[r.task_names[t]] = pooled(m.tasks[t]);
    models.push_back({{"model", m.model}, {"tasks", tasks}, {"average", pooled(m.average)},
                      {"val_loss", pooled(m.val_loss)}, {"spikes", m.spikes},
                      {"excess_spikes", m.excess_spikes}});
  }
  json cmp = json::array();
  for (const Comparison& c : compare(ms))
    cmp.push_back({{"model", c.model}, {"average_minus_dense", c.diff}, {"ci95", c.ci95}, {"seed_spread", c.spread},
                   {"beyond_interval", c.beyond_interval}, {"beyond_seed_spread", c.beyond_spread},
                   {"val_loss_minus_dense", c.val_diff}, {"val_loss_ci95", c.val_ci95},
                   {"val_loss_seed_spread", c.val_spread}});
  json cap = json::array();
  for (const StudyCapacity& c : r.capacity) {
    json attrs = json::array();
    for (const AttributeKnowledge& a : c.knowledge.attributes)
      attrs.push_back({{"name", a.name}, {"accuracy", a.accuracy}, {"bits", a.bits}, {"max_bits", a.max_bits}});
    cap.push_back({{"model", c.model}, {"people", c.people}, {"seed", c.seed}, {"params_total", c.params_total},
                   {"active_params", c.active_params}, {"bits", c.knowledge.bits}, {"max_bits", c.knowledge.max_bits},
                   {"bits_per_param", c.knowledge.bits_per_param},
                   {"bits_per_active_param", c.knowledge.bits_per_active_param}, {"attributes", attrs}});
  }
  json tasks_made = json::array();
  for (const MadeTask& t : r.tasks_made)
    tasks_made.push_back({{"name", t.name}, {"kind", t.kind}, {"examples", t.examples}, {"path", t.path}});
  const json j = {
      {"options",
       {{"out", opt.out}, {"corpus", opt.corpus}, {"facts_repeat", opt.facts_repeat}, {"models", opt.models}, {"seeds", opt.seeds}, {"vocab", opt.vocab},
        {"hidden", opt.d}, {"ffn", opt.f}, {"layers", opt.layers}, {"heads", opt.heads}, {"experts", opt.experts},
        {"steps", opt.steps}, {"batch", opt.batch}, {"seq", opt.seq}, {"lr", opt.lr}, {"task_limit", opt.task_limit},
        {"capacity_people", opt.capacity_people}, {"capacity_models", opt.capacity_models},
        {"capacity_steps", opt.capacity_steps},
        {"spike_window", opt.spikes.window}, {"spike_ratio", opt.spikes.ratio},
        {"spike_margin", opt.spikes.margin}}},
      {"tasks", r.task_names}, {"task_chance", r.task_chance}, {"tasks_made", tasks_made}, {"runs", runs}, {"models", models},
      {"comparison_with_dense", cmp}, {"capacity", cap}, {"seconds", r.seconds}, {"threads", omp_get_max_threads()}};
  return io::write_text_atomic(path, j.dump(1));
}

Status write_study_report(const StudyOptions& opt, const StudyResult& r, const std::string& path) {
  const auto ms = summarize(r);
  std::map<std::string, std::string> color;
  for (size_t i = 0; i < ms.size(); ++i) color[ms[i].model] = color_of(i);
  Report rep;
  rep.title = "stem study: dense, STEM and hash-MoE";
  std::string seed_list;
  for (uint64_t seed : opt.seeds) seed_list += (seed_list.empty() ? "" : ", ") + std::to_string(seed);
  double train_s = 0;
  for (const StudyRun& run : r.runs) train_s += run.train_seconds;
  rep.intro = "Models of one shape (d=" + std::to_string(opt.d) + ", f=" + std::to_string(opt.f) +
              ", L=" + std::to_string(opt.layers) + ", H=" + std::to_string(opt.heads) + ", V=" +
              std::to_string(opt.vocab) + ", hash-MoE with " + std::to_string(opt.experts) +
              " experts) trained for " + std::to_string(opt.steps) + " steps of " + std::to_string(opt.batch) +
              " x " + std::to_string(opt.seq) + " tokens on the same data (the corpus and the world-facts "
              "sentences, " + std::to_string(opt.facts_repeat) + " times), once per seed (" + seed_list + "). Accuracy in percent, the mean "
              "over seeds ± the 95% interval of the evaluation sample (1.96 x the pooled standard error); "
              "multiple-choice tasks report acc, cloze and needle tasks greedy exact match. Average: the "
              "unweighted mean over tasks.";
  rep.table.header = {"model", "active params", "train MFLOP/token", "val loss"};
  for (const std::string& t : r.task_names) rep.table.header.push_back(t);
  rep.table.header.push_back("average");
  for (const ModelSummary& m : ms) {
    const StudyRun& first = *m.runs.front();
    std::vector<std::string> row = {m.model, fmt("%.2fM", first.active_params / 1e6),
                                    fmt("%.1f", first.train_flops_per_token / 1e6),
                                    fmt("%.4f", m.val_loss.mean) + " ± " + fmt("%.4f", m.val_loss.ci95)};
    for (const Pooled& p : m.tasks) row.push_back(pct(p));
    row.push_back(pct(m.average));
    rep.table.rows.push_back(row);
  }
  std::vector<std::string> chance = {"(chance)", "", "", ""};
  double chance_sum = 0;
  for (double c : r.task_chance) {
    chance.push_back(fmt("%.1f", 100 * c));
    chance_sum += c;
  }
  chance.push_back(fmt("%.1f", 100 * chance_sum / std::max<double>(1, static_cast<double>(r.task_chance.size()))));
  rep.table.rows.push_back(chance);
  for (const StudyRun& run : r.runs) {
    Curve c;
    c.label = run.model + " seed " + std::to_string(run.seed);
    c.color = color[run.model];
    c.val = run.val_loss;
    rep.curves.push_back(c);
  }

  ReportSection seeds{"Every seed", {"Accuracy in percent ± the 95% interval of the evaluation sample."}, {}, {}, {}};
  seeds.table.header = {"model", "seed", "val loss", "train tok/s"};
  for (const std::string& t : r.task_names) seeds.table.header.push_back(t);
  seeds.table.header.push_back("average");
  for (const StudyRun& run : r.runs) {
    std::vector<std::string> row = {run.model, std::to_string(run.seed), fmt("%.4f", run.final_val_loss),
                                    fmt("%.0f", run.tokens_per_second)};
    for (const TaskResult& t : run.tasks) row.push_back(fmt("%.1f", 100 * t.acc) + " ± " + fmt("%.1f", 196 * t.acc_se));
    row.push_back(fmt("%.1f", 100 * run.average) + " ± " + fmt("%.1f", 196 * run.average_se));
    seeds.table.rows.push_back(row);
  }
  rep.sections.push_back(seeds);

  ReportSection cmp{"Against the dense model",
                    {"The difference of the average accuracy (points) and of the held-out loss (nats), each with its "
                     "95% interval (the two models' intervals combined) and the seed-to-seed spread (the larger range "
                     "of the two models' seed values). A difference beyond both is one this study resolves."},
                    {}, {}, {}};
  cmp.table.header = {"model", "average - dense", "95% interval", "seed spread", "resolved",
                      "val loss - dense", "95% interval", "seed spread", "resolved"};
  for (const Comparison& c : compare(ms))
    cmp.table.rows.push_back(
        {c.model, fmt("%+.1f", 100 * c.diff), fmt("± %.1f", 100 * c.ci95), fmt("%.1f", 100 * c.spread),
         c.beyond_interval && c.beyond_spread ? "yes" : "no", fmt("%+.4f", c.val_diff), fmt("± %.4f", c.val_ci95),
         fmt("%.4f", c.val_spread),
         std::abs(c.val_diff) > c.val_ci95 && std::abs(c.val_diff) > c.val_spread ? "yes" : "no"});
  rep.sections.push_back(cmp);

  ReportSection spikes{
      "Loss spikes",
      {"A spike is a step after the first " + std::to_string(opt.spikes.window) + " whose training loss exceeds " +
           fmt("%.2f", opt.spikes.ratio) + " times the median of the " + std::to_string(opt.spikes.window) +
           " steps before it. The runs of one seed see the same batches, so a hard batch counts in every model at "
           "the same step. Against dense: a step where the model's loss minus the dense run's (same seed, same "
           "batch) exceeds the median of that difference over the " + std::to_string(opt.spikes.window) +
           " steps before it by " + fmt("%.2f", opt.spikes.margin) + " nats: the model's own instability."},
      {}, {}, {}};
  spikes.table.header = {"model", "spikes (all seeds)", "per seed", "steps", "against dense (all seeds)", "steps"};
  for (const ModelSummary& m : ms) {
    std::string per, steps, own;
    for (const StudyRun* run : m.runs) {
      per += (per.empty() ? "" : ", ") + std::to_string(run->spike_steps.size());
      for (size_t i = 0; i < run->spike_steps.size() && i < 6; ++i)
        steps += (steps.empty() ? "" : " ") + std::to_string(run->spike_steps[i]);
      for (size_t i = 0; i < run->excess_spike_steps.size() && i < 6; ++i)
        own += (own.empty() ? "" : " ") + std::to_string(run->excess_spike_steps[i]);
    }
    spikes.table.rows.push_back({m.model, std::to_string(m.spikes), per, steps,
                                 m.model == "dense" ? "-" : std::to_string(m.excess_spikes), own});
  }
  rep.sections.push_back(spikes);

  if (!r.capacity.empty()) {
    ReportSection cap{"Knowledge capacity",
                      {"Each model trained on N synthetic biographies alone for " +
                       std::to_string(opt.capacity_steps) + " steps (seed " + std::to_string(opt.seeds.front()) +
                       "), then every (person, attribute) scored over the attribute's whole set: the bits it holds "
                       "(stem/capacity.h), against the table's entropy."},
                      {}, {}, {}};
    cap.table.header = {"model", "people", "bits", "of the table", "bits / param", "bits / active param"};
    XYChart bits{"people (N)", "bits held", true, {}}, per{"people (N)", "bits per active parameter", true, {}};
    std::map<std::string, size_t> idx;
    for (const StudyCapacity& c : r.capacity) {
      cap.table.rows.push_back({c.model, std::to_string(c.people), fmt("%.0f", c.knowledge.bits),
                                fmt("%.1f%%", 100 * c.knowledge.bits / std::max(1.0, c.knowledge.max_bits)),
                                fmt("%.5f", c.knowledge.bits_per_param), fmt("%.5f", c.knowledge.bits_per_active_param)});
      if (!idx.count(c.model)) {
        idx[c.model] = bits.curves.size();
        bits.curves.push_back({c.model, color[c.model], {}, {}});
        per.curves.push_back({c.model, color[c.model], {}, {}});
      }
      bits.curves[idx[c.model]].train.emplace_back(static_cast<double>(c.people), c.knowledge.bits);
      per.curves[idx[c.model]].train.emplace_back(static_cast<double>(c.people), c.knowledge.bits_per_active_param);
    }
    Curve entropy{"the table's entropy", "#999999", {}, {}};
    for (const StudyCapacity& c : r.capacity)
      if (c.model == r.capacity.front().model) entropy.train.emplace_back(static_cast<double>(c.people), c.knowledge.max_bits);
    bits.curves.push_back(entropy);
    cap.charts = {bits, per};
    rep.sections.push_back(cap);
  }

  ReportSection needle{"Needle in a haystack",
                       {"Pass-key retrieval: accuracy by context length (tokens) and depth of the key, mean over seeds."},
                       {}, {}, {}};
  for (const ModelSummary& m : ms) {
    const StudyRun& first = *m.runs.front();
    if (first.needle_lengths.empty()) continue;
    HeatMap h{m.model, "length", "depth", {}, {}, {}};
    for (int64_t L : first.needle_lengths) h.rows.push_back(std::to_string(L));
    for (double d : first.needle_depths) h.cols.push_back(depth_label(d));
    h.values.assign(first.needle_lengths.size(), std::vector<double>(first.needle_depths.size(), 0.0));
    for (const StudyRun* run : m.runs)
      for (size_t i = 0; i < h.values.size() && i < run->needle_acc.size(); ++i)
        for (size_t j = 0; j < h.values[i].size() && j < run->needle_acc[i].size(); ++j)
          h.values[i][j] += run->needle_acc[i][j] / static_cast<double>(m.runs.size());
    needle.heatmaps.push_back(h);
  }
  if (!needle.heatmaps.empty()) rep.sections.push_back(needle);

  rep.notes.push_back("Training time, summed over the steps of every run: " + fmt("%.0f", train_s) +
                      " s. This invocation of the study: " + fmt("%.0f", r.seconds) + " s on " +
                      std::to_string(omp_get_max_threads()) + " threads (finished runs and measurements are reused).");
  rep.notes.push_back("Every number is in study.json beside this report.");
  return write_report(path, rep);
}

}  // namespace stem
