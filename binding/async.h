// A promise-returning async worker: `work` runs on a libuv thread, `done` converts its result on
// the JS thread; any C++ exception in either becomes a coded JS rejection (errors.h).
#pragma once

#include <napi.h>

#include <functional>

#include "binding/errors.h"

namespace tdpo::binding {

class TaskWorker : public Napi::AsyncWorker {
 public:
  using Work = std::function<void()>;
  using Done = std::function<Napi::Value(Napi::Env)>;

  // Queues the work and returns its promise.
  static Napi::Promise Run(Napi::Env env, const char* name, Work work, Done done) {
    auto* w = new TaskWorker(env, name, std::move(work), std::move(done));
    Napi::Promise promise = w->deferred_.Promise();
    w->Queue();
    return promise;
  }

 protected:
  void Execute() override {
    try {
      work_();
    } catch (...) {
      error_ = capture(std::current_exception());
      SetError(error_.message);
    }
  }
  // Settling can fail when the environment is being torn down (a worker thread terminated while
  // this call ran): then nobody can observe the promise, and an exception escaping here would
  // abort the whole process. So nothing escapes.
  void OnOK() override {
    Napi::Env env = Env();
    try {
      deferred_.Resolve(done_(env));
    } catch (const Napi::Error& e) {
      reject([&] { return e.Value(); });
    } catch (...) {
      const ErrorInfo info = capture(std::current_exception());
      reject([&] { return to_js(env, info).Value(); });
    }
  }
  void OnError(const Napi::Error&) override {
    reject([&] { return to_js(Env(), error_).Value(); });
  }

 private:
  TaskWorker(Napi::Env env, const char* name, Work work, Done done)
      : Napi::AsyncWorker(env, name), deferred_(env), work_(std::move(work)), done_(std::move(done)) {}

  template <typename MakeError>
  void reject(MakeError make) noexcept {
    try {
      deferred_.Reject(make());
    } catch (...) {
    }
  }

  Napi::Promise::Deferred deferred_;
  Work work_;
  Done done_;
  ErrorInfo error_;
};

// Runs `start` (argument parsing, then TaskWorker::Run) and turns a synchronous failure into a
// rejected promise, so promise-returning functions never also throw.
template <typename Fn>
Napi::Value promise_call(Napi::Env env, Fn&& start) {
  auto rejected = Napi::Promise::Deferred::New(env);
  try {
    return start();
  } catch (const Napi::Error& e) {
    rejected.Reject(e.Value());
  } catch (...) {
    rejected.Reject(to_js(env, capture(std::current_exception())).Value());
  }
  return rejected.Promise();
}

}  // namespace tdpo::binding
