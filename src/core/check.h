// STEM_CHECK: the one always-on invariant check. A failure is a bug in stem, not
// bad input (bad input returns a Status): it reports file:line, the message and
// a backtrace (through a replaceable hook), then aborts. Never compiled out, so
// keep it off the innermost loops.
#pragma once

#include <cstdio>
#include <cstdlib>

namespace stem::core {
[[noreturn]] void check_failed(const char* file, int line, const char* cond, const char* fmt, ...)
    __attribute__((format(printf, 4, 5)));

// Called with the whole message ("stem: internal error at FILE:LINE: ...",
// then a backtrace) before the process aborts: a server logs it, a binding
// hands it to its host. The default writes it to stderr. The hook must not
// return to the failed code (it may throw only where the caller can take it;
// if it returns, the process aborts). Thread-safe to set; set it once at start.
using CheckFailureHook = void (*)(const char* message);
void set_check_failure_hook(CheckFailureHook hook);  // nullptr: the default
}  // namespace stem::core

#define STEM_CHECK(cond)                                                   \
  do {                                                                     \
    if (__builtin_expect(!(cond), 0))                                      \
      ::stem::core::check_failed(__FILE__, __LINE__, #cond, nullptr);      \
  } while (0)

// STEM_CHECKF(n > 0, "n=%d", n): the same with a printf-style message.
#define STEM_CHECKF(cond, ...)                                             \
  do {                                                                     \
    if (__builtin_expect(!(cond), 0))                                      \
      ::stem::core::check_failed(__FILE__, __LINE__, #cond, __VA_ARGS__);  \
  } while (0)
