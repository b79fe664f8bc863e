// Errors raised by the plain C++ core. Each carries a stable code and a kind so the binding can
// turn it into the matching JS error class (TypeError / RangeError / Error) without parsing text.
#pragma once

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

inline Error type_error(std::string code, const std::string& message) {
  return Error(ErrorKind::Type, std::move(code), message);
}
inline Error range_error(std::string code, const std::string& message) {
  return Error(ErrorKind::Range, std::move(code), message);
}

}  // namespace tdpo
