// BatchGenerator (include/stem/batch.h): the request queue, the slots and the
// scheduler thread that runs one Decoder::forward_slots pass per step. Each
// sequence samples and streams its text as generate() does (the sequences of
// a pass sample on all threads, then stream in slot order); edits are kept
// as the row values the tables would hold after applying the overlay, looked
// up per sequence during the pass.
//
// It does not parse requests or know HTTP; it does not share prefixes.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "core/check.h"
#include "core/timer.h"
#include "infer/decoder.h"
#include "infer/sampler.h"
#include "model/engine.h"
#include "stem/batch.h"
#include "stem/edit.h"
#include "stem/overlay.h"

namespace stem {

namespace {

// An overlay's rows as the tables would hold them after it is applied (read
// back through the model, so a table stored in BF16 gives BF16-rounded rows),
// keyed by (STEM layer in order, token).
class EditRows final : public infer::RowOverrides {
 public:
  const float* find(int64_t j, int32_t token) const override {
    auto it = at_.find(key(j, token));
    return it == at_.end() ? nullptr : rows_.data() + it->second;
  }
  static Result<std::unique_ptr<EditRows>> load(Model& model, const std::string& path) {
    const ModelConfig& c = model.config();
    STEM_ASSIGN_OR_RETURN(edit::Overlay ov, edit::read_overlay(path));
    STEM_RETURN_IF_ERROR(edit::check_overlay(ov, c, path));
    std::vector<int64_t> stem_index(c.num_hidden_layers, -1);
    for (int64_t l = 0, j = 0; l < c.num_hidden_layers; ++l)
      if (c.ffn_types[l] == FfnType::Stem) stem_index[l] = j++;
    auto e = std::make_unique<EditRows>();
    STEM_ASSIGN_OR_RETURN(AppliedEdits applied, apply_overlays(model, {path}));
    Status st;
    for (size_t i = 0; i < ov.size() && st.ok(); ++i) {
      Result<std::vector<float>> row = read_table_row(model, ov.keys[i].layer, ov.keys[i].token);
      if (!row.ok()) {
        st = row.status();
        break;
      }
      e->at_[key(stem_index[ov.keys[i].layer], ov.keys[i].token)] = e->rows_.size();
      e->rows_.insert(e->rows_.end(), row->begin(), row->end());
    }
    Status reverted = applied.revert();
    STEM_RETURN_IF_ERROR(st.with_context(path));
    STEM_RETURN_IF_ERROR(reverted.with_context(path));
    return e;
  }

 private:
  static int64_t key(int64_t j, int32_t token) { return (j << 32) | static_cast<uint32_t>(token); }
  std::unordered_map<int64_t, size_t> at_;
  std::vector<float> rows_;  // [entries, f]
};

using Clock = std::chrono::steady_clock;

}  // namespace

// ---------------------------------------------------------------- streams

struct BatchStream::State {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<BatchEvent> events;
  int64_t open = 0;  // completions without a done event read yet
  bool timed_out = false;
  std::atomic<bool> cancelled{false};

  void push(BatchEvent ev) {
    {
      std::lock_guard<std::mutex> lock(mu);
      events.push_back(std::move(ev));
    }
    cv.notify_all();
  }
};

bool BatchStream::next(BatchEvent* ev, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(s_->mu);
  s_->timed_out = false;
  if (s_->open == 0 && s_->events.empty()) return false;
  if (!s_->cv.wait_for(lock, timeout, [&] { return !s_->events.empty(); })) {
    s_->timed_out = true;
    return false;
  }
  *ev = std::move(s_->events.front());
  s_->events.pop_front();
  if (ev->done) --s_->open;
  return true;
}

bool BatchStream::timed_out() const {
  std::lock_guard<std::mutex> lock(s_->mu);
  return s_->timed_out;
}

void BatchStream::cancel() { s_->cancelled = true; }

// ---------------------------------------------------------------- the generator

namespace {

// One completion: its prompt, sampler, text stream and slot.
struct Seq {
  std::shared_ptr<BatchStream::State> out;
  int64_t index = 0;
  std::vector<int32_t> prompt;
  GenerateOptions gen;
  int64_t top_logprobs = -1;
  int32_t eos = -1;
  const EditRows* rows = nullptr;
  std::unique_ptr<infer::Sampler> sampler;
  std::unique_ptr<TextStream> text;
  Clock::time_point submitted;
  double queued_seconds = 0;
  int64_t slot = -1;
  int64_t fed = 0;        // prompt tokens in the cache
  int64_t generated = 0;  // tokens emitted
  int32_t next_id = -1;   // sampled, not yet fed
  std::vector<float> logits;  // [V]
};

// A sampled token and the event that streams it.
struct Emitted {
  int32_t id = -1;
  BatchEvent ev;
};

}  // namespace

struct BatchGenerator::Impl {
  Model& model;
  const Tokenizer& tok;
  BatchOptions opt;
  int64_t V = 0, ctx = 0;
  std::unique_ptr<infer::Decoder> dec;
  std::map<std::string, std::unique_ptr<EditRows>> edits;

