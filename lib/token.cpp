#include "token.h"

#include <fcntl.h>
#include <sys/random.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>

namespace singleflight::internal {
namespace {

// Fills buf from getrandom(2); false if the syscall is unavailable (old
// kernel, seccomp) so that the caller can try /dev/urandom.
bool FillFromGetrandom(char* buf, size_t size) {
  size_t got = 0;
  while (got < size) {
    ssize_t n = getrandom(buf + got, size - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    got += static_cast<size_t>(n);
  }
  return true;
}

bool FillFromUrandom(char* buf, size_t size) {
  int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  size_t got = 0;
  while (got < size) {
    ssize_t n = read(fd, buf + got, size - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  close(fd);
  return got == size;
}

}  // namespace

std::string RandomToken() {
  std::string token(kTokenBytes, '\0');
  if (FillFromGetrandom(token.data(), token.size())) return token;
  if (FillFromUrandom(token.data(), token.size())) return token;
  std::fputs(
      "singleflight: no kernel randomness (getrandom and /dev/urandom failed); "
      "refusing to make a guessable lock token\n",
      stderr);
  std::abort();
}

}  // namespace singleflight::internal
