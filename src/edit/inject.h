// Knowledge injection on the engine (the rules and the public entry point,
// inject_facts, are in include/stem/edit.h): the fact sequences, which rows
// train, and the training itself on a model::Transformer, whose row-sparse
// table gradient (model::Gradients) is stepped with kernels::adamw_update.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "edit/overlay.h"
#include "io/tokenizer.h"
#include "model/transformer.h"
#include "stem/edit.h"

namespace stem::edit {

// BOS + encode(text) + EOS per fact; errors when a sentence exceeds the model's
// positions.
Result<std::vector<std::vector<int32_t>>> fact_sequences(const Tokenizer& tok, const std::vector<Fact>& facts,
                                                         int64_t max_positions, const std::string& where);

// BOS + encode(s) + EOS of each keep sentence (InjectOptions::keep); errors
// name the sentence when one exceeds the model's positions.
Result<std::vector<std::vector<int32_t>>> keep_sequences(const Tokenizer& tok, const std::vector<std::string>& keep,
                                                         int64_t max_positions);

// The ids whose rows to train: with `names` empty, the tokens of each fact's
// subject in every form (Targets in stem/edit.h) that occurs in that fact's
// sequence, and of its answer when it has one; else the tokens of each name
// (every form) that occur in any fact.
// Errors: a fact without a subject, a subject not found in its sentence, a
// name in no fact.
Result<std::vector<int32_t>> injection_tokens(const Tokenizer& tok, const std::vector<Fact>& facts,
                                              const std::vector<std::vector<int32_t>>& sequences,
                                              const std::vector<std::string>& names, const std::string& where);

// `n` sequences the model samples from `bos` (temperature 1, `seed`), up to
// `max_len` tokens (at most the model's positions), each cut after its first
// `eos`; those of fewer than 3 tokens dropped. The keep sentences of an
// injection the user gives none (InjectOptions::keep_samples).
Result<std::vector<std::vector<int32_t>>> sample_keep_sequences(model::Transformer& m, int32_t bos, int32_t eos,
                                                                int64_t n, int64_t max_len, uint64_t seed);

// The keep sentences of an injection: opt.keep's (BOS + text + EOS), or
// without them those of opt.keep_samples sampled ones that hold one of
// `trained` (elsewhere a sentence reads no trained row, so the edit cannot
// change it) and none of `edited` (the subject's tokens: what the model said
// about it is what the edit changes); opt.keep_kl is set when there are any.
Result<std::vector<std::vector<int32_t>>> keep_for(model::Transformer& m, const Tokenizer& tok, InjectOptions& opt,
                                                   const std::vector<int32_t>& trained,
                                                   const std::vector<int32_t>& edited);

// Trains the rows of `tokens` in `opt.layers` on `sequences` and `keep` (the
// keep sentences, BOS + ids + EOS: trained as well, not counted in
// `learned`), then restores every row it touched. The STEM tables must be in
// the weight list (RAM, F32). Errors: no tokens or layers, a layer that is
// not STEM, ids out of range, a token that occurs in no sequence, a
// non-finite loss.
Result<InjectResult> inject_rows(model::Transformer& m, const std::vector<std::vector<int32_t>>& sequences,
                                 const std::vector<int32_t>& tokens, const InjectOptions& opt,
                                 const InjectProgress& progress = nullptr,
                                 const std::vector<std::vector<int32_t>>& keep = {});

}  // namespace stem::edit