  mutable std::mutex mu;
  std::condition_variable cv;
  std::deque<std::unique_ptr<Seq>> queue;
  std::vector<std::unique_ptr<Seq>> active;  // [slots], null: free
  bool stopping = false, cancel_all = false;
  std::thread worker;
  std::once_flag joined;

  std::atomic<int64_t> requests{0}, prompt_tokens{0}, completion_tokens{0}, passes{0}, busy{0};

  Impl(Model& m, const Tokenizer& t, BatchOptions o) : model(m), tok(t), opt(std::move(o)) {}
  void run();
  bool admit();  // under mu: queued sequences into free slots; true if any slot is busy
  void finish(int64_t s, StopReason why, Status error = {});
  // A sequence's next token from its logits, with its text and log-probabilities:
  // touches q alone, so the sequences of a pass sample in parallel.
  Emitted sample(Seq& q) const;
  // Streams it and ends q when a stop rule says so (the scheduler, under mu).
  void deliver(Seq& q, Emitted e);
};

BatchGenerator::BatchGenerator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
BatchGenerator::~BatchGenerator() { shutdown(true); }

Result<std::unique_ptr<BatchGenerator>> BatchGenerator::start(Model& model, const Tokenizer& tok,
                                                              const BatchOptions& opt) {
  const ModelConfig& c = model.config();
  const std::string where = "batch: ";
  if (opt.slots < 1) return Status::error(where + "slots = " + std::to_string(opt.slots) + ": must be at least 1");
  if (opt.step_tokens < opt.slots)
    return Status::error(where + "step_tokens = " + std::to_string(opt.step_tokens) + " is less than slots = " +
                         std::to_string(opt.slots));
  if (opt.max_queue < 0) return Status::error(where + "max_queue = " + std::to_string(opt.max_queue) + " is negative");
  if (tok.vocab_size() != c.vocab_size)
    return Status::error(where + "the tokenizer has " + std::to_string(tok.vocab_size()) +
                         " pieces but the model's vocab_size is " + std::to_string(c.vocab_size));
  auto impl = std::make_unique<Impl>(model, tok, opt);
  impl->V = c.vocab_size;
  impl->ctx = opt.max_context > 0 ? std::min(opt.max_context, c.max_position_embeddings) : c.max_position_embeddings;
  if (impl->ctx < opt.slots)
    return Status::error(where + "a context of " + std::to_string(impl->ctx) + " positions is less than slots = " +
                         std::to_string(opt.slots));
  for (const auto& [name, path] : opt.edits) {
    if (name.empty() || impl->edits.count(name))
      return Status::error(where + "edit name '" + name + "' is empty or given twice");
    STEM_ASSIGN_OR_RETURN(impl->edits[name], EditRows::load(model, path));
  }
  infer::DecoderOptions dopt;
  dopt.max_context = impl->ctx;
  dopt.prefill_chunk = opt.step_tokens;
  dopt.prefetch = opt.prefetch;
  dopt.slots = opt.slots;
  impl->dec = std::make_unique<infer::Decoder>(engine(model), dopt);
  impl->active.resize(opt.slots);
  Impl* p = impl.get();
  impl->worker = std::thread([p] { p->run(); });
  return std::unique_ptr<BatchGenerator>(new BatchGenerator(std::move(impl)));
}

Result<std::unique_ptr<BatchStream>> BatchGenerator::submit(BatchRequest req, Refusal* why) {
  Impl& I = *impl_;
  auto refuse = [&](Refusal r, const std::string& msg) -> Status {
    if (why) *why = r;
    return Status::error("batch: " + msg);
  };
  if (why) *why = Refusal::None;
  if (Status st = check_generate_options(req.gen); !st.ok()) return refuse(Refusal::Invalid, st.message());
  if (req.n < 1 || req.n > 16) return refuse(Refusal::Invalid, "n = " + std::to_string(req.n) + " is outside [1, 16]");
  if (req.top_logprobs > 20)
    return refuse(Refusal::Invalid, "top_logprobs = " + std::to_string(req.top_logprobs) + " is more than 20");
  const EditRows* rows = nullptr;
  if (!req.edit.empty()) {
    auto it = I.edits.find(req.edit);
    if (it == I.edits.end()) return refuse(Refusal::UnknownEdit, "no edit named '" + req.edit + "'");
    rows = it->second.get();
  }
  std::vector<int32_t> ids = std::move(req.prompt_ids);
  if (ids.empty()) {
    if (req.gen.add_bos) ids.push_back(I.tok.bos_id());
    for (int32_t id : I.tok.encode(req.prompt)) ids.push_back(id);
  }
  if (ids.empty()) return refuse(Refusal::Invalid, "the prompt has no tokens");
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] < 0 || ids[i] >= I.V)
      return refuse(Refusal::Invalid, "token id " + std::to_string(ids[i]) + " at index " + std::to_string(i) +
                                          " is outside [0, vocab_size = " + std::to_string(I.V) + ")");
  if (static_cast<int64_t>(ids.size()) > I.ctx)
    return refuse(Refusal::TooLong, "a prompt of " + std::to_string(ids.size()) +
                                        " tokens is longer than the context of " + std::to_string(I.ctx) + " positions");
  auto state = std::make_shared<BatchStream::State>();
  state->open = req.n;
  std::vector<std::unique_ptr<Seq>> seqs;
  for (int64_t i = 0; i < req.n; ++i) {
    auto q = std::make_unique<Seq>();
    q->out = state;
    q->index = i;
    q->prompt = ids;
    q->gen = req.gen;
    q->gen.sampler.seed += static_cast<uint64_t>(i);
    q->top_logprobs = req.top_logprobs;
    q->eos = req.gen.stop_at_eos ? I.tok.eos_id() : -1;
    q->rows = rows;
    q->submitted = Clock::now();
    seqs.push_back(std::move(q));
  }
  {
    std::lock_guard<std::mutex> lock(I.mu);
    if (I.stopping) return refuse(Refusal::ShuttingDown, "the server is shutting down");
    const int64_t free_slots = std::count(I.active.begin(), I.active.end(), nullptr);
    if (static_cast<int64_t>(I.queue.size() + seqs.size()) > I.opt.max_queue + free_slots)
      return refuse(Refusal::Busy, "the queue is full (" + std::to_string(I.queue.size()) + " waiting)");
    for (auto& q : seqs) I.queue.push_back(std::move(q));
  }
  I.requests++;
  I.prompt_tokens += static_cast<int64_t>(ids.size()) * req.n;
  I.cv.notify_all();
  return std::make_unique<BatchStream>(state);
}

