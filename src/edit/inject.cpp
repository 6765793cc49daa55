// Knowledge injection (see inject.h): facts file, token choice, and Adam on
// the chosen STEM rows with every other parameter frozen.
#include "edit/inject.h"

#include "kernels/kernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "core/check.h"
#include "io/files.h"
#include "io/json_lines.h"

namespace stem::edit {

namespace {

bool contains(const std::vector<int32_t>& hay, const std::vector<int32_t>& needle) {
  return !needle.empty() && std::search(hay.begin(), hay.end(), needle.begin(), needle.end()) != hay.end();
}

}  // namespace

Result<std::vector<Fact>> read_facts(const std::string& path) {
  STEM_ASSIGN_OR_RETURN(std::vector<io::JsonLine> lines, io::read_json_lines(path));
  std::vector<Fact> out;
  for (const io::JsonLine& l : lines) {
    Fact f;
    f.line = l.line;
    STEM_ASSIGN_OR_RETURN(f.text, io::string_field(l.value, "text", l.where));
    if (l.value.contains("subject")) {
      STEM_ASSIGN_OR_RETURN(f.subject, io::string_field(l.value, "subject", l.where, true));
    }
    if (l.value.contains("answer")) {
      STEM_ASSIGN_OR_RETURN(f.answer, io::string_field(l.value, "answer", l.where));
    }
    out.push_back(std::move(f));
  }
  if (out.empty()) return Status::error(path + ": no facts (expected JSON lines {\"subject\": ..., \"text\": ...})");
  return out;
}

Result<std::vector<std::string>> read_keep(const std::string& path) {
  return io::read_text_lines(path, {"text"}, "keep sentences");
}

Result<std::vector<std::vector<int32_t>>> fact_sequences(const Tokenizer& tok, const std::vector<Fact>& facts,
                                                         int64_t max_positions, const std::string& where) {
  std::vector<std::vector<int32_t>> out;
  for (const Fact& f : facts) {
    std::vector<int32_t> ids = {tok.bos_id()};
    const std::vector<int32_t> body = tok.encode(f.text);
    ids.insert(ids.end(), body.begin(), body.end());
    ids.push_back(tok.eos_id());
    if (static_cast<int64_t>(ids.size()) > max_positions)
      return Status::error(where + ":" + std::to_string(f.line) + ": text of " + std::to_string(ids.size()) +
                           " tokens (with BOS and EOS) exceeds max_position_embeddings = " +
                           std::to_string(max_positions));
    out.push_back(std::move(ids));
  }
  return out;
}

Result<std::vector<std::vector<int32_t>>> keep_sequences(const Tokenizer& tok, const std::vector<std::string>& keep,
                                                         int64_t max_positions) {
  std::vector<Fact> sentences;
  for (size_t i = 0; i < keep.size(); ++i) sentences.push_back({"", keep[i], static_cast<int64_t>(i + 1), ""});
  return fact_sequences(tok, sentences, max_positions, "keep sentence");
}

Result<std::vector<int32_t>> injection_tokens(const Tokenizer& tok, const std::vector<Fact>& facts,
                                              const std::vector<std::vector<int32_t>>& sequences,
                                              const std::vector<std::string>& names, const std::string& where) {
  std::set<int32_t> chosen;
  auto add_forms = [&](const std::vector<TokenForm>& forms, const std::vector<int32_t>& seq) {
    bool found = false;
    for (const TokenForm& f : forms)
      if (contains(seq, f.ids)) {
        chosen.insert(f.ids.begin(), f.ids.end());
        found = true;
      }
    return found;
  };
  if (names.empty()) {
    for (size_t i = 0; i < facts.size(); ++i) {
      const std::string at = where + ":" + std::to_string(facts[i].line);
      if (facts[i].subject.empty())
        return Status::error(at + ": no \"subject\" to choose rows from (add one, or name tokens with --tokens)");
      STEM_ASSIGN_OR_RETURN(auto forms, token_forms(tok, facts[i].subject, FormSet::Words, at + ": subject"));
      if (!add_forms(forms, sequences[i]))
        return Status::error(at + ": subject '" + facts[i].subject + "' (" + show_pieces(tok, forms[0].ids) +
                             ") does not occur in the tokens of its text (" + show_pieces(tok, sequences[i]) + ")");
      if (facts[i].answer.empty()) continue;
      STEM_ASSIGN_OR_RETURN(auto answer, token_forms(tok, facts[i].answer, FormSet::Words, at + ": answer"));
      if (!add_forms(answer, sequences[i]))
        return Status::error(at + ": answer '" + facts[i].answer + "' (" + show_pieces(tok, answer[0].ids) +
                             ") does not occur in the tokens of its text (" + show_pieces(tok, sequences[i]) + ")");
    }
  } else {
    for (const std::string& name : names) {
      STEM_ASSIGN_OR_RETURN(auto forms, token_forms(tok, name, FormSet::Words, "--tokens"));
      bool found = false;
      for (const auto& seq : sequences) found = add_forms(forms, seq) || found;
      if (!found)
        return Status::error("--tokens: '" + name + "' (" + show_pieces(tok, forms[0].ids) +
                             ") does not occur in any fact of " + where);
    }
  }
  return std::vector<int32_t>(chosen.begin(), chosen.end());
}

Result<InjectResult> inject_rows(model::Transformer& m, const std::vector<std::vector<int32_t>>& sequences,
                                 const std::vector<int32_t>& tokens, const InjectOptions& opt,
                                 const InjectProgress& progress, const std::vector<std::vector<int32_t>>& keep) {
  const ModelConfig& cfg = m.config();
  const int64_t V = cfg.vocab_size, f = cfg.intermediate_size;
  if (tokens.empty()) return Status::error("inject: no tokens to train");
  if (opt.layers.empty()) return Status::error("inject: no layers to train");
  if (opt.steps < 1 || !(opt.lr > 0)) return Status::error("inject: need --steps >= 1 and --lr > 0");
  if (sequences.empty()) return Status::error("inject: no sentences to train on");
  if (opt.keep_kl && keep.empty()) return Status::error("inject: --keep-kl without keep sentences (--keep FILE)");
  for (int32_t l : opt.layers)
    if (l < 0 || l >= cfg.num_hidden_layers || cfg.ffn_types[l] != FfnType::Stem)
      return Status::error("inject: layer " + std::to_string(l) + " is not a STEM layer");
  std::set<int32_t> present;
  for (const auto* set : {&sequences, &keep})
  for (const auto& s : *set) {
    if (s.size() < 2 || static_cast<int64_t>(s.size()) > cfg.max_position_embeddings)
      return Status::error("inject: a sentence of " + std::to_string(s.size()) + " tokens is outside [2, " +
                           std::to_string(cfg.max_position_embeddings) + "]");
    for (int32_t t : s) {
      if (t < 0 || t >= V) return Status::error("inject: token id " + std::to_string(t) + " is outside [0, " + std::to_string(V) + ")");
      if (set == &sequences) present.insert(t);
    }
  }
  for (int32_t t : tokens)
    if (!present.count(t))
      return Status::error("inject: token " + std::to_string(t) + " occurs in no sentence, so its rows get no gradient");

  // Batches of equal-length sentences, the facts' and the keep sentences';
  // every token of the step for the row index.
  std::map<int64_t, std::vector<int32_t>> batches, keep_batches;
  std::vector<int32_t> all;
  int64_t predicted = 0, fact_predicted = 0;
  for (const auto* set : {&sequences, &keep})
    for (const auto& s : *set) {
      auto& b = (set == &keep ? keep_batches : batches)[static_cast<int64_t>(s.size())];
      b.insert(b.end(), s.begin(), s.end());
      all.insert(all.end(), s.begin(), s.end());
      predicted += static_cast<int64_t>(s.size()) - 1;
      if (set == &sequences) fact_predicted += static_cast<int64_t>(s.size()) - 1;
    }
  TensorListRows table(m.weights());
  STEM_RETURN_IF_ERROR(table.all_resident().with_context("inject"));
  model::Gradients g = m.make_gradients(std::min<int64_t>(static_cast<int64_t>(all.size()), V));

  // Save the rows this will move; Adam moments per (layer, token).
  InjectResult res;
  res.tokens = tokens;
  Overlay original;
  original.shape = OverlayShape::of(cfg);
  std::vector<float> row(f);
  for (int32_t l : opt.layers)
    for (int32_t t : tokens) {
      STEM_RETURN_IF_ERROR(table.read_row(l, t, row.data()).with_context("inject"));
      original.add(l, t, row.data());
    }
  std::vector<float> m1(original.rows.size(), 0.0f), m2(original.rows.size(), 0.0f);

  // With keep_kl, the unedited model's logits on each keep batch: the
  // teacher of a distillation loss of weight 1 (KL alone) on that batch.
  std::map<int64_t, std::vector<float>> keep_logits;
  if (opt.keep_kl && !keep.empty()) {
    constexpr int64_t kMaxKeepLogitBytes = int64_t{1} << 30;
    int64_t positions = 0;
    for (const auto& [T, ids] : keep_batches) positions += static_cast<int64_t>(ids.size());
    if (positions * V * 4 > kMaxKeepLogitBytes)
      return Status::error("inject: --keep-kl: " + std::to_string(keep.size()) + " keep sentences of " +
                           std::to_string(positions) + " positions need " +
                           std::to_string(positions * V * 4 >> 20) + " MiB of unedited logits (at most " +
                           std::to_string(kMaxKeepLogitBytes >> 20) + "): give fewer");
    for (const auto& [T, ids] : keep_batches) {
      const int64_t B = static_cast<int64_t>(ids.size()) / T;
      m.forward(ids.data(), B, T);
      keep_logits[T].assign(m.logits(), m.logits() + B * T * V);
    }
  }

  // Whether every sequence of a batch [B, T] is predicted after its first run
  // of trained tokens (the subject): logits of the forward pass just run.
  const std::set<int32_t> trained(tokens.begin(), tokens.end());
  auto predicted_all = [&](const std::vector<int32_t>& ids, int64_t B, int64_t T) {
    const float* logits = m.logits();
    for (int64_t b = 0; b < B; ++b) {
      const int32_t* s = ids.data() + b * T;
      int64_t p = 0;
      while (p < T && !trained.count(s[p])) ++p;
      while (p + 1 < T && trained.count(s[p + 1])) ++p;  // its last piece predicts what follows
      for (; p + 1 < T; ++p) {
        const float* row = logits + (b * T + p) * V;
        if (std::max_element(row, row + V) - row != s[p + 1]) return false;
      }
    }
    return true;
  };
  bool learned = true;  // of the last pass
  // The loss is the mean over every predicted position of the facts and the
  // keep sentences; the value returned is the facts' alone.
  auto pass = [&](bool train) {
    double loss = 0;
    learned = true;
    for (const auto* set : {&batches, &keep_batches})
      for (const auto& [T, ids] : *set) {
        const int64_t B = static_cast<int64_t>(ids.size()) / T;
        if (set == &keep_batches && !keep_logits.empty()) m.set_teacher(keep_logits.at(T).data(), 1.0f, 1.0f);
        const double l = m.forward(ids.data(), B, T);
        if (set == &batches) {
          loss += l * static_cast<double>(B * (T - 1)) / static_cast<double>(fact_predicted);
          learned = learned && predicted_all(ids, B, T);
        }
        if (train) m.backward(g, static_cast<float>(static_cast<double>(B * (T - 1)) / static_cast<double>(predicted)));
      }
    return loss;
  };

  for (int64_t step = 1; step <= opt.steps; ++step) {
    g.begin_step(all.data(), static_cast<int64_t>(all.size()), V);
    const double loss = pass(true);
    if (!std::isfinite(loss)) {
      (void)apply_overlay(original, table);
      return Status::error("inject: loss is not finite at step " + std::to_string(step) + " (try a lower --lr)");
    }
    res.losses.push_back(loss);
    if (opt.until_learned && learned) break;  // this pass's gradients are not applied
    res.steps = step;
    // Adam without weight decay on each row, the optimizer's own kernel.
    kernels::AdamWHyper h;
    h.lr = static_cast<float>(opt.lr);
    h.beta1 = static_cast<float>(opt.beta1);
    h.beta2 = static_cast<float>(opt.beta2);
    h.eps = static_cast<float>(opt.eps);
    h.weight_decay = 0.0f;
    h.step = step;
    for (size_t k = 0; k < original.size(); ++k) {
      const RowKey key = original.keys[k];
      const model::LayerView& lv = m.layer(key.layer);
      const auto it = std::lower_bound(g.index.unique.begin(), g.index.unique.end(), key.token);
      STEM_CHECK(it != g.index.unique.end() && *it == key.token);
      const float* grad = g.rows[lv.i_stem].f32() + (it - g.index.unique.begin()) * f;
      float* w = m.weights()[lv.i_stem].f32() + static_cast<int64_t>(key.token) * f;
      m.backend().ops().adamw_update(w, m1.data() + k * f, m2.data() + k * f, grad, f, h);
    }
    if (progress) progress(step, opt.steps, loss);
  }
  res.loss_before = res.losses.front();
  res.keep_kl = opt.keep_kl;
  res.keep_sampled = opt.keep.empty() && opt.keep_kl ? static_cast<int64_t>(keep.size()) : 0;
  res.loss_after = pass(false);
  res.learned = learned;

  res.overlay.shape = original.shape;
  for (size_t k = 0; k < original.size(); ++k) {
    STEM_RETURN_IF_ERROR(table.read_row(original.keys[k].layer, original.keys[k].token, row.data()));
    res.overlay.add(original.keys[k].layer, original.keys[k].token, row.data());
  }
  STEM_RETURN_IF_ERROR(apply_overlay(original, table).status().with_context("inject: restoring rows"));
  nlohmann::json note = {{"kind", "inject"}, {"layers", opt.layers}, {"tokens", tokens}, {"steps", res.steps},
                         {"max_steps", opt.steps}, {"until_learned", opt.until_learned}, {"learned", res.learned},
                         {"lr", opt.lr}, {"sentences", sequences.size()}, {"keep", keep.size()},
                         {"keep_sampled", res.keep_sampled},
                         {"keep_loss", res.keep_kl ? "kl" : "text"},
                         {"loss_before", res.loss_before},
                         {"loss_after", res.loss_after}};
  res.overlay.note = note.dump();
  return res;
}

}  // namespace stem::edit
