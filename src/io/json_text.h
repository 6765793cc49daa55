// Helpers that keep JSON-related error messages to one readable line: the
// library's "[json.exception...] " prefix stripped, and values shown as they
// appear in the file, shortened. Used by config.json and safetensors parsing.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace stem::io {

inline std::string strip_json_prefix(const std::string& what) {
  if (!what.empty() && what[0] == '[') {
    const size_t end = what.find("] ");
    if (end != std::string::npos) return what.substr(end + 2);
  }
  return what;
}

// A value as it appears in the file, shortened so an error stays one line.
inline std::string shown(const nlohmann::json& v) {
  std::string s = v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

}  // namespace stem::io
