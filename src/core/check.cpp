// The abort path of STEM_CHECK: the message and a backtrace, to the hook
// (stderr by default), then abort().
#include "core/check.h"

#include "stem/status.h"

#include <execinfo.h>

#include <algorithm>
#include <atomic>
#include <cstdarg>
#include <string>

namespace stem::core {
namespace {
std::atomic<CheckFailureHook> g_hook{nullptr};
}  // namespace

void set_check_failure_hook(CheckFailureHook hook) { g_hook.store(hook); }

void check_failed(const char* file, int line, const char* cond, const char* fmt, ...) {
  char head[1024];
  int n = std::snprintf(head, sizeof head, "stem: internal error at %s:%d: check failed: %s", file, line, cond);
  std::string msg(head, static_cast<size_t>(std::max(0, std::min<int>(n, sizeof head - 1))));
  if (fmt) {
    char body[1024];
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(body, sizeof body, fmt, ap);
    va_end(ap);
    msg += ": ";
    msg += body;
  }
  msg += "\nbacktrace:\n";
  void* frames[64];
  const int depth = backtrace(frames, 64);
  if (char** names = backtrace_symbols(frames, depth)) {
    for (int i = 1; i < depth; ++i) msg += std::string("  ") + names[i] + "\n";
    std::free(names);
  }
  if (CheckFailureHook hook = g_hook.load()) {
    hook(msg.c_str());
  } else {
    std::fputs(msg.c_str(), stderr);
    std::fflush(stderr);
  }
  std::abort();
}

}  // namespace stem::core

namespace stem {
void set_internal_error_hook(void (*hook)(const char* message)) { core::set_check_failure_hook(hook); }
}  // namespace stem
