// A data-parallel process group over PyTorch's c10d: a TCPStore for the rendezvous (rank 0 hosts
// it), ProcessGroupGloo for the collectives on CPU tensors and, in a build against a libtorch with
// NCCL, ProcessGroupNCCL for those on CUDA tensors (torch.distributed's "cpu:gloo,cuda:nccl"). Every failure (a peer gone, a
// timeout, a port in use, an unreachable master) is an ERR_TDPO_DISTRIBUTED error naming this
// rank; naming the peer that caused it is the caller's job (it knows the pids, lib/train).
#pragma once

#include <ATen/ATen.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace tdpo::dist {

// No defaults: lib/train/distributed.ts holds them.
struct GroupOptions {
  int rank = -1, world_size = 0;
  std::string master_addr;
  int master_port = -1;
  int64_t timeout_ms = 0;  // rendezvous, each collective, each store wait
  // This rank's GPU (the run's cuda:N), or -1: where CPU values go through NCCL in a build that
  // has NCCL but not Gloo (PyTorch's CUDA wheels ship no Gloo headers).
  int cuda_device = -1;
};
// Sets the environment NCCL's process group reads (blocking wait...; see group.cc) where the user has
// not: once, at load, on the main thread, before any other thread may read the environment.
void prepare_environment();

// Throws ERR_TDPO_OPTION naming the field ("distributed.rank", ...).
void validate(const GroupOptions& options);

// The collective backends this build has: "gloo" (with Gloo's headers), "nccl" (with a CUDA
// libtorch and NCCL's headers); empty without either.
std::vector<std::string> backends();

enum class Op { Sum, Max };

// Cumulative cost of the collectives, for the bench.
struct CommStats {
  int64_t calls = 0, bytes = 0;
  double ms = 0;
};

class Group {
 public:
  // Blocks until every rank has joined (or the timeout).
  explicit Group(const GroupOptions& options);
  ~Group();
  Group(const Group&) = delete;
  Group& operator=(const Group&) = delete;

  int rank() const { return options_.rank; }
  int size() const { return options_.world_size; }
  int64_t timeout_ms() const { return options_.timeout_ms; }

  // In place over every rank, in buckets of at most bucket_bytes (one flat tensor per bucket and
  // dtype, all buckets in flight at once, as DDP's). Undefined tensors are not allowed.
  void allreduce(std::vector<at::Tensor>& tensors, Op op, int64_t bucket_bytes = kBucketBytes);
  // Every rank gets root's values, bucketed the same way.
  void broadcast(std::vector<at::Tensor>& tensors, int root, int64_t bucket_bytes = kBucketBytes);

  // The store, for small messages between ranks. recv waits up to timeout_ms for `key`, and fails
  // at once when a rank has called abort() (with that rank's message) or the store is gone.
  void send(const std::string& key, const std::string& value);
  std::string recv(const std::string& key, int64_t timeout_ms);
  // Tells every rank waiting in recv that this one failed; best effort (the store may be gone).
  void abort(const std::string& message) noexcept;
  // Leaves the group: its sockets close, so a peer blocked in a collective fails at once.
  void close() noexcept;

  CommStats stats() const;

  static constexpr int64_t kBucketBytes = 25ll << 20;  // DDP's default bucket_cap_mb

 private:
  struct Impl;
  void join(const std::string& where);
  [[noreturn]] void fail(const std::string& what, std::exception_ptr cause) const;
  template <typename Start>
  void bucketed(std::vector<at::Tensor>& tensors, int64_t bucket_bytes, const char* what, Start start);

  GroupOptions options_;
  std::unique_ptr<Impl> impl_;
  std::chrono::steady_clock::time_point start_;
  mutable std::mutex mu_;  // the store's client and the stats
  CommStats stats_;
};

}  // namespace tdpo::dist
