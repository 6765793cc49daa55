// Small text formatting shared by messages, reports and the CLI.
#pragma once

#include <cstdio>
#include <string>

namespace stem {

// "512 B", "1.5 KB", "2.25 MB", "1.02 GB" (decimal units).
inline std::string human_bytes(double b) {
  char s[32];
  if (b >= 1e9) std::snprintf(s, sizeof s, "%.2f GB", b / 1e9);
  else if (b >= 1e6) std::snprintf(s, sizeof s, "%.2f MB", b / 1e6);
  else if (b >= 1e3) std::snprintf(s, sizeof s, "%.1f KB", b / 1e3);
  else std::snprintf(s, sizeof s, "%.0f B", b);
  return s;
}

}  // namespace stem
