#pragma once

#include <napi.h>

#include <memory>
#include <string>

#include "distributed/group.h"

namespace tdpo::binding {

// The group behind a NativeProcessGroup passed from JS (throws ERR_TDPO_TYPE / ERR_TDPO_DISTRIBUTED
// when closed).
std::shared_ptr<dist::Group> unwrap_group(Napi::Value value, const std::string& name);

// Registers createProcessGroup and the NativeProcessGroup class on exports.
void InitDist(Napi::Env env, Napi::Object exports);

}  // namespace tdpo::binding
