#include "fabric/shm/listener.hpp"

#include "fabric/shm/link.hpp"

#include <bellows/error.hpp>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <cerrno>
#include <cstring>

namespace bellows::shm {

proto::outcome<int> listen_on(const std::string& name) {
  const std::string path = socket_name(name);
  if (name.empty() || path.size() > sizeof(sockaddr_un::sun_path)) return make_error_code(error::invalid_argument);
  const int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return std::error_code(errno, std::system_category());
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), path.size());
  const auto length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size());
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&addr), length) != 0 || ::listen(fd, SOMAXCONN) != 0) {
    const std::error_code ec(errno, std::system_category());
    ::close(fd);
    return ec;
  }
  return fd;
}

int accept_one(int listener) { return ::accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC); }

}  // namespace bellows::shm
