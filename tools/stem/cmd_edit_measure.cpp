// stem edit inject|eval and swap --prompts: training STEM rows into an overlay, and measuring
// overlays (the rest of `stem edit` is in cmd_edit.cpp and
// cmd_edit_files.cpp). The library does the work; this file parses, reports
// and saves.
#include <cstdio>
#include <filesystem>

#include "commands.h"
#include "edit_cli.h"
#include "stem/edit.h"

namespace stem::cli {
namespace fs = std::filesystem;

// ---------------------------------------------------------------- inject

void register_inject(CLI::App* edit) {
  struct Opts {
    std::string model_dir, facts, layers = "all", out, keep;
    std::vector<std::string> tokens;
    edit::InjectOptions io;
    bool all_steps = false, json = false;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* sub = edit->add_subcommand("inject", "Teach sentences by training only chosen STEM rows (an overlay)");
  sub->add_option("--model", o->model_dir, "Model directory (with tokenizer.model)")->required();
  sub->add_option("--facts", o->facts,
                  "JSON lines {\"subject\": ..., \"text\": ..., \"answer\": ...} (answer optional: its rows train too)")
      ->required();
  sub->add_option("--keep", o->keep,
                  "Sentences whose predictions training holds (a line each, or JSON lines with \"text\"), e.g. the "
                  "corpus's other facts");
  sub->add_flag("--keep-kl", o->io.keep_kl,
                "Keep sentences hold the unedited model's next-token distributions (a KL term) instead of their text");
  sub->add_option("--keep-samples", o->io.keep_samples,
                  "Without --keep: sentences the unedited model samples itself (up to 32 tokens), whose "
                  "distributions training holds (0: none)")
      ->capture_default_str();
  sub->add_option("--tokens", o->tokens,
                  "Train the rows of these strings' tokens (default: each fact's subject)");
  sub->add_option("--layers", o->layers, "STEM layers whose rows train: all, or a list such as 1,3-5")
      ->capture_default_str();
  sub->add_option("--steps", o->io.steps, "Adam steps at most (each over every fact)")->capture_default_str();
  sub->add_flag("--all-steps", o->all_steps,
                "Train all --steps (default: stop once every fact's tokens from its subject on are predicted)");
  sub->add_option("--lr", o->io.lr, "Adam learning rate")->capture_default_str();
  sub->add_option("--out", o->out, "Output overlay file")->required();
  sub->add_flag("--json", o->json, "Machine-readable output");
  add_command(sub, [o] {
    const char* cmd = "edit inject";
    auto lm = load_model_and_tokenizer(o->model_dir);
    if (!lm.ok()) return fail(cmd, lm.status());
    const ModelConfig& cfg = lm->model.config();
    auto layers = edit::parse_layers(o->layers, cfg);
    if (!layers.ok()) return fail(cmd, layers.status());
    edit::InjectOptions opt = o->io;
    opt.layers = *layers;
    opt.until_learned = !o->all_steps;
    if (opt.steps < 1) return fail(cmd, Status::error("--steps " + std::to_string(opt.steps) + ": must be at least 1"));
    auto facts = edit::read_facts(o->facts);
    if (!facts.ok()) return fail(cmd, facts.status());
    if (!o->keep.empty()) {
      auto keep = edit::read_keep(o->keep);
      if (!keep.ok()) return fail(cmd, keep.status());
      opt.keep = std::move(*keep);
    }
    Progress bar("inject", opt.steps);
    auto progress = [&](int64_t s, int64_t, double loss) {
      char extra[48];
      std::snprintf(extra, sizeof extra, "loss %.4f", loss);
      bar.update(s, extra);
    };
    auto r = edit::inject_facts(lm->model, lm->tok, *facts, o->tokens, opt, progress, o->facts);
    bar.finish();
    if (!r.ok()) return fail(cmd, r.status());
    if (Status st = edit::write_overlay(r->overlay, o->out); !st.ok()) return fail(cmd, st);
    if (o->json) {
      print_json({{"facts", facts->size()}, {"keep", opt.keep.size()}, {"keep_sampled", r->keep_sampled},
                  {"keep_loss", r->keep_kl ? "kl" : "text"},
                  {"tokens", tokens_json(lm->tok, r->tokens)},
                  {"layers", opt.layers},
                  {"steps", r->steps}, {"max_steps", opt.steps}, {"learned", r->learned}, {"lr", opt.lr},
                  {"loss_before", r->loss_before},
                  {"loss_after", r->loss_after}, {"rows", r->overlay.size()}, {"out", o->out},
                  {"bytes", file_bytes(o->out)}});
      return 0;
    }
    std::string pieces;
    for (int32_t t : r->tokens) {
      if (!pieces.empty()) pieces += ' ';
      pieces += lm->tok.piece(t) + " (" + std::to_string(t) + ")";
    }
    const std::string kept = r->keep_sampled ? std::to_string(r->keep_sampled) + " sentence(s) it sampled itself held by KL"
                                              : std::to_string(opt.keep.size()) + " keep sentence(s)";
    std::printf("trained rows of %s in layers %s on %zu sentence(s) and %s, %ld steps (%s)\n", pieces.c_str(),
                join_ints(opt.layers).c_str(), facts->size(), kept.c_str(), static_cast<long>(r->steps),
                r->learned ? "every fact predicted" : "not every fact predicted yet: try more --steps");
    std::printf("loss on the facts %.4f -> %.4f; wrote %s (%zu rows, %ld bytes)\n", r->loss_before, r->loss_after,
                o->out.c_str(), r->overlay.size(), static_cast<long>(file_bytes(o->out)));
    return 0;
  });
}

// ---------------------------------------------------------------- swap --prompts

int trained_swap(const TrainedSwapArgs& a) {
  const char* cmd = "edit swap";
  if (a.exchange) return fail(cmd, Status::error("--exchange copies rows both ways; it does not go with --prompts"));
  auto shared = edit::parse_shared(a.shared);
  if (!shared.ok()) return fail(cmd, shared.status());
  edit::SwapTrainOptions opt = a.train;
  opt.shared = *shared;
  if (opt.inject.steps < 1) return fail(cmd, Status::error("--steps " + std::to_string(opt.inject.steps) + ": must be at least 1"));
  if (opt.answer_tokens < 1)
    return fail(cmd, Status::error("--answer-tokens " + std::to_string(opt.answer_tokens) + ": must be at least 1"));
  auto prompts = edit::read_prompts(a.prompts);
  if (!prompts.ok()) return fail(cmd, prompts.status());
  if (!a.keep.empty()) {
    auto keep = edit::read_keep(a.keep);
    if (!keep.ok()) return fail(cmd, keep.status());
    opt.inject.keep = std::move(*keep);
  }
  auto lm = load_model_and_tokenizer(a.model_dir);
  if (!lm.ok()) return fail(cmd, lm.status());
  auto layers = edit::parse_layers(a.layers, lm->model.config());
  if (!layers.ok()) return fail(cmd, layers.status());
  opt.inject.layers = *layers;
  Progress bar("swap", opt.inject.steps);
  auto progress = [&](int64_t s, int64_t, double loss) {
    char extra[48];
    std::snprintf(extra, sizeof extra, "loss %.4f", loss);
    bar.update(s, extra);
  };
  auto r = edit::swap_by_training(lm->model, lm->tok, a.from, a.to, *prompts, opt, progress);
  bar.finish();
  if (!r.ok()) return fail(cmd, r.status().with_context(a.prompts));
  if (Status st = edit::write_overlay(r->inject.overlay, a.out); !st.ok()) return fail(cmd, st);
  const Tokenizer& tok = lm->tok;
  warn_shared(tok, r->shared_tokens, opt.shared == edit::SharedPieces::Skip ? "left alone" : "trained (--shared allow)");
  if (a.json) {
    nlohmann::json facts = nlohmann::json::array();
    for (size_t i = 0; i < r->facts.size(); ++i)
      facts.push_back({{"prompt", (*prompts)[i]}, {"answer", r->answers[i]}});
    print_json({{"from", a.from}, {"to", a.to}, {"method", "train"}, {"facts", facts},
                {"tokens", tokens_json(tok, r->inject.tokens)}, {"shared", a.shared},
                {"shared_tokens", tokens_json(tok, r->shared_tokens)}, {"layers", opt.inject.layers},
                {"steps", r->inject.steps}, {"max_steps", opt.inject.steps}, {"learned", r->inject.learned},
                {"keep_sampled", r->inject.keep_sampled},
                {"loss_before", r->inject.loss_before}, {"loss_after", r->inject.loss_after},
                {"rows", r->inject.overlay.size()}, {"out", a.out}, {"bytes", file_bytes(a.out)}});
    return 0;
  }
  std::printf("swap '%s' <- '%s' by training (layers %s): the answers for '%s'\n", a.from.c_str(), a.to.c_str(),
              join_ints(opt.inject.layers).c_str(), a.to.c_str());
  for (size_t i = 0; i < r->facts.size(); ++i)
    std::printf("  %s ->%s\n", (*prompts)[i].c_str(), r->answers[i].c_str());
  std::string pieces;
  for (int32_t t : r->inject.tokens) pieces += (pieces.empty() ? "" : " ") + tok.piece(t) + " (" + std::to_string(t) + ")";
  std::printf("trained rows of %s, %ld steps (%s)\n", pieces.c_str(), static_cast<long>(r->inject.steps),
              r->inject.learned ? "every answer predicted" : "not every answer predicted yet: try more --steps");
  std::printf("wrote %s (%zu rows, %ld bytes)\n", a.out.c_str(), r->inject.overlay.size(),
              static_cast<long>(file_bytes(a.out)));
  return 0;
}

// ---------------------------------------------------------------- eval

namespace {
nlohmann::json score_json(const ContinuationScore& s) {
  return {{"first_prob", s.first_prob}, {"first_rank", s.first_rank}, {"logprob", s.logprob},
          {"tokens", s.tokens}, {"greedy", s.greedy}};
}

}  // namespace

void register_eval_edit(CLI::App* edit) {
  struct Opts {
    std::string model_dir, cases, controls;
    std::vector<std::string> edits;
    bool json = false;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* sub = edit->add_subcommand("eval", "Expected answers before/after overlays, and KL on control prompts");
  sub->add_option("--model", o->model_dir, "Model directory (with tokenizer.model)")->required();
  sub->add_option("--edit", o->edits, "Overlay file(s), applied in order")->required()->expected(1, -1);
  sub->add_option("--cases", o->cases, "JSON lines {\"prompt\", \"before\", \"after\"} or {\"control\": ...}")->required();
  sub->add_option("--controls", o->controls, "More control prompts: one per line (or JSON lines)");
  sub->add_flag("--json", o->json, "Machine-readable output");
  add_command(sub, [o] {
    const char* cmd = "edit eval";
    auto lm = load_model_and_tokenizer(o->model_dir);
    if (!lm.ok()) return fail(cmd, lm.status());
    auto cases = edit::read_cases(o->cases);
    if (!cases.ok()) return fail(cmd, cases.status());
    if (!o->controls.empty()) {
      auto c = edit::read_controls(o->controls);
      if (!c.ok()) return fail(cmd, c.status());
      cases->controls.insert(cases->controls.end(), c->begin(), c->end());
    }
    std::vector<edit::Overlay> edits;
    for (const std::string& f : o->edits) {
      auto ov = edit::read_overlay(f);
      if (!ov.ok()) return fail(cmd, ov.status());
      if (Status st = edit::check_overlay(*ov, lm->model.config(), f); !st.ok()) return fail(cmd, st);
      edits.push_back(std::move(*ov));
    }
    std::unique_ptr<Progress> bar;
    auto r = edit::evaluate_edits(lm->model, lm->tok, *cases, edits, [&](int64_t done, int64_t total) {
      if (!bar) bar = std::make_unique<Progress>("edit eval", total);
      bar->update(done);
    });
    if (bar) bar->finish();
    if (!r.ok()) return fail(cmd, r.status());
    const edit::EditEvalSummary& s = r->summary;
    if (o->json) {
      nlohmann::json cj = nlohmann::json::array(), kj = nlohmann::json::array();
      for (size_t i = 0; i < r->cases.size(); ++i) {
        const auto& c = cases->cases[i];
        const auto& x = r->cases[i];
        cj.push_back({{"prompt", c.prompt}, {"before", c.before}, {"after", c.after},
                      {"before_base", score_json(x.before_base)}, {"before_edit", score_json(x.before_edit)},
                      {"after_base", score_json(x.after_base)}, {"after_edit", score_json(x.after_edit)}});
      }
      for (size_t i = 0; i < r->controls.size(); ++i)
        kj.push_back({{"prompt", cases->controls[i]}, {"kl", r->controls[i].kl},
                      {"top_base", lm->tok.piece(r->controls[i].top_base)},
                      {"top_edit", lm->tok.piece(r->controls[i].top_edit)}});
      print_json({{"edits", o->edits}, {"cases", cj}, {"controls", kj},
                  {"summary", {{"cases", r->cases.size()}, {"base_knows", s.base_knows}, {"efficacy", s.efficacy},
                               {"efficacy_greedy", s.efficacy_greedy}, {"before_kept", s.before_kept},
                               {"controls", r->controls.size()}, {"mean_kl", s.mean_kl}, {"max_kl", s.max_kl},
                               {"controls_same_top", s.controls_same_top}}}});
      return 0;
    }
    std::printf("%-44s %-8s %-14s %22s %22s\n", "prompt", "expect", "continuation", "base p / rank / logp",
                "edited p / rank / logp");
    auto row = [](const char* which, const std::string& text, const ContinuationScore& b,
                  const ContinuationScore& e, const std::string& prompt) {
      std::printf("%-44.44s %-8s %-14.14s %7.4f %5ld %8.3f %7.4f %5ld %8.3f\n", prompt.c_str(), which, text.c_str(),
                  b.first_prob, static_cast<long>(b.first_rank), b.logprob, e.first_prob,
                  static_cast<long>(e.first_rank), e.logprob);
    };
    for (size_t i = 0; i < r->cases.size(); ++i) {
      const auto& c = cases->cases[i];
      row("before", c.before, r->cases[i].before_base, r->cases[i].before_edit, c.prompt);
      row("after", c.after, r->cases[i].after_base, r->cases[i].after_edit, "");
    }
    std::printf("cases %zu: the model knew the old answer in %.0f%%; with the edit the new answer is top-1 in "
                "%.0f%% (whole answer greedy %.0f%%), the old one in %.0f%%\n",
                r->cases.size(), 100 * s.base_knows, 100 * s.efficacy, 100 * s.efficacy_greedy, 100 * s.before_kept);
    if (!r->controls.empty())
      std::printf("controls %zu: KL(base || edited) mean %.4g, max %.4g nats; top-1 unchanged in %.0f%%\n",
                  r->controls.size(), s.mean_kl, s.max_kl, 100 * s.controls_same_top);
    return 0;
  });
}


}  // namespace stem::cli
