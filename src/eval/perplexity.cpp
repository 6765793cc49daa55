// Windowed perplexity (see perplexity.h). Per-window mean losses are summed in
// double, from Transformer::losses() (F32 weights, batched forward) or from the
// decoder's logits (BF16 or Q8 weights, or --decode); forward's own mean is not
// used because the standard error needs the windows separately. Also the public
// evaluate_perplexity (stem/eval.h), which opens the data it is given, and
// paired_difference, two results compared window by window.
#include "eval/perplexity.h"

#include <algorithm>
#include <filesystem>
#include <memory>
#include <cmath>
#include <limits>
#include <string>

#include "core/timer.h"
#include "eval/continuation.h"
#include "infer/decoder.h"
#include "io/files.h"
#include "io/token_shards.h"
#include "model/engine.h"

namespace stem::eval {

MeanSe mean_and_se(const std::vector<double>& values) {
  MeanSe r;
  const double n = static_cast<double>(values.size());
  if (values.empty()) return {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::quiet_NaN()};
  for (double v : values) r.mean += v;
  r.mean /= n;
  if (values.size() < 2) {
    r.se = std::numeric_limits<double>::quiet_NaN();
    return r;
  }
  double ss = 0.0;
  for (double v : values) ss += (v - r.mean) * (v - r.mean);
  r.se = std::sqrt(ss / (n - 1.0) / n);
  return r;
}

void summarize(const std::vector<double>& window_means, PerplexityResult& r) {
  const MeanSe m = mean_and_se(window_means);
  r.mean_loss = m.mean;
  r.se = m.se;
  r.perplexity = std::exp(m.mean);
  r.ppl_low = std::exp(m.mean - 1.96 * m.se);
  r.ppl_high = std::exp(m.mean + 1.96 * m.se);
}

namespace {

// The mean next-token loss of a window from its logits, one position at a
// time as they come (log-sum-exp in double).
class WindowLoss {
 public:
  explicit WindowLoss(int64_t V) : V_(V) {}
  void add(const float* logits, int32_t next) {
    sum_ += log_sum_exp(logits, V_) - logits[next];
    ++n_;
  }
  double mean() const { return sum_ / static_cast<double>(n_); }

