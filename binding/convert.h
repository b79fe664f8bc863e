// Reading JS values into C++ (with errors that name the field) and handing tensors back to JS
// without copies.
#pragma once

#include <napi.h>

#include <ATen/ATen.h>

#include <cmath>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/error.h"

namespace tdpo::binding {

// A JS value for an error message, without running the caller's code (no toString on objects);
// numbers as JS prints them (NaN, Infinity, 1e+300).
inline std::string describe(Napi::Value v) {
  if (v.IsNumber()) return js_number(v.As<Napi::Number>().DoubleValue());
  if (v.IsString()) return "'" + v.As<Napi::String>().Utf8Value() + "'";
  if (v.IsBoolean()) return v.As<Napi::Boolean>().Value() ? "true" : "false";
  if (v.IsUndefined()) return "undefined";
  if (v.IsNull()) return "null";
  if (v.IsArray()) return "an array";
  if (v.IsTypedArray()) return "a typed array";
  if (v.IsFunction()) return "a function";
  return "an object";
}

inline Napi::Object object_arg(Napi::Value v, const std::string& name, bool optional = false) {
  if (optional && (v.IsUndefined() || v.IsNull())) return Napi::Object::New(v.Env());
  if (!v.IsObject() || v.IsArray() || v.IsTypedArray())
    throw type_error("ERR_TDPO_TYPE", name + " must be an object");
  return v.As<Napi::Object>();
}

template <typename T>
struct TypedArrayTraits;
template <>
struct TypedArrayTraits<float> {
  static constexpr napi_typedarray_type type = napi_float32_array;
  static constexpr const char* name = "Float32Array";
};
template <>
struct TypedArrayTraits<double> {
  static constexpr napi_typedarray_type type = napi_float64_array;
  static constexpr const char* name = "Float64Array";
};
template <>
struct TypedArrayTraits<int32_t> {
  static constexpr napi_typedarray_type type = napi_int32_array;
  static constexpr const char* name = "Int32Array";
};

// A typed array read in place. `keep` pins the JS object while a worker thread reads the memory.
template <typename T>
struct ArrayView {
  const T* data = nullptr;
  size_t length = 0;
  Napi::ObjectReference keep;
};

// Takes a typed array's pointer and length. Runs no JS, so a caller that has read every property
// it needs (getters can run arbitrary code) can take all pointers last and know they hold.
template <typename T>
ArrayView<T> typed_array_view(Napi::Value v, const std::string& name) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != TypedArrayTraits<T>::type) {
    throw type_error("ERR_TDPO_TYPE", name + " must be a " + TypedArrayTraits<T>::name);
  }
  auto arr = v.As<Napi::TypedArrayOf<T>>();
  ArrayView<T> view;
  view.data = arr.Data();
  view.length = arr.ElementLength();
  view.keep = Napi::Persistent(v.As<Napi::Object>());
  return view;
}

template <typename T>
ArrayView<T> typed_array_field(Napi::Object obj, const char* key, const std::string& path) {
  return typed_array_view<T>(obj.Get(key), path + "." + key);
}

inline std::vector<int64_t> shape_value(Napi::Value v, const std::string& name, size_t rank) {
  if (!v.IsArray() || v.As<Napi::Array>().Length() != rank) {
    throw type_error("ERR_TDPO_SHAPE",
                     name + " must be an array of " + std::to_string(rank) + " integers");
  }
  std::vector<int64_t> shape;
  auto arr = v.As<Napi::Array>();
  for (uint32_t i = 0; i < rank; ++i) {
    Napi::Value d = arr.Get(i);
    const double x = d.IsNumber() ? d.As<Napi::Number>().DoubleValue() : NAN;
    if (!(x >= 1 && x <= 2147483647.0 && std::floor(x) == x)) {
      throw range_error("ERR_TDPO_SHAPE", name + "[" + std::to_string(i) +
                                              "] must be an integer in [1, 2^31), got " +
                                              describe(d));
    }
    shape.push_back(static_cast<int64_t>(x));
  }
  return shape;
}

inline std::vector<int64_t> shape_field(Napi::Object obj, const char* key, const std::string& path,
                                        size_t rank) {
  return shape_value(obj.Get(key), path + "." + key, rank);
}

