// Status and Result: how every fallible operation in stem reports failure.
// A message starts with where it happened ("safetensors: model.safetensors: ...")
// and carries the offending values. Broken invariants are not Statuses: they
// abort through STEM_CHECK (src/core/check.h).
#pragma once

#include <cstdlib>
#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace stem {

class [[nodiscard]] Status {
 public:
  Status() = default;
  static Status error(std::string message) { return Status(std::move(message)); }

  bool ok() const { return !message_.has_value(); }
  explicit operator bool() const { return ok(); }
  const std::string& message() const {
    static const std::string kOk = "ok";
    return message_ ? *message_ : kOk;
  }
  // Prefixes the message with an outer context: "config.json: " + inner.
  Status with_context(const std::string& where) const {
    return ok() ? *this : Status(where + ": " + *message_);
  }

 private:
  explicit Status(std::string m) : message_(std::move(m)) {}
  std::optional<std::string> message_;
};

inline Status ok_status() { return Status(); }

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}           // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {      // NOLINT
    if (std::get<Status>(v_).ok()) std::abort();       // a Result error must be an error
  }
  bool ok() const { return std::holds_alternative<T>(v_); }
  explicit operator bool() const { return ok(); }
  Status status() const { return ok() ? Status() : std::get<Status>(v_); }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  std::variant<T, Status> v_;
};

// A broken invariant inside stem (a bug, not bad input) ends the process
// after handing its message and a backtrace to this hook (stderr when none is
// set): a server can log it before it dies. Set it once, at start.
void set_internal_error_hook(void (*hook)(const char* message));

}  // namespace stem

// Returns early from a function returning Status or Result<T> when `expr` fails.
#define STEM_RETURN_IF_ERROR(expr)                 \
  do {                                             \
    ::stem::Status stem_status_ = (expr);          \
    if (!stem_status_.ok()) return stem_status_;   \
  } while (0)

#define STEM_CONCAT_INNER_(a, b) a##b
#define STEM_CONCAT_(a, b) STEM_CONCAT_INNER_(a, b)
// `STEM_ASSIGN_OR_RETURN(auto x, make_x());` unwraps a Result or returns its error.
#define STEM_ASSIGN_OR_RETURN(lhs, rexpr) \
  STEM_ASSIGN_OR_RETURN_IMPL_(STEM_CONCAT_(stem_result_, __LINE__), lhs, rexpr)
#define STEM_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, rexpr) \
  auto tmp = (rexpr);                                \
  if (!tmp.ok()) return tmp.status();                \
  lhs = std::move(tmp).value()
