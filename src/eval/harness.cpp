// evaluate_task (include/stem/eval.h): multiple-choice and cloze examples
// scored with lm-evaluation-harness's rules on the decoder's forward. A
// multiple-choice example's context is run once, then all its choices in one
// more pass, each attending to the context and to itself (the decoder's
// branches; one after another from the rewound cache when they do not fit),
// so the context costs one pass instead of one per choice. It reads tasks
// from memory only (task_file.cpp reads files) and prints nothing.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <limits>

#include "core/timer.h"
#include "eval/harness.h"
#include "infer/decoder.h"
#include "model/engine.h"
#include "stem/eval.h"

namespace stem {
namespace {

struct ContinuationLL {
  double logprob = 0;
  bool greedy = true;
};

// log p(token) under one logits row, in double; whether it is the argmax
// (the first one on ties).
double token_logprob(const float* z, int64_t V, int32_t token, bool* is_argmax) {
  const int64_t top = std::max_element(z, z + V) - z;
  double s = 0;
  for (int64_t i = 0; i < V; ++i) s += std::exp(static_cast<double>(z[i]) - z[top]);
  *is_argmax = top == token;
  return static_cast<double>(z[token]) - z[top] - std::log(s);
}

// Continuations of one context on a decoder: shared (the context once, each
// continuation from the rewound cache) or each with its full context.
class ContinuationScorer {
 public:
  ContinuationScorer(const model::Transformer& m, bool share)
      : dec_(m, infer::DecoderOptions{}), share_(share), V_(m.config().vocab_size) {}

  // One log-likelihood per continuation; adds the positions run to *fed and
  // returns how many context tokens were cut (left truncation, most of any).
  Result<int64_t> score(const std::vector<int32_t>& ctx, const std::vector<std::vector<int32_t>>& conts,
                        std::vector<ContinuationLL>* out, int64_t* fed) {
    const int64_t C = static_cast<int64_t>(ctx.size()), cap = dec_.capacity();
    int64_t cut = 0;
    for (const auto& k : conts) {
      if (static_cast<int64_t>(k.size()) > cap)
        return Status::error("a continuation of " + std::to_string(k.size()) + " tokens is longer than the model's " +
                             std::to_string(cap) + " positions");
      cut = std::max<int64_t>(cut, C + static_cast<int64_t>(k.size()) - 1 - cap);
    }
    out->assign(conts.size(), {});
    if (share_ && cut == 0) {
      STEM_RETURN_IF_ERROR(run_context(ctx.data(), C, fed));
      if (run_branches(conts, C, out, fed)) return cut;
      for (size_t i = 0; i < conts.size(); ++i) {  // one after another from the rewound cache
        if (i > 0) STEM_RETURN_IF_ERROR(dec_.rewind(C));
        STEM_RETURN_IF_ERROR(run_continuation(conts[i], &(*out)[i], fed));
      }
      return cut;
    }
    for (size_t i = 0; i < conts.size(); ++i) {  // each with its own context, cut as the harness cuts it
      const int64_t drop = std::max<int64_t>(0, C + static_cast<int64_t>(conts[i].size()) - 1 - cap);
      STEM_RETURN_IF_ERROR(run_context(ctx.data() + drop, C - drop, fed));
      STEM_RETURN_IF_ERROR(run_continuation(conts[i], &(*out)[i], fed));
    }
    return cut;
  }

