// Swap edits (see swap.h): pairing token forms, the mismatch rules, conflict
// checks, and building the overlay from rows read before any change.
#include "edit/swap.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <nlohmann/json.hpp>

namespace stem::edit {

Result<Align> parse_align(const std::string& s) {
  if (s == "left") return Align::Left;
  if (s == "right") return Align::Right;
  return Status::error("--align: '" + s + "' is not one of left, right");
}

Result<Mismatch> parse_mismatch(const std::string& s) {
  if (s == "pad") return Mismatch::Pad;
  if (s == "copy") return Mismatch::Copy;
  if (s == "subset") return Mismatch::Subset;
  if (s == "average") return Mismatch::Average;
  return Status::error("--mismatch: '" + s + "' is not one of pad, copy, subset, average");
}

Result<SharedPieces> parse_shared(const std::string& s) {
  if (s == "refuse") return SharedPieces::Refuse;
  if (s == "skip") return SharedPieces::Skip;
  if (s == "allow") return SharedPieces::Allow;
  return Status::error("--shared: '" + s + "' is not one of refuse, skip, allow");
}

bool own_piece(const Tokenizer& tok, int32_t id, const std::string& text) {
  static const std::string kSpace = "\xE2\x96\x81";  // U+2581, SentencePiece's space marker
  std::string p = tok.piece(id);
  if (p.rfind(kSpace, 0) == 0) p = p.substr(kSpace.size());
  if (p.empty()) return false;
  size_t i = 0;
  while (i < text.size()) {  // whitespace-separated words of text
    while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
    size_t j = i;
    while (j < text.size() && !std::isspace(static_cast<unsigned char>(text[j]))) ++j;
    if (j > i && text.compare(i, j - i, p) == 0) return true;
    i = j;
  }
  return false;
}

const char* align_name(Align a) { return a == Align::Left ? "left" : "right"; }

const char* mismatch_name(Mismatch m) {
  switch (m) {
    case Mismatch::Pad: return "pad";
    case Mismatch::Copy: return "copy";
    case Mismatch::Subset: return "subset";
    case Mismatch::Average: return "average";
  }
  return "?";
}

std::string kinds_str(const std::vector<std::string>& k) {
  std::string s;
  for (const auto& x : k) {
    if (!s.empty()) s += '=';
    s += x;
  }
  return s;
}

namespace {

// Assignments of one source form against one target form.
Result<std::vector<SwapAssignment>> assign_pair(const TokenForm& src, const TokenForm& dst,
                                                const std::vector<std::string>& kinds, bool reverse,
                                                const SwapOptions& opt, const std::string& src_name) {
  const int64_t n = static_cast<int64_t>(src.ids.size()), m = static_cast<int64_t>(dst.ids.size());
  if (opt.mismatch == Mismatch::Subset) {
    if (static_cast<int64_t>(opt.subset.size()) != n)
      return Status::error("--subset: " + std::to_string(opt.subset.size()) + " indices given, but " + src_name +
                           " has " + std::to_string(n) + " tokens (form " + kinds_str(kinds) +
                           "): give one target position per source token");
    for (int32_t j : opt.subset)
      if (j < 0 || j >= m)
        return Status::error("--subset: index " + std::to_string(j) + " is outside the target's " + std::to_string(m) +
                             " tokens (form " + kinds_str(kinds) + ")");
  }
  std::vector<SwapAssignment> out;
  for (int64_t i = 0; i < n; ++i) {
    SwapAssignment a;
    a.reverse = reverse;
    a.kinds = kinds;
    a.position = i;
    a.token = src.ids[i];
    const int64_t j = opt.align == Align::Left ? i : i + m - n;
    switch (opt.mismatch) {
      case Mismatch::Pad:
        if (j >= 0 && j < m) a.from = {dst.ids[j]}, a.rule = "pair";
        else a.rule = "kept";
        break;
      case Mismatch::Copy:
        if (j >= 0 && j < m) a.from = {dst.ids[j]}, a.rule = "pair";
        else a.from = {dst.ids[std::clamp<int64_t>(j, 0, m - 1)]}, a.rule = "copy";
        break;
      case Mismatch::Subset:
        a.from = {dst.ids[opt.subset[i]]};
        a.rule = "subset";
        break;
      case Mismatch::Average:
        a.from = dst.ids;
        a.rule = m == 1 ? "pair" : "average";
        break;
    }
    if (a.from.size() == 1 && a.from[0] == a.token) a.rule = "same";
    out.push_back(std::move(a));
  }
  return out;
}

// Pairs source and target forms by kind; a pair of forms is used once.
std::vector<std::tuple<size_t, size_t, std::vector<std::string>>> pair_forms(const std::vector<TokenForm>& a,
                                                                             const std::vector<TokenForm>& b) {
  std::vector<std::tuple<size_t, size_t, std::vector<std::string>>> out;
  for (const char* kind : {"start", "mid", "line"})
    for (size_t i = 0; i < a.size(); ++i)
      for (size_t j = 0; j < b.size(); ++j)
        if (a[i].has(kind) && b[j].has(kind)) {
          auto it = std::find_if(out.begin(), out.end(), [&](const auto& t) {
            return std::get<0>(t) == i && std::get<1>(t) == j;
          });
          if (it == out.end()) out.emplace_back(i, j, std::vector<std::string>{kind});
          else std::get<2>(*it).push_back(kind);
        }
  return out;
}

}  // namespace

Result<SwapPlan> plan_swap(const Tokenizer& tok, const ModelConfig& cfg, RowTable& rows, const std::string& from,
                           const std::string& to, const SwapOptions& opt) {
  SwapPlan plan;
  if (opt.layers.empty()) return Status::error("swap: no layers to edit");
  for (int32_t l : opt.layers)
    if (l < 0 || l >= cfg.num_hidden_layers || cfg.ffn_types[l] != FfnType::Stem)
      return Status::error("swap: layer " + std::to_string(l) + " is not a STEM layer");
  plan.layers = opt.layers;
  STEM_ASSIGN_OR_RETURN(plan.from_forms, token_forms(tok, from, opt.forms, "--from"));
  STEM_ASSIGN_OR_RETURN(plan.to_forms, token_forms(tok, to, opt.forms, "--to"));
  for (int dir = 0; dir < (opt.exchange ? 2 : 1); ++dir) {
    const auto& src = dir == 0 ? plan.from_forms : plan.to_forms;
    const auto& dst = dir == 0 ? plan.to_forms : plan.from_forms;
    for (const auto& [i, j, kinds] : pair_forms(src, dst)) {
      STEM_ASSIGN_OR_RETURN(auto as, assign_pair(src[i], dst[j], kinds, dir == 1, opt, dir == 0 ? "--from" : "--to"));
      plan.assignments.insert(plan.assignments.end(), as.begin(), as.end());
    }
  }
  // One source of rows per changed token.
  std::map<int32_t, const SwapAssignment*> by_token;
  for (const SwapAssignment& a : plan.assignments) {
    if (!a.changes()) continue;
    auto [it, fresh] = by_token.emplace(a.token, &a);
    if (!fresh && it->second->from != a.from) {
      auto names = [&](const std::vector<int32_t>& ids) { return "'" + show_pieces(tok, ids) + "'"; };
      return Status::error("swap: token " + names({a.token}) + " (id " + std::to_string(a.token) +
                           ") would take two different rows: from " + names(it->second->from) + " and from " +
                           names(a.from) + " (use --mismatch average or --subset, or --forms as-given)");
    }
  }
  // Pieces other words share (see swap.h).
  std::vector<int32_t> shared;
  for (const auto& [token, a] : by_token)
    if (!own_piece(tok, token, a->reverse ? to : from)) shared.push_back(token);
  if (!shared.empty()) {
    if (opt.shared == SharedPieces::Refuse) {
      std::string list;
      for (int32_t t : shared) list += (list.empty() ? "'" : ", '") + tok.piece(t) + "' (" + std::to_string(t) + ")";
      return Status::error("swap: " + list + (shared.size() > 1 ? " are pieces" : " is a piece") +
                           " of a word split into several, which other words share: editing " +
                           (shared.size() > 1 ? "them" : "it") +
                           " would change those words too. Use --shared skip to edit only whole-word pieces, "
                           "or --shared allow to edit them anyway");
    }
    if (opt.shared == SharedPieces::Skip) {
      for (int32_t t : shared) by_token.erase(t);
      for (SwapAssignment& a : plan.assignments)
        if (std::find(shared.begin(), shared.end(), a.token) != shared.end()) a.rule = "shared";
    }
    plan.shared_tokens = shared;
    if (by_token.empty())
      return Status::error("swap: nothing left to change: every piece of '" + from + "' (" +
                           show_pieces(tok, plan.from_forms[0].ids) +
                           ") is shared with other words (--shared skip); use --shared allow to edit them anyway");
  }
  if (by_token.empty())
    return Status::error("swap: nothing to change: '" + from + "' and '" + to + "' give the same rows (tokens " +
                         show_pieces(tok, plan.from_forms[0].ids) + " and " + show_pieces(tok, plan.to_forms[0].ids) +
                         ")");

  plan.overlay.shape = OverlayShape::of(cfg);
  const int64_t f = cfg.intermediate_size;
  std::vector<float> acc(f), row(f);
  for (int32_t l : plan.layers)
    for (const auto& [token, a] : by_token) {
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int32_t src : a->from) {
        STEM_RETURN_IF_ERROR(rows.read_row(l, src, row.data()).with_context("swap"));
        for (int64_t c = 0; c < f; ++c) acc[c] += row[c];
      }
      if (a->from.size() > 1) {
        const float inv = 1.0f / static_cast<float>(a->from.size());
        for (float& x : acc) x *= inv;
      }
      plan.overlay.add(l, token, acc.data());
    }
  for (const auto& kv : by_token) plan.changed_tokens.push_back(kv.first);
  nlohmann::json note = {{"kind", "swap"},
                         {"from", from},
                         {"to", to},
                         {"layers", plan.layers},
                         {"align", align_name(opt.align)},
                         {"mismatch", mismatch_name(opt.mismatch)},
                         {"exchange", opt.exchange},
                         {"shared", opt.shared == SharedPieces::Refuse ? "refuse"
                                    : opt.shared == SharedPieces::Skip ? "skip" : "allow"},
                         {"shared_tokens", plan.shared_tokens},
                         {"tokens", plan.changed_tokens}};
  if (opt.mismatch == Mismatch::Subset) note["subset"] = opt.subset;
  plan.overlay.note = note.dump();
  return plan;
}

}  // namespace stem::edit
