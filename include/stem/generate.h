// Text generation: a prompt in, new tokens out, one at a time, through a
// KV-cache decoder (one pass over the weights per token) and a sampler.
//
//   stem::GenerateOptions opt;            // sampler, stop rules, limits
//   opt.max_new_tokens = 80;
//   auto r = stem::generate(model, tok, "It was", opt,
//                           [](const stem::GeneratedToken& t) { std::cout << t.text; return true; });
//
// Stop rules, checked after every token: the end-of-sequence id (not
// emitted), max_new_tokens, the context filling up, a stop string appearing in
// the text (text mode; the stop string and what follows are not emitted), or
// the callback returning false.
//
// Text is streamed UTF-8 safe: a token's `text` is what became printable with
// it, decoded together with everything before (SentencePiece decodes a
// leading piece differently from a middle one), held back while it ends in an
// incomplete UTF-8 character or could be the start of a stop string. The
// concatenated `text` of all tokens equals GenerateResult::text.
//
// It does not batch sequences (one prompt, one sequence), apply repetition
// penalties or templates. A Model may run several generate() calls at once
// from different threads (each has its own decoder and cache); nothing else
// may change the model meanwhile.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "stem/model.h"
#include "stem/sampler.h"
#include "stem/status.h"
#include "stem/tokenizer.h"

namespace stem {

struct GenerateOptions {
  SamplerConfig sampler;
  int64_t max_new_tokens = 64;     // >= 1
  bool add_bos = true;             // text prompts: BOS first
  bool stop_at_eos = true;         // text prompts: the tokenizer's EOS ends generation
  std::vector<std::string> stop;   // text prompts: stop strings (non-empty)
  int64_t max_context = 0;         // positions of the cache; <= 0: max_position_embeddings
  bool prefetch = true;            // tables out of RAM: fetch rows on a background thread
};

enum class StopReason { Length, Eos, Context, StopString, Callback };
const char* stop_reason_name(StopReason r);  // "length", "eos", "context", "stop", "callback"

// One generated token, as the callback sees it. After the last token, text
// held back until the end (an incomplete character, the start of a stop
// string that never completed) comes in one more call with id = -1.
struct GeneratedToken {
  int32_t id = 0;                // -1: the final flush of held-back text
  int64_t index = 0;             // 0 for the first new token
  std::string text;              // text that became printable with it (may be empty)
  const float* logits = nullptr; // [V] the logits it was sampled from (valid during the callback)
};
// Returns false to stop generating.
using TokenCallback = std::function<bool(const GeneratedToken&)>;

struct GenerateResult {
  std::vector<int32_t> prompt_ids;  // as fed (BOS included when added)
  std::vector<int32_t> ids;         // generated (EOS not included)
  std::string text;                 // the continuation (text prompts; empty for id prompts)
  StopReason stop = StopReason::Length;
  double prefill_seconds = 0, decode_seconds = 0;
};

// A text prompt, tokenized with `tok` (which must fit the model's vocabulary).
// Errors: an empty result of tokenization with add_bos off, a prompt longer
// than the context, options out of range, a table read error.
Result<GenerateResult> generate(Model& model, const Tokenizer& tok, const std::string& prompt,
                                const GenerateOptions& opt, const TokenCallback& on_token = nullptr);
// Token ids fed verbatim (no BOS added, no EOS or stop strings known; `text`
// stays empty). Errors: no ids, an id outside [0, V), too long a prompt.
Result<GenerateResult> generate(Model& model, const std::vector<int32_t>& prompt_ids, const GenerateOptions& opt,
                                const TokenCallback& on_token = nullptr);

// The rules generate() checks options by: max_new_tokens >= 1, top_p > 0, no
// empty stop string.
Status check_generate_options(const GenerateOptions& opt);

// Incremental detokenization (what generate() streams with), for callers
// that feed tokens themselves: push() returns the text that became printable.
class TextStream {
 public:
  // `context`: ids already before the new ones (the prompt), decoded with
  // them but never returned. `stop`: stop strings to hold back and detect.
  TextStream(const Tokenizer& tok, std::vector<int32_t> context, std::vector<std::string> stop = {});
  std::string push(int32_t id);
  // True once a stop string appeared; push() returns nothing after that.
  bool stopped() const { return stopped_; }
  // Whatever was held back (an incomplete character, a partial stop string).
  std::string finish();
  // The continuation so far, without a stop string and what follows it.
  const std::string& text() const { return text_; }

 private:
  std::string decode_window(size_t from, size_t to) const;  // ids_[from, to)
  // Adds the text of ids past read_ to text_, unless it ends inside a
  // character (and not `force`); false when it waits.
  bool absorb(bool force);
  std::string release();  // the part of text_ now safe to return (stop strings)
  const Tokenizer& tok_;
  std::vector<int32_t> ids_;
  std::vector<std::string> stop_;
  // Decoding works on a window: ids_[prefix_, read_) decodes to prefix_text_,
  // and text up to read_ is in text_ (before any stop cut).
  size_t prefix_ = 0, read_ = 0;
  std::string prefix_text_;
  std::string text_;       // continuation emitted or held, stop-trimmed
  size_t emitted_ = 0;     // bytes of text_ returned so far
  bool stopped_ = false;
};

}  // namespace stem
