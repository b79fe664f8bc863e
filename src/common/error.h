// Errors raised by the plain C++ core. Each carries a stable code and a kind so the binding can
// turn it into the matching JS error class (TypeError / RangeError / Error) without parsing text.
#pragma once

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

namespace tdpo {

enum class ErrorKind { Type, Range, Generic };

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, std::string code, const std::string& message)
      : std::runtime_error(message), kind_(kind), code_(std::move(code)) {}
  ErrorKind kind() const { return kind_; }
  const std::string& code() const { return code_; }

 private:
  ErrorKind kind_;
  std::string code_;
};

// A number as JS prints it in a message: NaN, Infinity, -Infinity, else the shortest exact form.
inline std::string js_number(double x) {
  if (std::isnan(x)) return "NaN";
  if (std::isinf(x)) return x > 0 ? "Infinity" : "-Infinity";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", x);
  for (int p = 1; p <= 17; ++p) {  // the shortest form that reads back as x
    char s[32];
    std::snprintf(s, sizeof s, "%.*g", p, x);
    if (std::strtod(s, nullptr) == x) return s;
  }
  return buf;
}

inline Error type_error(std::string code, const std::string& message) {
  return Error(ErrorKind::Type, std::move(code), message);
}
inline Error range_error(std::string code, const std::string& message) {
  return Error(ErrorKind::Range, std::move(code), message);
}

}  // namespace tdpo
