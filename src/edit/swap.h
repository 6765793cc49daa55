// Swap edits: put the STEM rows of one string's tokens in place of another's,
// so that the model says about the source what it knew about the target
// ("Spain" -> "Germany": the capital of Spain becomes Berlin). The result is
// an Overlay; nothing is written into the model.
//
// Source tokens s[0..n) and target tokens t[0..m) (one token form each, see
// targets.h; forms pair up by kind) are matched position by position:
//   align left   source position i pairs with target position i;
//   align right  the ends line up: i pairs with i + m - n.
// When n != m, --mismatch decides:
//   pad      (default) paired positions take their partner's row; a source
//            token without a partner keeps its own rows (padding with "no
//            change"), and target tokens without a partner are not used.
//   copy     as pad, but a source token past the end takes the row of the
//            nearest target token (the last one when left-aligned).
//   subset   the caller lists, for each source position, which target token
//            it takes (0-based); alignment is not used.
//   average  every source position takes the mean of all target rows.
// A source token paired with itself is left alone. A token that would get two
// different rows (it occurs twice in the source with different partners, or
// in two forms) is an error naming it. With `exchange`, the target's tokens
// also take the source's rows (both read from the rows before the edit).
//
// Shared pieces. A token's rows are read by every word that contains it, so
// only a piece that is a whole word of its string ("▁Spain" for "Spain") is
// the string's own. A word split into pieces ("▁S" "p" "ain") shares each of
// them with other words ("▁S" starts every S-word, "ain" ends "again"), and
// editing them changes those words too. `shared` decides:
//   refuse (default)  such a plan is an error naming the pieces;
//   skip              only the own pieces are edited (an error if none is);
//   allow             they are edited all the same; the plan lists them.
// The same rule covers the target's pieces under `exchange`.
//
// Rows are read through RowTable, so this works on any table storage.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "edit/overlay.h"
#include "edit/targets.h"
#include "io/tokenizer.h"

namespace stem::edit {

enum class Align { Left, Right };
enum class Mismatch { Pad, Copy, Subset, Average };
Result<Align> parse_align(const std::string& s);        // "left" | "right"
Result<Mismatch> parse_mismatch(const std::string& s);  // "pad" | "copy" | "subset" | "average"
enum class SharedPieces { Refuse, Skip, Allow };
Result<SharedPieces> parse_shared(const std::string& s);  // "refuse" | "skip" | "allow"
const char* align_name(Align a);
const char* mismatch_name(Mismatch m);
// Token-form kinds joined for messages: {"start", "mid"} -> "start=mid".
std::string kinds_str(const std::vector<std::string>& kinds);

struct SwapOptions {
  std::vector<int32_t> layers;   // STEM layers to edit (from parse_layers)
  Align align = Align::Left;
  Mismatch mismatch = Mismatch::Pad;
  std::vector<int32_t> subset;   // Mismatch::Subset: a target position per source position
  FormSet forms = FormSet::Words;
  bool exchange = false;         // also the target's tokens take the source's rows
  SharedPieces shared = SharedPieces::Refuse;
};

// What one source position receives.
struct SwapAssignment {
  bool reverse = false;            // part of the exchange (target <- source)
  std::vector<std::string> kinds;  // token forms of the pair
  int64_t position = 0;            // in the source form
  int32_t token = 0;               // whose rows change
  std::vector<int32_t> from;       // rows taken from (several: averaged); empty: kept
  std::string rule;                // "pair", "copy", "subset", "average", "kept", "same", "shared" (skipped)
  bool changes() const { return rule != "kept" && rule != "same" && rule != "shared"; }
};

struct SwapPlan {
  std::vector<TokenForm> from_forms, to_forms;
  std::vector<SwapAssignment> assignments;
  std::vector<int32_t> layers;
  std::vector<int32_t> changed_tokens;  // distinct, ascending
  std::vector<int32_t> shared_tokens;   // pieces other words share: edited (allow) or left alone (skip)
  Overlay overlay;                      // layers x changed tokens
};

// Plans the swap and reads the rows it needs from `rows` (nothing is
// written). Errors: empty strings, a subset of the wrong length or out of
// range, conflicting assignments, shared pieces (see above), nothing to change.
Result<SwapPlan> plan_swap(const io::Tokenizer& tok, const ModelConfig& cfg, RowTable& rows, const std::string& from,
                           const std::string& to, const SwapOptions& opt);
// True when token `id` is a whole word of `text` (with or without the
// leading space marker), i.e. no other word reads its rows.
bool own_piece(const io::Tokenizer& tok, int32_t id, const std::string& text);

}  // namespace stem::edit
