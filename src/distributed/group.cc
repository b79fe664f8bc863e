#include "distributed/group.h"

#include <chrono>
#include <cmath>
#include <functional>
#include <future>
#include <memory>
#include <thread>

#include "common/error.h"
#include "distributed/descriptors.h"
#include "distributed/listener.h"

#if defined(TDPO_GLOO) || defined(TDPO_NCCL)
#define TDPO_DISTRIBUTED 1
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <cstdlib>
#include <type_traits>
#endif
#ifdef TDPO_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#ifdef TDPO_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace tdpo::dist {
namespace {

using Clock = std::chrono::steady_clock;
constexpr const char* kAbortKey = "tdpo/abort";

// A native failure's message without libtorch's backtrace (everything after the first line that
// starts "Exception raised from").
std::string message_of(std::exception_ptr ep) {
  std::string m;
  try {
    std::rethrow_exception(ep);
  } catch (const Error& e) {
    return e.what();
  } catch (const c10::Error& e) {
    m = e.what_without_backtrace();
  } catch (const std::exception& e) {
    m = e.what();
  } catch (...) {
    m = "unknown error";
  }
  const size_t cut = m.find("\nException raised from");
  if (cut != std::string::npos) m.resize(cut);
  while (!m.empty() && (m.back() == '\n' || m.back() == ' ')) m.pop_back();
  return m;
}

// libtorch >= 2.4 makes its stores on libuv unless told otherwise, and a build without libuv
// (Debian 13's 2.6) refuses that outright ("use_libuv was requested but PyTorch was build without
// libuv support"): there the store is made again on the older server. Older libtorch has no flag.
template <typename O>
auto without_libuv(O& o, int) -> decltype(o.useLibUV = false, bool()) {
  if (!o.useLibUV) return false;
  o.useLibUV = false;
  return true;
}
template <typename O>
bool without_libuv(O&, long) {
  return false;
}

template <typename PG>
auto shutdown_if_it_can(PG& pg, int) -> decltype(pg.shutdown(), void()) {
  pg.shutdown();
}
template <typename PG>
void shutdown_if_it_can(PG&, long) {}

Error distributed_error(const std::string& message) {
  return Error(ErrorKind::Generic, "ERR_TDPO_DISTRIBUTED", message);
}

std::vector<uint8_t> bytes_of(const std::string& s) { return std::vector<uint8_t>(s.begin(), s.end()); }
std::string string_of(const std::vector<uint8_t>& v) { return std::string(v.begin(), v.end()); }

bool is_loopback(const std::string& host) {
  return host == "localhost" || host.rfind("127.", 0) == 0 || host == "::1";
}

#ifdef TDPO_DISTRIBUTED
// A store client, made and asked a first question on a thread of its own, given until the
// deadline: a server on MASTER_PORT that accepts and never answers (an HTTP server, which waits
// for a request line) held this rank past any timeout, in c10d 1.13's first request, which waits
// without a timeout, and in 2.13's constructor. A thread left waiting holds its store and socket
// until the process ends.
c10::intrusive_ptr<c10d::Store> store_within(const std::function<c10::intrusive_ptr<c10d::Store>()>& make,
                                             Clock::time_point deadline, const std::string& me, int64_t timeout_ms,
                                             const std::string& where) {
  auto made = std::make_shared<std::promise<c10::intrusive_ptr<c10d::Store>>>();
  std::future<c10::intrusive_ptr<c10d::Store>> answered = made->get_future();
  std::thread([make, made] {
    try {
      c10::intrusive_ptr<c10d::Store> store = make();
      store->check({"tdpo/hello"});
      made->set_value(store);
    } catch (...) {
      made->set_exception(std::current_exception());
    }
  }).detach();
  if (answered.wait_until(deadline) != std::future_status::ready) {
    throw distributed_error(me + ": cannot join the rendezvous at " + where + ": no answer to a store request within " +
                            std::to_string(timeout_ms) +
                            " ms (another service on MASTER_PORT, or rank 0 stopped?)");
  }
  return answered.get();
}

#endif

}  // namespace

