// Evaluation on a loaded model: perplexity over held-out tokens, the
// log-likelihood of a continuation after a context, and tasks (multiple
// choice and cloze) scored with the rules of lm-evaluation-harness, so that
// numbers compare with published ones:
//   - the context is BOS + encode(context); trailing spaces of the context
//     move to the front of the continuation; the continuation is the target
//     delimiter (" ") + the choice, and its tokens are those of
//     encode(context + continuation) after the first len(encode(context));
//   - a choice's score is the sum of its tokens' log-probabilities; acc is the
//     argmax of the sums, acc_norm the argmax of the sums divided by the
//     choice's length in characters (Unicode code points); ties go to the
//     first choice;
//   - a cloze example is right when every target token is the argmax at its
//     position (greedy exact match); its log-likelihood is reported too;
//   - an input longer than the model's positions keeps its last positions
//     (left truncation), as the harness does; how many were cut is counted.
// The shared context of a multiple-choice example is computed once: the
// choices continue it from a rewound key/value cache.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "stem/model.h"
#include "stem/status.h"
#include "stem/tokenizer.h"

namespace stem {

struct PerplexityOptions {
  int64_t seq = 512;       // T, tokens per window (2 <= T <= max_position_embeddings)
  int64_t batch = 4;       // windows per forward
  int64_t max_tokens = 0;  // use at most this many tokens of the stream (0: all)
  // Feed each window one token at a time through the decode step, the
  // kernels `generate` runs (with Q8 weights they differ from prefill's:
  // docs/precision.md). Otherwise F32 models run the training forward in
  // batches, and BF16 or Q8 ones the decoder's prefill, a window at a time.
  bool decode = false;
};

// The token stream is cut into non-overlapping windows of T tokens (each
// predicts its T-1 next tokens; a tail that does not fill a window is
// dropped). The standard error is that of the per-window mean losses, which
// are closer to independent than single tokens.
struct PerplexityResult {
  std::string data;            // what was evaluated (the shard or file path)
  int64_t windows = 0;
  int64_t seq = 0;
  int64_t tokens_used = 0;     // windows * seq
  int64_t tokens_dropped = 0;  // tail (and beyond max_tokens) not evaluated
  int64_t predicted = 0;       // windows * (seq - 1)
  double mean_loss = 0.0;      // nats per predicted token
  double se = 0.0;             // standard error of mean_loss; NaN with one window
  double perplexity = 0.0;     // exp(mean_loss)
  double ppl_low = 0.0, ppl_high = 0.0;  // exp(mean_loss -+ 1.96 se); NaN with one window
  double seconds = 0.0;
  std::string path;            // how the windows ran: "forward", "prefill" or "decode"
  std::vector<double> window_loss;  // [windows] the mean loss of each window, in order
};

// Two models' losses over the same windows, compared window by window: the
// mean of loss(a) - loss(b) and its standard error from the per-window
// differences (NaN with one window), far smaller than either loss's own
// standard error when the windows' difficulty dominates their spread. An
// error unless both results are over the same data, windows and length.
struct PairedDifference {
  double mean = 0.0, se = 0.0;
  int64_t windows = 0;
};
Result<PairedDifference> paired_difference(const PerplexityResult& a, const PerplexityResult& b);

// Called after each batch with (windows done, windows total, running mean loss).
using PerplexityProgress = std::function<void(int64_t done, int64_t total, double mean_loss)>;

// Perplexity of `model` on `data`: a data directory (`stem prepare`; its
// held-out split val.tok), one .tok shard, or a text file of whitespace-
// separated ids. Errors name the path: not found, a vocabulary that is not the
// model's, fewer than T tokens, T outside [2, max_position_embeddings], an id
// outside [0, V), a table read error.
Result<PerplexityResult> evaluate_perplexity(Model& model, const std::string& data, const PerplexityOptions& opt,
                                             const PerplexityProgress& progress = nullptr);

struct ContinuationScore {
  int64_t tokens = 0;       // continuation length in tokens
  int64_t chars = 0;        // and in bytes of text (for acc_norm)
  double first_prob = 0;    // p(first token | context)
  int64_t first_rank = 0;   // 1 = the most likely token
  double logprob = 0;       // sum of log p over the continuation's tokens
  bool greedy = false;      // every token is the argmax at its position
};

// Errors: empty continuation, more tokens than the model's positions, BF16
// weight matrices (load F32), a table read error.
Result<ContinuationScore> score_continuation(Model& model, const Tokenizer& tok, const std::string& context,
                                             const std::string& continuation);

// -------- Tasks
// A task file is JSON lines, one example per line, all of one kind:
//   multiple choice  {"context": "...", "choices": ["...", ...], "gold": 0}
//   cloze            {"context": "...", "target": "..."}
// ("id" is optional and kept in logs). The published layouts of ARC
// (question.stem + question.choices[{text, label}] + answerKey, or the
// Hugging Face question + choices{text, label} + answerKey), PIQA (goal,
// sol1, sol2, label; or the labels in a sibling FILE-labels.lst, one per
// line, as PIQA ships them) and HellaSwag (activity_label, ctx_a, ctx_b,
// endings, label) are read as lm-evaluation-harness prompts them:
//   ARC        "Question: {question}\nAnswer:"  -> the choices' texts
//   PIQA       "Question: {goal}\nAnswer:"      -> sol1, sol2
//   HellaSwag  "{activity_label}: {ctx_a} {Ctx_b}" -> endings (bracketed
//              tags removed, " [title]" -> ". ", double spaces collapsed)
enum class TaskFormat { Auto, Stem, Arc, Piqa, HellaSwag };
Result<TaskFormat> parse_task_format(const std::string& s);  // "auto" | "stem" | "arc" | "piqa" | "hellaswag"
const char* name(TaskFormat f);

enum class TaskKind { MultipleChoice, Cloze };

struct TaskExample {
  std::string id;                    // from the file, or the line number
  std::string context;
  std::vector<std::string> choices;  // multiple choice: without the delimiter
  int gold = 0;                      // multiple choice: index into choices
  std::string target;                // cloze
  int64_t line = 0;                  // 1-based line in the file
};

struct Task {
  std::string name;    // the file's stem: "arc_easy" for arc_easy.jsonl
  std::string path;
  TaskFormat format = TaskFormat::Stem;  // as read (never Auto)
  TaskKind kind = TaskKind::MultipleChoice;
  std::vector<TaskExample> examples;
};

// Errors name the file, line and field: not JSON, a missing or mistyped
// field, a gold index or label out of range, fewer than two choices, an empty
// choice, a file with no examples or with examples of both kinds. Auto picks
// the layout from the first example's fields.
Result<Task> read_task(const std::string& path, TaskFormat format = TaskFormat::Auto);
// A task given by file or by name: `name_or_file` itself when it is a file,
// else DIR/NAME.jsonl. The error names both places looked at.
Result<std::string> find_task(const std::string& name_or_file, const std::string& dir);

struct TaskOptions {
  int64_t limit = 0;              // the first `limit` examples (0: all)
  std::string delimiter = " ";    // put between context and choice or target
  bool share_context = true;      // false: each choice runs with its full context
  bool keep_samples = false;      // fill TaskResult::samples
};

// One example's outcome (samples, --log-samples).
struct TaskSample {
  int64_t index = 0;
  std::vector<double> logprobs;   // per choice (cloze: one, the target's)
  std::vector<bool> greedy;       // per choice: every token the argmax
  std::vector<int64_t> tokens;    // per choice: continuation tokens
  int pred = 0, pred_norm = 0;    // argmax of logprobs, of logprobs / characters
  bool correct = false, correct_norm = false;  // cloze: correct = greedy exact match
  int64_t truncated = 0;          // context tokens cut to fit (left truncation)
};

struct TaskResult {
  std::string task, path;
  TaskKind kind = TaskKind::MultipleChoice;
  int64_t examples = 0;
  double acc = 0, acc_se = 0;             // multiple choice: acc; cloze: greedy exact match
  double acc_norm = 0, acc_norm_se = 0;   // multiple choice only
  double mean_logprob = 0;                // cloze: of the target, nats
  double perplexity = 0;                  // cloze: exp(-mean_logprob), as lm-evaluation-harness reports it
  int64_t truncated_examples = 0;
  int64_t tokens_scored = 0;              // positions run through the model
  double seconds = 0, examples_per_second = 0;
  std::vector<TaskSample> samples;        // with keep_samples
};

using TaskProgress = std::function<void(int64_t done, int64_t total)>;

// Standard errors are those of a mean over examples (sample standard
// deviation / sqrt(n)), NaN with one example. Works with tables in any tier
// and with BF16 weights (the decoder's forward). Errors: an empty task, a
// continuation without tokens, a table read error; they name the task file
// and line.
Result<TaskResult> evaluate_task(Model& model, const Tokenizer& tok, const Task& task, const TaskOptions& opt = {},
                                 const TaskProgress& progress = nullptr);

// Every example's outcome as JSON lines (atomically): task, index, id, line,
// context, choices or target, gold, per-choice logprobs, greedy and tokens,
// pred, pred_norm, acc, acc_norm, truncated. Each result needs its samples
// (keep_samples) and the task it came from.
Status write_task_samples(const std::string& path, const std::vector<std::pair<const Task*, const TaskResult*>>& runs);

}  // namespace stem
