// stem eval: perplexity of a model on held-out tokens (stem/eval.h): a
// data directory's val.tok, one .tok shard, or a text file of whitespace-
// separated ids. Prints the mean loss with its standard error (from per-window
// means) and the perplexity with its 95% interval. It does not tokenize text:
// run `stem prepare` first. --compare scores a second model on the same
// windows and gives the difference with its paired standard error. BF16 and
// Q8 weights run through the decoder, and --decode runs one token at a time
// (the path stem/eval.h's PerplexityOptions names). With
// --task, multiple-choice and cloze tasks instead (cmd_eval_tasks.cpp).
#include <cmath>
#include <cstdio>
#include <optional>

#include "cmd_eval_tasks.h"
#include "commands.h"
#include "stem/eval.h"
#include "stem/model.h"

namespace stem::cli {

void register_eval(CLI::App& app) {
  struct Opts {
    std::string model_dir, data, compare;
    int64_t seq = 0, batch = 4, max_tokens = 0;
    bool json = false, decode = false;
    LoadFlags load;
    std::vector<std::string> edits;
    TaskFlags tasks;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* sub = app.add_subcommand(
      "eval", "Perplexity on held-out tokens (--data), or accuracy on multiple-choice and cloze tasks (--task)");
  sub->add_option("--model", o->model_dir, "Model directory (config.json, model.safetensors)")->required();
  sub->add_option("--data", o->data, "Data directory (its val.tok), a .tok shard, or a text file of token ids");
  sub->add_option("--seq", o->seq, "Tokens per window (default: min(512, max_position_embeddings))");
  sub->add_option("--batch", o->batch, "Windows per forward pass")->capture_default_str();
  sub->add_option("--max-tokens", o->max_tokens, "Evaluate at most this many tokens (0: all)")->capture_default_str();
  sub->add_flag("--decode", o->decode,
                "Feed each window one token at a time through the decode step, the kernels `generate` runs (slower; "
                "BF16 and Q8 weights otherwise go through the decoder's prefill, F32 through the batched forward)");
  sub->add_option("--compare", o->compare,
                  "A second model scored on the same windows (without --edit): the loss difference and its paired "
                  "standard error");
  sub->add_flag("--json", o->json, "Machine-readable output");
  add_load_flags(sub, &o->load);
  add_edit_option(sub, &o->edits);
  add_task_flags(sub, &o->tasks);
  add_command(sub, [o] {
    const char* cmd = "eval";
    const int given = !o->data.empty() + !o->tasks.tasks.empty() + !o->tasks.capacity.empty();
    if (given != 1)
      return fail(cmd, Status::error("give one of --data (perplexity), --task (tasks) or --capacity (knowledge)"));
    if (!o->compare.empty() && o->data.empty())
      return fail(cmd, Status::error("--compare " + o->compare + ": it compares perplexities, give --data"));
    auto m = Model::load(o->model_dir, o->load.options());
    if (!m.ok()) return fail(cmd, m.status());
    if (Status st = apply_edits(*m, o->edits); !st.ok()) return fail(cmd, st);
    if (!o->tasks.tasks.empty()) return run_tasks(*m, o->tasks, o->json);
    if (!o->tasks.capacity.empty()) return run_capacity(*m, o->tasks, o->json);
    const ModelConfig& cfg = m->config();
    PerplexityOptions opts;
    opts.seq = o->seq > 0 ? o->seq : std::min<int64_t>(512, cfg.max_position_embeddings);
    opts.batch = o->batch;
    opts.max_tokens = o->max_tokens;
    opts.decode = o->decode;
    auto run = [&](Model& model, const std::string& label) -> Result<PerplexityResult> {
      std::unique_ptr<Progress> bar;
      auto progress = [&](int64_t done, int64_t total, double loss) {
        if (!bar) bar = std::make_unique<Progress>(label, total);
        char extra[48];
        std::snprintf(extra, sizeof extra, "loss %.4f", loss);
        bar->update(done, extra);
      };
      auto r = evaluate_perplexity(model, o->data, opts, progress);
      if (bar) bar->finish();
      return r;
    };
    auto r = run(*m, "eval");
    if (!r.ok()) return fail(cmd, r.status());
    std::optional<PerplexityResult> other;
    std::optional<PairedDifference> diff;
    if (!o->compare.empty()) {
      auto m2 = Model::load(o->compare, o->load.options());
      if (!m2.ok()) return fail(cmd, m2.status().with_context("--compare"));
      auto r2 = run(*m2, "compare");
      if (!r2.ok()) return fail(cmd, r2.status().with_context("--compare " + o->compare));
      auto d = paired_difference(*r, *r2);
      if (!d.ok()) return fail(cmd, d.status());
      other = std::move(*r2);
      diff = *d;
    }
    const double tps = r->seconds > 0 ? static_cast<double>(r->tokens_used) / r->seconds : 0.0;
    if (o->json) {
      print_json({{"data", r->data},
                  {"windows", r->windows},
                  {"seq", r->seq},
                  {"predicted_tokens", r->predicted},
                  {"tokens_dropped", r->tokens_dropped},
                  {"loss", r->mean_loss},
                  {"loss_se", r->se},  // null with one window
                  {"perplexity", r->perplexity},
                  {"perplexity_low", r->ppl_low},
                  {"perplexity_high", r->ppl_high},
                  {"path", r->path},
                  {"seconds", r->seconds},
                  {"tokens_per_second", tps},
                  {"compare", other ? nlohmann::json{{"model", o->compare},
                                                     {"loss", other->mean_loss},
                                                     {"loss_se", other->se},
                                                     {"difference", diff->mean},  // model - compare
                                                     {"difference_se", diff->se}}
                                    : nlohmann::json()}});
      return 0;
    }
    std::printf("%s: %ld windows of %ld tokens (%ld predicted, %ld left over)\n", r->data.c_str(),
                static_cast<long>(r->windows), static_cast<long>(r->seq), static_cast<long>(r->predicted),
                static_cast<long>(r->tokens_dropped));
    if (std::isnan(r->se))
      std::printf("loss %.4f  perplexity %.3f  (one window: no standard error)\n", r->mean_loss, r->perplexity);
    else
      std::printf("loss %.4f +- %.4f (SE)  perplexity %.3f  95%% interval [%.3f, %.3f]\n", r->mean_loss, r->se,
                  r->perplexity, r->ppl_low, r->ppl_high);
    std::printf("%.1fs, %.0f tokens/s (%s)\n", r->seconds, tps, r->path.c_str());
    if (other)
      std::printf("compare %s: loss %.4f +- %.4f (SE)\ndifference (model - compare): %+.4f +- %.4f (paired SE over %ld windows)\n",
                  o->compare.c_str(), other->mean_loss, other->se, diff->mean, diff->se, static_cast<long>(diff->windows));
    return 0;
  });
}

}  // namespace stem::cli