void prepare_environment() {
#ifdef TDPO_NCCL
  // A failed NCCL collective must come back as an error, not take the process down: blocking wait
  // makes Work::wait throw at the timeout; with the watchdog's error handling, its debug dump on
  // a timeout and its heartbeat monitor off, nothing terminates the process on its own. libtorch
  // reads these when a process group is made, 2.x the TORCH_ names first, 1.13 the plain ones; a
  // user's own setting of either name wins, and 2.x's deprecation warning for the plain names is
  // not triggered by us.
  const bool v2 = std::is_base_of_v<c10d::Backend, c10d::ProcessGroupNCCL>;
  auto set = [v2](const char* name, const char* value) {
    const std::string modern = std::string("TORCH_") + name;
    if (std::getenv(name) || std::getenv(modern.c_str())) return;
    setenv(v2 ? modern.c_str() : name, value, 0);
  };
  set("NCCL_BLOCKING_WAIT", "1");
  set("NCCL_ASYNC_ERROR_HANDLING", "0");
  if (v2) {
    set("NCCL_DUMP_ON_TIMEOUT", "0");
    set("NCCL_ENABLE_MONITORING", "0");
  }
#endif
}

void validate(const GroupOptions& o) {
  auto bad = [](const std::string& field, const std::string& want, const std::string& got) {
    throw range_error("ERR_TDPO_OPTION", "distributed." + field + " must be " + want + ", got " + got);
  };
  if (o.world_size < 1) bad("worldSize", "an integer >= 1", std::to_string(o.world_size));
  if (o.rank < 0 || o.rank >= o.world_size)
    bad("rank", "an integer in [0, worldSize) = [0, " + std::to_string(o.world_size) + ")", std::to_string(o.rank));
  if (o.master_addr.empty()) bad("masterAddr", "a host name or address", "''");
  if (o.master_port < 1 || o.master_port > 65535) bad("masterPort", "an integer in [1, 65535]", std::to_string(o.master_port));
  if (o.timeout_ms < 1) bad("timeoutMs", "an integer >= 1", std::to_string(o.timeout_ms));
}

std::vector<std::string> backends() {
  std::vector<std::string> out;
#ifdef TDPO_GLOO
  out.push_back("gloo");
#endif
#ifdef TDPO_NCCL
  out.push_back("nccl");
#endif
  return out;
}

#ifdef TDPO_DISTRIBUTED
// The collectives' common base: c10d::Backend in libtorch 2.x (ProcessGroupGloo and ProcessGroupNCCL
// derive from it), c10d::ProcessGroup in 1.13. Both declare the same virtual allreduce/broadcast.
#ifdef TDPO_GLOO
using Collectives = std::conditional_t<std::is_base_of_v<c10d::Backend, c10d::ProcessGroupGloo>, c10d::Backend, c10d::ProcessGroup>;
#else
using Collectives = std::conditional_t<std::is_base_of_v<c10d::Backend, c10d::ProcessGroupNCCL>, c10d::Backend, c10d::ProcessGroup>;
#endif

// As torch.distributed's default "cpu:gloo,cuda:nccl": a bucket of CUDA tensors goes to NCCL when the
// build has it (else to Gloo, which stages CUDA tensors through the host), a bucket of CPU tensors
// to Gloo (else to NCCL, staged through options.cuda_device).
struct Group::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<Collectives> gloo;
  // Made at the first collective on CUDA tensors, which every rank reaches in the same order: a
  // CPU-only run on a CUDA build never starts NCCL's communicator or its watchdog thread.
  c10::intrusive_ptr<Collectives> nccl;

  // The backend for a bucket on `device`; called under the group's mutex.
  c10::intrusive_ptr<Collectives> for_device(const at::Device& device, const GroupOptions& o) {
#ifdef TDPO_NCCL
    if (device.is_cuda() || !gloo) {
      if (!nccl) {
        if (!device.is_cuda() && o.cuda_device < 0)
          throw distributed_error("rank " + std::to_string(o.rank) +
                                  ": this build's only distributed backend is NCCL, which works on CUDA tensors: train on a CUDA device");
        // (Blocking wait and the watchdog's settings: prepare_environment, at load.)
        auto no = c10d::ProcessGroupNCCL::Options::create();
        no->timeout = std::chrono::milliseconds(o.timeout_ms);
        auto prefixed = c10::make_intrusive<c10d::PrefixStore>("tdpo/nccl", store);
        nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(prefixed, o.rank, o.world_size, no);
      }
      return nccl;
    }
#endif
    return gloo;
  }
};
#else
struct Group::Impl {};
#endif

void Group::fail(const std::string& what, std::exception_ptr cause) const {
  throw distributed_error("rank " + std::to_string(options_.rank) + ": " + what + ": " + message_of(cause));
}

