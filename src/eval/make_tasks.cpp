// make_tasks (include/stem/tasks.h): the built-in tasks, each from its source
// file, drawn with one seed. Text handling is deliberately simple and
// deterministic: sentences end at . ! ? (with closing quotes) unless the word
// is a title such as "Mr."; words are runs of letters and apostrophes. It
// writes task files; it does not tokenize except to size needle contexts.
#include <algorithm>
#include <cctype>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include <sstream>

#include "eval/make_tasks.h"
#include "io/files.h"

namespace stem::eval {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

bool is_letter(char c) { return std::isalpha(static_cast<unsigned char>(c)) != 0; }
std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

std::string without_headings(const std::string& text) {
  std::string out;
  for (const std::string& line : io::lines_of(text)) {
    const bool letters = std::any_of(line.begin(), line.end(), is_letter);
    const bool upper = std::none_of(line.begin(), line.end(), [](char c) { return std::islower(static_cast<unsigned char>(c)); });
    if (!(letters && upper)) out += line + "\n";
  }
  return out;
}

std::vector<std::string> sentences_of(const std::string& text) {
  static const std::set<std::string> titles = {"Mr", "Mrs", "Ms", "Dr", "St", "Col", "Capt", "Gen", "Rev", "Sr", "Jr"};
  std::string flat;
  for (char c : text) {
    const bool space = std::isspace(static_cast<unsigned char>(c)) != 0;
    if (space && (flat.empty() || flat.back() == ' ')) continue;
    flat += space ? ' ' : c;
  }
  std::vector<std::string> out;
  size_t start = 0;
  for (size_t i = 0; i < flat.size(); ++i) {
    if (flat[i] != '.' && flat[i] != '!' && flat[i] != '?') continue;
    size_t end = i + 1;
    while (end < flat.size() && (flat[end] == '"' || flat[end] == '\'' || flat[end] == ')')) ++end;
    if (end < flat.size() && flat[end] != ' ') continue;
    if (flat[i] == '.') {  // "Mr." does not end a sentence
      size_t w = i;
      while (w > start && is_letter(flat[w - 1])) --w;
      if (titles.count(flat.substr(w, i - w))) continue;
    }
    std::string s = flat.substr(start, end - start);
    if (!s.empty()) out.push_back(std::move(s));
    start = end + 1;
    i = end;
  }
  if (start < flat.size()) {  // text after the last full stop
    std::string rest = flat.substr(start);
    while (!rest.empty() && rest.back() == ' ') rest.pop_back();
    if (!rest.empty()) out.push_back(std::move(rest));
  }
  return out;
}

namespace {

std::vector<std::string> words_of(const std::string& s) {
  std::vector<std::string> out;
  std::string w;
  for (char c : s) {
    if (is_letter(c) || (c == '\'' && !w.empty())) {
      w += c;
    } else if (!w.empty()) {
      out.push_back(lower(w));
      w.clear();
    }
  }
  if (!w.empty()) out.push_back(lower(w));
  return out;
}

}  // namespace

std::string fill_template(std::string t, const std::string& who, const std::string& value) {
  for (size_t p; (p = t.find("{n}")) != std::string::npos;) t.replace(p, 3, who);
  for (size_t p; (p = t.find("{v}")) != std::string::npos;) t.replace(p, 3, value);
  return t;
}

Status write_jsonl(const std::string& path, const std::vector<json>& lines) {
  std::string text;
  for (const json& j : lines) text += j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
  return io::write_text_atomic(path, text);
}

// ---------------------------------------------------------------- cloze

// A passage ends at every sentence of the book and holds it and the 2 to 5
// before it (30 to 200 words); the target is the passage's last word, which
// must occur earlier in it. Passages may share sentences; targets never do.
Result<std::vector<json>> cloze_examples(const std::vector<std::string>& sents, int64_t n, std::mt19937_64& rng,
                                         const std::string& book) {
  std::vector<json> all;
  std::uniform_int_distribution<int> len(3, 6);
  for (size_t last = 5; last < sents.size(); ++last) {
    const size_t k = static_cast<size_t>(len(rng));
    std::string passage;
    for (size_t j = last + 1 - k; j <= last; ++j) passage += (passage.empty() ? "" : " ") + sents[j];
    size_t end = passage.size();
    while (end > 0 && !is_letter(passage[end - 1])) --end;  // closing punctuation and quotes
    size_t start = end;
    while (start > 0 && (is_letter(passage[start - 1]) || passage[start - 1] == '\'')) --start;
    if (end == 0 || start == 0 || passage[start - 1] != ' ' || end - start < 3) continue;
    const std::string target = passage.substr(start, end - start);
    const std::string context = passage.substr(0, start - 1);
    const std::vector<std::string> words = words_of(context);
    if (words.size() < 30 || words.size() > 200) continue;
    if (std::find(words.begin(), words.end(), lower(target)) == words.end()) continue;
    all.push_back({{"context", context}, {"target", target}});
  }
  if (static_cast<int64_t>(all.size()) < n)
    return Status::error(book + ": only " + std::to_string(all.size()) + " passages end with a word that occurs "
                         "earlier in them; asked for " + std::to_string(n) + " cloze examples");
  std::shuffle(all.begin(), all.end(), rng);
  all.resize(static_cast<size_t>(n));
  for (size_t i = 0; i < all.size(); ++i) all[i]["id"] = "cloze_" + std::to_string(i);
  return all;
}

// ---------------------------------------------------------------- definitions

struct Synset {
  std::string word, definition;
  std::set<std::string> lemmas;
};

namespace {

// WordNet data.POS: "offset lex ss_type w_cnt(hex) word lex_id ... | gloss";
// the definition is the gloss before its first quoted example.
Result<std::vector<Synset>> read_wordnet(const std::string& path) {
  STEM_ASSIGN_OR_RETURN(std::string text, io::read_text(path));
  const std::vector<std::string> lines = io::lines_of(text);
  std::vector<Synset> out;
  for (size_t line = 1; line <= lines.size(); ++line) {
    const std::string& l = lines[line - 1];
    if (l.empty() || l[0] == ' ') continue;  // the license header
    const size_t bar = l.find(" | ");
    std::istringstream in(l.substr(0, bar == std::string::npos ? l.size() : bar));
    std::string offset, lex, type, count;
    if (bar == std::string::npos || !(in >> offset >> lex >> type >> count))
      return Status::error(path + ":" + std::to_string(line) + ": not a WordNet data line");
    Synset s;
    const long n = std::strtol(count.c_str(), nullptr, 16);
    for (long i = 0; i < n; ++i) {
      std::string w, id;
      if (!(in >> w >> id)) return Status::error(path + ":" + std::to_string(line) + ": fewer words than w_cnt");
      if (const size_t p = w.find('('); p != std::string::npos) w.resize(p);  // adjective markers: able(a)
      std::replace(w.begin(), w.end(), '_', ' ');
      s.lemmas.insert(lower(w));
      if (i == 0) s.word = w;
    }
    std::string gloss = l.substr(bar + 3);
    if (const size_t q = gloss.find("; \""); q != std::string::npos) gloss.resize(q);
    if (const size_t q = gloss.find(" \""); q == 0) gloss.clear();
    while (!gloss.empty() && (gloss.back() == ' ' || gloss.back() == ';')) gloss.pop_back();
    s.definition = gloss;
    const bool plain = s.word.size() >= 3 && s.word.size() <= 14 &&
                       std::all_of(s.word.begin(), s.word.end(), [](char c) { return c >= 'a' && c <= 'z'; });
    if (plain && s.definition.size() >= 10) out.push_back(std::move(s));
  }
  return out;
}

}  // namespace

Result<std::vector<json>> definition_examples(const std::string& dir, int64_t n, std::mt19937_64& rng) {
  std::vector<std::vector<Synset>> by_pos;
  for (const char* pos : {"noun", "verb", "adj", "adv"}) {
    STEM_ASSIGN_OR_RETURN(std::vector<Synset> s, read_wordnet((fs::path(dir) / (std::string("data.") + pos)).string()));
    if (s.size() >= 4) by_pos.push_back(std::move(s));
  }
  int64_t total = 0;
  for (const auto& p : by_pos) total += static_cast<int64_t>(p.size());
  if (total < n) return Status::error(dir + ": " + std::to_string(total) + " usable synsets, fewer than " + std::to_string(n));
  std::vector<json> out;
  std::set<std::pair<size_t, size_t>> used;
  while (static_cast<int64_t>(out.size()) < n) {
    // A part of speech in proportion to its synsets, then a synset of it.
    int64_t r = std::uniform_int_distribution<int64_t>(0, total - 1)(rng);
    size_t p = 0;
    while (r >= static_cast<int64_t>(by_pos[p].size())) r -= static_cast<int64_t>(by_pos[p++].size());
    const std::vector<Synset>& pool = by_pos[p];
    if (!used.insert({p, static_cast<size_t>(r)}).second) continue;
    const Synset& gold = pool[static_cast<size_t>(r)];
    std::vector<std::string> choices = {gold.word};
    while (choices.size() < 4) {
      const Synset& d = pool[std::uniform_int_distribution<size_t>(0, pool.size() - 1)(rng)];
      if (gold.lemmas.count(d.word) || std::find(choices.begin(), choices.end(), d.word) != choices.end()) continue;
      choices.push_back(d.word);
    }
    std::shuffle(choices.begin(), choices.end(), rng);
    const int g = static_cast<int>(std::find(choices.begin(), choices.end(), gold.word) - choices.begin());
    out.push_back({{"id", "def_" + std::to_string(out.size())},
                   {"context", "Definition: " + gold.definition + "\nWord:"},
                   {"choices", choices},
                   {"gold", g}});
  }
  return out;
}

}  // namespace stem::eval