 private:
  Status run_context(const int32_t* ids, int64_t n, int64_t* fed) {
    dec_.reset();
    STEM_ASSIGN_OR_RETURN(const float* last, dec_.prefill(ids, n));
    last_.assign(last, last + V_);
    *fed += n;
    return ok_status();
  }
  // Every continuation in one call, as branches after the context (each sees
  // the context and itself); false when they do not fit the cache or a pass,
  // or the decoder refuses them (then they run one after another).
  bool run_branches(const std::vector<std::vector<int32_t>>& conts, int64_t C, std::vector<ContinuationLL>* out,
                    int64_t* fed) {
    std::vector<int32_t> ids;
    std::vector<int64_t> lengths;
    for (const auto& k : conts)
      if (k.size() > 1) {
        ids.insert(ids.end(), k.begin(), k.end() - 1);
        lengths.push_back(static_cast<int64_t>(k.size()) - 1);
      }
    const int64_t n = static_cast<int64_t>(ids.size());
    if (C + n > dec_.capacity() || std::any_of(lengths.begin(), lengths.end(), [&](int64_t l) { return l > dec_.chunk(); }))
      return false;
    rows_.resize(static_cast<size_t>(n * V_));
    if (n > 0 && !dec_.prefill_branches(ids.data(), lengths.data(), static_cast<int64_t>(lengths.size()), rows_.data()).ok())
      return false;
    *fed += n;
    const float* at = rows_.data();
    for (size_t i = 0; i < conts.size(); ++i) {
      (*out)[i] = continuation_ll(conts[i], at);
      at += (conts[i].size() - 1) * V_;
    }
    return true;
  }
  // The first token from the context's last logits, the rest from one pass
  // over all but the last continuation token.
  Status run_continuation(const std::vector<int32_t>& k, ContinuationLL* r, int64_t* fed) {
    const int64_t K = static_cast<int64_t>(k.size());
    if (K > 1) {
      rows_.resize(static_cast<size_t>((K - 1) * V_));
      STEM_RETURN_IF_ERROR(dec_.prefill(k.data(), K - 1, rows_.data()).status());
      *fed += K - 1;
    }
    *r = continuation_ll(k, rows_.data());
    return ok_status();
  }
  // k's log-likelihood: its first token under the context's last logits, the
  // others under `rows` [K-1, V].
  ContinuationLL continuation_ll(const std::vector<int32_t>& k, const float* rows) const {
    ContinuationLL r;
    bool top = false;
    r.logprob = token_logprob(last_.data(), V_, k[0], &top);
    r.greedy = top;
    for (size_t j = 1; j < k.size(); ++j) {
      r.logprob += token_logprob(rows + (j - 1) * V_, V_, k[j], &top);
      r.greedy = r.greedy && top;
    }
    return r;
  }

