// Continuous batching: many generation requests served by one model at once,
// what `stem serve` is built on. A scheduler thread holds a fixed number of
// slots (a KV cache each); every pass it runs one batched forward over all
// the active sequences (the next token of each generating one, plus chunks of
// waiting prompts), so the weights are read once per pass for all of them and
// the STEM rows of all the pass's tokens are fetched together. Requests beyond
// the slots wait in a queue.
//
//   stem::BatchOptions opt;
//   opt.slots = 8;
//   auto gen = stem::BatchGenerator::start(model, tok, opt);
//   stem::BatchRequest req;
//   req.prompt = "It was";
//   auto stream = (*gen)->submit(req);
//   stem::BatchEvent ev;
//   while ((*stream)->next(&ev)) std::cout << ev.text;
//
// Each sequence gets exactly what stem::generate() gives for the same prompt
// and options (the same sampler, stop rules and streamed text), up to float
// round-off: a batched pass multiplies the same weights in another order.
// Edits are chosen per request: BatchOptions::edits names overlay files, and
// a request naming one reads that overlay's STEM rows for its own sequence
// only, on every table tier, while other sequences read the tables.
//
// It does not tokenize chat messages or apply templates (the server does),
// and it does not share prompt prefixes between requests. The Model must not
// change, nor be used by anything else, while the generator runs.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "stem/generate.h"
#include "stem/model.h"
#include "stem/status.h"
#include "stem/tokenizer.h"

namespace stem {

struct BatchOptions {
  int64_t slots = 4;            // sequences decoded at once
  int64_t max_context = 0;      // positions per slot; <= 0: max_position_embeddings
  int64_t step_tokens = 256;    // tokens one pass takes at most (>= slots)
  int64_t max_queue = 256;      // requests waiting for a slot; more are refused (Busy)
  bool prefetch = true;         // tables out of RAM: fetch rows on a background thread
  // Edits a request may name: (name, overlay file). Read and checked at start.
  std::vector<std::pair<std::string, std::string>> edits;
};

struct BatchRequest {
  std::string prompt;                // text, tokenized with BOS first when gen.add_bos
  std::vector<int32_t> prompt_ids;   // or ids fed verbatim (used when not empty)
  GenerateOptions gen;               // sampler, max_new_tokens, stop rules (max_context, prefetch unused)
  int64_t n = 1;                     // completions; completion i draws with seed gen.sampler.seed + i
  int64_t top_logprobs = -1;         // < 0: no log-probabilities; k >= 0: the chosen token's and the k best (k <= 20)
  std::string edit;                  // a BatchOptions::edits name; "" for the model as loaded
};

// A token and its log-probability under the model (softmax of the raw
// logits, before temperature and cuts).
struct TokenLogprob {
  int32_t id = 0;
  std::string piece;  // the token's own text (SentencePiece's word mark as a space)
  float logprob = 0.0f;
};

// What a request's stream yields: tokens as they are generated, then one
// `done` event per completion.
struct BatchEvent {
  int64_t index = 0;         // which of the request's n completions
  bool done = false;
  std::string text;          // text that became printable (done: held-back text flushed at the end)
  // A token (done == false):
  int32_t id = -1;
  TokenLogprob logprob;                // top_logprobs >= 0
  std::vector<TokenLogprob> top;       // the top_logprobs best, best first
  // The end of a completion (done == true):
  StopReason stop = StopReason::Length;  // Callback: cancelled
  Status error;                          // a table read error, for instance
  int64_t prompt_tokens = 0, completion_tokens = 0;
  double queued_seconds = 0;             // from submit() to the slot
};

// One request's events. Thread-safe: the scheduler pushes, any thread reads.
class BatchStream {
 public:
  // Waits for the next event; false once every completion's `done` event has
  // been read, or when `timeout` passes first (then timed_out() is true).
  bool next(BatchEvent* ev, std::chrono::milliseconds timeout = std::chrono::hours(24));
  bool timed_out() const;
  // Ends every completion of the request at the next pass and frees its
  // slots; their `done` events say StopReason::Callback.
  void cancel();

  struct State;
  explicit BatchStream(std::shared_ptr<State> s) : s_(std::move(s)) {}

 private:
  std::shared_ptr<State> s_;
};

// Why submit() refused a request.
enum class Refusal { None, Invalid, TooLong, UnknownEdit, Busy, ShuttingDown };

// Counters since start, for monitoring.
struct BatchStats {
  int64_t requests = 0, prompt_tokens = 0, completion_tokens = 0;
  int64_t queued = 0, busy_slots = 0, slots = 0, passes = 0;
  int64_t rows_requested = 0, cache_hits = 0, table_bytes_read = 0;  // the table store (tables out of RAM)
};

class BatchGenerator {
 public:
  // Errors: options out of range, a tokenizer of another vocabulary, an edit
  // that cannot be read or was made for another model.
  static Result<std::unique_ptr<BatchGenerator>> start(Model& model, const Tokenizer& tok, const BatchOptions& opt);
  ~BatchGenerator();  // shutdown(true)
  BatchGenerator(const BatchGenerator&) = delete;
  BatchGenerator& operator=(const BatchGenerator&) = delete;

  // Queues a request. Errors (and `why`): bad options or ids (Invalid), a
  // prompt longer than the context (TooLong), an unknown edit (UnknownEdit),
  // a full queue (Busy), shutdown() called (ShuttingDown).
  Result<std::unique_ptr<BatchStream>> submit(BatchRequest req, Refusal* why = nullptr);
  // Stops taking requests, lets those queued and running finish (or cancels
  // them), and joins the scheduler. Safe to call twice.
  void shutdown(bool cancel_running);

  BatchStats stats() const;
  int64_t slots() const;
  int64_t context() const;   // positions per slot
  std::vector<std::string> edit_names() const;
  // Bytes of the KV caches and work buffers (the caches committed as used).
  int64_t memory_bytes() const;

  struct Impl;

 private:
  explicit BatchGenerator(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace stem
