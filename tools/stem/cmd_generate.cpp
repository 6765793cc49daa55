// stem generate: continue a prompt with a model, streaming the new text to
// stdout as it is sampled (KV-cache decoding, infer/decoder.h; sampling,
// infer/sampler.h). A text prompt goes through the model's tokenizer.model with
// BOS prepended; --prompt-ids feeds ids verbatim and prints ids, for models
// without a tokenizer. Stops at EOS (text prompts only: without a tokenizer
// there is no known EOS), after -n tokens, or when the context is full.
// It does not batch prompts, chat, or apply repetition penalties.
#include <charconv>
#include <cstdio>
#include <optional>

#include "commands.h"
#include "core/timer.h"
#include "infer/decoder.h"
#include "infer/sampler.h"
#include "io/tokenizer.h"
#include "model/transformer.h"
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

// Turns a growing list of ids into text printed once: the continuation is
// decoded together with the prompt (SentencePiece decodes a leading piece
// differently from a middle one) and held back while it ends in an incomplete
// UTF-8 character (a byte-fallback piece waiting for the rest of its bytes).
class TextStream {
 public:
  TextStream(const io::Tokenizer& tok, std::vector<int32_t> prompt)
      : tok_(tok), ids_(std::move(prompt)), base_(tok_.decode(ids_).size()), emitted_(base_) {}
  // Returns the new printable text after appending id.
  std::string push(int32_t id) {
    ids_.push_back(id);
    const std::string text = tok_.decode(ids_);
    if (ends_incomplete(text) || text.size() <= emitted_) return {};
    std::string out = text.substr(emitted_);
    emitted_ = text.size();
    return out;
  }
  // The whole continuation, flushing whatever was held back.
  std::string finish() {
    const std::string text = tok_.decode(ids_);
    std::string out = text.size() > emitted_ ? text.substr(emitted_) : std::string();
    emitted_ = text.size();
    return out;
  }
  std::string continuation() const {
    const std::string text = tok_.decode(ids_);
    return text.size() > base_ ? text.substr(base_) : std::string();
  }