void BatchGenerator::shutdown(bool cancel_running) {
  Impl& I = *impl_;
  {
    std::lock_guard<std::mutex> lock(I.mu);
    I.stopping = true;
    I.cancel_all = I.cancel_all || cancel_running;
  }
  I.cv.notify_all();
  std::call_once(I.joined, [&I] { I.worker.join(); });  // a second caller waits for the first
}

BatchStats BatchGenerator::stats() const {
  const Impl& I = *impl_;
  BatchStats s;
  s.requests = I.requests;
  s.prompt_tokens = I.prompt_tokens;
  s.completion_tokens = I.completion_tokens;
  s.passes = I.passes;
  s.busy_slots = I.busy;
  s.slots = I.opt.slots;
  {
    std::lock_guard<std::mutex> lock(I.mu);
    s.queued = static_cast<int64_t>(I.queue.size());
  }
  if (const memory::TableStore* store = engine(I.model).table_store()) {
    const memory::StoreStats t = store->stats();
    s.rows_requested = t.rows_requested;
    s.cache_hits = t.cache_hits;
    s.table_bytes_read = t.bytes_read;
  }
  return s;
}

int64_t BatchGenerator::slots() const { return impl_->opt.slots; }
int64_t BatchGenerator::context() const { return impl_->ctx; }
int64_t BatchGenerator::memory_bytes() const { return impl_->dec->memory_bytes(); }