Group::Group(const GroupOptions& options)
    : options_(options), impl_(std::make_unique<Impl>()), start_(std::chrono::steady_clock::now()) {
  validate(options_);
#ifndef TDPO_DISTRIBUTED
  throw distributed_error("this build of tdpo has no distributed backend (it was compiled without Gloo's headers: install libgloo-dev and rebuild)");
#else
  const std::chrono::milliseconds timeout(options_.timeout_ms);
  const std::string where = options_.master_addr + ":" + std::to_string(options_.master_port);
  // Under torchrun the agent itself hosts the store on MASTER_PORT (TORCHELASTIC_USE_AGENT_STORE),
  // so rank 0 joins it as a client; the agent keeps it across restarts, so each attempt gets its
  // own keys (TORCHELASTIC_RESTART_COUNT).
  const char* agent = std::getenv("TORCHELASTIC_USE_AGENT_STORE");
  const bool agent_store = agent && std::string(agent) == "True";
  const bool host = options_.rank == 0 && !agent_store;
  const std::string me = "rank " + std::to_string(options_.rank);
  check_descriptor_headroom(options_.rank, options_.world_size, host);
  if (!host) {
    const Listener l = probe_listener(options_.master_addr, options_.master_port, start_ + timeout, std::chrono::milliseconds(100));
    if (l == Listener::absent)
      throw distributed_error(me + ": cannot join the rendezvous at " + where + ": nothing accepted a connection there within " +
                              std::to_string(options_.timeout_ms) + " ms (is rank 0 running, with the same MASTER_ADDR and MASTER_PORT?)");
    if (l == Listener::speaks_first)
      throw distributed_error(me + ": cannot join the rendezvous at " + where +
                              ": what listens there sends data or closes the connection unasked, which a c10d store never does (another service on MASTER_PORT?)");
  }
  c10d::TCPStoreOptions so;
  so.port = static_cast<std::uint16_t>(options_.master_port);
  so.isServer = host;
  so.numWorkers = static_cast<std::size_t>(options_.world_size);
  // Our own join below instead: c10d 1.13's wait for workers overran its timeout and named nobody.
  so.waitWorkers = false;
  so.timeout = timeout;
  const char* restart = std::getenv("TORCHELASTIC_RESTART_COUNT");
  const std::string prefix = std::string("tdpo/attempt-") + (restart && *restart ? restart : "0");
  const auto make_store = [so, agent_store, prefix, addr = options_.master_addr]() -> c10::intrusive_ptr<c10d::Store> {
    c10::intrusive_ptr<c10d::Store> tcp;
    try {
      tcp = c10::make_intrusive<c10d::TCPStore>(addr, so);
    } catch (const std::exception& e) {
      c10d::TCPStoreOptions older = so;
      if (std::string(e.what()).find("libuv") == std::string::npos || !without_libuv(older, 0)) throw;
      tcp = c10::make_intrusive<c10d::TCPStore>(addr, older);
    }
    if (agent_store) tcp = c10::make_intrusive<c10d::PrefixStore>(prefix, tcp);
    return tcp;
  };
  try {
    impl_->store = host ? make_store() : store_within(make_store, start_ + timeout, me, options_.timeout_ms, where);
  } catch (const Error&) {
    throw;
  } catch (...) {
    fail(host ? "the rendezvous server at " + where + " (rank 0 hosts it) failed"
                            : "cannot join the rendezvous at " + where,
         std::current_exception());
  }
  join(where);
#ifdef TDPO_GLOO
  try {
    auto go = c10d::ProcessGroupGloo::Options::create(timeout);
    // As torch.distributed: GLOO_SOCKET_IFNAME names the interface; on one machine, loopback.
    const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
    go->devices.push_back(ifname && *ifname ? c10d::ProcessGroupGloo::createDeviceForInterface(ifname)
                          : is_loopback(options_.master_addr)
                              ? c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1")
                              : c10d::ProcessGroupGloo::createDefaultDevice());
    auto prefixed = c10::make_intrusive<c10d::PrefixStore>("tdpo/gloo", impl_->store);
    impl_->gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, options_.rank, options_.world_size, go);
  } catch (...) {
    fail("the Gloo process group (" + std::to_string(options_.world_size) + " ranks, rendezvous " + where + ") failed",
         std::current_exception());
  }
#endif
#endif
}

