// JSON lines reading (see json_lines.h).
#include "io/json_lines.h"

#include <sstream>

#include "io/files.h"
#include "io/json_text.h"

namespace stem::io {

Result<nlohmann::json> parse_json_object(const std::string& line, const std::string& where) {
  try {
    nlohmann::json j = nlohmann::json::parse(line);
    if (!j.is_object()) return Status::error(where + ": expected a JSON object, got " + shown(j));
    return j;
  } catch (const nlohmann::json::exception& e) {
    return Status::error(where + ": not JSON: " + strip_json_prefix(e.what()));
  }
}

Result<std::vector<std::string>> read_text_lines(const std::string& path, const std::vector<std::string>& keys,
                                                 const std::string& what) {
  STEM_ASSIGN_OR_RETURN(std::string text, read_text(path));
  std::istringstream in(text);
  std::vector<std::string> out;
  std::string line;
  for (int64_t n = 1; std::getline(in, line); ++n) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    if (line.front() != '{') {
      out.push_back(line);
      continue;
    }
    const std::string where = path + ":" + std::to_string(n);
    STEM_ASSIGN_OR_RETURN(nlohmann::json j, parse_json_object(line, where));
    size_t k = 0;
    while (k + 1 < keys.size() && !j.contains(keys[k])) ++k;
    STEM_ASSIGN_OR_RETURN(std::string v, string_field(j, keys[k], where));
    out.push_back(v);
  }
  if (out.empty()) return Status::error(path + ": no " + what);
  return out;
}

Result<std::vector<JsonLine>> read_json_lines(const std::string& path) {
  STEM_ASSIGN_OR_RETURN(std::string text, read_text(path));
  std::istringstream in(text);
  std::string line;
  std::vector<JsonLine> out;
  int64_t n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    JsonLine l;
    l.line = n;
    l.where = path + ":" + std::to_string(n);
    STEM_ASSIGN_OR_RETURN(l.value, parse_json_object(line, l.where));
    out.push_back(std::move(l));
  }
  return out;
}

Result<std::string> string_field(const nlohmann::json& j, const std::string& key, const std::string& where,
                                 bool allow_empty) {
  const char* want = allow_empty ? " must be a string" : " must be a non-empty string";
  if (!j.contains(key)) return Status::error(where + ": \"" + key + "\"" + want + " (missing)");
  const nlohmann::json& v = j[key];
  if (!v.is_string() || (!allow_empty && v.get_ref<const std::string&>().empty()))
    return Status::error(where + ": \"" + key + "\"" + want + " (got " + shown(v) + ")");
  return v.get<std::string>();
}

}  // namespace stem::io
