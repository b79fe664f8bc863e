// Process-wide libtorch settings the addon exposes: intra-op threads and build information.
#pragma once

#include <string>

namespace tdpo::runtime {

// libtorch may start with one intra-op thread (Debian's build does); we default to every core.
void set_num_threads(int n);  // throws ERR_TDPO_OPTION for n < 1
int get_num_threads();
int default_num_threads();

std::string torch_version();  // e.g. "1.13.0"
bool cuda_available();

}  // namespace tdpo::runtime
