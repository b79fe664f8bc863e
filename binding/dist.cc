// NativeProcessGroup: src/dist's Group for JS. Everything that can block (the rendezvous, a
// collective, a store wait) runs on a worker, so a slow or dead peer never holds the event loop.
#include "binding/dist.h"

#include "binding/async.h"
#include "binding/convert.h"
#include "binding/model.h"

namespace tdpo::binding {
namespace {

using GroupPtr = std::shared_ptr<dist::Group>;

std::string string_arg(const Napi::Value& v, const std::string& name) {
  if (!v.IsString()) throw type_error("ERR_TDPO_TYPE", name + " must be a string, got " + describe(v));
  return v.As<Napi::String>().Utf8Value();
}

class NativeProcessGroup : public Napi::ObjectWrap<NativeProcessGroup> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeProcessGroup",
                       {InstanceMethod<&NativeProcessGroup::Allreduce>("allreduce"),
                        InstanceMethod<&NativeProcessGroup::BroadcastModel>("broadcastModel"),
                        InstanceMethod<&NativeProcessGroup::Send>("send"),
                        InstanceMethod<&NativeProcessGroup::Recv>("recv"),
                        InstanceMethod<&NativeProcessGroup::Abort>("abort"),
                        InstanceMethod<&NativeProcessGroup::Close>("close"),
                        InstanceMethod<&NativeProcessGroup::Stats>("stats")});
  }
  explicit NativeProcessGroup(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeProcessGroup>(info) {
    if (info.Length() != 1 || !info[0].IsExternal())
      throw Napi::TypeError::New(info.Env(), "NativeProcessGroup is created by createProcessGroup");
    group_ = *info[0].As<Napi::External<GroupPtr>>().Data();
  }
  static Napi::Object Wrap(Napi::Env env, GroupPtr g) {
    auto ext = Napi::External<GroupPtr>::New(env, new GroupPtr(std::move(g)), [](Napi::Env, GroupPtr* p) { delete p; });
    return env.GetInstanceData<InstanceData>()->group_class.New({ext});
  }
  GroupPtr group() const { return group_; }

 private:
  GroupPtr live(Napi::Env env) const {
    if (!group_) throw Error(ErrorKind::Generic, "ERR_TDPO_DISTRIBUTED", "the process group was closed");
    return group_;
  }

  // allreduce(values: Float64Array, op: 'sum' | 'max') -> Promise<Float64Array> (a new array)
  Napi::Value Allreduce(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return promise_call(env, [&]() -> Napi::Value {
      GroupPtr g = live(env);
      const std::string op = string_arg(info[1], "op");
      if (op != "sum" && op != "max") throw range_error("ERR_TDPO_OPTION", "op must be 'sum' or 'max', got '" + op + "'");
      ArrayView<double> in = typed_array_view<double>(info[0], "values");
      // Copied now: the JS array may change while the worker runs.
      auto t = std::make_shared<at::Tensor>(at::empty({int64_t(in.length)}, at::kDouble));
      std::copy(in.data, in.data + in.length, t->data_ptr<double>());
      const dist::Op dop = op == "sum" ? dist::Op::Sum : dist::Op::Max;
      return TaskWorker::Run(
          env, "tdpo:allreduce",
          [g, t, dop] {
            std::vector<at::Tensor> v{*t};
            g->allreduce(v, dop);
          },
          [t](Napi::Env env) -> Napi::Value { return tensor_to_typed_array(env, *t); });
    });
  }

  // broadcastModel(model, root) -> Promise<void>: every rank gets root's parameters.
  Napi::Value BroadcastModel(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return promise_call(env, [&]() -> Napi::Value {
      GroupPtr g = live(env);
      StatePtr m = unwrap_model(info[0], "model");
      const int root = info[1].IsNumber() ? info[1].As<Napi::Number>().Int32Value() : 0;
      return TaskWorker::Run(
          env, "tdpo:broadcastModel",
          [g, m, root] {
            std::lock_guard<std::mutex> lock(m->mu);
            std::vector<at::Tensor> params = m->model->params();
            g->broadcast(params, root);
          },
          [](Napi::Env env) -> Napi::Value { return env.Undefined(); });
    });
  }

  Napi::Value Send(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return promise_call(env, [&]() -> Napi::Value {
      GroupPtr g = live(env);
      const std::string key = string_arg(info[0], "key"), value = string_arg(info[1], "value");
      return TaskWorker::Run(
          env, "tdpo:send", [g, key, value] { g->send(key, value); },
          [](Napi::Env env) -> Napi::Value { return env.Undefined(); });
    });
  }

  // recv(key, timeoutMs) -> Promise<string>
  Napi::Value Recv(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return promise_call(env, [&]() -> Napi::Value {
      GroupPtr g = live(env);
      const std::string key = string_arg(info[0], "key");
      const double ms = info[1].IsNumber() ? info[1].As<Napi::Number>().DoubleValue() : NAN;
      if (!(ms >= 1 && ms < 9e15)) throw range_error("ERR_TDPO_OPTION", "timeoutMs must be a number >= 1, got " + describe(info[1]));
      auto out = std::make_shared<std::string>();
      return TaskWorker::Run(
          env, "tdpo:recv", [g, key, ms, out] { *out = g->recv(key, static_cast<int64_t>(ms)); },
          [out](Napi::Env env) -> Napi::Value { return Napi::String::New(env, *out); });
    });
  }

  // abort(message) -> Promise<void>; never rejects.
  Napi::Value Abort(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return promise_call(env, [&]() -> Napi::Value {
      GroupPtr g = group_;
      const std::string message = info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "a rank failed";
      return TaskWorker::Run(
          env, "tdpo:abort", [g, message] { if (g) g->abort(message); },
          [](Napi::Env env) -> Napi::Value { return env.Undefined(); });
    });
  }

  // close() -> Promise<void>: leaves the group (its sockets close); idempotent.
  Napi::Value Close(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    GroupPtr g = std::move(group_);
    return promise_call(env, [&]() -> Napi::Value {
      return TaskWorker::Run(
          env, "tdpo:closeGroup", [g] { if (g) g->close(); },
          [](Napi::Env env) -> Napi::Value { return env.Undefined(); });
    });
  }

  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const dist::CommStats s = group_ ? group_->stats() : dist::CommStats{};
    Napi::Object o = Napi::Object::New(env);
    o.Set("calls", double(s.calls));
    o.Set("bytes", double(s.bytes));
    o.Set("ms", s.ms);
    return o;
  }

  GroupPtr group_;
};

