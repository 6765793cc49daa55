// stem edit: knowledge editing of STEM models through overlays (src/edit/).
//   facts   write a synthetic fact corpus (made-up countries) and its cases
//   swap    put one string's STEM rows in place of another's -> overlay
//           (with --prompts: train them on the model's answers for the other)
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
#include "edit_cli.h"
#include "stem/edit.h"
#include "stem/facts.h"

namespace stem::cli {
namespace fs = std::filesystem;

// The model (tables in RAM, F32) and its tokenizer.model, which edits need.
Result<Loaded> load_model_and_tokenizer(const std::string& dir) {
  STEM_ASSIGN_OR_RETURN(Model m, Model::load(dir));
  STEM_ASSIGN_OR_RETURN(Tokenizer tok, Tokenizer::for_model(m.dir(), m.config().vocab_size,
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

nlohmann::json tokens_json(const Tokenizer& tok, const std::vector<int32_t>& ids) {
  nlohmann::json a = nlohmann::json::array();
  for (int32_t id : ids) a.push_back({{"id", id}, {"piece", tok.piece(id)}});
  return a;
}

nlohmann::json forms_json(const Tokenizer& tok, const std::vector<edit::TokenForm>& forms) {
  nlohmann::json a = nlohmann::json::array();
  for (const auto& f : forms) a.push_back({{"kinds", f.kinds}, {"tokens", tokens_json(tok, f.ids)}});
  return a;
}


void warn_shared(const Tokenizer& tok, const std::vector<int32_t>& shared, const std::string& what) {
  if (shared.empty()) return;
  std::string list;
  for (int32_t t : shared) list += " " + tok.piece(t) + " (" + std::to_string(t) + ")";
  std::fprintf(stderr, "warning: pieces other words share were %s:%s\n", what.c_str(), list.c_str());
}

int64_t file_bytes(const std::string& p) {
  std::error_code ec;
  const auto n = fs::file_size(p, ec);
  return ec ? -1 : static_cast<int64_t>(n);
}

namespace {

// ---------------------------------------------------------------- facts

void register_facts(CLI::App* edit) {
  struct Opts {
    std::string out, tokenizer, pieces = "2-4";
    edit::FactOptions f;
    bool json = false;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* sub = edit->add_subcommand("facts", "Write a synthetic fact corpus (made-up countries) with edit cases");
  sub->add_option("--out", o->out, "Output folder (facts.txt, subjects.jsonl, queries.jsonl, *_cases.jsonl, ...)")
      ->required();
  sub->add_option("--seed", o->f.seed, "Seed of the names")->capture_default_str();
  sub->add_option("--subjects", o->f.subjects, "Number of countries (at least 4)")->capture_default_str();
  sub->add_option("--tokenizer", o->tokenizer,
                  "Names of several pieces under this tokenizer.model (then prepare with --tokenizer too)");
  sub->add_option("--pieces", o->pieces, "With --tokenizer: pieces a name takes, MIN-MAX")->capture_default_str();
  sub->add_flag("--json", o->json, "Machine-readable output");
  add_command(sub, [o] {
    const char* cmd = "edit facts";
    std::optional<Tokenizer> tok;
    edit::FactOptions f = o->f;
    if (!o->tokenizer.empty()) {
      auto t = Tokenizer::load(o->tokenizer);
      if (!t.ok()) return fail(cmd, t.status());
      tok = std::move(*t);
      f.tokenizer = &*tok;
      int lo = 0, hi = 0;
      char dash = 0, extra = 0;
      if (std::sscanf(o->pieces.c_str(), "%d%c%d%c", &lo, &dash, &hi, &extra) != 3 || dash != '-')
        return fail(cmd, Status::error("--pieces '" + o->pieces + "': expected MIN-MAX, e.g. 2-4"));
      f.min_pieces = lo;
      f.max_pieces = hi;
    }
    auto c = edit::make_fact_corpus(f);
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
    if (tok)
      std::printf("next: stem prepare --input %s/facts.txt --out DATA --doc-bytes 32 --val-fraction 0 --tokenizer %s\n"
                  "      (one document per sentence; names of %s pieces under that tokenizer)\n",
                  o->out.c_str(), o->tokenizer.c_str(), o->pieces.c_str());
    else
      std::printf("next: stem prepare --input %s/facts.txt --out DATA --doc-bytes 32 --val-fraction 0 --vocab-size 768\n"
                  "      (one document per sentence; 768 makes every name of 24 subjects one token)\n",
                  o->out.c_str());
    return 0;
  });
}

// ---------------------------------------------------------------- swap

void register_swap(CLI::App* edit) {
  struct Opts {
    std::string model_dir, from, to, layers = "all", align = "right", mismatch = "pad", subset, forms = "words", out;
    std::string shared = "refuse", prompts, keep;
    bool exchange = false, json = false;
    edit::SwapTrainOptions train;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* sub = edit->add_subcommand("swap", "Put the STEM rows of --to's tokens in place of --from's (an overlay)");
  sub->add_option("--model", o->model_dir, "Model directory (with tokenizer.model)")->required();
  sub->add_option("--from", o->from, "Source string: its tokens' rows are replaced")->required();
  sub->add_option("--to", o->to, "Target string: whose rows the source takes")->required();
  sub->add_option("--layers", o->layers, "STEM layers to edit: all, or a list such as 1,3-5")->capture_default_str();
  sub->add_option("--align", o->align, "Pair tokens from the left or the right end (where a name's last piece is): left | right")->capture_default_str();
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
  sub->add_option("--prompts", o->prompts,
                  "Train instead of copying: prompts that mention --from (a line each, or JSON lines with "
                  "\"prompt\"); --from's rows learn the model's own answers for --to (for names of several pieces)");
  sub->add_option("--steps", o->train.inject.steps, "With --prompts: Adam steps at most")->capture_default_str();
  sub->add_option("--lr", o->train.inject.lr, "With --prompts: Adam learning rate")->capture_default_str();
  sub->add_option("--answer-tokens", o->train.answer_tokens, "With --prompts: tokens of each answer at most")
      ->capture_default_str();
  sub->add_option("--keep", o->keep, "With --prompts: sentences whose predictions training holds (as edit inject)");
  sub->add_flag("--keep-kl", o->train.inject.keep_kl,
                "With --keep: hold the unedited model's next-token distributions on them (as edit inject)");
  sub->add_option("--keep-samples", o->train.inject.keep_samples,
                  "With --prompts and without --keep: sentences the model samples itself, held by KL (as edit inject)")
      ->capture_default_str();
  sub->add_option("--out", o->out, "Output overlay file")->required();
  sub->add_flag("--json", o->json, "Machine-readable output");
  add_command(sub, [o] {
    if (!o->prompts.empty())
      return trained_swap({o->model_dir, o->from, o->to, o->layers, o->shared, o->prompts, o->out, o->keep, o->exchange,
                           o->json, o->train});
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
    auto plan = edit::plan_swap(lm->model, lm->tok, o->from, o->to, so);
    if (!plan.ok()) return fail(cmd, plan.status());
    if (Status st = edit::write_overlay(plan->overlay, o->out); !st.ok()) return fail(cmd, st);
    const Tokenizer& tok = lm->tok;
    warn_shared(tok, plan->shared_tokens, so.shared == edit::SharedPieces::Skip ? "left alone" : "edited (--shared allow)");
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
