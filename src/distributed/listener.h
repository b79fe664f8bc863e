#pragma once

#include <chrono>
#include <string>

namespace tdpo::dist {

enum class Listener {
  accepts,      // a connection is accepted, and nothing is sent on it unasked, as a c10d store does
  speaks_first, // the peer sent bytes (or closed) unasked: not a c10d store
  absent,       // nothing accepted a connection before the deadline
};

// What listens on host:port, trying to connect every 10-200 ms until `deadline`, then listening
// for `quiet` on the connection. A rank that joins the rendezvous as a client asks this before
// c10d's TCPStore client connects: libtorch 2.x's client retries a whole connect after a failed
// one, so a master that never comes was reported at about twice the timeout (53 s for 30 s, torch
// 2.13), with a backtrace logged at each try; and a server that sends bytes unasked made c10d's
// client thread throw where nothing catches it (std::terminate: the process aborted).
Listener probe_listener(const std::string& host, int port, std::chrono::steady_clock::time_point deadline,
                        std::chrono::milliseconds quiet);

}  // namespace tdpo::dist
