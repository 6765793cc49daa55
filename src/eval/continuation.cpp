// score_continuation (see continuation.h and include/stem/eval.h).
#include "eval/continuation.h"

#include <algorithm>
#include <cmath>

#include "model/engine.h"

namespace stem::eval {

std::vector<int32_t> after_context(const Tokenizer& tok, const std::string& ctx, const std::string& s) {
  const std::vector<int32_t> a = tok.encode(ctx), ab = tok.encode(ctx + s);
  if (ab.size() <= a.size() || !std::equal(a.begin(), a.end(), ab.begin())) return {};
  return std::vector<int32_t>(ab.begin() + static_cast<std::ptrdiff_t>(a.size()), ab.end());
}

std::vector<int32_t> continuation_ids(const Tokenizer& tok, const std::string& context,
                                      const std::string& continuation) {
  std::vector<int32_t> ids = after_context(tok, context, continuation);
  return ids.empty() ? tok.encode(continuation) : ids;
}

std::vector<int32_t> context_ids(const Tokenizer& tok, const std::string& context) {
  std::vector<int32_t> ids = {tok.bos_id()};
  const std::vector<int32_t> body = tok.encode(context);
  ids.insert(ids.end(), body.begin(), body.end());
  return ids;
}

double log_sum_exp(const float* z, int64_t V) {
  double mx = -INFINITY;
  for (int64_t i = 0; i < V; ++i) mx = std::max(mx, static_cast<double>(z[i]));
  double s = 0;
  for (int64_t i = 0; i < V; ++i) s += std::exp(static_cast<double>(z[i]) - mx);
  return mx + std::log(s);
}

std::vector<double> log_softmax(const float* z, int64_t V) {
  const double lse = log_sum_exp(z, V);
  std::vector<double> out(V);
  for (int64_t i = 0; i < V; ++i) out[i] = static_cast<double>(z[i]) - lse;
  return out;
}

Result<ContinuationScore> score_continuation(model::Transformer& m, const Tokenizer& tok, const std::string& context,
                                             const std::string& continuation) {
  std::vector<int32_t> ids = context_ids(tok, context);
  const std::vector<int32_t> cont = continuation_ids(tok, context, continuation);
  if (cont.empty()) return Status::error("continuation '" + continuation + "' has no tokens");
  const int64_t P = static_cast<int64_t>(ids.size()), V = m.config().vocab_size;
  ids.insert(ids.end(), cont.begin(), cont.end());
  const int64_t T = static_cast<int64_t>(ids.size());
  if (T > m.config().max_position_embeddings)
    return Status::error("prompt '" + context + "' with its continuation is " + std::to_string(T) +
                         " tokens, more than max_position_embeddings = " +
                         std::to_string(m.config().max_position_embeddings));
  STEM_RETURN_IF_ERROR(m.prepare_rows(ids.data(), T));
  m.forward(ids.data(), 1, T);
  ContinuationScore s;
  s.tokens = static_cast<int64_t>(cont.size());
  s.chars = static_cast<int64_t>(continuation.size());
  s.greedy = true;
  for (int64_t k = 0; k < s.tokens; ++k) {
    const float* z = m.logits() + (P - 1 + k) * V;
    const std::vector<double> lp = log_softmax(z, V);
    s.logprob += lp[cont[k]];
    const int32_t top = static_cast<int32_t>(std::max_element(z, z + V) - z);
    if (k == 0) {
      s.first_prob = std::exp(lp[cont[0]]);
      int64_t rank = 1;
      for (int64_t i = 0; i < V; ++i) rank += z[i] > z[cont[0]];
      s.first_rank = rank;
    }
    s.greedy = s.greedy && top == cont[k];
  }
  return s;
}

}  // namespace stem::eval

namespace stem {

Result<ContinuationScore> score_continuation(Model& model, const Tokenizer& tok, const std::string& context,
                                             const std::string& continuation) {
  if (!engine(model).f32_weights())
    return Status::error((model.dir().empty() ? std::string("model") : model.dir()) +
                         ": scoring runs the full forward pass, which needs F32 weight matrices (load them as F32)");
  return eval::score_continuation(engine(model), tok, context, continuation);
}

}  // namespace stem
