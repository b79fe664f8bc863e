#include "distributed/listener.h"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <thread>

namespace tdpo::dist {
namespace {

using Clock = std::chrono::steady_clock;

// One non-blocking connect to `a`, waiting at most `wait`; the open socket, or -1.
int connect_to(const addrinfo* a, std::chrono::milliseconds wait) {
  const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
  if (fd < 0) return -1;
  bool ok = ::connect(fd, a->ai_addr, a->ai_addrlen) == 0;
  if (!ok && errno == EINPROGRESS) {
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, static_cast<int>(wait.count())) == 1) {
      int err = 0;
      socklen_t len = sizeof err;
      ok = ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0;
    }
  }
  if (ok) return fd;
  ::close(fd);
  return -1;
}

// Whether the peer sends anything (or closes) within `quiet`, unasked.
bool speaks_unasked(int fd, std::chrono::milliseconds quiet) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, static_cast<int>(quiet.count())) == 1;
}

}  // namespace

Listener probe_listener(const std::string& host, int port, Clock::time_point deadline, std::chrono::milliseconds quiet) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  const std::string service = std::to_string(port);
  auto pause = std::chrono::milliseconds(10);
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    addrinfo* found = nullptr;
    // An unresolvable name is tried again too: a master's DNS record may come up with it.
    if (::getaddrinfo(host.c_str(), service.c_str(), &hints, &found) == 0) {
      int fd = -1;
      for (const addrinfo* a = found; a && fd < 0; a = a->ai_next)
        fd = connect_to(a, std::clamp(left, std::chrono::milliseconds(1), std::chrono::milliseconds(1000)));
      ::freeaddrinfo(found);
      if (fd >= 0) {
        const bool speaks = speaks_unasked(fd, quiet);
        ::close(fd);
        return speaks ? Listener::speaks_first : Listener::accepts;
      }
    }
    const auto now = Clock::now();
    if (now >= deadline) return Listener::absent;
    std::this_thread::sleep_for(std::min<Clock::duration>(pause, deadline - now));
    pause = std::min(pause * 2, std::chrono::milliseconds(200));
  }
}

}  // namespace tdpo::dist
