// generate() and TextStream (see include/stem/generate.h): the one generation
// loop, over infer::Decoder and infer::Sampler. Front ends (the CLI, the demo,
// a server, Python) call this and print; none holds a loop of its own.
#include "stem/generate.h"

#include <algorithm>

#include "core/timer.h"
#include "infer/decoder.h"
#include "infer/sampler.h"
#include "model/engine.h"
#include "model/transformer.h"

namespace stem {

const char* stop_reason_name(StopReason r) {
  switch (r) {
    case StopReason::Length: return "length";
    case StopReason::Eos: return "eos";
    case StopReason::Context: return "context";
    case StopReason::StopString: return "stop";
    case StopReason::Callback: return "callback";
  }
  return "?";
}

// ---------------------------------------------------------------- TextStream

namespace {
// U+FFFD (what a lone byte of a multi-byte character decodes to) at the end,
// or a truncated UTF-8 sequence.
bool ends_incomplete(const std::string& s) {
  if (s.size() >= 3 && s.compare(s.size() - 3, 3, "\xEF\xBF\xBD") == 0) return true;
  size_t i = s.size(), back = 0;
  while (i > 0 && back < 4 && (static_cast<unsigned char>(s[i - 1]) & 0xC0) == 0x80) --i, ++back;
  if (i == 0) return false;
  const unsigned char lead = static_cast<unsigned char>(s[i - 1]);
  const size_t need = lead >= 0xF0 ? 3 : lead >= 0xE0 ? 2 : lead >= 0xC0 ? 1 : 0;
  return back < need;
}

// Bytes at the end of `s` that are a proper prefix of some stop string (they
// may still become one).
size_t partial_stop(const std::string& s, const std::vector<std::string>& stop) {
  size_t keep = 0;
  for (const std::string& st : stop)
    for (size_t n = std::min(st.size() - 1, s.size()); n > keep; --n)
      if (s.compare(s.size() - n, n, st, 0, n) == 0) {
        keep = n;
        break;
      }
  return keep;
}
}  // namespace

TextStream::TextStream(const Tokenizer& tok, std::vector<int32_t> context, std::vector<std::string> stop)
    : tok_(tok), ids_(std::move(context)), stop_(std::move(stop)) {
  read_ = ids_.size();
  prefix_ = read_ > 0 ? read_ - 1 : 0;  // one token of context: its leading space is stripped on both sides
  prefix_text_ = decode_window(prefix_, read_);
}

std::string TextStream::decode_window(size_t from, size_t to) const {
  return tok_.decode(std::vector<int32_t>(ids_.begin() + static_cast<std::ptrdiff_t>(from),
                                          ids_.begin() + static_cast<std::ptrdiff_t>(to)));
}

bool TextStream::absorb(bool force) {
  if (read_ == ids_.size()) return true;
  // The new text is what decoding from prefix_ adds to decoding up to read_:
  // a window of a few tokens, not the whole sequence. A window whose first
  // piece decodes differently once followed by more (an incomplete
  // character before it) falls back to decoding everything once.
  const std::string window = decode_window(prefix_, ids_.size());
  if (!force && ends_incomplete(window)) return false;
  if (window.compare(0, prefix_text_.size(), prefix_text_) == 0) {
    text_ += window.substr(prefix_text_.size());
  } else {
    const std::string all = decode_window(0, ids_.size());
    const std::string before = decode_window(0, read_);
    text_ += all.size() > before.size() ? all.substr(before.size()) : std::string();
  }
  prefix_ = read_;
  read_ = ids_.size();
  prefix_text_ = decode_window(prefix_, read_);
  return true;
}

std::string TextStream::push(int32_t id) {
  if (stopped_) return {};
  ids_.push_back(id);
  if (!absorb(false)) return {};  // an incomplete character: wait for its other bytes
  return release();
}

std::string TextStream::release() {
  // A stop string: cut there (searching from a little before what was emitted).
  size_t cut = std::string::npos;
  for (const std::string& st : stop_) {
    const size_t from = emitted_ >= st.size() ? emitted_ - st.size() + 1 : 0;
    const size_t at = text_.find(st, from);
    if (at != std::string::npos) cut = std::min(cut, at);
  }
  if (cut != std::string::npos) {
    stopped_ = true;
    text_.resize(cut);
    std::string out = text_.size() > emitted_ ? text_.substr(emitted_) : std::string();
    emitted_ = text_.size();
    return out;
  }
  const size_t ready = text_.size() - partial_stop(text_, stop_);
  if (ready <= emitted_) return {};
  std::string out = text_.substr(emitted_, ready - emitted_);
  emitted_ = ready;
  return out;
}

std::string TextStream::finish() {
  // Bytes of a character never completed decode as they are (U+FFFD), as
  // decoding everything would give them; a stop string they complete still cuts.
  std::string out;
  if (!stopped_) {
    absorb(true);
    out = release();
  }
  if (text_.size() > emitted_) out += text_.substr(emitted_);
  emitted_ = text_.size();
  return out;
}

// ---------------------------------------------------------------- generate

Status check_generate_options(const GenerateOptions& o) {
  if (o.max_new_tokens < 1)
    return Status::error("generate: max_new_tokens = " + std::to_string(o.max_new_tokens) + ": must be at least 1");
  if (!(o.sampler.top_p > 0.0f))
    return Status::error("generate: top_p = " + std::to_string(o.sampler.top_p) + ": must be > 0");
  for (const std::string& s : o.stop)
    if (s.empty()) return Status::error("generate: a stop string is empty");
  return ok_status();
}

namespace {

// The loop shared by both entry points; `stream` is null for id prompts.
Result<GenerateResult> run(Model& model, std::vector<int32_t> prompt, const GenerateOptions& o, int32_t eos,
                           TextStream* stream, const TokenCallback& on_token) {
  const ModelConfig& cfg = model.config();
  const int64_t n_prompt = static_cast<int64_t>(prompt.size());
  const int64_t ctx = o.max_context > 0 ? std::min(o.max_context, cfg.max_position_embeddings)
                                        : cfg.max_position_embeddings;
  if (n_prompt > ctx)
    return Status::error("generate: a prompt of " + std::to_string(n_prompt) + " tokens" +
                         (stream ? " (with BOS)" : "") + " is longer than the context of " + std::to_string(ctx) +
                         " positions" + (ctx == cfg.max_position_embeddings ? " (max_position_embeddings)" : ""));
  infer::DecoderOptions dopt;
  dopt.max_context = ctx;
  dopt.prefetch = o.prefetch;
  infer::Decoder dec(engine(model), dopt);
  infer::Sampler sampler(o.sampler, cfg.vocab_size);
  GenerateResult r;
  r.prompt_ids = std::move(prompt);
  core::Timer t_prefill;
  STEM_ASSIGN_OR_RETURN(const float* logits, dec.prefill(r.prompt_ids.data(), n_prompt));
  r.prefill_seconds = t_prefill.seconds();
  core::Timer t_decode;
  for (int64_t i = 0;; ++i) {
    const int32_t id = sampler.sample(logits);
    if (id == eos) {
      r.stop = StopReason::Eos;
      break;
    }
    r.ids.push_back(id);
    GeneratedToken g;
    g.id = id;
    g.index = i;
    g.logits = logits;
    if (stream) g.text = stream->push(id);
    if (on_token && !on_token(g)) {
      r.stop = StopReason::Callback;
      break;
    }
    if (stream && stream->stopped()) {
      r.stop = StopReason::StopString;
      break;
    }
    if (i + 1 == o.max_new_tokens) {
      r.stop = StopReason::Length;
      break;
    }
    if (dec.position() == dec.capacity()) {
      r.stop = StopReason::Context;
      break;
    }
    STEM_ASSIGN_OR_RETURN(logits, dec.step(id));
  }
  r.decode_seconds = t_decode.seconds();
  if (stream) {
    const std::string rest = stream->finish();
    if (!rest.empty() && on_token && r.stop != StopReason::Callback) {  // held-back text, flushed
      GeneratedToken g;
      g.id = -1;
      g.index = static_cast<int64_t>(r.ids.size());
      g.text = rest;
      on_token(g);
    }
    r.text = stream->text();
  }
  return r;
}

}  // namespace

Result<GenerateResult> generate(Model& model, const Tokenizer& tok, const std::string& prompt,
                                const GenerateOptions& opt, const TokenCallback& on_token) {
  STEM_RETURN_IF_ERROR(check_generate_options(opt));
  if (tok.vocab_size() != model.config().vocab_size)
    return Status::error("generate: the tokenizer has " + std::to_string(tok.vocab_size()) +
                         " pieces but the model's vocab_size is " + std::to_string(model.config().vocab_size));
  std::vector<int32_t> ids;
  if (opt.add_bos) ids.push_back(tok.bos_id());
  for (int32_t id : tok.encode(prompt)) ids.push_back(id);
  if (ids.empty()) return Status::error("generate: the prompt has no tokens (and add_bos is off)");
  TextStream stream(tok, ids, opt.stop);
  return run(model, std::move(ids), opt, opt.stop_at_eos ? tok.eos_id() : -1, &stream, on_token);
}

Result<GenerateResult> generate(Model& model, const std::vector<int32_t>& prompt_ids, const GenerateOptions& opt,
                                const TokenCallback& on_token) {
  STEM_RETURN_IF_ERROR(check_generate_options(opt));
  if (prompt_ids.empty()) return Status::error("generate: no prompt ids");
  const int64_t V = model.config().vocab_size;
  for (size_t i = 0; i < prompt_ids.size(); ++i)
    if (prompt_ids[i] < 0 || prompt_ids[i] >= V)
      return Status::error("generate: token id " + std::to_string(prompt_ids[i]) + " at index " + std::to_string(i) +
                           " is outside [0, vocab_size = " + std::to_string(V) + ")");
  return run(model, prompt_ids, opt, -1, nullptr, on_token);
}

}  // namespace stem
