// The synthetic fact corpus (see facts.h): names from random syllables,
// distinct across every subject, capital and language; templates with the
// answer last so that each sentence minus its answer is a query prompt.
#include "stem/facts.h"

#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "core/check.h"
#include "io/files.h"

namespace stem::edit {

namespace {

// {prefix, suffix} around the subject; the answer follows the suffix, then ".".
struct Template {
  const char* before_subject;
  const char* after_subject;
};
constexpr Template kCapital[kFactTemplatesPerAttribute] = {
    {"The capital of ", " is"},
    {"Visitors to ", " arrive in its capital,"},
    {"The seat of government of ", " is the city of"},
};
constexpr Template kLanguage[kFactTemplatesPerAttribute] = {
    {"The people of ", " speak"},
    {"The official language of ", " is"},
    {"Most families in ", " talk at home in"},
};

const Template& pick(const std::string& attribute, int t) {
  return attribute == "capital" ? kCapital[t % kFactTemplatesPerAttribute] : kLanguage[t % kFactTemplatesPerAttribute];
}

class NameMaker {
 public:
  NameMaker(uint64_t seed, const FactOptions& opt)
      : rng_(seed), opt_(opt), prefix_(opt.tokenizer ? static_cast<int64_t>(opt.tokenizer->encode("a").size()) : 0) {}
  // Two consonant-vowel syllables and an ending, capitalized, never a repeat;
  // of min..max pieces under the options' tokenizer if it has one (in its
  // mid-sentence form: the pieces of "a NAME" after those of "a").
  Result<std::string> make(const std::vector<const char*>& endings) {
    static const char* kC = "bdfgklmnprstvz";
    static const char* kV = "aeiou";
    for (int tries = 0;; ++tries) {
      if (tries == kMaxTries)
        return Status::error("facts: no new name of " + std::to_string(opt_.min_pieces) + " to " +
                             std::to_string(opt_.max_pieces) + " pieces in " + std::to_string(kMaxTries) +
                             " tries under this tokenizer (widen --pieces)");
      std::string s;
      for (int i = 0; i < 2; ++i) {
        s += kC[rng_() % 14];
        s += kV[rng_() % 5];
      }
      s += endings[rng_() % endings.size()];
      s[0] = static_cast<char>(s[0] - 'a' + 'A');
      if (used_.count(s)) continue;
      if (opt_.tokenizer) {
        const int64_t n = static_cast<int64_t>(opt_.tokenizer->encode("a " + s).size()) - prefix_;
        if (n < opt_.min_pieces || n > opt_.max_pieces) continue;
      }
      used_.insert(s);
      return s;
    }
  }

