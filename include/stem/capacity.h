// Knowledge capacity, the yardstick of Allen-Zhu and Li ("Physics of Language
// Models 3.3": about 2 bits per parameter): synthetic biographies of N made-up
// people, each attribute drawn uniformly and independently from a known set,
// so the table holds exactly N * sum over attributes of log2 |set| bits. After
// a model is trained on the biographies, each (person, attribute) is scored as
// a multiple choice over the attribute's whole set (stem/eval.h's rules); the
// knowledge it holds is
//   bits = sum over attributes of max(0, sum over people of
//          log2 |set| + log2 p(true value | the set))
// where p is the softmax of the values' log-likelihoods over the set: a model
// that is always sure and right holds the table's entropy, one that guesses
// uniformly holds 0. Divided by all and by active parameters.
// It does not train (stem train does, on bios_train.txt).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "stem/model.h"
#include "stem/status.h"
#include "stem/tokenizer.h"

namespace stem {

struct BioAttribute {
  std::string name;                 // "birth_year", ...
  std::string prompt;               // "{name} was born in the year" (the value follows after a space)
  std::vector<std::string> values;  // the set
};

struct Bios {
  std::vector<BioAttribute> attributes;
  std::vector<std::string> people;                  // [N] full names, distinct
  std::vector<std::vector<int32_t>> value_of;       // [N][attributes] index into the attribute's values
  uint64_t seed = 0;
  // The table's entropy: N * sum of log2 |values|.
  double entropy_bits() const;
};

// N people (at least 1, at most 20,000: the distinct names), five attributes
// (birth year, birth city, university, field of study, employer).
Result<Bios> make_bios(int64_t people, uint64_t seed);
// The training text: each person's attributes in two phrasings each, one
// sentence per line, a blank line between people.
std::string bios_text(const Bios& b);
// bios.json (the table, for measuring) and back; errors name the file and field.
Status write_bios(const Bios& b, const std::string& path);
Result<Bios> read_bios(const std::string& path);

struct AttributeKnowledge {
  std::string name;
  int64_t set_size = 0;
  double accuracy = 0;   // the true value has the highest likelihood in the set
  double bits = 0;       // max(0, sum over people of log2 |set| + log2 p)
  double max_bits = 0;   // N * log2 |set|
};

struct Knowledge {
  int64_t people = 0;
  std::vector<AttributeKnowledge> attributes;
  double bits = 0, max_bits = 0;
  double bits_per_param = 0, bits_per_active_param = 0;  // filled by measure_knowledge
  double seconds = 0;
};

// The estimator alone: logprobs[p][a][v] is the log-likelihood of value v of
// attribute a for person p; set sizes come from the attributes.
Knowledge knowledge_bits(const Bios& b, const std::vector<std::vector<std::vector<double>>>& logprobs);

using KnowledgeProgress = std::function<void(int64_t done, int64_t total)>;

// Scores every (person, attribute) of `b` (the first `limit` people; 0: all)
// on the model, then knowledge_bits; bits per parameter from the model's
// config. Errors: a value without tokens, a prompt too long for the model.
Result<Knowledge> measure_knowledge(Model& model, const Tokenizer& tok, const Bios& b, int64_t limit = 0,
                                    const KnowledgeProgress& progress = nullptr);

}  // namespace stem