 private:
  // U+FFFD (what a lone byte of a multi-byte character decodes to) at the end,
  // or a truncated UTF-8 sequence.
  static bool ends_incomplete(const std::string& s) {
    if (s.size() >= 3 && s.compare(s.size() - 3, 3, "\xEF\xBF\xBD") == 0) return true;
    size_t i = s.size(), back = 0;
    while (i > 0 && back < 4 && (static_cast<unsigned char>(s[i - 1]) & 0xC0) == 0x80) --i, ++back;
    if (i == 0) return false;
    const unsigned char lead = static_cast<unsigned char>(s[i - 1]);
    const size_t need = lead >= 0xF0 ? 3 : lead >= 0xE0 ? 2 : lead >= 0xC0 ? 1 : 0;
    return back < need;
  }
  const io::Tokenizer& tok_;
  std::vector<int32_t> ids_;
  size_t base_, emitted_;
};

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
    std::vector<std::string> edits;
  };
  auto o = std::make_shared<Opts>();
  o->load.load.dtype = "auto";
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
  sub->add_flag("--json", o->json, "One JSON object at the end (text, ids, tokens/s) instead of streaming");
  add_load_flags(sub, &o->load);
  add_edit_option(sub, &o->edits);
  add_command(sub, [o, ids] {
    const char* cmd = "generate";
    if (o->n < 1) return fail(cmd, Status::error("-n " + std::to_string(o->n) + ": must be at least 1"));
    if (o->top_p <= 0.0f) return fail(cmd, Status::error("--top-p " + std::to_string(o->top_p) + ": must be > 0"));
    auto m = Model::load(o->model_dir, o->load.load);
    if (!m.ok()) return fail(cmd, m.status());
    if (Status st = apply_edits(*m, o->edits); !st.ok()) return fail(cmd, st);
    const ModelConfig& cfg = m->config();
    const bool use_ids = ids->count() > 0;

    std::optional<io::Tokenizer> tok;
    std::vector<int32_t> prompt;
    if (use_ids) {
      auto p = parse_ids(o->prompt_ids, cfg.vocab_size);
      if (!p.ok()) return fail(cmd, p.status());
      prompt = std::move(*p);
    } else {
      auto t = io::load_model_tokenizer(o->model_dir, cfg.vocab_size, "to tokenize --prompt (or give ids with --prompt-ids)");
      if (!t.ok()) return fail(cmd, t.status());
      tok = std::move(*t);
      prompt.push_back(tok->bos_id());
      const std::vector<int32_t> body = tok->encode(o->prompt);
      prompt.insert(prompt.end(), body.begin(), body.end());
    }
    const int64_t n_prompt = static_cast<int64_t>(prompt.size());
    if (n_prompt > cfg.max_position_embeddings)
      return fail(cmd, Status::error("prompt of " + std::to_string(n_prompt) + " tokens" + (use_ids ? "" : " (with BOS)") +
                                     " is longer than the model's context of " +
                                     std::to_string(cfg.max_position_embeddings) + " positions (max_position_embeddings)"));

    infer::DecoderOptions dopt;
    dopt.prefetch = !o->load.no_prefetch;
    infer::Decoder dec(m->impl(), dopt);
    infer::Sampler sampler({.temperature = o->temperature, .top_k = o->top_k, .top_p = o->top_p,
                            .greedy = o->greedy, .seed = o->seed},
                           cfg.vocab_size);
    const int32_t eos = tok ? tok->eos_id() : -1;
    std::optional<TextStream> stream;
    if (tok) stream.emplace(*tok, prompt);
    const bool live = !o->json;

    core::Timer t_all;
    auto logits = dec.prefill(prompt.data(), n_prompt);
    if (!logits.ok()) return fail(cmd, logits.status());
    const double prefill_s = t_all.seconds();
    core::Timer t_decode;
    std::vector<int32_t> out;
    std::string stop = "length";
    for (int64_t i = 0; i < o->n; ++i) {
      const int32_t id = sampler.sample(*logits);
      if (id == eos) {
        stop = "eos";
        break;
      }
      out.push_back(id);
      if (live) {
        if (stream) {
          const std::string s = stream->push(id);
          std::fwrite(s.data(), 1, s.size(), stdout);
        } else {
          std::printf("%s%d", out.size() > 1 ? " " : "", id);
        }
        std::fflush(stdout);
      } else if (stream) {
        (void)stream->push(id);
      }
      if (i + 1 == o->n) break;
      if (dec.position() == dec.capacity()) {
        stop = "context";
        break;
      }
      logits = dec.step(id);
      if (!logits.ok()) return fail(cmd, logits.status());
    }
    const double decode_s = t_decode.seconds();
    const int64_t n_out = static_cast<int64_t>(out.size());
    const double tps = decode_s > 0 ? static_cast<double>(n_out) / decode_s : 0.0;
    if (live) {
      if (stream) {
        const std::string s = stream->finish();
        std::fwrite(s.data(), 1, s.size(), stdout);
      }
      std::printf("\n");
      std::fflush(stdout);
      std::fprintf(stderr, "[%ld prompt tokens in %.3fs, %ld generated at %.1f tokens/s, stop: %s]\n",
                   static_cast<long>(n_prompt), prefill_s, static_cast<long>(n_out), tps, stop.c_str());
      return 0;
    }
    nlohmann::json j = {{"prompt_tokens", n_prompt},
                        {"generated_tokens", n_out},
                        {"ids", out},
                        {"stop", stop},
                        {"prefill_seconds", prefill_s},
                        {"decode_seconds", decode_s},
                        {"tokens_per_second", tps},
                        {"seed", o->seed},
                        {"load", load_flags_json(o->load)}};
    if (stream) j["text"] = stream->continuation();
    print_json(j);
    return 0;
  });
}

}  // namespace stem::cli
