// Layer specs and token forms of strings (see targets.h).
#include "stem/edit.h"

#include "eval/continuation.h"

#include <algorithm>
#include <charconv>

namespace stem::edit {

namespace {

std::string trim(const std::string& s) {
  const char* ws = " \t\n\r\f\v";
  const size_t a = s.find_first_not_of(ws);
  if (a == std::string::npos) return "";
  return s.substr(a, s.find_last_not_of(ws) - a + 1);
}

std::string stem_list(const ModelConfig& cfg) {
  std::string s;
  for (int64_t l = 0; l < cfg.num_hidden_layers; ++l) {
    if (cfg.ffn_types[l] != FfnType::Stem) continue;
    if (!s.empty()) s += ',';
    s += std::to_string(l);
  }
  return s.empty() ? "none" : s;
}

Result<int64_t> parse_int(const std::string& s, const std::string& what) {
  int64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || p != s.data() + s.size())
    return Status::error(what + ": '" + s + "' is not a layer index (use 'all' or a list such as 1,3-5)");
  return v;
}

using eval::after_context;

// A piece made only of the space marker "▁" (SentencePiece splits "Spain"
// into "▁" "Spain" when "▁Spain" is not a piece): every word shares it.
bool space_piece(const Tokenizer& tok, int32_t id) {
  const std::string p = tok.piece(id);
  static const std::string kSpace = "\xE2\x96\x81";
  if (p.empty() || p.size() % kSpace.size() != 0) return false;
  for (size_t i = 0; i < p.size(); i += kSpace.size())
    if (p.compare(i, kSpace.size(), kSpace) != 0) return false;
  return true;
}

}  // namespace

Result<std::vector<int32_t>> parse_layers(const std::string& spec, const ModelConfig& cfg, const std::string& what) {
  std::vector<int32_t> out;
  if (cfg.n_stem_layers() == 0)
    return Status::error(what + ": the model has no STEM layers (ffn_types has no \"stem\"), nothing to edit");
  if (trim(spec) == "all") {
    for (int64_t l = 0; l < cfg.num_hidden_layers; ++l)
      if (cfg.ffn_types[l] == FfnType::Stem) out.push_back(static_cast<int32_t>(l));
    return out;
  }
  size_t start = 0;
  while (start <= spec.size()) {
    size_t comma = spec.find(',', start);
    if (comma == std::string::npos) comma = spec.size();
    const std::string item = trim(spec.substr(start, comma - start));
    start = comma + 1;
    if (item.empty()) return Status::error(what + ": '" + spec + "' has an empty item");
    const size_t dash = item.find('-', 1);
    STEM_ASSIGN_OR_RETURN(int64_t lo, parse_int(trim(item.substr(0, dash)), what));
    int64_t hi = lo;
    if (dash != std::string::npos) {
      STEM_ASSIGN_OR_RETURN(hi, parse_int(trim(item.substr(dash + 1)), what));
    }
    if (hi < lo) return Status::error(what + ": range '" + item + "' is empty");
    for (int64_t l = lo; l <= hi; ++l) {
      if (l < 0 || l >= cfg.num_hidden_layers)
        return Status::error(what + ": layer " + std::to_string(l) + " is outside [0, " +
                             std::to_string(cfg.num_hidden_layers) + ")");
      if (cfg.ffn_types[l] != FfnType::Stem)
        return Status::error(what + ": layer " + std::to_string(l) + " is a " + ffn_type_name(cfg.ffn_types[l]) +
                             " layer, not a STEM layer (STEM layers: " + stem_list(cfg) + ")");
      out.push_back(static_cast<int32_t>(l));
    }
    if (comma == spec.size()) break;
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

Result<FormSet> parse_form_set(const std::string& s) {
  if (s == "as-given") return FormSet::AsGiven;
  if (s == "words") return FormSet::Words;
  if (s == "all") return FormSet::All;
  return Status::error("--forms: '" + s + "' is not one of as-given, words, all");
}

bool TokenForm::has(const std::string& kind) const {
  return std::find(kinds.begin(), kinds.end(), kind) != kinds.end();
}

Result<std::vector<TokenForm>> token_forms(const Tokenizer& tok, const std::string& text, FormSet set,
                                           const std::string& what) {
  const std::string s = trim(text);
  if (s.empty()) return Status::error(what + ": empty string: nothing to tokenize");
  std::vector<std::pair<std::string, std::vector<int32_t>>> raw = {{"start", tok.encode(s)}};
  // "a" then " " + s: the space belongs to the string's first piece ("▁Spain").
  if (set != FormSet::AsGiven) raw.push_back({"mid", after_context(tok, "a", " " + s)});
  if (set == FormSet::All) raw.push_back({"line", after_context(tok, "a\n", s)});
  std::vector<TokenForm> out;
  for (auto& form : raw) {
    const std::string& kind = form.first;
    std::vector<int32_t>& ids = form.second;  // not a structured binding: lambdas capture it
    std::erase_if(ids, [&](int32_t id) { return space_piece(tok, id); });
    if (ids.empty()) continue;  // the context merged with the string: no clean form
    if (std::all_of(ids.begin(), ids.end(), [&](int32_t id) { return id == tok.unk_id(); }))
      return Status::error(what + ": '" + s + "' tokenizes to <unk> only");
    auto same = std::find_if(out.begin(), out.end(), [&](const TokenForm& f) { return f.ids == ids; });
    if (same != out.end()) same->kinds.push_back(kind);
    else out.push_back({{kind}, ids});
  }
  if (out.empty()) return Status::error(what + ": '" + s + "' has no tokens");
  return out;
}

std::string show_pieces(const Tokenizer& tok, const std::vector<int32_t>& ids) {
  std::string s;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) s += '|';
    s += tok.piece(ids[i]);
  }
  return s;
}


}  // namespace stem::edit
