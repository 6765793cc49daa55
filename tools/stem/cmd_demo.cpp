// stem demo: the main job. On the built-in corpus it prepares the data (once),
// trains a dense model and a STEM model of the same shape for the same steps,
// evaluates both on the held-out split, samples a continuation from each,
// prints a comparison table and writes RUN/report.html (loss curves as an
// inline SVG chart). Re-running continues or reuses finished runs.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>

#include "commands.h"
#include "stem/report.h"
#include "stem/accounting.h"
#include "stem/data.h"
#include "stem/eval.h"
#include "stem/generate.h"
#include "stem/model.h"
#include "stem/study.h"
#include "stem/train.h"

namespace stem::cli {
namespace fs = std::filesystem;

namespace {

struct DemoOpts {
  std::string out = "runs/demo";
  std::vector<std::string> corpus = {"corpus/builtin"};
  std::string stem_layers = "all";
  int64_t vocab = 4096, d = 256, f = 688, layers = 6, heads = 4;
  int64_t steps = 600, batch = 8, seq = 256;
  float lr = 3e-3f;
  uint64_t seed = 0;
  std::string prompt = "Anne Elliot";
  int64_t sample_tokens = 60;
  bool force = false, json = false;
  std::string precision = "f32";
};

Result<ModelConfig> demo_config(const DemoOpts& o, bool stem) {
  // The study's models of this shape (CLI11 checked the layout name).
  static const std::map<std::string, std::string> model = {
      {"all", "stem-all"}, {"full", "stem-full"}, {"every2", "stem-half"}, {"every3", "stem-third"}};
  return study_model_config(stem ? model.at(o.stem_layers) : "dense", o.vocab, o.d, o.f, o.layers, o.heads, 0,
                            std::max<int64_t>(512, o.seq));
}

struct RunResult {
  std::string name, dir, checkpoint;
  ModelConfig cfg;
  Curve curve;
  PerplexityResult val;  // on the held-out split
  double tokens_per_second = 0;
  std::string sample;
};

Result<RunResult> train_one(const DemoOpts& o, const std::string& name, bool stem, const std::string& data,
                            const std::string& color) {
  RunResult r;
  r.name = name;
  r.dir = (fs::path(o.out) / name).string();
  STEM_ASSIGN_OR_RETURN(r.cfg, demo_config(o, stem));
  std::error_code ec;
  fs::create_directories(r.dir, ec);
  const std::string cfg_path = (fs::path(o.out) / (name + ".json")).string();
  STEM_RETURN_IF_ERROR(r.cfg.save(cfg_path));
  TrainOptions t;
  t.config_path = cfg_path;
  t.data_dir = data;
  t.out_dir = r.dir;
  t.steps = o.steps;
  t.batch = o.batch;
  t.seq = o.seq;
  t.lr = o.lr;
  t.warmup = std::max<int64_t>(10, o.steps / 20);
  t.eval_every = std::max<int64_t>(1, o.steps / 12);
  t.eval_tokens = 1 << 16;
  t.save_every = std::max<int64_t>(1, o.steps / 4);
  t.keep = 1;
  t.seed = o.seed;
  t.resume = true;  // a finished or interrupted run continues where it stopped
  t.precision = *parse_precision(o.precision);  // checked by IsMember
  STEM_ASSIGN_OR_RETURN(auto trainer, Trainer::create(t));
  Progress bar("train " + name, o.steps);
  double val = NAN;
  auto ran = trainer->run([&](const StepRecord& s) {
    if (!std::isnan(s.val_loss)) val = s.val_loss;
    char extra[96];
    std::snprintf(extra, sizeof extra, "loss %.3f%s %.0f tok/s", s.loss,
                  std::isnan(val) ? "" : (" val " + std::to_string(val).substr(0, 5)).c_str(), s.tokens_per_second);
    bar.update(s.step, extra);
  });
  bar.finish();
  STEM_RETURN_IF_ERROR(ran.status());
  // Curves and speed from the run's metrics (complete across resumes).
  r.curve.label = name;
  r.curve.color = color;
  STEM_ASSIGN_OR_RETURN(std::vector<StepRecord> records, read_metrics(r.dir));
  std::vector<double> tps;
  for (const StepRecord& s : records) {
    const double step = static_cast<double>(s.step);
    r.curve.train.emplace_back(step, s.loss);
    if (!std::isnan(s.val_loss)) r.curve.val.emplace_back(step, s.val_loss);
    if (s.step > 2) tps.push_back(s.tokens_per_second);
  }
  std::sort(tps.begin(), tps.end());
  r.tokens_per_second = tps.empty() ? 0 : tps[tps.size() / 2];
  STEM_ASSIGN_OR_RETURN(r.checkpoint, resolve_model_dir(r.dir));
  return r;
}

Status evaluate(RunResult& r, const DemoOpts& o, const DataInfo& data) {
  STEM_ASSIGN_OR_RETURN(Model m, Model::load(r.checkpoint));
  PerplexityOptions po;
  po.seq = o.seq;
  po.batch = o.batch;
  STEM_ASSIGN_OR_RETURN(r.val, evaluate_perplexity(m, data.dir, po));
  // A sample continuation of the prompt.
  STEM_ASSIGN_OR_RETURN(Tokenizer tok, Tokenizer::load(data.tokenizer_path));
  GenerateOptions g;
  g.sampler.seed = o.seed + 1;
  g.max_new_tokens = std::max<int64_t>(1, o.sample_tokens);
  STEM_ASSIGN_OR_RETURN(GenerateResult gen, generate(m, tok, o.prompt, g));
  std::vector<int32_t> all(gen.prompt_ids.begin() + 1, gen.prompt_ids.end());  // decoded together: pieces keep their spaces
  all.insert(all.end(), gen.ids.begin(), gen.ids.end());
  r.sample = tok.decode(all);
  return ok_status();
}

std::string fmt(const char* f, double x) {
  char b[64];
  std::snprintf(b, sizeof b, f, x);
  return b;
}

int run_demo(const DemoOpts& o) {
  const auto t0 = std::chrono::steady_clock::now();
  std::error_code ec;
  if (o.force) fs::remove_all(o.out, ec);
  fs::create_directories(o.out, ec);
  if (ec) return fail("demo", Status::error(o.out + ": cannot create: " + ec.message()));
  const std::string data_dir = (fs::path(o.out) / "data").string();
  if (!fs::exists(fs::path(data_dir) / "data.json")) {
    std::fprintf(stderr, "preparing %s -> %s\n", o.corpus[0].c_str(), data_dir.c_str());
    PrepareOptions po;
    po.inputs = o.corpus;
    po.out = data_dir;
    po.vocab_size = o.vocab;
    po.val_fraction = 0.05;
    po.seed = o.seed;
    auto p = prepare_data(po);
    if (!p.ok()) return fail("demo", p.status());
  }
  auto data = describe_data(data_dir);
  if (!data.ok()) return fail("demo", data.status());
  std::fprintf(stderr, "data: %ld training tokens, %ld held-out tokens, vocabulary %ld\n",
               static_cast<long>(data->train_tokens), static_cast<long>(data->val_tokens),
               static_cast<long>(data->vocab_size));
  std::vector<RunResult> runs;
  for (auto [name, stem, color] : {std::tuple{"dense", false, "#1f77b4"}, std::tuple{"stem", true, "#d62728"}}) {
    auto r = train_one(o, name, stem, data_dir, color);
    if (!r.ok()) return fail("demo", r.status());
    if (Status s = evaluate(*r, o, *data); !s.ok()) return fail("demo", s);
    runs.push_back(std::move(*r));
  }
  // Table.
  Report rep;
  rep.title = "stem demo: STEM against dense";
  rep.intro = "Two models of the same shape (d=" + std::to_string(o.d) + ", f=" + std::to_string(o.f) +
              ", L=" + std::to_string(o.layers) + ", H=" + std::to_string(o.heads) + ", V=" +
              std::to_string(o.vocab) + ") trained for " + std::to_string(o.steps) + " steps of " +
              std::to_string(o.batch) + " x " + std::to_string(o.seq) +
              " tokens on the same data with the same seed. The STEM model replaces the FFN up-projection of "
              "layers (" + o.stem_layers + ", from layer 1) by a per-token table. Validation: the held-out split.";
  rep.table.header = {"model", "val loss", "val perplexity (95% CI)", "params total", "active params/token",
                      "train FLOPs/token", "train tok/s"};
  nlohmann::json jruns = nlohmann::json::array();
  for (const RunResult& r : runs) {
    const Account a = account(r.cfg, o.seq, o.seq);
    rep.table.rows.push_back({r.name, fmt("%.4f", r.val.mean_loss) + " ± " + fmt("%.4f", r.val.se),
                              fmt("%.2f", r.val.perplexity) + " (" + fmt("%.2f", r.val.ppl_low) + "-" +
                                  fmt("%.2f", r.val.ppl_high) + ")",
                              fmt("%.2fM", a.params_total / 1e6), fmt("%.2fM", a.active_params / 1e6),
                              fmt("%.1fM", a.train_flops_per_token / 1e6), fmt("%.0f", r.tokens_per_second)});
    rep.curves.push_back(r.curve);
    rep.samples.emplace_back(r.name, r.sample);
    jruns.push_back({{"name", r.name}, {"val_loss", r.val.mean_loss}, {"val_loss_se", r.val.se}, {"perplexity", r.val.perplexity},
                     {"params_total", a.params_total}, {"active_params", a.active_params},
                     {"train_flops_per_token", a.train_flops_per_token}, {"tokens_per_second", r.tokens_per_second},
                     {"checkpoint", r.checkpoint}, {"sample", r.sample}});
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  rep.notes.push_back("Sampling: temperature 0.8, top-k 40, top-p 0.95, seed " + std::to_string(o.seed + 1) +
                      ". Checkpoints: " + runs[0].checkpoint + ", " + runs[1].checkpoint + ".");
  rep.notes.push_back("Made by stem demo in " + fmt("%.0f", secs) + " s on " + std::to_string(omp_get_max_threads()) +
                      " threads.");
  const std::string report = (fs::path(o.out) / "report.html").string();
  if (Status s = write_report(report, rep); !s.ok()) return fail("demo", s);

  if (o.json) {
    print_json({{"runs", jruns}, {"report", report}, {"seconds", secs}});
    return 0;
  }
  std::printf("\n%-6s %10s %9s %22s %11s %12s %14s %11s\n", "model", "val loss", "± se", "perplexity (95% CI)",
              "params", "active/tok", "train FLOP/tok", "train tok/s");
  for (size_t i = 0; i < runs.size(); ++i) {
    const auto& row = rep.table.rows[i];
    const RunResult& r = runs[i];
    std::printf("%-6s %10.4f %9.4f %22s %11s %12s %14s %11s\n", r.name.c_str(), r.val.mean_loss, r.val.se,
                row[2].c_str(), row[3].c_str(), row[4].c_str(), row[5].c_str(), row[6].c_str());
  }
  for (const RunResult& r : runs) std::printf("\n[%s] %s\n", r.name.c_str(), r.sample.c_str());
  std::printf("\nreport: %s\n", fs::absolute(report).c_str());
  return 0;
}

}  // namespace

void register_demo(CLI::App& app) {
  auto o = std::make_shared<DemoOpts>();
  CLI::App* sub = app.add_subcommand("demo", "Train dense and STEM twins on the built-in corpus and compare them");
  sub->add_option("--out", o->out, "Run directory (data, both runs, report.html)")->capture_default_str();
  sub->add_option("--corpus", o->corpus, "Text files or folders to train on")->capture_default_str();
  sub->add_option("--stem-layers", o->stem_layers, "Which layers are STEM: all (1..L-1), full (0..L-1), every2, every3")
      ->check(CLI::IsMember({"all", "full", "every2", "every3"}))
      ->capture_default_str();
  sub->add_option("--steps", o->steps, "Training steps of each model")->capture_default_str();
  sub->add_option("--batch", o->batch, "Sequences per step")->capture_default_str();
  sub->add_option("--seq", o->seq, "Tokens per sequence")->capture_default_str();
  sub->add_option("--lr", o->lr, "Peak learning rate")->capture_default_str();
  sub->add_option("--vocab-size", o->vocab, "Tokenizer vocabulary")->capture_default_str();
  sub->add_option("--hidden", o->d, "Hidden size d")->capture_default_str();
  sub->add_option("--ffn", o->f, "FFN width f")->capture_default_str();
  sub->add_option("--layers", o->layers, "Layers L")->capture_default_str();
  sub->add_option("--heads", o->heads, "Attention heads H")->capture_default_str();
  sub->add_option("--seed", o->seed, "Seed of data order, weights and sampling")->capture_default_str();
  sub->add_option("--precision", o->precision,
                  "f32, or bf16 (BF16 linear layers with F32 accumulation; needs AVX512-BF16 or AMX)")
      ->check(CLI::IsMember({"f32", "bf16"}))
      ->capture_default_str();
  sub->add_option("--prompt", o->prompt, "Prompt of the samples")->capture_default_str();
  sub->add_flag("--force", o->force, "Start over (delete the run directory first)");
  sub->add_flag("--json", o->json, "Machine-readable summary");
  add_command(sub, [o] { return run_demo(*o); });
}

}  // namespace stem::cli