inline std::string shape_text(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

inline void expect_length(size_t actual, int64_t expected, const std::string& name,
                          const std::string& shape_text) {
  if (static_cast<int64_t>(actual) != expected) {
    throw range_error("ERR_TDPO_SHAPE", name + " has " + std::to_string(actual) +
                                            " elements but shape " + shape_text + " needs " +
                                            std::to_string(expected));
  }
}

// Option readers. The binding carries no defaults (lib/options.ts resolves them): every field
// it reads must be present, and a missing one is a TypeError naming it.
inline Napi::Value required(Napi::Object obj, const char* key, const std::string& path, const char* what) {
  Napi::Value v = obj.Get(key);
  if (v.IsUndefined()) throw type_error("ERR_TDPO_OPTION", path + "." + key + " is missing (" + what + ")");
  return v;
}

inline double number_field(Napi::Object obj, const char* key, const std::string& path) {
  Napi::Value v = required(obj, key, path, "a number");
  if (!v.IsNumber()) throw type_error("ERR_TDPO_OPTION", path + "." + key + " must be a number, got " + describe(v));
  return v.As<Napi::Number>().DoubleValue();
}

inline bool bool_field(Napi::Object obj, const char* key, const std::string& path) {
  Napi::Value v = required(obj, key, path, "a boolean");
  if (!v.IsBoolean()) throw type_error("ERR_TDPO_OPTION", path + "." + key + " must be a boolean, got " + describe(v));
  return v.As<Napi::Boolean>().Value();
}

inline std::string string_field(Napi::Object obj, const char* key, const std::string& path) {
  Napi::Value v = required(obj, key, path, "a string");
  if (!v.IsString()) throw type_error("ERR_TDPO_OPTION", path + "." + key + " must be a string, got " + describe(v));
  return v.As<Napi::String>().Utf8Value();
}

// An integer-valued number in [lo, 2^53): counts, ids, seeds.
inline int64_t int_field(Napi::Object obj, const char* key, const std::string& path, int64_t lo) {
  const double x = number_field(obj, key, path);
  if (!(std::floor(x) == x && x >= double(lo) && x < 9007199254740992.0))
    throw range_error("ERR_TDPO_OPTION", path + "." + key + " must be an integer >= " + std::to_string(lo) + ", got " + js_number(x));
  return static_cast<int64_t>(x);
}

// int_field for a C int: 2^32 + 1 must not wrap to 1.
inline int int32_field(Napi::Object obj, const char* key, const std::string& path, int64_t lo) {
  const int64_t x = int_field(obj, key, path, lo);
  if (x > INT32_MAX) throw range_error("ERR_TDPO_OPTION", path + "." + key + " must be an integer < 2^31, got " + std::to_string(x));
  return static_cast<int>(x);
}

// A typed array of T (Float32Array / Float64Array) holding a copy of values.
template <typename T>
Napi::TypedArrayOf<T> typed_copy(Napi::Env env, const std::vector<double>& values) {
  auto out = Napi::TypedArrayOf<T>::New(env, values.size());
  for (size_t i = 0; i < values.size(); ++i) out[i] = static_cast<T>(values[i]);
  return out;
}

// Memory that tdpo handed to JS (tensor_to_typed_array), by base address. An async call that
// reads such an array in place takes a share of its tensor, so the memory outlives the call even
// if JS transfers the buffer away and the garbage collector drops every array over it.
class OwnedBuffers {
 public:
  static void add(const void* base, const std::shared_ptr<at::Tensor>& t) {
    std::lock_guard<std::mutex> lock(mu());
    map()[base] = t;
  }
  static void remove(const void* base) {
    std::lock_guard<std::mutex> lock(mu());
    map().erase(base);
  }
  static std::shared_ptr<at::Tensor> find(const void* base) {
    std::lock_guard<std::mutex> lock(mu());
    auto it = map().find(base);
    return it == map().end() ? nullptr : it->second.lock();
  }

 private:
  static std::mutex& mu() {
    static std::mutex m;
    return m;
  }
  static std::unordered_map<const void*, std::weak_ptr<at::Tensor>>& map() {
    static auto* m = new std::unordered_map<const void*, std::weak_ptr<at::Tensor>>();  // never destroyed: finalizers may run at exit
    return *m;
  }
};

// Hands a contiguous CPU tensor to JS as a typed array over the tensor's own memory: no copy, and
// the tensor lives until the garbage collector drops the array. V8 is told about the bytes so it
// schedules collections as if it had allocated them itself.
inline Napi::TypedArray tensor_to_typed_array(Napi::Env env, at::Tensor tensor) {
  if (tensor.scalar_type() != at::kFloat && tensor.scalar_type() != at::kDouble) {
    throw Error(ErrorKind::Generic, "ERR_TDPO_NATIVE",
                std::string("no typed array for dtype ") + at::toString(tensor.scalar_type()));
  }
  tensor = tensor.contiguous();
  if (tensor.device().type() != at::kCPU) tensor = tensor.cpu();
  if (tensor.numel() == 0) {
    // No memory to share (and an empty tensor's data pointer may be null or shared).
    return tensor.scalar_type() == at::kFloat ? Napi::TypedArray(Napi::Float32Array::New(env, 0))
                                              : Napi::TypedArray(Napi::Float64Array::New(env, 0));
  }
  const int64_t bytes = tensor.numel() * tensor.element_size();
  auto* holder = new std::shared_ptr<at::Tensor>(std::make_shared<at::Tensor>(tensor));
  OwnedBuffers::add(tensor.data_ptr(), *holder);
  auto buffer = Napi::ArrayBuffer::New(
      env, tensor.data_ptr(), bytes,
      [](Napi::Env env, void* data, std::shared_ptr<at::Tensor>* t) {
        Napi::MemoryManagement::AdjustExternalMemory(env, -((*t)->numel() * (*t)->element_size()));
        OwnedBuffers::remove(data);
        delete t;
      },
      holder);
  Napi::MemoryManagement::AdjustExternalMemory(env, bytes);
  if (tensor.scalar_type() == at::kFloat)
    return Napi::Float32Array::New(env, tensor.numel(), buffer, 0);
  return Napi::Float64Array::New(env, tensor.numel(), buffer, 0);
}

}  // namespace tdpo::binding