 private:
  int64_t V_;
  double sum_ = 0.0;
  int64_t n_ = 0;
};

// Windows of T ids batched through Transformer::forward (F32 weights).
Status forward_windows(model::Transformer& model, int64_t B, int64_t T, const int32_t* ids,
                       std::vector<double>& means) {
  STEM_RETURN_IF_ERROR(model.prepare_rows(ids, B * T));
  model.forward(ids, B, T);
  const float* losses = model.losses();
  for (int64_t b = 0; b < B; ++b) {
    double s = 0.0;
    for (int64_t t = 0; t + 1 < T; ++t) s += losses[b * T + t];
    means.push_back(s / static_cast<double>(T - 1));
  }
  return ok_status();
}

// One window through the decoder from an empty cache: in prefill chunks
// (every position's logits into `logits` [chunk, V]) or one step at a time.
Status decode_window(infer::Decoder& dec, int64_t T, int64_t V, const int32_t* ids, bool steps,
                     std::vector<float>& logits, std::vector<double>& means) {
  dec.reset();
  WindowLoss loss(V);
  for (int64_t t0 = 0; t0 + 1 < T;) {
    if (steps) {
      STEM_ASSIGN_OR_RETURN(const float* l, dec.step(ids[t0]));
      loss.add(l, ids[t0 + 1]);
      ++t0;
      continue;
    }
    const int64_t n = std::min(dec.chunk(), T - 1 - t0);
    STEM_RETURN_IF_ERROR(dec.prefill(ids + t0, n, logits.data()).status());
    for (int64_t i = 0; i < n; ++i) loss.add(logits.data() + i * V, ids[t0 + i + 1]);
    t0 += n;
  }
  means.push_back(loss.mean());
  return ok_status();
}

}  // namespace

Result<PerplexityResult> perplexity(model::Transformer& model, const TokenReader& read,
                                    int64_t n_tokens, const PerplexityOptions& opts,
                                    const PerplexityProgress& progress) {
  const ModelConfig& cfg = model.config();
  const int64_t T = opts.seq, V = cfg.vocab_size;
  if (T < 2 || T > cfg.max_position_embeddings)
    return Status::error("eval: window length " + std::to_string(T) + " is outside [2, " +
                         std::to_string(cfg.max_position_embeddings) +
                         "] (2 .. the model's max_position_embeddings)");
  if (opts.batch < 1) return Status::error("eval: batch " + std::to_string(opts.batch) + " < 1");
  const int64_t usable = opts.max_tokens > 0 ? std::min(opts.max_tokens, n_tokens) : n_tokens;
  const int64_t windows = usable / T;
  if (windows < 1)
    return Status::error("eval: " + std::to_string(usable) + " tokens, fewer than one window of " +
                         std::to_string(T) + " (lower --seq)");
  PerplexityResult r;
  r.windows = windows;
  r.seq = T;
  r.tokens_used = windows * T;
  r.tokens_dropped = n_tokens - r.tokens_used;
  r.predicted = windows * (T - 1);
  // BF16 and Q8 matrices only the decoder reads; it takes one window at a time.
  const bool decoder = opts.decode || !model.f32_weights();
  r.path = opts.decode ? "decode" : decoder ? "prefill" : "forward";
  const int64_t batch = decoder ? 1 : opts.batch;
  std::unique_ptr<infer::Decoder> dec;
  std::vector<float> logits;
  if (decoder) {
    infer::DecoderOptions dopt;
    dopt.max_context = T;
    dec = std::make_unique<infer::Decoder>(model, dopt);
    if (!opts.decode) logits.resize(static_cast<size_t>(dec->chunk() * V));
  }
  core::Timer timer;
  std::vector<double> means;
  means.reserve(windows);
  std::vector<int32_t> ids(static_cast<size_t>(std::min(batch, windows) * T));
  double running = 0.0;
  for (int64_t w0 = 0; w0 < windows; w0 += batch) {
    const int64_t B = std::min(batch, windows - w0);
    read(w0 * T, B * T, ids.data());
    for (int64_t i = 0; i < B * T; ++i)
      if (ids[i] < 0 || ids[i] >= V)
        return Status::error("eval: token id " + std::to_string(ids[i]) + " at offset " +
                             std::to_string(w0 * T + i) + " is outside [0, vocab_size = " +
                             std::to_string(V) + ")");
    const size_t before = means.size();
    STEM_RETURN_IF_ERROR(decoder ? decode_window(*dec, T, V, ids.data(), opts.decode, logits, means)
                                 : forward_windows(model, B, T, ids.data(), means));
    for (size_t i = before; i < means.size(); ++i) running += means[i];
    if (progress) progress(w0 + B, windows, running / static_cast<double>(means.size()));
  }
  summarize(means, r);
  r.window_loss = std::move(means);
  r.seconds = timer.seconds();
  return r;
}

namespace {
namespace fs = std::filesystem;

// The evaluation tokens behind a reader, checked against the model's vocabulary.
struct EvalData {
  std::string name;
  int64_t size = 0;
  TokenReader read;
};

Status vocab_mismatch(const std::string& what, int64_t data_vocab, int64_t model_vocab) {
  return Status::error(what + ": data vocab_size " + std::to_string(data_vocab) +
                       " does not match the model's vocab_size " + std::to_string(model_vocab) +
                       ": the data was prepared with another tokenizer (evaluate on data prepared with the "
                       "tokenizer the model was trained with)");
}

Result<EvalData> open_data(const std::string& path, int64_t model_vocab) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    STEM_ASSIGN_OR_RETURN(io::DataDir dd, io::DataDir::open(path));
    if (dd.vocab_size != model_vocab) return vocab_mismatch(path, dd.vocab_size, model_vocab);
    io::TokenShard val = dd.val;
    return EvalData{val.path(), val.size(), [val](int64_t off, int64_t n, int32_t* out) { val.read(off, n, out); }};
  }
  if (!fs::exists(path, ec)) return Status::error(path + ": no such file or directory");
  if (fs::path(path).extension() == ".tok") {
    STEM_ASSIGN_OR_RETURN(io::TokenShard shard, io::TokenShard::open(path));
    if (shard.vocab_size() != model_vocab) return vocab_mismatch(path, shard.vocab_size(), model_vocab);
    return EvalData{path, shard.size(), [shard](int64_t off, int64_t n, int32_t* out) { shard.read(off, n, out); }};
  }
  STEM_ASSIGN_OR_RETURN(std::vector<int32_t> ids, io::read_token_ids(path, model_vocab));
  auto shared = std::make_shared<const std::vector<int32_t>>(std::move(ids));
  return EvalData{path, static_cast<int64_t>(shared->size()), [shared](int64_t off, int64_t n, int32_t* out) {
                    std::copy(shared->begin() + off, shared->begin() + off + n, out);
                  }};
}

}  // namespace
}  // namespace stem::eval

namespace stem {

Result<PerplexityResult> evaluate_perplexity(Model& model, const std::string& data, const PerplexityOptions& opt,
                                             const PerplexityProgress& progress) {
  STEM_ASSIGN_OR_RETURN(eval::EvalData d, eval::open_data(data, model.config().vocab_size));
  Result<PerplexityResult> r = eval::perplexity(engine(model), d.read, d.size, opt, progress);
  if (!r.ok()) return r.status().with_context(d.name);
  r->data = d.name;
  return r;
}

Result<PairedDifference> paired_difference(const PerplexityResult& a, const PerplexityResult& b) {
  if (a.data != b.data || a.seq != b.seq || a.window_loss.size() != b.window_loss.size() || a.window_loss.empty())
    return Status::error("eval: compare: not the same windows (" + a.data + ", " + std::to_string(a.window_loss.size()) +
                         " of " + std::to_string(a.seq) + " against " + b.data + ", " +
                         std::to_string(b.window_loss.size()) + " of " + std::to_string(b.seq) + ")");
  std::vector<double> d(a.window_loss.size());
  for (size_t i = 0; i < d.size(); ++i) d[i] = a.window_loss[i] - b.window_loss[i];
  const eval::MeanSe m = eval::mean_and_se(d);
  return PairedDifference{m.mean, m.se, static_cast<int64_t>(d.size())};
}

}  // namespace stem
