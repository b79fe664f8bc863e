// The one place where C++ failures become JS errors. Every error thrown to JS carries a `code`:
// tdpo::Error keeps its own code and class (TypeError / RangeError); libtorch's c10::Error becomes
// ERR_TDPO_NATIVE, an allocation failure (libtorch's OutOfMemoryError, std::bad_alloc)
// ERR_TDPO_OUT_OF_MEMORY. Errors are captured as plain data (ErrorInfo) so an async worker can
// carry them from its thread to the JS thread.
#pragma once

#include <napi.h>

#include <c10/util/Exception.h>

#include <exception>
#include <new>
#include <string>

#include "common/error.h"

namespace tdpo::binding {

struct ErrorInfo {
  ErrorKind kind = ErrorKind::Generic;
  std::string code, message;
};

inline ErrorInfo capture(std::exception_ptr ep) {
  try {
    std::rethrow_exception(ep);
  } catch (const Error& e) {
    return {e.kind(), e.code(), e.what()};
  } catch (const c10::OutOfMemoryError& e) {
    // libtorch's allocators (CUDA's caching allocator) running out: the same code as a failed host
    // allocation, with libtorch's message, which names the device and the sizes.
    return {ErrorKind::Generic, "ERR_TDPO_OUT_OF_MEMORY", std::string("libtorch: ") + e.what_without_backtrace()};
  } catch (const c10::Error& e) {
    return {ErrorKind::Generic, "ERR_TDPO_NATIVE", std::string("libtorch: ") + e.what_without_backtrace()};
  } catch (const std::bad_alloc&) {
    return {ErrorKind::Generic, "ERR_TDPO_OUT_OF_MEMORY", "out of memory"};
  } catch (const std::exception& e) {
    return {ErrorKind::Generic, "ERR_TDPO_NATIVE", e.what()};
  } catch (...) {
    return {ErrorKind::Generic, "ERR_TDPO_NATIVE", "unknown native error"};
  }
}

inline Napi::Error to_js(Napi::Env env, const ErrorInfo& info) {
  Napi::Error err = info.kind == ErrorKind::Type    ? Napi::TypeError::New(env, info.message)
                    : info.kind == ErrorKind::Range ? Napi::RangeError::New(env, info.message)
                                                    : Napi::Error::New(env, info.message);
  err.Set("code", Napi::String::New(env, info.code));
  return err;
}

// Runs fn on the JS thread and rethrows any C++ exception as a coded JS error.
template <typename Fn>
auto guarded(Napi::Env env, Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const Napi::Error&) {
    throw;
  } catch (...) {
    throw to_js(env, capture(std::current_exception()));
  }
}

}  // namespace tdpo::binding
