// stem generate: continue a prompt with a model, streaming the new text to
// stdout as it is sampled; the loop is stem::generate() (stem/generate.h). A
// text prompt goes through the model's tokenizer.model with BOS prepended;
// --prompt-ids feeds ids verbatim and prints ids, for models without a
// tokenizer. Stops at EOS (text prompts only: without a tokenizer there is no
// known EOS), at a --stop string, after -n tokens, or when the context is full.
#include <charconv>
#include <cstdio>

#include "commands.h"
#include "stem/generate.h"
#include "stem/model.h"

namespace stem::cli {
namespace {

Result<std::vector<int32_t>> parse_ids(const std::string& text, int64_t vocab_size) {
  std::vector<int32_t> ids;
  const char* p = text.data();
  const char* end = p + text.size();
  auto space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == ','; };
  while (p < end) {
    if (space(*p)) {
      ++p;
      continue;
    }
    const char* q = p;
    while (q < end && !space(*q)) ++q;
    int64_t id = 0;
    auto [ptr, ec] = std::from_chars(p, q, id);
    const std::string word(p, q);
    if (ec != std::errc() || ptr != q)
      return Status::error("--prompt-ids: '" + word + "' is not a decimal token id");
    if (id < 0 || id >= vocab_size)
      return Status::error("--prompt-ids: token id " + word + " is outside [0, vocab_size = " +
                           std::to_string(vocab_size) + ")");
    ids.push_back(static_cast<int32_t>(id));
    p = q;
  }
  if (ids.empty()) return Status::error("--prompt-ids: no token ids given");
  return ids;
}

}  // namespace

void register_generate(CLI::App& app) {
  struct Opts {
    std::string model_dir, prompt, prompt_ids;
    int64_t n = 64;
    float temperature = 0.8f, top_p = 0.95f;
    int64_t top_k = 40;
    uint64_t seed = 0;
    bool greedy = false, json = false;
    LoadFlags load;
    std::vector<std::string> edits, stop;
  };
  auto o = std::make_shared<Opts>();
  o->load.dtype = "auto";
  CLI::App* sub = app.add_subcommand("generate", "Continue a prompt, streaming the sampled text");
  sub->add_option("--model", o->model_dir, "Model directory (config.json, model.safetensors, tokenizer.model)")->required();
  auto* text = sub->add_option("--prompt", o->prompt, "Prompt text (tokenized with the model's tokenizer.model, BOS prepended)");
  auto* ids = sub->add_option("--prompt-ids", o->prompt_ids, "Prompt as token ids, e.g. \"1 2 3\" (fed verbatim; prints ids)");
  text->excludes(ids);
  sub->add_option("-n,--max-new-tokens", o->n, "Tokens to generate at most")->capture_default_str();
  sub->add_option("--temperature", o->temperature, "Softmax temperature (0: greedy)")->capture_default_str();
  sub->add_option("--top-k", o->top_k, "Sample among the k most likely tokens (0: all)")->capture_default_str();
  sub->add_option("--top-p", o->top_p, "Then among the smallest set holding this much probability (1: all)")->capture_default_str();
  sub->add_option("--seed", o->seed, "Sampling seed")->capture_default_str();
  sub->add_flag("--greedy", o->greedy, "Always take the most likely token");
  sub->add_option("--stop", o->stop, "Stop when the text contains this string (repeatable; not printed)");
  sub->add_flag("--json", o->json, "One JSON object at the end (text, ids, tokens/s) instead of streaming");
  add_load_flags(sub, &o->load);
  add_edit_option(sub, &o->edits);
  add_command(sub, [o, ids] {
    const char* cmd = "generate";
    if (o->n < 1) return fail(cmd, Status::error("-n " + std::to_string(o->n) + ": must be at least 1"));
    if (o->top_p <= 0.0f) return fail(cmd, Status::error("--top-p " + std::to_string(o->top_p) + ": must be > 0"));
    auto m = Model::load(o->model_dir, o->load.options());
    if (!m.ok()) return fail(cmd, m.status());
    if (Status st = apply_edits(*m, o->edits); !st.ok()) return fail(cmd, st);
    const ModelConfig& cfg = m->config();
    const bool use_ids = ids->count() > 0;
    GenerateOptions gopt;
    gopt.sampler = {.temperature = o->temperature, .top_k = o->top_k, .top_p = o->top_p, .greedy = o->greedy,
                    .seed = o->seed};
    gopt.max_new_tokens = o->n;
    gopt.stop = o->stop;
    gopt.prefetch = !o->load.no_prefetch;
    const bool live = !o->json;
    // Streams each token's new text (or its id) as it comes.
    auto print = [&](const GeneratedToken& t) {
      if (!live) return true;
      if (use_ids) std::printf("%s%d", t.index > 0 ? " " : "", t.id);
      else std::fwrite(t.text.data(), 1, t.text.size(), stdout);
      std::fflush(stdout);
      return true;
    };
    Result<GenerateResult> r = Status::error("generate: not run");
    if (use_ids) {
      auto p = parse_ids(o->prompt_ids, cfg.vocab_size);
      if (!p.ok()) return fail(cmd, p.status());
      if (!o->stop.empty()) return fail(cmd, Status::error("--stop needs a text --prompt (ids have no text)"));
      r = generate(*m, *p, gopt, print);
    } else {
      auto tok = Tokenizer::for_model(m->dir(), cfg.vocab_size, "to tokenize --prompt (or give ids with --prompt-ids)");
      if (!tok.ok()) return fail(cmd, tok.status());
      r = generate(*m, *tok, o->prompt, gopt, print);
    }
    if (!r.ok()) return fail(cmd, r.status());
    const int64_t n_prompt = static_cast<int64_t>(r->prompt_ids.size()), n_out = static_cast<int64_t>(r->ids.size());
    const double tps = r->decode_seconds > 0 ? static_cast<double>(n_out) / r->decode_seconds : 0.0;
    if (live) {
      std::printf("\n");
      std::fflush(stdout);
      std::fprintf(stderr, "[%ld prompt tokens in %.3fs, %ld generated at %.1f tokens/s, stop: %s]\n",
                   static_cast<long>(n_prompt), r->prefill_seconds, static_cast<long>(n_out), tps,
                   stop_reason_name(r->stop));
      return 0;
    }
    nlohmann::json j = {{"prompt_tokens", n_prompt},
                        {"generated_tokens", n_out},
                        {"ids", r->ids},
                        {"stop", stop_reason_name(r->stop)},
                        {"prefill_seconds", r->prefill_seconds},
                        {"decode_seconds", r->decode_seconds},
                        {"tokens_per_second", tps},
                        {"seed", o->seed},
                        {"load", load_flags_json(o->load)}};
    if (!use_ids) j["text"] = r->text;
    print_json(j);
    return 0;
  });
}

}  // namespace stem::cli