std::vector<std::string> BatchGenerator::edit_names() const {
  std::vector<std::string> names;
  for (const auto& [name, rows] : impl_->edits) names.push_back(name);
  return names;
}

// ---------------------------------------------------------------- the scheduler

namespace {
void cancel_queued(Seq& q) {
  BatchEvent ev;
  ev.index = q.index;
  ev.done = true;
  ev.stop = StopReason::Callback;
  ev.prompt_tokens = static_cast<int64_t>(q.prompt.size());
  q.out->push(std::move(ev));
}
}  // namespace

bool BatchGenerator::Impl::admit() {
  bool any = false;
  for (int64_t s = 0; s < static_cast<int64_t>(active.size()); ++s) {
    while (!active[s] && !queue.empty() && !cancel_all) {
      std::unique_ptr<Seq> q = std::move(queue.front());
      queue.pop_front();
      if (q->out->cancelled) {  // never started
        cancel_queued(*q);
        continue;
      }
      q->slot = s;
      q->queued_seconds = std::chrono::duration<double>(Clock::now() - q->submitted).count();
      q->sampler = std::make_unique<infer::Sampler>(q->gen.sampler, V);
      q->text = std::make_unique<TextStream>(tok, q->prompt, q->gen.stop);
      q->logits.assign(V, 0.0f);
      dec->reset_slot(s);
      active[s] = std::move(q);
      ++busy;
    }
    any = any || active[s];
  }
  return any;
}

void BatchGenerator::Impl::finish(int64_t s, StopReason why, Status error) {
  Seq& q = *active[s];
  BatchEvent ev;
  ev.index = q.index;
  ev.done = true;
  ev.stop = why;
  ev.error = std::move(error);
  if (why != StopReason::Callback && ev.error.ok()) ev.text = q.text->finish();
  ev.prompt_tokens = static_cast<int64_t>(q.prompt.size());
  ev.completion_tokens = q.generated;
  ev.queued_seconds = q.queued_seconds;
  const std::shared_ptr<BatchStream::State> out = q.out;
  active[s].reset();  // the slot is free before the caller hears of it
  --busy;
  out->push(std::move(ev));
}

namespace {
TokenLogprob logprob_of(const Tokenizer& tok, int32_t id, float x, double lse) {
  const std::string p = tok.piece(id);
  std::string piece;
  for (size_t i = 0; i < p.size();) {
    const bool mark = p.compare(i, 3, "\xE2\x96\x81") == 0;  // U+2581, SentencePiece's space
    piece += mark ? ' ' : p[i];
    i += mark ? 3 : 1;
  }
  return TokenLogprob{id, std::move(piece), static_cast<float>(x - lse)};
}
}  // namespace

Emitted BatchGenerator::Impl::sample(Seq& q) const {
  Emitted e;
  e.id = q.sampler->sample(q.logits.data());
  if (e.id == q.eos) return e;
  e.ev.index = q.index;
  e.ev.id = e.id;
  e.ev.text = q.text->push(e.id);
  if (q.top_logprobs >= 0) {
    const float* x = q.logits.data();
    const float mx = *std::max_element(x, x + V);
    double sum = 0;
    for (int64_t v = 0; v < V; ++v) sum += std::exp(static_cast<double>(x[v] - mx));
    const double lse = mx + std::log(sum);
    e.ev.logprob = logprob_of(tok, e.id, x[e.id], lse);
    std::vector<int32_t> order(V);
    for (int64_t v = 0; v < V; ++v) order[v] = static_cast<int32_t>(v);
    const int64_t k = std::min<int64_t>(q.top_logprobs, V);
    std::partial_sort(order.begin(), order.begin() + k, order.end(),
                      [&](int32_t a, int32_t b) { return x[a] > x[b] || (x[a] == x[b] && a < b); });
    for (int64_t i = 0; i < k; ++i) e.ev.top.push_back(logprob_of(tok, order[i], x[order[i]], lse));
  }
  return e;
}

