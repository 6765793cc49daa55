// Editing what a model knows, on a loaded model: edit overlays (files of STEM
// row replacements made by `stem edit swap|inject`) applied and reverted, and
// single STEM table rows read and written, wherever the tables live (in RAM
// the weights change; with --tables mmap|disk the rows become the table
// store's overrides, the file is never touched). A checkpoint on disk never
// changes.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "stem/eval.h"
#include "stem/model.h"
#include "stem/overlay.h"
#include "stem/status.h"
#include "stem/tokenizer.h"

namespace stem {

// Overlays applied in order, undone in reverse by revert() (bit for bit).
class AppliedEdits {
 public:
  AppliedEdits();
  ~AppliedEdits();
  AppliedEdits(AppliedEdits&&) noexcept;
  AppliedEdits& operator=(AppliedEdits&&) noexcept;
  Status revert();  // once; later calls do nothing
  size_t rows() const;  // rows replaced

 private:
  friend Result<AppliedEdits> apply_overlays(Model&, const std::vector<std::string>&);
  struct Impl;
  std::unique_ptr<Impl> impl_;
};
// Errors name the overlay file (malformed, made for another shape, a
// non-STEM layer). The edits stay until revert(), also when AppliedEdits is
// destroyed.
Result<AppliedEdits> apply_overlays(Model& model, const std::vector<std::string>& files);

// Row `token` of STEM layer `layer`'s table [V, f] (layer: the model's layer
// index, which must be a STEM layer).
Result<std::vector<float>> read_table_row(Model& model, int32_t layer, int32_t token);
Status write_table_row(Model& model, int32_t layer, int32_t token, const std::vector<float>& row);
// STEM layer `layer`'s whole table as an F32 [V, f] array in memory, to read
// and write in place (no copy), when it is held in RAM as F32 (the default
// load); null otherwise (use read_table_row). Valid while the model lives.
float* table_data(Model& model, int32_t layer);

}  // namespace stem

