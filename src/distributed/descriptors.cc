#include "distributed/descriptors.h"

#include <dirent.h>
#include <sys/resource.h>

#include <cstdint>
#include <string>

#include "common/error.h"

namespace tdpo::dist {
namespace {

constexpr int64_t kMargin = 12;

// Descriptors this process has open, or -1 where /proc/self/fd cannot be read.
int64_t open_descriptors() {
  DIR* d = opendir("/proc/self/fd");
  if (d == nullptr) return -1;
  int64_t n = 0;
  while (const dirent* e = readdir(d)) {
    if (e->d_name[0] != '.') ++n;
  }
  closedir(d);
  return n - 1;  // the directory stream's own
}

}  // namespace

void check_descriptor_headroom(int rank, int world_size, bool hosts_store) {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return;
  const int64_t open = open_descriptors();
  if (open < 0) return;
  const int64_t peers = world_size - 1;
  const int64_t need = open + (hosts_store ? 3 : 1) * peers + kMargin;
  const auto most = static_cast<int64_t>(limit.rlim_cur);
  if (need <= most) return;
  throw Error(ErrorKind::Generic, "ERR_TDPO_DISTRIBUTED",
              "rank " + std::to_string(rank) + ": too few file descriptors for a world of " + std::to_string(world_size) +
                  ": " + std::to_string(open) + " are open, its " + std::to_string(peers) + " peers' connections and training need about " +
                  std::to_string(need - open) + " more, and the limit (ulimit -n) is " + std::to_string(most) +
                  ": raise it to at least " + std::to_string(need) + " or run fewer processes");
}

}  // namespace tdpo::dist
