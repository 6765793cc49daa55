// A synthetic fact corpus for editing experiments: made-up countries, each
// with a capital and a language, stated in several paraphrased templates.
// Everything is drawn from a seed, so a corpus is reproducible. The subject
// always sits mid-sentence (after "of", "to", "in"), so in running text it
// takes the "mid" token form ("▁Kavoria") and, with a vocabulary large enough
// for the corpus, one token; or, drawn against a given tokenizer, 2-4 pieces
// (FactOptions::tokenizer).
//
// It writes text and JSON lines only; it does not tokenize or train (`stem
// prepare` and `stem train` do). Files written by write_fact_corpus:
//   facts.txt            training sentences, separated by blank lines; every
//                        sentence is 33..64 bytes, so `stem prepare
//                        --doc-bytes 32` makes each one a document (BOS ... EOS)
//   subjects.jsonl       {"subject", "capital", "language"}
//   queries.jsonl        {"subject", "attribute", "prompt", "answer"}, every template
//   swap_cases.jsonl     edit-eval cases for the demo swap (subject 0 takes
//                        subject 1's rows) plus {"control": prompt} lines
//   inject_facts.jsonl   facts for `stem edit inject`: subject 2's capital
//                        becomes subject 3's capital, in every capital template,
//                        and its language restated (so it does not drift)
//   inject_cases.jsonl   edit-eval cases for that injection (the language ones
//                        expect no change) plus controls
//   controls.txt         control prompts about the other subjects, one per line
//   facts.json           what was made: format "stem-facts", version, seed, counts
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "stem/status.h"
#include "stem/tokenizer.h"

namespace stem::edit {

struct FactOptions {
  uint64_t seed = 1;
  int subjects = 24;  // at least 4 (the demo edits use subjects 0..3)
  // Names of several pieces: with a tokenizer, every name (subject, capital,
  // language) is drawn until it is min_pieces..max_pieces pieces as it
  // follows a space in a sentence; the corpus is then prepared with that
  // same tokenizer (`stem prepare --tokenizer`), so the pieces hold.
  const Tokenizer* tokenizer = nullptr;
  int min_pieces = 1, max_pieces = 1000;
};

struct FactSubject {
  std::string name, capital, language;
};

// One prompt whose expected continuation is an attribute of a subject.
struct FactQuery {
  int subject = 0;
  std::string attribute;  // "capital" or "language"
  int template_index = 0;
  std::string prompt;     // "The capital of Kavoria is"
  std::string answer;     // " Dunemot" (leading space: how it follows the prompt)
};

struct FactCorpus {
  FactOptions options;
  std::vector<FactSubject> subjects;
  std::vector<std::string> sentences;  // facts.txt
  std::vector<FactQuery> queries;      // every subject, attribute and template
};

inline constexpr int kFactTemplatesPerAttribute = 3;

Result<FactCorpus> make_fact_corpus(const FactOptions& opt);

// The sentence of one template with the answer filled in, and its prompt
// (the sentence cut before the answer) for any subject name and value.
std::string fact_sentence(const std::string& attribute, int template_index, const std::string& subject,
                          const std::string& value);
std::string fact_prompt(const std::string& attribute, int template_index, const std::string& subject);

// Writes the files listed above into `dir` (created if needed), each atomically.
Status write_fact_corpus(const FactCorpus& corpus, const std::string& dir);

}  // namespace stem::edit
