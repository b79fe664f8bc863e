#pragma once

#include <chrono>
#include <string>

namespace tdpo::dist {

// Whether something accepts TCP connections on host:port before `deadline`, trying again every
// 10-200 ms. A rank that joins the rendezvous as a client asks this before c10d's TCPStore client
// connects: libtorch 2.x's client retries a whole connect after a failed one, so a master that
// never comes was reported at about twice the timeout (53 s for 30 s, torch 2.13), with a
// backtrace logged at each try.
bool accepts_before(const std::string& host, int port, std::chrono::steady_clock::time_point deadline);

}  // namespace tdpo::dist