// Every rank announces itself and waits for all the others, within the timeout counted from the
// start of the rendezvous; a rank that never arrives is named. The wait reads one counter: asking
// for every rank's key each time made a WORLD_SIZE of 200,000 overrun a 5 s timeout to 23 s.
void Group::join(const std::string& where) {
#ifdef TDPO_DISTRIBUTED
  const auto deadline = start_ + std::chrono::milliseconds(options_.timeout_ms);
  const auto key_of = [](int r) { return "tdpo/joined/" + std::to_string(r); };
  const std::string counter = "tdpo/joined";
  auto sleep = std::chrono::milliseconds(2);
  const int world_size = options_.world_size;
  const std::string world = std::to_string(world_size);
  bool compared = options_.rank == 0;
  try {
    impl_->store->set(key_of(options_.rank), bytes_of(world));
    int64_t joined = impl_->store->add(counter, 1);
    while (joined < world_size) {
      // Each rank announces its world size; one that differs from rank 0's would wait in vain.
      if (!compared && impl_->store->check({key_of(0)})) {
        const std::string theirs = string_of(impl_->store->get(key_of(0)));
        if (theirs != world)
          throw distributed_error("rank " + std::to_string(options_.rank) + ": this rank's worldSize is " + world +
                                  " but rank 0's is " + theirs + " (rendezvous " + where + ")");
        compared = true;
      }
      if (Clock::now() > deadline) {
        // Named from the first 1,024 ranks (a key each), counted from the counter.
        const int64_t absent = world_size - joined;
        std::string missing;
        int64_t named = 0;
        for (int r = 0; r < std::min(world_size, 1024) && named < 8; ++r) {
          if (impl_->store->check({key_of(r)})) continue;
          missing += (missing.empty() ? "" : ", ") + std::to_string(r);
          ++named;
        }
        if (named && absent > named) missing += " and " + std::to_string(absent - named) + " more";
        const std::string who = named ? std::string(absent > 1 ? "ranks " : "rank ") + missing : std::to_string(absent) + " ranks";
        throw distributed_error("rank " + std::to_string(options_.rank) + ": timed out after " +
                                std::to_string(options_.timeout_ms) + " ms waiting for every rank to join the rendezvous at " +
                                where + ": " + who + " never arrived (" + std::to_string(joined) + " of " + world + " joined)");
      }
      std::this_thread::sleep_for(sleep);
      sleep = std::min(sleep * 2, std::chrono::milliseconds(50));
      joined = impl_->store->add(counter, 0);
    }
  } catch (const Error&) {
    throw;
  } catch (...) {
    fail("the rendezvous at " + where + " failed (is rank 0 gone?)", std::current_exception());
  }
#endif
}

Group::~Group() { close(); }

void Group::close() noexcept {
#ifdef TDPO_DISTRIBUTED
  try {
    c10::intrusive_ptr<Collectives> gloo, nccl;
    c10::intrusive_ptr<c10d::Store> store;
    {
      std::lock_guard<std::mutex> lock(mu_);
      gloo = std::move(impl_->gloo);
      nccl = std::move(impl_->nccl);
      store = std::move(impl_->store);
    }
    // libtorch 2.4+ wants NCCL's communicators shut down before the group goes (it warns and
    // aborts them in the destructor otherwise); older versions have no shutdown().
    if (nccl) shutdown_if_it_can(*nccl, 0);
    // Destroyed outside the lock: the process group waits for its queued work first.
  } catch (...) {
  }
#endif
}

CommStats Group::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

template <typename Start>
void Group::bucketed(std::vector<at::Tensor>& tensors, int64_t bucket_bytes, const char* what, Start start) {
#ifdef TDPO_DISTRIBUTED
  const auto t0 = Clock::now();
  struct Bucket {
    std::vector<size_t> members;
    int64_t bytes = 0;
    at::Tensor flat;
    c10::intrusive_ptr<Collectives> backend;
    c10::intrusive_ptr<c10d::Work> work;
  };
  std::vector<Bucket> buckets;
  int64_t total = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const at::Tensor& t = tensors[i];
    const int64_t n = static_cast<int64_t>(t.numel() * t.element_size());
    const at::Tensor* first = buckets.empty() ? nullptr : &tensors[buckets.back().members.front()];
    if (!first || buckets.back().bytes + n > bucket_bytes || first->scalar_type() != t.scalar_type() ||
        first->device() != t.device()) {
      buckets.emplace_back();
    }
    buckets.back().members.push_back(i);
    buckets.back().bytes += n;
    total += n;
  }
  bool gloo = false;
  try {
    {
      std::lock_guard<std::mutex> lock(mu_);
      gloo = static_cast<bool>(impl_->gloo);
      if (!impl_->store)
        throw distributed_error("rank " + std::to_string(options_.rank) + ": " + what + " after the process group was closed");
      for (Bucket& b : buckets) b.backend = impl_->for_device(tensors[b.members.front()].device(), options_);
    }
  } catch (const Error&) {
    throw;
  } catch (...) {
    fail(what, std::current_exception());
  }
  try {
    at::NoGradGuard no_grad;
    // All buckets in flight at once; each backend runs its own in order.
    for (Bucket& b : buckets) {
      std::vector<at::Tensor> parts;
      for (size_t i : b.members) parts.push_back(tensors[i].reshape({-1}));
      b.flat = at::cat(parts);
      // CPU values on an NCCL-only build go through this rank's GPU.
      if (!b.flat.is_cuda() && !gloo) b.flat = b.flat.to(at::Device(at::kCUDA, options_.cuda_device));
      std::vector<at::Tensor> arg{b.flat};
      b.work = start(*b.backend, arg);
    }
    for (Bucket& b : buckets) {
      b.work->wait();
      int64_t offset = 0;
      for (size_t i : b.members) {
        at::Tensor& t = tensors[i];
        t.copy_(b.flat.narrow(0, offset, t.numel()).view(t.sizes()));
        offset += t.numel();
      }
    }
  } catch (...) {
    fail(what, std::current_exception());
  }
  std::lock_guard<std::mutex> lock(mu_);
  stats_.calls += 1;
  stats_.bytes += total;
  stats_.ms += std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
