// The pieces of make_tasks (include/stem/tasks.h) shared by its two files:
// text into sentences, JSON lines out, and each task's examples.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "stem/status.h"
#include "stem/tokenizer.h"

namespace stem::eval {

// Sentences end at . ! ? (after closing quotes) unless the word is a title
// ("Mr."); whitespace is collapsed to single spaces.
std::vector<std::string> sentences_of(const std::string& text);
// The text without heading lines (every letter upper case: "CHAPTER III").
std::string without_headings(const std::string& text);
Status write_jsonl(const std::string& path, const std::vector<nlohmann::json>& lines);
// A sentence template with "{n}" (who) and "{v}" (the value) filled in.
std::string fill_template(std::string t, const std::string& who, const std::string& value);

// make_tasks.cpp
Result<std::vector<nlohmann::json>> cloze_examples(const std::vector<std::string>& sents, int64_t n,
                                                   std::mt19937_64& rng, const std::string& book);
Result<std::vector<nlohmann::json>> definition_examples(const std::string& wordnet_dir, int64_t n, std::mt19937_64& rng);

// make_tasks_facts.cpp
struct WorldFacts {
  std::vector<std::string> train;  // sentences to train on
  std::vector<nlohmann::json> mc, cloze;
};
Result<WorldFacts> world_facts(const std::string& countries_dir, std::mt19937_64& rng);
// The filler sentences of the needle contexts with their token counts
// (each after a space), counted once for every length.
struct NeedleFiller {
  std::vector<std::string> sentences;
  std::vector<int64_t> tokens;
};
NeedleFiller needle_filler(const std::vector<std::string>& sentences, const Tokenizer& tok);
// Examples of `length` tokens at most (BOS + context + target) at each depth.
Result<std::vector<nlohmann::json>> needle_examples(const NeedleFiller& filler, const Tokenizer& tok, int64_t length,
                                                    const std::vector<double>& depths, int64_t per_depth,
                                                    std::mt19937_64& rng, const std::string& book);

}  // namespace stem::eval
