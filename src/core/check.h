// STEM_CHECK: the one always-on invariant check. A failure is a bug in stem, not
// bad input (bad input returns a Status): it prints file:line and the message,
// then aborts. Never compiled out, so keep it off the innermost loops.
#pragma once

#include <cstdio>
#include <cstdlib>

namespace stem::core {
[[noreturn]] void check_failed(const char* file, int line, const char* cond, const char* fmt, ...)
    __attribute__((format(printf, 4, 5)));
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