  infer::Decoder dec_;
  bool share_;
  int64_t V_;
  std::vector<float> last_;  // [V] the context's last logits
  std::vector<float> rows_;  // [sum of K-1, V] the continuations' logits
};

// Mean and the standard error of the mean (sample standard deviation).
std::pair<double, double> mean_se(const std::vector<double>& x) {
  const double n = static_cast<double>(x.size());
  double m = 0;
  for (double v : x) m += v;
  m /= n;
  if (x.size() < 2) return {m, std::numeric_limits<double>::quiet_NaN()};
  double ss = 0;
  for (double v : x) ss += (v - m) * (v - m);
  return {m, std::sqrt(ss / (n - 1)) / std::sqrt(n)};
}

int argmax(const std::vector<double>& v) { return static_cast<int>(std::max_element(v.begin(), v.end()) - v.begin()); }

}  // namespace

namespace eval {

EncodedPair encode_pair(const Tokenizer& tok, std::string context, std::string continuation) {
  size_t n = context.size();
  while (n > 0 && std::isspace(static_cast<unsigned char>(context[n - 1]))) --n;
  continuation = context.substr(n) + continuation;
  context.resize(n);
  const std::vector<int32_t> whole = tok.encode(context + continuation), c = tok.encode(context);
  EncodedPair p;
  p.context.push_back(tok.bos_id());
  p.context.insert(p.context.end(), c.begin(), c.end());
  p.continuation.assign(whole.begin() + static_cast<std::ptrdiff_t>(std::min(c.size(), whole.size())), whole.end());
  return p;
}

int64_t code_points(const std::string& s) {
  return std::count_if(s.begin(), s.end(), [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; });
}

ChoicePicks pick_choices(const std::vector<double>& logprobs, const std::vector<std::string>& choices) {
  std::vector<double> normed(logprobs.size());
  for (size_t c = 0; c < logprobs.size(); ++c)
    normed[c] = logprobs[c] / static_cast<double>(std::max<int64_t>(1, code_points(choices[c])));
  return {argmax(logprobs), argmax(normed)};
}

}  // namespace eval

Result<TaskResult> evaluate_task(Model& model, const Tokenizer& tok, const Task& task, const TaskOptions& opt,
                                 const TaskProgress& progress) {
  const int64_t n_all = static_cast<int64_t>(task.examples.size());
  const int64_t N = opt.limit > 0 ? std::min(opt.limit, n_all) : n_all;
  if (N == 0) return Status::error(task.path + ": no examples to evaluate");
  if (tok.vocab_size() != model.config().vocab_size)
    return Status::error(tok.path() + ": " + std::to_string(tok.vocab_size()) + " pieces, the model has vocab_size " +
                         std::to_string(model.config().vocab_size));
  core::Timer timer;
  ContinuationScorer scorer(engine(model), opt.share_context);
  TaskResult r;
  r.task = task.name;
  r.path = task.path;
  r.kind = task.kind;
  r.examples = N;
  std::vector<double> acc, acc_norm, lls;
  std::vector<ContinuationLL> got;
  for (int64_t i = 0; i < N; ++i) {
    const TaskExample& e = task.examples[static_cast<size_t>(i)];
    const std::string where = task.path + ":" + std::to_string(e.line);
    const bool cloze = task.kind == TaskKind::Cloze;
    const std::vector<std::string> texts = cloze ? std::vector<std::string>{e.target} : e.choices;
    std::vector<int32_t> ctx;
    std::vector<std::vector<int32_t>> conts;
    for (size_t c = 0; c < texts.size(); ++c) {
      eval::EncodedPair p = eval::encode_pair(tok, e.context, opt.delimiter + texts[c]);
      if (p.continuation.empty())
        return Status::error(where + ": " + (cloze ? std::string("the target") : "choice " + std::to_string(c)) +
                             " has no tokens after the context");
      ctx = std::move(p.context);
      conts.push_back(std::move(p.continuation));
    }
    Result<int64_t> cut = scorer.score(ctx, conts, &got, &r.tokens_scored);
    if (!cut.ok()) return cut.status().with_context(where);
    TaskSample s;
    s.index = i;
    s.truncated = *cut;
    r.truncated_examples += *cut > 0;
    for (size_t c = 0; c < got.size(); ++c) {
      s.logprobs.push_back(got[c].logprob);
      s.greedy.push_back(got[c].greedy);
      s.tokens.push_back(static_cast<int64_t>(conts[c].size()));
    }
    if (cloze) {
      s.correct = s.greedy[0];
      lls.push_back(s.logprobs[0]);
    } else {
      const eval::ChoicePicks picks = eval::pick_choices(s.logprobs, texts);
      s.pred = picks.pred;
      s.pred_norm = picks.pred_norm;
      s.correct = s.pred == e.gold;
      s.correct_norm = s.pred_norm == e.gold;
      acc_norm.push_back(s.correct_norm ? 1.0 : 0.0);
    }
    acc.push_back(s.correct ? 1.0 : 0.0);
    if (opt.keep_samples) r.samples.push_back(std::move(s));
    if (progress) progress(i + 1, N);
  }
  std::tie(r.acc, r.acc_se) = mean_se(acc);
  if (!acc_norm.empty()) std::tie(r.acc_norm, r.acc_norm_se) = mean_se(acc_norm);
  if (!lls.empty()) {
    r.mean_logprob = mean_se(lls).first;
    r.perplexity = std::exp(-r.mean_logprob);
  }
  r.seconds = timer.seconds();
  r.examples_per_second = r.seconds > 0 ? static_cast<double>(N) / r.seconds : 0;
  return r;
}

}  // namespace stem
