#include "io/atomic_file.h"

#include <atomic>
#include <cerrno>
#include <cstring>
#include <random>

#include <fcntl.h>
#include <unistd.h>

#include "common/error.h"

namespace tdpo::io {

size_t FileSink::write(const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  size_t left = errno_ ? 0 : n;
  while (left > 0) {
    const ssize_t w = ::write(fd_, p, left);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      errno_ = w < 0 ? errno : ENOSPC;
      break;
    }
    p += w;
    left -= static_cast<size_t>(w);
  }
  return n;
}

namespace {
std::string unique_suffix() {
  static std::atomic<uint64_t> counter{0};
  static const uint64_t salt = std::random_device{}();
  return ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) + "-" +
         std::to_string(salt % 1000000007);
}

[[noreturn]] void fail(const std::string& what, const std::string& path, int err) {
  throw range_error("ERR_TDPO_IO", what + " " + path + ": " + std::strerror(err));
}
}  // namespace

void write_file_atomically(const std::string& path, const std::function<void(FileSink&)>& fill) {
  const std::string tmp = path + unique_suffix();
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) fail("cannot create", tmp, errno);
  FileSink sink(fd);
  try {
    fill(sink);
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  int err = sink.error();
  if (!err && ::fsync(fd) != 0) err = errno;
  if (::close(fd) != 0 && !err) err = errno;
  if (err) {
    ::unlink(tmp.c_str());
    fail("writing", path, err);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    err = errno;
    ::unlink(tmp.c_str());
    fail("cannot rename a temporary file to", path, err);
  }
}

}  // namespace tdpo::io
