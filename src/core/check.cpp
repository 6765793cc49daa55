// The abort path of STEM_CHECK.
#include "core/check.h"

#include <cstdarg>

namespace stem::core {

void check_failed(const char* file, int line, const char* cond, const char* fmt, ...) {
  std::fprintf(stderr, "stem: internal error at %s:%d: check failed: %s", file, line, cond);
  if (fmt) {
    std::fputs(": ", stderr);
    va_list ap;
    va_start(ap, fmt);
    std::vfprintf(stderr, fmt, ap);
    va_end(ap);
  }
  std::fputc('\n', stderr);
  std::fflush(stderr);
  std::abort();
}

}  // namespace stem::core
