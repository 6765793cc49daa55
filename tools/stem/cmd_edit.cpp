// stem edit: knowledge editing of STEM models through overlays (src/edit/).
//   facts   write a synthetic fact corpus (made-up countries) and its cases
//   swap    put one string's STEM rows in place of another's -> overlay
//   inject  train only the STEM rows of chosen tokens on sentences -> overlay
//   eval    probability and rank of expected answers before/after overlays,
//           and KL on control prompts
//   apply   merge overlays into a new checkpoint directory
//   show    what an overlay holds
// The base checkpoint is never written. Nothing here decides how rows are
// chosen or trained; the library does, this file parses, reports and saves.
#include <cstdio>
#include <filesystem>
#include <map>
#include <optional>

#include "commands.h"
#include "edit/edit_eval.h"
#include "edit/facts.h"
#include "edit/inject.h"
#include "edit/overlay.h"
#include "edit/swap.h"
#include "io/tokenizer.h"
#include "model/transformer.h"

namespace stem::cli {
namespace fs = std::filesystem;

namespace {

struct Loaded {
  Model model;
  io::Tokenizer tok;
};

// The model (tables in RAM, F32) and its tokenizer.model, which edits need.
Result<Loaded> load_model_and_tokenizer(const std::string& dir) {
  STEM_ASSIGN_OR_RETURN(Model m, Model::load(dir));
  STEM_ASSIGN_OR_RETURN(io::Tokenizer tok, io::load_model_tokenizer(m.dir(), m.config().vocab_size,
                                                                    "by edits, which name strings"));
  return Loaded{std::move(m), std::move(tok)};
}

std::string join_ints(const std::vector<int32_t>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(v[i]);
  }
  return s;
}

Result<std::vector<int32_t>> parse_int_list(const std::string& s, const std::string& what) {
  std::vector<int32_t> out;
  size_t start = 0;
  while (start < s.size()) {
    size_t comma = s.find(',', start);
    if (comma == std::string::npos) comma = s.size();
    const std::string item = s.substr(start, comma - start);
    char* end = nullptr;
    const long v = std::strtol(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0') return Status::error(what + ": '" + item + "' is not an integer");
    out.push_back(static_cast<int32_t>(v));
    start = comma + 1;
  }
  if (out.empty()) return Status::error(what + ": empty list");
  return out;
}

nlohmann::json tokens_json(const io::Tokenizer& tok, const std::vector<int32_t>& ids) {
  nlohmann::json a = nlohmann::json::array();
  for (int32_t id : ids) a.push_back({{"id", id}, {"piece", tok.piece(id)}});
  return a;
}

nlohmann::json forms_json(const io::Tokenizer& tok, const std::vector<edit::TokenForm>& forms) {
  nlohmann::json a = nlohmann::json::array();
  for (const auto& f : forms) a.push_back({{"kinds", f.kinds}, {"tokens", tokens_json(tok, f.ids)}});
  return a;
}


int64_t file_bytes(const std::string& p) {
  std::error_code ec;
  const auto n = fs::file_size(p, ec);
  return ec ? -1 : static_cast<int64_t>(n);
}

// ---------------------------------------------------------------- facts

void register_facts(CLI::App* edit) {
  struct Opts {
    std::string out;
    edit::FactOptions f;
    bool json = false;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* sub = edit->add_subcommand("facts", "Write a synthetic fact corpus (made-up countries) with edit cases");
  sub->add_option("--out", o->out, "Output folder (facts.txt, subjects.jsonl, queries.jsonl, *_cases.jsonl, ...)")
      ->required();
  sub->add_option("--seed", o->f.seed, "Seed of the names")->capture_default_str();
  sub->add_option("--subjects", o->f.subjects, "Number of countries (at least 4)")->capture_default_str();
  sub->add_flag("--json", o->json, "Machine-readable output");
  add_command(sub, [o] {
    const char* cmd = "edit facts";
    auto c = edit::make_fact_corpus(o->f);
    if (!c.ok()) return fail(cmd, c.status());
    if (Status st = edit::write_fact_corpus(*c, o->out); !st.ok()) return fail(cmd, st);
    if (o->json) {
      nlohmann::json subjects = nlohmann::json::array();
      for (const auto& s : c->subjects)
        subjects.push_back({{"subject", s.name}, {"capital", s.capital}, {"language", s.language}});
      print_json({{"out", o->out}, {"seed", o->f.seed}, {"sentences", c->sentences.size()},
                  {"queries", c->queries.size()}, {"subjects", subjects}});
      return 0;
    }
    std::printf("wrote %s: %zu subjects, %zu sentences, %zu queries (seed %lu)\n", o->out.c_str(),
                c->subjects.size(), c->sentences.size(), c->queries.size(), static_cast<unsigned long>(o->f.seed));
    for (size_t i = 0; i < std::min<size_t>(4, c->subjects.size()); ++i)
      std::printf("  %-12s capital %-12s language %s\n", c->subjects[i].name.c_str(), c->subjects[i].capital.c_str(),
                  c->subjects[i].language.c_str());
    std::printf("next: stem prepare --input %s/facts.txt --out DATA --doc-bytes 32 --val-fraction 0 --vocab-size 768\n"
                "      (one document per sentence; 768 makes every name of 24 subjects one token)\n",
                o->out.c_str());
    return 0;
  });
}

// ---------------------------------------------------------------- swap

void register_swap(CLI::App* edit) {
  struct Opts {
    std::string model_dir, from, to, layers = "all", align = "left", mismatch = "pad", subset, forms = "words", out;
    std::string shared = "refuse";
    bool exchange = false, json = false;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* sub = edit->add_subcommand("swap", "Put the STEM rows of --to's tokens in place of --from's (an overlay)");
  sub->add_option("--model", o->model_dir, "Model directory (with tokenizer.model)")->required();
  sub->add_option("--from", o->from, "Source string: its tokens' rows are replaced")->required();
  sub->add_option("--to", o->to, "Target string: whose rows the source takes")->required();
  sub->add_option("--layers", o->layers, "STEM layers to edit: all, or a list such as 1,3-5")->capture_default_str();
  sub->add_option("--align", o->align, "Pair tokens from the left or the right end: left | right")->capture_default_str();
  sub->add_option("--mismatch", o->mismatch,
                  "Unequal lengths: pad (unpaired source tokens keep their rows) | copy (take the nearest "
                  "target row) | subset (see --subset) | average (mean of the target rows)")
      ->capture_default_str();
  sub->add_option("--subset", o->subset, "With --mismatch subset: a target token index per source token, e.g. 0,0,2");
  sub->add_option("--forms", o->forms,
                  "Token forms to edit: as-given | words (also after a space, mid-sentence) | all (also at a "
                  "line start without a space)")
      ->capture_default_str();
  sub->add_flag("--exchange", o->exchange, "Also give the target's tokens the source's rows (a two-way swap)");
  sub->add_option("--shared", o->shared,
                  "Pieces of a word split in several, which other words share: refuse (an error) | skip (edit "
                  "only whole-word pieces) | allow (edit them anyway)")
      ->capture_default_str();
  sub->add_option("--out", o->out, "Output overlay file")->required();
  sub->add_flag("--json", o->json, "Machine-readable output");
  add_command(sub, [o] {
    const char* cmd = "edit swap";
    edit::SwapOptions so;
    auto align = edit::parse_align(o->align);
    if (!align.ok()) return fail(cmd, align.status());
    auto mismatch = edit::parse_mismatch(o->mismatch);
    if (!mismatch.ok()) return fail(cmd, mismatch.status());
    auto forms = edit::parse_form_set(o->forms);
    if (!forms.ok()) return fail(cmd, forms.status());
    so.align = *align;
    so.mismatch = *mismatch;
    so.forms = *forms;
    so.exchange = o->exchange;
    auto shared = edit::parse_shared(o->shared);
    if (!shared.ok()) return fail(cmd, shared.status());
    so.shared = *shared;
    if (so.mismatch == edit::Mismatch::Subset) {
      if (o->subset.empty()) return fail(cmd, Status::error("--mismatch subset needs --subset (e.g. --subset 0,2)"));
      auto s = parse_int_list(o->subset, "--subset");
      if (!s.ok()) return fail(cmd, s.status());
      so.subset = *s;
    } else if (!o->subset.empty()) {
      return fail(cmd, Status::error("--subset is only used with --mismatch subset"));
    }
    auto lm = load_model_and_tokenizer(o->model_dir);
    if (!lm.ok()) return fail(cmd, lm.status());
    const ModelConfig& cfg = lm->model.config();
    auto layers = edit::parse_layers(o->layers, cfg);
    if (!layers.ok()) return fail(cmd, layers.status());
    so.layers = *layers;
    edit::TensorListRows rows(lm->model.impl().weights());
    auto plan = edit::plan_swap(lm->tok, cfg, rows, o->from, o->to, so);
    if (!plan.ok()) return fail(cmd, plan.status());
    if (Status st = edit::write_overlay(plan->overlay, o->out); !st.ok()) return fail(cmd, st);
    const io::Tokenizer& tok = lm->tok;
    if (!plan->shared_tokens.empty()) {
      std::string list;
      for (int32_t t : plan->shared_tokens) list += " " + tok.piece(t) + " (" + std::to_string(t) + ")";
      std::fprintf(stderr, "warning: pieces other words share were %s:%s\n",
                   so.shared == edit::SharedPieces::Skip ? "left alone" : "edited (--shared allow)", list.c_str());
    }
    if (o->json) {
      nlohmann::json as = nlohmann::json::array();
      for (const auto& a : plan->assignments)
        as.push_back({{"direction", a.reverse ? "to->from" : "from->to"}, {"forms", a.kinds},
                      {"position", a.position}, {"token", {{"id", a.token}, {"piece", tok.piece(a.token)}}},
                      {"rows_from", tokens_json(tok, a.from)}, {"rule", a.rule}, {"changes", a.changes()}});
      print_json({{"from", {{"text", o->from}, {"forms", forms_json(tok, plan->from_forms)}}},
                  {"to", {{"text", o->to}, {"forms", forms_json(tok, plan->to_forms)}}},
                  {"layers", plan->layers}, {"align", o->align}, {"mismatch", o->mismatch},
                  {"exchange", o->exchange}, {"assignments", as},
                  {"changed_tokens", tokens_json(tok, plan->changed_tokens)},
                  {"shared", o->shared}, {"shared_tokens", tokens_json(tok, plan->shared_tokens)},
                  {"rows", plan->overlay.size()}, {"row_width", cfg.intermediate_size},
                  {"out", o->out}, {"bytes", file_bytes(o->out)}});
      return 0;
    }
    std::printf("swap '%s' <- '%s'  (layers %s; align %s; mismatch %s%s)\n", o->from.c_str(), o->to.c_str(),
                join_ints(plan->layers).c_str(), o->align.c_str(), o->mismatch.c_str(),
                o->exchange ? "; exchange" : "");
    for (const auto& a : plan->assignments) {
      std::string from;
      for (int32_t t : a.from) {
        if (!from.empty()) from += " + ";
        from += tok.piece(t) + " (" + std::to_string(t) + ")";
      }
      std::printf("  %s%-9s pos %ld  %s (%d) <- %s  [%s]\n", a.reverse ? "[exchange] " : "", edit::kinds_str(a.kinds).c_str(),
                  static_cast<long>(a.position), tok.piece(a.token).c_str(), a.token,
                  from.empty() ? "(keeps its rows)" : from.c_str(), a.rule.c_str());
    }
    std::printf("%zu token(s) x %zu layer(s) = %zu rows of %ld floats; wrote %s (%ld bytes)\n",
                plan->changed_tokens.size(), plan->layers.size(), plan->overlay.size(),
                static_cast<long>(cfg.intermediate_size), o->out.c_str(), static_cast<long>(file_bytes(o->out)));
    return 0;
  });
}

// ---------------------------------------------------------------- inject

void register_inject(CLI::App* edit) {
  struct Opts {
    std::string model_dir, facts, layers = "all", out;
    std::vector<std::string> tokens;
    edit::InjectOptions io;
    bool json = false;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* sub = edit->add_subcommand("inject", "Teach sentences by training only chosen STEM rows (an overlay)");
  sub->add_option("--model", o->model_dir, "Model directory (with tokenizer.model)")->required();
  sub->add_option("--facts", o->facts, "JSON lines {\"subject\": ..., \"text\": ...}")->required();
  sub->add_option("--tokens", o->tokens,
                  "Train the rows of these strings' tokens (default: each fact's subject)");
  sub->add_option("--layers", o->layers, "STEM layers whose rows train: all, or a list such as 1,3-5")
      ->capture_default_str();
  sub->add_option("--steps", o->io.steps, "Adam steps (each over every fact)")->capture_default_str();
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
    auto facts = edit::read_facts(o->facts);
    if (!facts.ok()) return fail(cmd, facts.status());
    auto seqs = edit::fact_sequences(lm->tok, *facts, cfg.max_position_embeddings, o->facts);
    if (!seqs.ok()) return fail(cmd, seqs.status());
    auto tokens = edit::injection_tokens(lm->tok, *facts, *seqs, o->tokens, o->facts);
    if (!tokens.ok()) return fail(cmd, tokens.status());
    Progress bar("inject", opt.steps);
    auto r = edit::inject_rows(lm->model.impl(), *seqs, *tokens, opt, [&](int64_t s, int64_t, double loss) {
      char extra[48];
      std::snprintf(extra, sizeof extra, "loss %.4f", loss);
      bar.update(s, extra);
    });
    bar.finish();
    if (!r.ok()) return fail(cmd, r.status());
    if (Status st = edit::write_overlay(r->overlay, o->out); !st.ok()) return fail(cmd, st);
    if (o->json) {
      print_json({{"facts", facts->size()}, {"tokens", tokens_json(lm->tok, r->tokens)}, {"layers", opt.layers},
                  {"steps", opt.steps}, {"lr", opt.lr}, {"loss_before", r->loss_before},
                  {"loss_after", r->loss_after}, {"rows", r->overlay.size()}, {"out", o->out},
                  {"bytes", file_bytes(o->out)}});
      return 0;
    }
    std::string pieces;
    for (int32_t t : r->tokens) {
      if (!pieces.empty()) pieces += ' ';
      pieces += lm->tok.piece(t) + " (" + std::to_string(t) + ")";
    }
    std::printf("trained rows of %s in layers %s on %zu sentence(s), %ld steps\n", pieces.c_str(),
                join_ints(opt.layers).c_str(), facts->size(), static_cast<long>(opt.steps));
    std::printf("loss on the facts %.4f -> %.4f; wrote %s (%zu rows, %ld bytes)\n", r->loss_before, r->loss_after,
                o->out.c_str(), r->overlay.size(), static_cast<long>(file_bytes(o->out)));
    return 0;
  });
}

// ---------------------------------------------------------------- eval

nlohmann::json score_json(const edit::ContinuationScore& s) {
  return {{"first_prob", s.first_prob}, {"first_rank", s.first_rank}, {"logprob", s.logprob},
          {"tokens", s.tokens}, {"greedy", s.greedy}};
}

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
    auto r = edit::evaluate_edits(lm->model.impl(), lm->tok, *cases, edits, [&](int64_t done, int64_t total) {
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
    auto row = [](const char* which, const std::string& text, const edit::ContinuationScore& b,
                  const edit::ContinuationScore& e, const std::string& prompt) {
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

// ---------------------------------------------------------------- apply

void register_apply(CLI::App* edit) {
  struct Opts {
    std::string model_dir, out;
    std::vector<std::string> edits;
    bool force = false, json = false;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* sub = edit->add_subcommand("apply", "Merge overlays into a new checkpoint directory");
  sub->add_option("--model", o->model_dir, "Base model directory (never changed)")->required();
  sub->add_option("--edit", o->edits, "Overlay file(s), applied in order")->required()->expected(1, -1);
  sub->add_option("--out", o->out, "New model directory (config.json, model.safetensors, tokenizer.model)")->required();
  sub->add_flag("--force", o->force, "Overwrite a model already in --out");
  sub->add_flag("--json", o->json, "Machine-readable output");
  add_command(sub, [o] {
    const char* cmd = "edit apply";
    std::error_code ec;
    if (fs::exists(o->out, ec) && fs::equivalent(o->out, o->model_dir, ec))
      return fail(cmd, Status::error("--out " + o->out + " is the base model directory: edits never change a "
                                     "checkpoint in place, write a new directory"));
    if (!o->force && fs::exists(fs::path(o->out) / "model.safetensors", ec))
      return fail(cmd, Status::error(o->out + ": already holds a model (use --force to overwrite)"));
    auto m = Model::load(o->model_dir);
    if (!m.ok()) return fail(cmd, m.status());
    std::vector<edit::Overlay> undo;
    if (Status st = edit::apply_overlay_files(o->edits, m->config(), m->impl().weights(), &undo); !st.ok())
      return fail(cmd, st);
    if (Status st = m->save(o->out); !st.ok()) return fail(cmd, st);
    size_t rows = 0;
    for (const auto& u : undo) rows += u.size();
    if (o->json) {
      print_json({{"model", o->model_dir}, {"edits", o->edits}, {"rows", rows}, {"out", o->out}});
      return 0;
    }
    std::printf("applied %zu overlay(s), %zu rows, to %s; wrote %s\n", o->edits.size(), rows, o->model_dir.c_str(),
                o->out.c_str());
    return 0;
  });
}

// ---------------------------------------------------------------- show

void register_show(CLI::App* edit) {
  struct Opts {
    std::string file, model_dir;
    bool json = false;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* sub = edit->add_subcommand("show", "What an overlay holds (shape, provenance, rows)");
  sub->add_option("--edit", o->file, "Overlay file")->required();
  sub->add_option("--model", o->model_dir, "Also check it against this model and name its tokens");
  sub->add_flag("--json", o->json, "Machine-readable output");
  add_command(sub, [o] {
    const char* cmd = "edit show";
    auto ov = edit::read_overlay(o->file);
    if (!ov.ok()) return fail(cmd, ov.status());
    std::optional<Loaded> lm;
    if (!o->model_dir.empty()) {
      auto l = load_model_and_tokenizer(o->model_dir);
      if (!l.ok()) return fail(cmd, l.status());
      if (Status st = edit::check_overlay(*ov, l->model.config(), o->file); !st.ok()) return fail(cmd, st);
      lm.emplace(std::move(*l));
    }
    std::map<int32_t, std::vector<int32_t>> by_layer;
    for (const auto& k : ov->keys) by_layer[k.layer].push_back(k.token);
    nlohmann::json note = nlohmann::json::parse(ov->note, nullptr, false);
    if (o->json) {
      nlohmann::json layers = nlohmann::json::object();
      for (const auto& [l, toks] : by_layer)
        layers[std::to_string(l)] = lm ? tokens_json(lm->tok, toks) : nlohmann::json(toks);
      print_json({{"file", o->file}, {"version", edit::kOverlayVersion},
                  {"shape", {{"vocab_size", ov->shape.vocab_size}, {"row_width", ov->shape.row_width},
                             {"num_hidden_layers", ov->shape.n_layers}, {"stem_layers", ov->shape.stem_layers}}},
                  {"note", note.is_discarded() ? nlohmann::json(ov->note) : note}, {"rows", ov->size()},
                  {"layers", layers}});
      return 0;
    }
    std::printf("%s: overlay v%u for V=%ld f=%ld L=%ld (STEM layers %s), %zu rows\n", o->file.c_str(),
                edit::kOverlayVersion, static_cast<long>(ov->shape.vocab_size), static_cast<long>(ov->shape.row_width),
                static_cast<long>(ov->shape.n_layers), join_ints(ov->shape.stem_layers).c_str(), ov->size());
    if (!ov->note.empty()) std::printf("  note: %s\n", ov->note.c_str());
    for (const auto& [l, toks] : by_layer) {
      std::string s;
      for (int32_t t : toks) s += " " + (lm ? lm->tok.piece(t) + "(" + std::to_string(t) + ")" : std::to_string(t));
      std::printf("  layer %d:%s\n", l, s.c_str());
    }
    return 0;
  });
}

}  // namespace

void register_edit(CLI::App& app) {
  CLI::App* edit = app.add_subcommand("edit", "Edit what a STEM model knows, through overlays of STEM rows");
  edit->require_subcommand(1);
  register_facts(edit);
  register_swap(edit);
  register_inject(edit);
  register_eval_edit(edit);
  register_apply(edit);
  register_show(edit);
}

}  // namespace stem::cli
