// Small sources for the built-in tasks, written by tests: a "book" whose
// passages end with a word used earlier in them (cloze, needle filler), and
// a countries-list folder of eight made-up countries and one territory
// (world facts).
#pragma once

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

namespace stem::test {

// 400 passages; every fifth ends with a word used earlier in it.
inline void write_book(const std::string& path) {
  std::string book = "CHAPTER I\n\n";
  const char* names[] = {"Emma", "Harriet", "Jane", "Frank", "George"};
  for (int i = 0; i < 400; ++i) {
    const std::string n = names[i % 5];
    book += "The morning was quiet and " + n + " walked along the river past the old mill with a basket of apples "
            "for the family of the miller, who had been ill for many weeks. ";
    book += i % 5 == 0 ? "Everyone in the village knew " + n + ".\n\n" : "It rained in the afternoon.\n\n";
  }
  std::ofstream(path) << book;
}

inline void write_countries_list(const std::string& dir) {
  using nlohmann::json;
  std::filesystem::create_directories(dir);
  json countries = json::object(), languages = json::object(), currencies = json::object();
  const char* cs[][5] = {{"AA", "Avaland", "Avton", "aa", "AAD"}, {"BB", "Borvia", "Bort", "bb", "BBD"},
                         {"CC", "Cestria", "Cesk", "cc", "CCD"}, {"DD", "Dorna", "Dorvik", "dd", "DDD"},
                         {"EE", "Elmia", "Elmton", "ee", "EED"}, {"FF", "Fenland", "Fenby", "ff", "FFD"},
                         {"GG", "Gorsk", "Gorvia", "gg", "GGD"}, {"HH", "Hallow", "Hallby", "hh", "HHD"}};
  for (const auto& c : cs) {
    countries[c[0]] = {{"name", c[1]}, {"capital", c[2]}, {"languages", {c[3]}}, {"currency", {c[4]}},
                       {"continent", std::string(c[0]) < "EE" ? "EU" : "AS"}};
    languages[c[3]] = {{"name", std::string(c[1]) + "ish"}};
    currencies[c[4]] = {{"name", std::string(c[1]) + " Crown"}};
  }
  countries["ZZ"] = {{"name", "Zedland"}, {"capital", "Zed"}, {"languages", {"aa"}}, {"currency", {"AAD"}},
                     {"continent", "EU"}, {"partOf", "AA"}};  // a territory: left out
  std::ofstream(dir + "/countries.min.json") << countries.dump();
  std::ofstream(dir + "/languages.min.json") << languages.dump();
  std::ofstream(dir + "/currencies.min.json") << currencies.dump();
  std::ofstream(dir + "/continents.min.json") << R"({"EU": "Europe", "AS": "Asia"})";
}

}  // namespace stem::test