void BatchGenerator::Impl::deliver(Seq& q, Emitted e) {
  const int64_t s = q.slot;
  if (e.id == q.eos) return finish(s, StopReason::Eos);
  q.out->push(std::move(e.ev));
  ++q.generated;
  ++completion_tokens;
  q.next_id = e.id;
  if (q.text->stopped()) return finish(s, StopReason::StopString);
  if (q.generated == q.gen.max_new_tokens) return finish(s, StopReason::Length);
  if (dec->slot_position(s) == ctx) return finish(s, StopReason::Context);
}

void BatchGenerator::Impl::run() {
  std::vector<infer::SlotChunk> chunks;
  std::vector<int64_t> order;  // slots of the pass, chunk by chunk
  std::vector<Emitted> emitted;  // tokens sampled from the pass, chunk by chunk
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] {
        return stopping || !queue.empty() || std::any_of(active.begin(), active.end(), [](auto& q) { return !!q; });
      });
      if (cancel_all) {  // everything queued or running ends now
        for (; !queue.empty(); queue.pop_front()) cancel_queued(*queue.front());
        for (int64_t s = 0; s < static_cast<int64_t>(active.size()); ++s)
          if (active[s]) finish(s, StopReason::Callback);
      }
      for (int64_t s = 0; s < static_cast<int64_t>(active.size()); ++s)
        if (active[s] && active[s]->out->cancelled) finish(s, StopReason::Callback);
      if (!admit()) {
        if (stopping && queue.empty()) return;
        continue;
      }
    }
    // Generating sequences first (one token each), then prompt chunks in slot order.
    chunks.clear();
    order.clear();
    int64_t budget = dec->chunk();
    for (int64_t s = 0; s < static_cast<int64_t>(active.size()); ++s) {
      Seq* q = active[s].get();
      if (!q || q->fed < static_cast<int64_t>(q->prompt.size())) continue;
      chunks.push_back({static_cast<int32_t>(s), &q->next_id, 1, q->logits.data(), q->rows});
      order.push_back(s);
      --budget;
    }
    for (int64_t s = 0; s < static_cast<int64_t>(active.size()) && budget > 0; ++s) {
      Seq* q = active[s].get();
      const int64_t left = q ? static_cast<int64_t>(q->prompt.size()) - q->fed : 0;
      if (left <= 0) continue;
      const int64_t m = std::min(left, budget);
      chunks.push_back({static_cast<int32_t>(s), q->prompt.data() + q->fed, m, m == left ? q->logits.data() : nullptr,
                        q->rows});
      order.push_back(s);
      budget -= m;
    }
    Status st = dec->forward_slots(chunks.data(), static_cast<int64_t>(chunks.size()));
    ++passes;
    // Sampling and detokenizing, per sequence, across threads; then, in
    // order, the events and the stop rules.
    const int64_t n_chunks = static_cast<int64_t>(chunks.size());
    emitted.assign(chunks.size(), Emitted{});
    if (st.ok()) {
#pragma omp parallel for schedule(dynamic, 1) if (n_chunks > 1)
      for (int64_t c = 0; c < n_chunks; ++c)
        if (chunks[c].logits) emitted[c] = sample(*active[order[c]]);
    }
    std::lock_guard<std::mutex> lock(mu);
    for (int64_t c = 0; c < n_chunks; ++c) {
      const int64_t s = order[c];
      Seq& q = *active[s];
      if (!st.ok()) {
        finish(s, StopReason::Callback, st);
        continue;
      }
      if (q.fed < static_cast<int64_t>(q.prompt.size())) q.fed += chunks[c].n;
      if (chunks[c].logits) deliver(q, std::move(emitted[c]));
    }
  }
}

}  // namespace stem
