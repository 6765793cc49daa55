// JSON lines files (facts, edit cases, evaluation tasks): each non-blank line
// one JSON object. Errors name FILE:LINE and, for a field, the field and the
// value as written. It does not know what the objects mean.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "stem/status.h"

namespace stem::io {

struct JsonLine {
  int64_t line = 0;     // 1-based
  std::string where;    // "FILE:LINE", for messages
  nlohmann::json value;  // an object
};

// One line parsed as a JSON object; `where` prefixes the error.
Result<nlohmann::json> parse_json_object(const std::string& line, const std::string& where);
// Every non-blank line of `path` (a trailing CR dropped). Errors: the file,
// a line that is not a JSON object. An empty result is not an error.
Result<std::vector<JsonLine>> read_json_lines(const std::string& path);

// Lines of text, each non-blank line one string, or a JSON object whose
// string is the first of `keys` it has (the last key is named when it has
// none); a trailing CR dropped. Errors: the file, a bad JSON line (FILE:LINE),
// no lines ("FILE: no <what>").
Result<std::vector<std::string>> read_text_lines(const std::string& path, const std::vector<std::string>& keys,
                                                 const std::string& what);

// j[key] as a string: "FILE:LINE: "key" must be a non-empty string (missing)"
// or "(got 3)". With allow_empty, "" is accepted.
Result<std::string> string_field(const nlohmann::json& j, const std::string& key, const std::string& where,
                                 bool allow_empty = false);

}  // namespace stem::io