 private:
  static constexpr int kMaxTries = 100000;
  std::mt19937_64 rng_;
  const FactOptions& opt_;
  int64_t prefix_;  // pieces of "a", before the name
  std::set<std::string> used_;
};

std::string jsonl(const std::vector<nlohmann::json>& lines) {
  std::string s;
  for (const auto& j : lines) s += j.dump() + "\n";
  return s;
}

}  // namespace

std::string fact_prompt(const std::string& attribute, int template_index, const std::string& subject) {
  const Template& t = pick(attribute, template_index);
  return std::string(t.before_subject) + subject + t.after_subject;
}

std::string fact_sentence(const std::string& attribute, int template_index, const std::string& subject,
                          const std::string& value) {
  return fact_prompt(attribute, template_index, subject) + " " + value + ".";
}

Result<FactCorpus> make_fact_corpus(const FactOptions& opt) {
  if (opt.subjects < 4 || opt.subjects > 10000)
    return Status::error("facts: --subjects " + std::to_string(opt.subjects) + " is outside [4, 10000]");
  if (opt.min_pieces < 1 || opt.max_pieces < opt.min_pieces)
    return Status::error("facts: pieces " + std::to_string(opt.min_pieces) + "-" + std::to_string(opt.max_pieces) +
                         " is not a range of at least 1");
  FactCorpus c;
  c.options = opt;
  NameMaker names(opt.seed, opt);
  for (int i = 0; i < opt.subjects; ++i) {
    FactSubject s;
    STEM_ASSIGN_OR_RETURN(s.name, names.make({"ria", "land", "stan", "nia", "mark"}));
    STEM_ASSIGN_OR_RETURN(s.capital, names.make({"ton", "burg", "ville", "holm", "grad"}));
    STEM_ASSIGN_OR_RETURN(s.language, names.make({"ish", "ese", "ic", "ian", "ol"}));
    c.subjects.push_back(std::move(s));
  }
  for (int i = 0; i < opt.subjects; ++i)
    for (const char* attr : {"capital", "language"})
      for (int t = 0; t < kFactTemplatesPerAttribute; ++t) {
        const FactSubject& s = c.subjects[i];
        const std::string& v = std::string(attr) == "capital" ? s.capital : s.language;
        c.sentences.push_back(fact_sentence(attr, t, s.name, v));
        STEM_CHECKF(c.sentences.back().size() >= 33 && c.sentences.back().size() <= 64, "sentence '%s'",
                    c.sentences.back().c_str());
        c.queries.push_back({i, attr, t, fact_prompt(attr, t, s.name), " " + v});
      }
  return c;
}

Status write_fact_corpus(const FactCorpus& c, const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Status::error(dir + ": cannot create folder: " + ec.message());
  auto path = [&](const char* name) { return (std::filesystem::path(dir) / name).string(); };
  auto answer = [&](int s, const std::string& attr) {  // as it follows its prompt
    std::string a = " ";
    a += attr == "capital" ? c.subjects[s].capital : c.subjects[s].language;
    return a;
  };

  // Blank lines between sentences: `stem prepare --doc-bytes 32` then makes
  // each sentence its own document (every sentence is 33..64 bytes).
  std::string text;
  for (const auto& s : c.sentences) text += s + "\n\n";
  STEM_RETURN_IF_ERROR(io::write_text_atomic(path("facts.txt"), text));

  std::vector<nlohmann::json> subjects, queries;
  for (const auto& s : c.subjects)
    subjects.push_back({{"subject", s.name}, {"capital", s.capital}, {"language", s.language}});
  for (const auto& q : c.queries)
    queries.push_back({{"subject", c.subjects[q.subject].name}, {"attribute", q.attribute},
                       {"template", q.template_index}, {"prompt", q.prompt}, {"answer", q.answer}});
  STEM_RETURN_IF_ERROR(io::write_text_atomic(path("subjects.jsonl"), jsonl(subjects)));
  STEM_RETURN_IF_ERROR(io::write_text_atomic(path("queries.jsonl"), jsonl(queries)));

  // Controls: the first template of each attribute for subjects 4.. (untouched by the demos).
  std::vector<nlohmann::json> controls;
  std::string controls_txt;
  for (const auto& q : c.queries)
    if (q.subject >= 4 && q.template_index == 0) {
      controls.push_back({{"control", q.prompt}});
      controls_txt += q.prompt + "\n";
    }
  STEM_RETURN_IF_ERROR(io::write_text_atomic(path("controls.txt"), controls_txt));

  // Swap demo: subject 0 takes subject 1's rows.
  std::vector<nlohmann::json> swap;
  for (const auto& q : c.queries)
    if (q.subject == 0)
      swap.push_back({{"prompt", q.prompt}, {"before", answer(0, q.attribute)}, {"after", answer(1, q.attribute)}});
  swap.insert(swap.end(), controls.begin(), controls.end());
  STEM_RETURN_IF_ERROR(io::write_text_atomic(path("swap_cases.jsonl"), jsonl(swap)));

  // Injection demo: subject 2's capital becomes subject 3's capital. Its
  // language sentences go along unchanged: the rows trained are all of
  // subject 2's rows, and facts not restated would drift.
  std::vector<nlohmann::json> inject, inject_cases;
  const FactSubject& s2 = c.subjects[2];
  for (int t = 0; t < kFactTemplatesPerAttribute; ++t) {
    inject.push_back({{"subject", s2.name}, {"text", fact_sentence("capital", t, s2.name, c.subjects[3].capital)}});
    inject_cases.push_back({{"prompt", fact_prompt("capital", t, s2.name)},
                            {"before", " " + s2.capital},
                            {"after", " " + c.subjects[3].capital}});
  }
  for (int t = 0; t < kFactTemplatesPerAttribute; ++t) {
    inject.push_back({{"subject", s2.name}, {"text", fact_sentence("language", t, s2.name, s2.language)}});
    inject_cases.push_back(
        {{"prompt", fact_prompt("language", t, s2.name)}, {"before", " " + s2.language}, {"after", " " + s2.language}});
  }
  inject_cases.insert(inject_cases.end(), controls.begin(), controls.end());
  STEM_RETURN_IF_ERROR(io::write_text_atomic(path("inject_facts.jsonl"), jsonl(inject)));
  STEM_RETURN_IF_ERROR(io::write_text_atomic(path("inject_cases.jsonl"), jsonl(inject_cases)));

  nlohmann::json meta = {
      {"format", "stem-facts"},
      {"version", 1},
      {"seed", c.options.seed},
      {"pieces", c.options.tokenizer ? nlohmann::json{c.options.min_pieces, c.options.max_pieces} : nlohmann::json()},
      {"subjects", c.subjects.size()},
      {"sentences", c.sentences.size()},
      {"queries", c.queries.size()},
      {"swap_demo", {{"from", c.subjects[0].name}, {"to", c.subjects[1].name}}},
      {"inject_demo", {{"subject", s2.name}, {"capital", c.subjects[3].capital}}},
  };
  return io::write_text_atomic(path("facts.json"), meta.dump(2) + "\n");
}

}  // namespace stem::edit
