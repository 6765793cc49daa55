// make_tasks (include/stem/tasks.h): world facts from the countries-list
// package, pass-key retrieval (needle), and the driver that writes every task
// and OUT/tasks.json. The sentences a model trains on and the probes use
// disjoint templates, so a probe tests knowledge, not a memorised sentence.
#include <algorithm>
#include <filesystem>
#include <set>

#include "eval/make_tasks.h"
#include "io/files.h"
#include "io/json_text.h"
#include "stem/capacity.h"
#include "stem/tasks.h"

namespace stem::eval {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

Result<json> read_json(const std::string& path) {
  STEM_ASSIGN_OR_RETURN(std::string text, io::read_text(path));
  try {
    json j = json::parse(text);
    if (!j.is_object()) return Status::error(path + ": expected a JSON object");
    return j;
  } catch (const json::exception& e) {
    return Status::error(path + ": not JSON: " + io::strip_json_prefix(e.what()));
  }
}

std::string name_of(const json& table, const std::string& code) {
  if (!table.contains(code)) return "";
  const json& v = table[code];
  if (v.is_string()) return v.get<std::string>();
  return v.is_object() && v.contains("name") && v["name"].is_string() ? v["name"].get<std::string>() : "";
}

bool ascii(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c > 0 && c < 127; });
}

struct Country {
  std::string name, capital, language, currency, continent;
};

// Training templates (world_facts_train.txt) and probe templates: disjoint.
struct Attribute {
  const char* key;
  std::string Country::*value;
  std::vector<std::string> train;  // "{n}" country, "{v}" value
  const char* mc;                  // multiple-choice question
  const char* cloze;               // cloze prompt (nullptr: none)
};
const std::vector<Attribute>& attributes() {
  static const std::vector<Attribute> a = {
      {"capital", &Country::capital,
       {"The capital of {n} is {v}.", "{v} is the capital city of {n}.", "The government of {n} sits in {v}."},
       "Question: What is the capital of {n}?\nAnswer:", "If you travel to the capital of {n}, you arrive in"},
      {"language", &Country::language,
       {"People in {n} speak {v}.", "{v} is spoken in {n}.", "The main language of {n} is {v}."},
       "Question: Which language do people in {n} speak?\nAnswer:", "Most people in {n} talk to each other in"},
      {"currency", &Country::currency,
       {"The currency of {n} is the {v}.", "In {n} people pay with the {v}."},
       "Question: What money is used in {n}?\nAnswer:", nullptr},
      {"continent", &Country::continent,
       {"{n} is a country in {v}.", "{n} lies in {v}."},
       "Question: On which continent is {n}?\nAnswer:", nullptr}};
  return a;
}


}  // namespace

Result<WorldFacts> world_facts(const std::string& dir, std::mt19937_64& rng) {
  const fs::path d(dir);
  STEM_ASSIGN_OR_RETURN(json countries, read_json((d / "countries.min.json").string()));
  STEM_ASSIGN_OR_RETURN(json languages, read_json((d / "languages.min.json").string()));
  STEM_ASSIGN_OR_RETURN(json currencies, read_json((d / "currencies.min.json").string()));
  STEM_ASSIGN_OR_RETURN(json continents, read_json((d / "continents.min.json").string()));
  std::vector<Country> all;
  for (const auto& [code, c] : countries.items()) {  // sovereign entries with every attribute, in ASCII
    if (!c.is_object() || c.contains("partOf")) continue;
    Country x;
    x.name = c.value("name", "");
    x.capital = c.value("capital", "");
    if (c.contains("languages") && c["languages"].is_array() && !c["languages"].empty() && c["languages"][0].is_string())
      x.language = name_of(languages, c["languages"][0].get<std::string>());
    if (c.contains("currency") && c["currency"].is_array() && !c["currency"].empty() && c["currency"][0].is_string())
      x.currency = name_of(currencies, c["currency"][0].get<std::string>());
    if (c.contains("continent") && c["continent"].is_string()) x.continent = name_of(continents, c["continent"].get<std::string>());
    if (ascii(x.name) && ascii(x.capital) && ascii(x.language) && ascii(x.currency) && ascii(x.continent))
      all.push_back(std::move(x));
  }
  if (all.size() < 8) return Status::error(dir + "/countries.min.json: " + std::to_string(all.size()) +
                                           " countries with a capital, language, currency and continent in ASCII; "
                                           "need at least 8");
  WorldFacts f;
  for (const Country& c : all)
    for (const Attribute& a : attributes())
      for (const std::string& t : a.train) f.train.push_back(fill_template(t, c.name, c.*a.value));
  for (const Attribute& a : attributes()) {
    std::vector<std::string> values;  // distinct values of this attribute
    for (const Country& c : all)
      if (std::find(values.begin(), values.end(), c.*a.value) == values.end()) values.push_back(c.*a.value);
    for (const Country& c : all) {
      const std::string& gold = c.*a.value;
      std::vector<std::string> choices = {gold};
      const size_t want = std::min<size_t>(4, values.size());
      while (choices.size() < want) {
        const std::string& v = values[std::uniform_int_distribution<size_t>(0, values.size() - 1)(rng)];
        if (std::find(choices.begin(), choices.end(), v) == choices.end()) choices.push_back(v);
      }
      std::shuffle(choices.begin(), choices.end(), rng);
      const int g = static_cast<int>(std::find(choices.begin(), choices.end(), gold) - choices.begin());
      const std::string id = std::string(a.key) + "_" + c.name;
      f.mc.push_back({{"id", id}, {"context", fill_template(a.mc, c.name, gold)}, {"choices", choices}, {"gold", g}});
      if (a.cloze) f.cloze.push_back({{"id", id}, {"context", fill_template(a.cloze, c.name, gold)}, {"target", gold}});
    }
  }
  return f;
}

