// What an edit targets: the STEM layers named by a --layers spec, and the
// token ids a string takes in running text. It does not read or change rows.
//
// Token forms. SentencePiece tokenizes a word differently by what precedes it.
// A string is looked at in up to three forms:
//   start  the string as a text begins with it: encode(s). With the dummy
//          prefix of stem's tokenizers this is "▁Spain", the same as mid.
//   mid    after a word and a space, as in "the capital of Spain": the tokens
//          of "a " + s that follow those of "a".
//   line   right after a newline, with no space ("\nSpain" inside a prepared
//          multi-line document): the tokens of "a\n" + s after those of "a\n".
//          Often sub-word pieces shared with other words, so only on request.
// Pieces that are only the space marker ("▁", which SentencePiece emits
// before a word when "▁word" is not a piece) are left out of every form: all
// words share them, so editing them would edit everything. Forms with
// identical ids are merged (kinds lists all of them). Leading and trailing
// whitespace of s is dropped first; an empty string is an error.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "io/tokenizer.h"
#include "stem/config.h"
#include "stem/status.h"

namespace stem::edit {

// "all" (every STEM layer) or a comma list of indices and ranges: "1,3-5".
// Errors name the option (`what`) and the value: a layer out of range, or a
// layer that is not a STEM layer (listing the STEM layers).
Result<std::vector<int32_t>> parse_layers(const std::string& spec, const ModelConfig& cfg,
                                          const std::string& what = "--layers");

enum class FormSet { AsGiven, Words, All };  // {start}, {start, mid}, {start, mid, line}
Result<FormSet> parse_form_set(const std::string& s);  // "as-given" | "words" | "all"

struct TokenForm {
  std::vector<std::string> kinds;  // "start", "mid", "line" sharing these ids
  std::vector<int32_t> ids;
  bool has(const std::string& kind) const;
};

// The distinct forms of `text`; `what` names it in errors ("--from").
Result<std::vector<TokenForm>> token_forms(const io::Tokenizer& tok, const std::string& text, FormSet set,
                                           const std::string& what);

// "▁Zor|bia" (pieces joined by '|'), for reports.
std::string show_pieces(const io::Tokenizer& tok, const std::vector<int32_t>& ids);

// continuation_ids: eval/continuation.h.

}  // namespace stem::edit