// createProcessGroup({ rank, worldSize, masterAddr, masterPort, timeoutMs, cudaDevice? }) -> Promise<NativeProcessGroup>
Napi::Value CreateProcessGroup(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return promise_call(env, [&]() -> Napi::Value {
    Napi::Object o = object_arg(info[0], "distributed");
    dist::GroupOptions go;
    go.rank = int32_field(o, "rank", "distributed", 0);
    go.world_size = int32_field(o, "worldSize", "distributed", 1);
    go.master_addr = string_field(o, "masterAddr", "distributed");
    go.master_port = int32_field(o, "masterPort", "distributed", 0);
    go.timeout_ms = int_field(o, "timeoutMs", "distributed", 1);
    if (o.Has("cudaDevice") && !o.Get("cudaDevice").IsUndefined()) go.cuda_device = int32_field(o, "cudaDevice", "distributed", 0);
    dist::validate(go);
    auto out = std::make_shared<GroupPtr>();
    return TaskWorker::Run(
        env, "tdpo:createProcessGroup", [go, out] { *out = std::make_shared<dist::Group>(go); },
        [out](Napi::Env env) -> Napi::Value { return NativeProcessGroup::Wrap(env, *out); });
  });
}

}  // namespace

GroupPtr unwrap_group(Napi::Value value, const std::string& name) {
  auto* data = value.Env().GetInstanceData<InstanceData>();
  if (!value.IsObject() || !value.As<Napi::Object>().InstanceOf(data->group_class.Value()))
    throw type_error("ERR_TDPO_TYPE", name + " must be a process group");
  GroupPtr g = NativeProcessGroup::Unwrap(value.As<Napi::Object>())->group();
  if (!g) throw Error(ErrorKind::Generic, "ERR_TDPO_DISTRIBUTED", name + " was closed");
  return g;
}

void InitDist(Napi::Env env, Napi::Object exports) {
  env.GetInstanceData<InstanceData>()->group_class = Napi::Persistent(NativeProcessGroup::Define(env));
  exports.Set("createProcessGroup", Napi::Function::New(env, CreateProcessGroup, "createProcessGroup"));
}

}  // namespace tdpo::binding
