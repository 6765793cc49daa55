// Swap by training (see swap_by_training in include/stem/edit.h): the
// target's answers read from the model itself, then the source's rows trained
// on them through injection. It does not copy rows (swap.cpp does).
#include "edit/swap_train.h"

#include <algorithm>

#include "edit/inject.h"

namespace stem::edit {

namespace {

// Every occurrence of `from` in s replaced by `to`.
std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) s.replace(at, from.size(), to);
  return s;
}

bool ends_sentence(const std::string& piece) { return piece.find_first_of(".!?\n") != std::string::npos; }

}  // namespace

Result<std::string> greedy_answer(model::Transformer& m, const Tokenizer& tok, const std::string& prompt,
                                  int64_t max_tokens) {
  const ModelConfig& cfg = m.config();
  const int64_t V = cfg.vocab_size;
  std::vector<int32_t> ids = {tok.bos_id()};
  const std::vector<int32_t> body = tok.encode(prompt);
  ids.insert(ids.end(), body.begin(), body.end());
  const size_t prompt_len = ids.size();
  while (static_cast<int64_t>(ids.size() - prompt_len) < max_tokens &&
         static_cast<int64_t>(ids.size()) < cfg.max_position_embeddings) {
    const int64_t T = static_cast<int64_t>(ids.size());
    m.forward(ids.data(), 1, T);
    const float* last = m.logits() + (T - 1) * V;
    const auto next = static_cast<int32_t>(std::max_element(last, last + V) - last);
    if (next == tok.eos_id() || next == tok.bos_id()) break;
    ids.push_back(next);
    if (ends_sentence(tok.piece(next))) break;
  }
  const std::vector<int32_t> prompt_ids(ids.begin() + 1, ids.begin() + static_cast<int64_t>(prompt_len));
  const std::vector<int32_t> all(ids.begin() + 1, ids.end());
  const std::string whole = tok.decode(all), head = tok.decode(prompt_ids);
  if (ids.size() == prompt_len || whole.compare(0, head.size(), head) != 0)
    return Status::error("the model continues '" + prompt + "' with nothing");
  return whole.substr(head.size());
}

Result<SwapTrainResult> swap_by_training(model::Transformer& m, const Tokenizer& tok, const std::string& from,
                                         const std::string& to, const std::vector<std::string>& prompts,
                                         const SwapTrainOptions& opt, const InjectProgress& progress) {
  if (from.empty() || to.empty()) return Status::error("swap: --from and --to must not be empty");
  if (prompts.empty()) return Status::error("swap: no prompts to train on");
  SwapTrainResult res;
  for (size_t i = 0; i < prompts.size(); ++i) {
    const std::string where = "swap: prompt " + std::to_string(i + 1);
    if (prompts[i].find(from) == std::string::npos)
      return Status::error(where + " ('" + prompts[i] + "') does not mention '" + from + "'");
    auto answer = greedy_answer(m, tok, replace_all(prompts[i], from, to), opt.answer_tokens);
    if (!answer.ok()) return answer.status().with_context(where);
    res.answers.push_back(*answer);
    res.facts.push_back({from, prompts[i] + *answer, static_cast<int64_t>(i + 1), ""});
  }
  STEM_ASSIGN_OR_RETURN(auto seqs, fact_sequences(tok, res.facts, m.config().max_position_embeddings, "swap: prompt"));
  STEM_ASSIGN_OR_RETURN(std::vector<int32_t> tokens, injection_tokens(tok, res.facts, seqs, {}, "swap: prompt"));
  std::vector<int32_t> own;
  for (int32_t t : tokens) (own_piece(tok, t, from) ? own : res.shared_tokens).push_back(t);
  if (!res.shared_tokens.empty() && opt.shared == SharedPieces::Refuse) {
    std::string list;
    for (int32_t t : res.shared_tokens) list += (list.empty() ? "'" : ", '") + tok.piece(t) + "' (" + std::to_string(t) + ")";
    return Status::error("swap: " + list + (res.shared_tokens.size() > 1 ? " are pieces" : " is a piece") + " of '" +
                         from + "' that other words share: training " +
                         (res.shared_tokens.size() > 1 ? "them" : "it") +
                         " would change those words too. Use --shared skip to train only whole-word pieces, or "
                         "--shared allow to train them anyway");
  }
  if (opt.shared == SharedPieces::Skip) {
    if (own.empty()) return Status::error("swap: '" + from + "' has no whole-word piece to train (--shared skip)");
    tokens = own;
  }
  InjectOptions io = opt.inject;
  STEM_ASSIGN_OR_RETURN(auto keep, keep_for(m, tok, io, tokens, tokens));
  STEM_ASSIGN_OR_RETURN(res.inject, inject_rows(m, seqs, tokens, io, progress, keep));
  return res;
}

}  // namespace stem::edit
