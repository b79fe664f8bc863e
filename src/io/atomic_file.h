// Files that appear whole or not at all: data goes to a temporary file next to the target (a name
// unique to this call, so concurrent writers of one path never share it), is flushed to disk, and
// is renamed over the target. A failed write (disk full, a file-size limit) throws ERR_TDPO_IO and
// leaves the target as it was.
#pragma once

#include <cstddef>
#include <functional>
#include <string>

namespace tdpo::io {

class FileSink {
 public:
  // Never fails: the first error is kept and later data is dropped, so writers that must not see
  // an error mid-stream (libtorch's archive writer throws from its destructor on one) can finish.
  size_t write(const void* data, size_t n);
  int error() const { return errno_; }

 private:
  friend void write_file_atomically(const std::string&, const std::function<void(FileSink&)>&);
  explicit FileSink(int fd) : fd_(fd) {}
  int fd_;
  int errno_ = 0;
};

void write_file_atomically(const std::string& path, const std::function<void(FileSink&)>& fill);

}  // namespace tdpo::io