NeedleFiller needle_filler(const std::vector<std::string>& sentences, const Tokenizer& tok) {
  NeedleFiller f{sentences, std::vector<int64_t>(sentences.size())};
  for (size_t i = 0; i < sentences.size(); ++i) f.tokens[i] = static_cast<int64_t>(tok.encode(" " + sentences[i]).size());
  return f;
}

Result<std::vector<json>> needle_examples(const NeedleFiller& fill, const Tokenizer& tok, int64_t length,
                                          const std::vector<double>& depths, int64_t per_depth, std::mt19937_64& rng,
                                          const std::string& book) {
  const std::string question = " What is the pass key? The pass key is";
  const std::vector<std::string>& filler = fill.sentences;
  const std::vector<int64_t>& cost = fill.tokens;
  std::vector<json> out;
  for (double depth : depths) {
    for (int64_t e = 0; e < per_depth; ++e) {
      const std::string key = std::to_string(std::uniform_int_distribution<int>(10000, 99999)(rng));
      const std::string needle = "The pass key is " + key + ". Remember it. " + key + " is the pass key.";
      const int64_t fixed = 1 + static_cast<int64_t>(tok.encode(needle + question + " " + key).size());
      // Sentences from a random start (wrapping around, skipping any too long
      // for what is left) up to the budget, then the exact count checked and
      // trimmed at the end.
      const size_t start = std::uniform_int_distribution<size_t>(0, filler.size() - 1)(rng);
      std::vector<std::string> picked;
      int64_t used = fixed;
      for (size_t i = 0; i < filler.size() && used < length; ++i) {
        const size_t j = (start + i) % filler.size();
        if (used + cost[j] > length) continue;
        picked.push_back(filler[j]);
        used += cost[j];
      }
      for (;;) {
        const size_t at = static_cast<size_t>(depth * static_cast<double>(picked.size()) + 0.5);
        std::string ctx;
        for (size_t i = 0; i <= picked.size(); ++i) {
          if (i == at) ctx += (ctx.empty() ? "" : " ") + needle;
          if (i < picked.size()) ctx += (ctx.empty() ? "" : " ") + picked[i];
        }
        ctx += question;
        const int64_t n = 1 + static_cast<int64_t>(tok.encode(ctx + " " + key).size());
        if (n <= length) {
          if (n < length / 2)
            return Status::error(book + ": too little text to fill " + std::to_string(length) +
                                 " tokens of needle context");
          out.push_back({{"id", "needle_len" + std::to_string(length) + "_depth" + std::to_string(depth).substr(0, 4) +
                                    "_" + std::to_string(e)},
                         {"context", ctx},
                         {"target", key}});
          break;
        }
        if (picked.empty()) return Status::error("needle: " + std::to_string(length) + " tokens cannot hold the question");
        picked.pop_back();
      }
    }
  }
  return out;
}

}  // namespace stem::eval

