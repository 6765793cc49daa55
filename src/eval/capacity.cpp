// Knowledge capacity (include/stem/capacity.h): the biographies, their text
// and file, and the bits a model holds, scored through evaluate_task (each
// person and attribute one multiple choice over the attribute's whole set).
// The value sets are made-up names from fixed syllables, the same for every
// seed; the seed draws the people and their values.
#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "core/timer.h"
#include "eval/make_tasks.h"
#include "io/files.h"
#include "io/json_text.h"
#include "stem/accounting.h"
#include "stem/capacity.h"
#include "stem/eval.h"

namespace stem {
namespace {
using nlohmann::json;

// Pronounceable made-up words: syllables drawn from a generator of its own
// seed, capitalised, distinct.
std::vector<std::string> made_up(int64_t n, int syllables, const std::string& suffix, uint64_t seed) {
  static const char* cons[] = {"b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "st", "th"};
  static const char* vows[] = {"a", "e", "i", "o", "u", "ai", "ou"};
  std::mt19937_64 rng(seed);
  std::set<std::string> seen;
  std::vector<std::string> out;
  while (static_cast<int64_t>(out.size()) < n) {
    std::string w;
    for (int s = 0; s < syllables; ++s)
      w += std::string(cons[rng() % std::size(cons)]) + vows[rng() % std::size(vows)];
    w[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(w[0])));
    if (seen.insert(w).second) out.push_back(w + suffix);
  }
  return out;
}

struct Phrasing {
  const char* name;
  const char* templates[2];  // "{n}" the person, "{v}" the value; the first one's prefix is the prompt
};
const Phrasing kPhrasings[] = {
    {"birth_year", {"{n} was born in the year {v}.", "The birth of {n} took place in {v}."}},
    {"birth_city", {"{n} was born in the city of {v}.", "{n} spent the early years in {v}."}},
    {"university", {"{n} studied at {v}.", "{n} graduated from {v}."}},
    {"field", {"{n} majored in {v}.", "The subject {n} studied was {v}."}},
    {"employer", {"{n} worked for {v}.", "{n} was employed by {v}."}}};


std::vector<BioAttribute> attribute_sets() {
  std::vector<std::string> years;
  for (int y = 1900; y < 2000; ++y) years.push_back(std::to_string(y));
  std::vector<std::string> universities;
  for (const std::string& s : made_up(40, 2, "", 11)) universities.push_back(s + " University");
  std::vector<std::string> employers;
  const char* kinds[] = {" Industries", " Systems", " Labs", " Works"};
  const std::vector<std::string> firms = made_up(64, 2, "", 13);
  for (size_t i = 0; i < firms.size(); ++i) employers.push_back(firms[i] + kinds[i % 4]);
  const std::vector<std::string> fields = {
      "biology", "chemistry", "physics", "history", "economics", "law", "medicine", "music", "philosophy",
      "geology", "astronomy", "linguistics", "architecture", "sociology", "botany", "mathematics"};
  const std::vector<std::vector<std::string>> sets = {years, made_up(64, 2, "ton", 12), universities, fields, employers};
  std::vector<BioAttribute> out;
  for (size_t a = 0; a < sets.size(); ++a) {
    const std::string t = kPhrasings[a].templates[0];
    out.push_back({kPhrasings[a].name, t.substr(0, t.find(" {v}")), sets[a]});
  }
  return out;
}

}  // namespace

double Bios::entropy_bits() const {
  double bits = 0;
  for (const BioAttribute& a : attributes) bits += std::log2(static_cast<double>(a.values.size()));
  return bits * static_cast<double>(people.size());
}

Result<Bios> make_bios(int64_t people, uint64_t seed) {
  const std::vector<std::string> first = made_up(100, 2, "", 21), last = made_up(200, 3, "", 22);
  const int64_t most = static_cast<int64_t>(first.size() * last.size());
  if (people < 1 || people > most)
    return Status::error("bios: " + std::to_string(people) + " people is outside [1, " + std::to_string(most) + "]");
  Bios b;
  b.seed = seed;
  b.attributes = attribute_sets();
  std::mt19937_64 rng(seed);
  std::set<int64_t> used;
  while (static_cast<int64_t>(b.people.size()) < people) {
    const int64_t k = std::uniform_int_distribution<int64_t>(0, most - 1)(rng);
    if (!used.insert(k).second) continue;
    b.people.push_back(first[static_cast<size_t>(k) % first.size()] + " " + last[static_cast<size_t>(k) / first.size()]);
    std::vector<int32_t> v;
    for (const BioAttribute& a : b.attributes)
      v.push_back(std::uniform_int_distribution<int32_t>(0, static_cast<int32_t>(a.values.size()) - 1)(rng));
    b.value_of.push_back(std::move(v));
  }
  return b;
}

std::string bios_text(const Bios& b) {
  std::mt19937_64 rng(b.seed + 1);
  std::string out;
  for (size_t p = 0; p < b.people.size(); ++p) {
    std::vector<std::string> lines;
    for (size_t a = 0; a < b.attributes.size(); ++a)
      for (const char* t : kPhrasings[a].templates)
        lines.push_back(eval::fill_template(t, b.people[p], b.attributes[a].values[static_cast<size_t>(b.value_of[p][a])]));
    std::shuffle(lines.begin(), lines.end(), rng);
    for (const std::string& l : lines) out += l + "\n";
    out += "\n";
  }
  return out;
}

Status write_bios(const Bios& b, const std::string& path) {
  json attrs = json::array(), people = json::array();
  for (const BioAttribute& a : b.attributes) attrs.push_back({{"name", a.name}, {"prompt", a.prompt}, {"values", a.values}});
  for (size_t p = 0; p < b.people.size(); ++p) people.push_back({{"name", b.people[p]}, {"values", b.value_of[p]}});
  const json j = {{"format", "stem-bios"}, {"version", 1}, {"seed", b.seed}, {"attributes", attrs}, {"people", people}};
  return io::write_text_atomic(path, j.dump() + "\n");
}

Result<Bios> read_bios(const std::string& path) {
  STEM_ASSIGN_OR_RETURN(std::string text, io::read_text(path));
  try {
    const json j = json::parse(text);
    if (!j.is_object() || j.value("format", "") != "stem-bios")
      return Status::error(path + ": not a bios file (\"format\": \"stem-bios\" expected)");
    Bios b;
    b.seed = j.value("seed", uint64_t{0});
    for (const json& a : j.at("attributes")) {
      BioAttribute x{a.at("name").get<std::string>(), a.at("prompt").get<std::string>(),
                     a.at("values").get<std::vector<std::string>>()};
      if (x.values.size() < 2) return Status::error(path + ": attribute " + x.name + " has fewer than 2 values");
      b.attributes.push_back(std::move(x));
    }
    for (const json& p : j.at("people")) {
      b.people.push_back(p.at("name").get<std::string>());
      b.value_of.push_back(p.at("values").get<std::vector<int32_t>>());
      const auto& v = b.value_of.back();
      if (v.size() != b.attributes.size())
        return Status::error(path + ": person " + b.people.back() + " has " + std::to_string(v.size()) + " values for " +
                             std::to_string(b.attributes.size()) + " attributes");
      for (size_t a = 0; a < v.size(); ++a)
        if (v[a] < 0 || v[a] >= static_cast<int32_t>(b.attributes[a].values.size()))
          return Status::error(path + ": person " + b.people.back() + ": value " + std::to_string(v[a]) + " of " +
                               b.attributes[a].name + " is out of range");
    }
    if (b.people.empty()) return Status::error(path + ": no people");
    return b;
  } catch (const json::exception& e) {
    return Status::error(path + ": " + io::strip_json_prefix(e.what()));
  }
}

Knowledge knowledge_bits(const Bios& b, const std::vector<std::vector<std::vector<double>>>& logprobs) {
  Knowledge k;
  k.people = static_cast<int64_t>(logprobs.size());
  for (size_t a = 0; a < b.attributes.size(); ++a) {
    AttributeKnowledge x;
    x.name = b.attributes[a].name;
    x.set_size = static_cast<int64_t>(b.attributes[a].values.size());
    const double per = std::log2(static_cast<double>(x.set_size));
    double sum = 0, right = 0;
    for (size_t p = 0; p < logprobs.size(); ++p) {
      const std::vector<double>& lp = logprobs[p][a];
      const double top = *std::max_element(lp.begin(), lp.end());
      double z = 0;
      for (double v : lp) z += std::exp(v - top);
      const int32_t gold = b.value_of[p][a];
      sum += per + (lp[static_cast<size_t>(gold)] - top - std::log(z)) / std::log(2.0);
      right += std::max_element(lp.begin(), lp.end()) - lp.begin() == gold;
    }
    x.max_bits = per * static_cast<double>(logprobs.size());
    x.bits = std::max(0.0, sum);
    x.accuracy = logprobs.empty() ? 0 : right / static_cast<double>(logprobs.size());
    k.bits += x.bits;
    k.max_bits += x.max_bits;
    k.attributes.push_back(x);
  }
  return k;
}

Result<Knowledge> measure_knowledge(Model& model, const Tokenizer& tok, const Bios& b, int64_t limit,
                                    const KnowledgeProgress& progress) {
  core::Timer timer;
  const int64_t N = limit > 0 ? std::min<int64_t>(limit, static_cast<int64_t>(b.people.size()))
                              : static_cast<int64_t>(b.people.size());
  const int64_t A = static_cast<int64_t>(b.attributes.size());
  Task task;
  task.name = "bios";
  task.path = "bios";
  for (int64_t p = 0; p < N; ++p)
    for (int64_t a = 0; a < A; ++a) {
      TaskExample e;
      e.id = b.people[static_cast<size_t>(p)] + "/" + b.attributes[static_cast<size_t>(a)].name;
      e.context = eval::fill_template(b.attributes[static_cast<size_t>(a)].prompt, b.people[static_cast<size_t>(p)], "");
      e.choices = b.attributes[static_cast<size_t>(a)].values;
      e.gold = b.value_of[static_cast<size_t>(p)][static_cast<size_t>(a)];
      task.examples.push_back(std::move(e));
    }
  TaskOptions opt;
  opt.keep_samples = true;
  STEM_ASSIGN_OR_RETURN(TaskResult r, evaluate_task(model, tok, task, opt, progress));
  std::vector<std::vector<std::vector<double>>> lp(static_cast<size_t>(N), std::vector<std::vector<double>>(static_cast<size_t>(A)));
  for (const TaskSample& s : r.samples)
    lp[static_cast<size_t>(s.index / A)][static_cast<size_t>(s.index % A)] = s.logprobs;
  Knowledge k = knowledge_bits(b, lp);
  const Account acc = account(model.config(), 1, 1);
  k.bits_per_param = k.bits / static_cast<double>(model.n_parameters());
  k.bits_per_active_param = k.bits / static_cast<double>(acc.active_params);
  k.seconds = timer.seconds();
  return k;
}

}  // namespace stem
