// Knowledge injection: teach a model sentences by training only the STEM rows
// of chosen tokens (by default the tokens of each fact's subject), everything
// else frozen. The trained rows come back as an Overlay and the model is put
// back bit for bit, so an injection is an edit like any other.
//
// Training: full forward and backward of model::Transformer on every fact
// sentence (BOS + text + EOS, one batch per sentence length), the mean
// next-token loss over all predicted positions; the row-sparse table
// gradient (model::Gradients) of each chosen (layer, token) is read out and
// stepped with Adam (no weight decay, no clipping); no other parameter moves.
// The STEM tables must be in the weight list (RAM, F32), else an error.
// Not done: a loss on the answer tokens only, regularizers that keep the rows
// near their old values, batching of very many facts (all facts every step).
//
// Facts file (JSON lines; blank lines skipped):
//   {"subject": "Kavoria", "text": "The capital of Kavoria is Dunemot."}
// "text" is required; "subject" is required unless rows are named explicitly.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "edit/overlay.h"
#include "edit/targets.h"
#include "io/tokenizer.h"
#include "model/transformer.h"

namespace stem::edit {

struct Fact {
  std::string subject;  // may be empty when the caller names tokens
  std::string text;
  int64_t line = 0;     // 1-based line in the facts file
};

// Errors name the file, line and field.
Result<std::vector<Fact>> read_facts(const std::string& path);

// BOS + encode(text) + EOS per fact; errors when a sentence exceeds the model's
// positions.
Result<std::vector<std::vector<int32_t>>> fact_sequences(const io::Tokenizer& tok, const std::vector<Fact>& facts,
                                                         int64_t max_positions, const std::string& where);

// The ids whose rows to train: with `names` empty, the tokens of each fact's
// subject in every form (targets.h) that occurs in that fact's sequence; else
// the tokens of each name (every form) that occur in any fact. Errors: a fact
// without a subject, a subject not found in its sentence, a name in no fact.
Result<std::vector<int32_t>> injection_tokens(const io::Tokenizer& tok, const std::vector<Fact>& facts,
                                              const std::vector<std::vector<int32_t>>& sequences,
                                              const std::vector<std::string>& names, const std::string& where);

struct InjectOptions {
  std::vector<int32_t> layers;  // STEM layers whose rows train
  int64_t steps = 60;
  float lr = 0.02f;
  float beta1 = 0.9f, beta2 = 0.99f, eps = 1e-8f;
};

struct InjectResult {
  Overlay overlay;             // the trained rows: layers x tokens
  std::vector<int32_t> tokens;
  double loss_before = 0, loss_after = 0;  // mean next-token loss on the facts
  std::vector<double> losses;  // per step, before its update
};

// (step, steps, loss)
using InjectProgress = std::function<void(int64_t, int64_t, double)>;

// Trains the rows of `tokens` in `opt.layers` on `sequences`, then restores
// every row it touched. Errors: no tokens or layers, a layer that is not STEM,
// ids out of range, a token that occurs in no sequence, a non-finite loss.
Result<InjectResult> inject_rows(model::Transformer& m, const std::vector<std::vector<int32_t>>& sequences,
                                 const std::vector<int32_t>& tokens, const InjectOptions& opt,
                                 const InjectProgress& progress = nullptr);

}  // namespace stem::edit
