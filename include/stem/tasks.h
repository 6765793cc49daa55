// Built-in evaluation tasks, made reproducibly (from a seed) from text this
// machine can get, in the task format of stem/eval.h:
//   cloze        LAMBADA-style last-word prediction on passages of a book
//                held out from training: passages of 3 to 6 sentences whose
//                last word appeared earlier in the passage;
//   definitions  a WordNet 3.0 gloss -> its word, 4-way multiple choice, the
//                distractors words of the same part of speech;
//   world facts  countries with their capitals, languages, currencies and
//                continents (the countries-list package): templated
//                sentences for a training corpus (world_facts_train.txt), and
//                multiple-choice and cloze probes in paraphrased templates
//                that are never in it;
//   needle       pass-key retrieval: a five-digit key stated at a depth of a
//                filler text, asked for at the end, one file per context
//                length in tokens (needle_128.jsonl, ...); each example's id
//                says its length and depth;
//   bios         synthetic biographies for measuring knowledge capacity
//                (stem/capacity.h): bios_train.txt to train on, bios.json the
//                table, when bios_people > 0 (no source needed).
// A task is made when its source is given; OUT/tasks.json lists what was
// made, from what, with which seed. It neither trains nor scores.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "stem/status.h"

namespace stem {

struct TaskSources {
  std::string book;       // a plain-text book held out from training (cloze; needle filler)
  std::string wordnet;    // WordNet's dict folder (data.noun, data.verb, data.adj, data.adv)
  std::string countries;  // the countries-list package folder (countries.min.json, languages.min.json, ...)
  std::string tokenizer;  // a tokenizer.model: sizes needle contexts in its tokens
};

struct MakeTasksOptions {
  uint64_t seed = 1;
  int64_t cloze_examples = 500;
  int64_t definition_examples = 500;
  std::vector<int64_t> needle_lengths = {128, 256, 512};  // context tokens
  std::vector<double> needle_depths = {0.0, 0.25, 0.5, 0.75, 1.0};
  int64_t needle_per_cell = 8;  // examples per (length, depth)
  int64_t bios_people = 0;      // 0: no biographies
};

struct MadeTask {
  std::string name;    // "cloze", "definitions", "world_capitals_mc", "needle_256", ...
  std::string path;
  std::string kind;    // "multiple_choice", "cloze", "train" (sentences to train on) or "capacity" (bios.json)
  int64_t examples = 0;  // lines written
  std::string source;
};

// Writes the tasks whose sources are given into `out` (created if needed;
// each file atomically) and OUT/tasks.json. Errors name the source file and
// what is wrong with it (unreadable, not the expected layout, too little text
// for the examples asked for), or a needle length the book cannot fill.
Result<std::vector<MadeTask>> make_tasks(const TaskSources& sources, const MakeTasksOptions& opt,
                                         const std::string& out);

}  // namespace stem