#else
  throw distributed_error("no distributed backend in this build");
#endif
}

void Group::allreduce(std::vector<at::Tensor>& tensors, Op op, int64_t bucket_bytes) {
#ifdef TDPO_DISTRIBUTED
  c10d::AllreduceOptions ao;
  ao.reduceOp = op == Op::Sum ? c10d::ReduceOp::SUM : c10d::ReduceOp::MAX;
  ao.timeout = std::chrono::milliseconds(options_.timeout_ms);
  bucketed(tensors, bucket_bytes, "allreduce", [&](Collectives& pg, std::vector<at::Tensor>& arg) {
    return pg.allreduce(arg, ao);
  });
#else
  throw distributed_error("no distributed backend in this build");
#endif
}

void Group::broadcast(std::vector<at::Tensor>& tensors, int root, int64_t bucket_bytes) {
#ifdef TDPO_DISTRIBUTED
  c10d::BroadcastOptions bo;
  bo.rootRank = root;
  bo.timeout = std::chrono::milliseconds(options_.timeout_ms);
  bucketed(tensors, bucket_bytes, "broadcast", [&](Collectives& pg, std::vector<at::Tensor>& arg) {
    return pg.broadcast(arg, bo);
  });
#else
  throw distributed_error("no distributed backend in this build");
#endif
}

void Group::send(const std::string& key, const std::string& value) {
#ifdef TDPO_DISTRIBUTED
  std::lock_guard<std::mutex> lock(mu_);
  if (!impl_->store) throw distributed_error("rank " + std::to_string(options_.rank) + ": send after the process group was closed");
  try {
    impl_->store->set(key, bytes_of(value));
  } catch (...) {
    fail("lost the rendezvous store at " + options_.master_addr + ":" + std::to_string(options_.master_port) +
             " (rank 0 hosts it; is rank 0 gone?)",
         std::current_exception());
  }
#else
  throw distributed_error("no distributed backend in this build");
#endif
}

std::string Group::recv(const std::string& key, int64_t timeout_ms) {
#ifdef TDPO_DISTRIBUTED
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  auto sleep = std::chrono::milliseconds(2);
  for (;;) {
    std::string aborted;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!impl_->store) throw distributed_error("rank " + std::to_string(options_.rank) + ": recv after the process group was closed");
      try {
        // Polled rather than a blocking get: a peer's abort must end the wait at once.
        if (impl_->store->check({key})) return string_of(impl_->store->get(key));
        if (impl_->store->check({kAbortKey})) aborted = string_of(impl_->store->get(kAbortKey));
      } catch (...) {
        fail("lost the rendezvous store at " + options_.master_addr + ":" + std::to_string(options_.master_port) +
                 " (rank 0 hosts it; is rank 0 gone?)",
             std::current_exception());
      }
    }
    if (!aborted.empty()) throw distributed_error(aborted);
    if (Clock::now() > deadline) {
      throw distributed_error("rank " + std::to_string(options_.rank) + ": timed out after " + std::to_string(timeout_ms) +
                              " ms waiting for '" + key + "' from another rank");
    }
    std::this_thread::sleep_for(sleep);
    sleep = std::min(sleep * 2, std::chrono::milliseconds(50));
  }
#else
  throw distributed_error("no distributed backend in this build");
#endif
}

void Group::abort(const std::string& message) noexcept {
#ifdef TDPO_DISTRIBUTED
  try {
    std::lock_guard<std::mutex> lock(mu_);
    // The first failure is the cause; later ones are usually its echo.
    if (impl_->store && !impl_->store->check({kAbortKey})) impl_->store->set(kAbortKey, bytes_of(message));
  } catch (...) {
  }
#endif
}

}  // namespace tdpo::dist