namespace stem {

Result<std::vector<MadeTask>> make_tasks(const TaskSources& src, const MakeTasksOptions& opt, const std::string& out) {
  namespace fs = std::filesystem;
  using eval::write_jsonl;
  using nlohmann::json;
  std::error_code ec;
  fs::create_directories(out, ec);
  if (ec) return Status::error(out + ": cannot create: " + ec.message());
  std::vector<MadeTask> made;
  auto add = [&](const std::string& name, const std::string& file, const std::string& kind, int64_t n,
                 const std::string& source) { made.push_back({name, (fs::path(out) / file).string(), kind, n, source}); };
  std::vector<std::string> book;
  if (!src.book.empty()) {
    STEM_ASSIGN_OR_RETURN(std::string text, io::read_text(src.book));
    book = eval::sentences_of(eval::without_headings(text));
    std::mt19937_64 rng(opt.seed);
    STEM_ASSIGN_OR_RETURN(auto ex, eval::cloze_examples(book, opt.cloze_examples, rng, src.book));
    STEM_RETURN_IF_ERROR(write_jsonl((fs::path(out) / "cloze.jsonl").string(), ex));
    add("cloze", "cloze.jsonl", "cloze", static_cast<int64_t>(ex.size()), src.book);
  }
  if (!src.wordnet.empty()) {
    std::mt19937_64 rng(opt.seed + 1);
    STEM_ASSIGN_OR_RETURN(auto ex, eval::definition_examples(src.wordnet, opt.definition_examples, rng));
    STEM_RETURN_IF_ERROR(write_jsonl((fs::path(out) / "definitions.jsonl").string(), ex));
    add("definitions", "definitions.jsonl", "multiple_choice", static_cast<int64_t>(ex.size()), src.wordnet);
  }
  if (!src.countries.empty()) {
    std::mt19937_64 rng(opt.seed + 2);
    STEM_ASSIGN_OR_RETURN(eval::WorldFacts f, eval::world_facts(src.countries, rng));
    std::string train;
    for (const std::string& s : f.train) train += s + "\n";
    STEM_RETURN_IF_ERROR(io::write_text_atomic((fs::path(out) / "world_facts_train.txt").string(), train));
    STEM_RETURN_IF_ERROR(write_jsonl((fs::path(out) / "world_facts_mc.jsonl").string(), f.mc));
    STEM_RETURN_IF_ERROR(write_jsonl((fs::path(out) / "world_facts_cloze.jsonl").string(), f.cloze));
    add("world_facts_train", "world_facts_train.txt", "train", static_cast<int64_t>(f.train.size()), src.countries);
    add("world_facts_mc", "world_facts_mc.jsonl", "multiple_choice", static_cast<int64_t>(f.mc.size()), src.countries);
    add("world_facts_cloze", "world_facts_cloze.jsonl", "cloze", static_cast<int64_t>(f.cloze.size()), src.countries);
  }
  if (!src.tokenizer.empty() && !book.empty()) {
    STEM_ASSIGN_OR_RETURN(Tokenizer tok, Tokenizer::load(src.tokenizer));
    std::mt19937_64 rng(opt.seed + 3);
    const eval::NeedleFiller filler = eval::needle_filler(book, tok);
    for (int64_t L : opt.needle_lengths) {
      STEM_ASSIGN_OR_RETURN(auto ex, eval::needle_examples(filler, tok, L, opt.needle_depths, opt.needle_per_cell, rng,
                                                           src.book));
      const std::string file = "needle_" + std::to_string(L) + ".jsonl";
      STEM_RETURN_IF_ERROR(write_jsonl((fs::path(out) / file).string(), ex));
      add("needle_" + std::to_string(L), file, "cloze", static_cast<int64_t>(ex.size()), src.book);
    }
  }
  if (opt.bios_people > 0) {
    STEM_ASSIGN_OR_RETURN(Bios b, make_bios(opt.bios_people, opt.seed + 4));
    STEM_RETURN_IF_ERROR(io::write_text_atomic((fs::path(out) / "bios_train.txt").string(), bios_text(b)));
    STEM_RETURN_IF_ERROR(write_bios(b, (fs::path(out) / "bios.json").string()));
    add("bios_train", "bios_train.txt", "train", opt.bios_people, "made up");
    add("bios", "bios.json", "capacity", opt.bios_people, "made up");
  }
  json manifest = {{"format", "stem-tasks"}, {"version", 1}, {"seed", opt.seed},
                   {"sources", {{"book", src.book}, {"wordnet", src.wordnet}, {"countries", src.countries},
                                {"tokenizer", src.tokenizer}}}};
  json list = json::array();
  for (const MadeTask& t : made)
    list.push_back({{"name", t.name}, {"file", fs::path(t.path).filename().string()}, {"kind", t.kind},
                    {"examples", t.examples}, {"source", t.source}});
  manifest["tasks"] = list;
  STEM_RETURN_IF_ERROR(io::write_text_atomic((fs::path(out) / "tasks.json").string(), manifest.dump(2) + "\n"));
  return made;
}

}  // namespace stem