// The editing toolkit: what to edit (targets), how (swap, inject), and how
// well it worked (evaluate_edits). Overlays are made here and applied above.
namespace stem::edit {

// -------- Targets
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
Result<std::vector<TokenForm>> token_forms(const Tokenizer& tok, const std::string& text, FormSet set,
                                           const std::string& what);

// "▁Zor|bia" (pieces joined by '|'), for reports.
std::string show_pieces(const Tokenizer& tok, const std::vector<int32_t>& ids);

// -------- Swap
// Swap edits: put the STEM rows of one string's tokens in place of another's,
// so that the model says about the source what it knew about the target
// ("Spain" -> "Germany": the capital of Spain becomes Berlin). The result is
// an Overlay; nothing is written into the model.
//
// Source tokens s[0..n) and target tokens t[0..m) (one token form each, see
// Targets above; forms pair up by kind) are matched position by position:
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
// Rows are read wherever the tables live (RAM, mmap or disk).

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
  Align align = Align::Right;  // the subjects' last pieces paired: better for names of several pieces (docs/editing.md)
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

// Plans the swap and reads the rows it needs from the model's tables, wherever
// they live (nothing is written). Errors: empty strings, a subset of the wrong
// length or out of range, conflicting assignments, shared pieces (see above),
// nothing to change.
Result<SwapPlan> plan_swap(Model& model, const Tokenizer& tok, const std::string& from, const std::string& to,
                           const SwapOptions& opt);
// True when token `id` is a whole word of `text` (with or without the
// leading space marker), i.e. no other word reads its rows.
bool own_piece(const Tokenizer& tok, int32_t id, const std::string& text);

// -------- Injection
// Knowledge injection: teach a model sentences by training only the STEM rows
// of chosen tokens (by default the tokens of each fact's subject), everything
// else frozen. The trained rows come back as an Overlay and the model is put
// back bit for bit, so an injection is an edit like any other.
//
// Training: full forward and backward of the model on every fact
// sentence and keep sentence (BOS + text + EOS, one batch per sentence
// length), the mean next-token loss over all their predicted positions; the row-sparse table
// gradient of each chosen (layer, token) is read out and
// stepped with Adam (no weight decay, no clipping); no other parameter moves.
// The STEM tables must be held in RAM as F32 (the default load), else an error.
// Keep sentences (the user's, or by default ones the model samples) hold
// their text or the unedited model's distributions (KL) as training goes.
// Not done: a loss on the answer tokens only, batching of very many facts and
// keep sentences (all of them every step).
//
// Facts file (JSON lines; blank lines skipped):
//   {"subject": "Kavoria", "text": "The capital of Kavoria is Dunemot.", "answer": "Dunemot"}
// "text" is required; "subject" is required unless rows are named explicitly.
// "answer" (optional) adds the rows of the answer's tokens to those trained:
// an answer of several pieces is produced at positions whose input is its
// previous piece, which the subject's rows reach only through attention.
// Those rows are read wherever the pieces occur, so give keep sentences
// (InjectOptions::keep) that hold what else the model says with them.

struct Fact {
  std::string subject;  // may be empty when the caller names tokens
  std::string text;
  int64_t line = 0;     // 1-based line in the facts file
  std::string answer;   // may be empty: only the subject's rows train
};

// Errors name the file, line and field.
Result<std::vector<Fact>> read_facts(const std::string& path);
// Keep sentences (InjectOptions::keep): a sentence a line, or JSON lines with
// "text"; errors name the file and line.
Result<std::vector<std::string>> read_keep(const std::string& path);

struct InjectOptions {
  std::vector<int32_t> layers;  // STEM layers whose rows train
  // At most this many steps; with until_learned, training stops at the first
  // step whose forward pass already predicts every fact (see inject_facts).
  // On made-up countries with new capitals of 3-4 pieces, 60 fixed steps
  // taught 7% of the answers, 200 60%, 400 93% (docs/editing.md); with the
  // answer's rows, one fact in 15 needed more than 500.
  int64_t steps = 1000;
  bool until_learned = true;
  float lr = 0.05f;  // 0.02 taught fewer of those in 500 steps (53-93% against 67-100%)
  float beta1 = 0.9f, beta2 = 0.99f, eps = 1e-8f;
  // Sentences whose predictions training holds: trained with the facts (the
  // same next-token loss), not counted in `learned` (e.g. the other facts
  // of the corpus, so that rows other names share keep their answers).
  std::vector<std::string> keep;
  // The keep sentences hold the unedited model's whole next-token
  // distributions instead of their text: the loss on them is KL(before ||
  // after) at every position (the unedited logits computed once, V floats a
  // position: at most 1 GiB of them).
  bool keep_kl = false;
  // Without keep sentences: this many sentences the unedited model writes
  // itself (sampled from BOS, 32 tokens at most, a fixed seed); those that
  // read a trained row but hold no subject token (what the model says with
  // the answer's pieces elsewhere) hold its distributions by the KL term
  // above. 0: nothing held.
  int64_t keep_samples = 1024;
};

struct InjectResult {
  Overlay overlay;             // the trained rows: layers x tokens
  std::vector<int32_t> tokens;
  double loss_before = 0, loss_after = 0;  // mean next-token loss on the facts
  std::vector<double> losses;  // per step, before its update
  int64_t steps = 0;           // updates made
  bool learned = false;        // every fact predicted after them (see inject_facts)
  int64_t keep_sampled = 0;    // keep sentences the model sampled (InjectOptions::keep_samples)
  bool keep_kl = false;        // the keep sentences held their distributions (KL), not their text
};

// (step, steps, loss)
using InjectProgress = std::function<void(int64_t, int64_t, double)>;

// Trains the STEM rows of the tokens named by `names` (with `names` empty: the
// tokens of each fact's subject, in every form that occurs in its sentence)
// on BOS + text + EOS of every fact, and returns them as an overlay; the
// model is put back bit for bit. A fact is predicted when every token after
// the first run of trained tokens in its sentence (the subject's pieces) is
// the most likely one there (teacher-forced): what follows the subject, which
// its rows can change. With until_learned the first forward pass that predicts every
// fact ends training, before its update. `where` names the facts in errors (the facts
// file). Errors: a sentence longer than the model's positions, a fact without
// a subject, a subject or name found in no sentence, a layer that is not
// STEM, STEM tables not in RAM as F32, a non-finite loss.
Result<InjectResult> inject_facts(Model& model, const Tokenizer& tok, const std::vector<Fact>& facts,
                                  const std::vector<std::string>& names, const InjectOptions& opt,
                                  const InjectProgress& progress = nullptr, const std::string& where = "facts");

// -------- Swap by training
// Copying rows position by position moves only part of the answers when the
// names are several pieces each (41-53% on made-up countries: the source's
// unpaired pieces still speak for it, and an answer's later pieces are
// produced where the input is its previous piece; docs/editing.md). Swap by
// training teaches the source's rows what the model says of the target: for
// each prompt that mentions `from`, the model's own greedy answer to the
// prompt with `to` in its place (through the first token that ends a
// sentence, at most answer_tokens) becomes a fact, prompt + answer, and the
// rows of from's tokens are trained on those facts by injection (above:
// until every fact is predicted, at most inject.steps). The rows trained are
// the tokens of `from` in its sentences; pieces that other words share
// follow `shared` as in a swap (refuse: an error naming them). Errors: empty
// strings, no prompts, a prompt without `from`, an empty answer, and those
// of injection.
struct SwapTrainOptions {
  InjectOptions inject;
  SharedPieces shared = SharedPieces::Refuse;
  int64_t answer_tokens = 8;
};

struct SwapTrainResult {
  std::vector<Fact> facts;            // each prompt + its answer, the sentences trained on
  std::vector<std::string> answers;   // the target's answer to each prompt
  std::vector<int32_t> shared_tokens; // pieces others share: trained (allow) or left alone (skip)
  InjectResult inject;                // the overlay, the tokens trained, steps, learned
};

Result<SwapTrainResult> swap_by_training(Model& model, const Tokenizer& tok, const std::string& from,
                                         const std::string& to, const std::vector<std::string>& prompts,
                                         const SwapTrainOptions& opt, const InjectProgress& progress = nullptr);
// Prompts, one per line, or JSON lines with "prompt" (or "control"); errors
// name the file and line.
Result<std::vector<std::string>> read_prompts(const std::string& path);

// -------- Measuring an edit
// Measuring an edit: for prompts with an expected continuation before and
// after the edit, the probability and rank of each continuation's first
// token and the log-probability of the whole continuation, on the model
// without and with the edit; and locality: the KL divergence between the two
// models' next-token distributions on unrelated control prompts.
//
// The edits are applied to the model for the second pass and reverted after
// it (bit for bit; also on error), so the model is unchanged on return. The
// STEM tables must be held in RAM as F32 (the default load), else an error.
// Prompts are BOS + encode(prompt); a continuation's ids are those that
// follow the prompt's in encode(prompt + continuation) (Targets above), so a
// continuation normally starts with a space: " Dunemot".
//
// Cases file (JSON lines; blank lines skipped), either kind of line:
//   {"prompt": "The capital of Kavoria is", "before": " Dunemot", "after": " Lisbon"}
//   {"control": "The people of Romania speak"}
// Controls file (--controls): one prompt per line, or such JSON lines.

struct EditCase {
  std::string prompt, before, after;
  int64_t line = 0;
};

struct EditCases {
  std::vector<EditCase> cases;
  std::vector<std::string> controls;
};

// Errors name the file, line and field.
Result<EditCases> read_cases(const std::string& path);
Result<std::vector<std::string>> read_controls(const std::string& path);

struct CaseResult {
  ContinuationScore before_base, before_edit, after_base, after_edit;
};

struct ControlResult {
  double kl = 0;  // KL(base || edited) of the next-token distribution, nats
  int32_t top_base = 0, top_edit = 0;
};

struct EditEvalSummary {
  double base_knows = 0;     // cases whose "before" first token is top-1 without the edit
  double efficacy = 0;       // cases whose "after" first token is top-1 with the edit
  double efficacy_greedy = 0;  // ... and the whole "after" continuation is greedy
  double before_kept = 0;    // cases whose "before" first token is still top-1 with the edit
  double mean_kl = 0, max_kl = 0;
  double controls_same_top = 0;  // controls whose top-1 token is unchanged
};

struct EditEvalResult {
  std::vector<CaseResult> cases;
  std::vector<ControlResult> controls;
  EditEvalSummary summary;
};

// (done, total) over the prompts scored, both passes.
using EvalProgress = std::function<void(int64_t, int64_t)>;

// Scores the cases and controls on the model as it is, then with `edits`
// applied (each must fit the model: check_overlay), and puts the model back.
Result<EditEvalResult> evaluate_edits(Model& model, const Tokenizer& tok, const EditCases& cases,
                                      const std::vector<Overlay>& edits, const EvalProgress& progress = nullptr);

}  // namespace stem::edit
