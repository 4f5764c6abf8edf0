#include "fabric/tcp/connector.hpp"

#include "fabric/address.hpp"
#include "fabric/socket_listener.hpp"

#include <bellows/error.hpp>

#include <sys/socket.h>
#include <unistd.h>
#include <cerrno>
#include <cstring>

namespace bellows::tcp {
namespace {

asio::ip::tcp::endpoint endpoint_of(const sockaddr_storage& address) {
  asio::ip::tcp::endpoint out;
  const std::size_t length = address.ss_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
  std::memcpy(out.data(), &address, length);
  return out;
}

/// A bound, listening, non-blocking socket at `address`.
proto::outcome<int> listen_at(const sockaddr_storage& address) {
  const int fd = ::socket(address.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return std::error_code(errno, std::system_category());
  const int on = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  const socklen_t length = address.ss_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&address), length) != 0 || ::listen(fd, SOMAXCONN) != 0) {
    const std::error_code ec(errno, std::system_category());
    ::close(fd);
    return ec;
  }
  return fd;
}

}  // namespace

proto::outcome<std::shared_ptr<link>> connector::client_link(std::string_view address,
                                                             std::string_view pre_shared_key) {
  std::erase_if(client_links_, [](const auto& entry) { return entry.second.expired(); });
  // A connection proven with one key carries no channel of another.
  std::string name = std::string(address) + '\n' + std::string(pre_shared_key);
  if (auto it = client_links_.find(name); it != client_links_.end()) {
    if (auto l = it->second.lock(); l && !l->failed() && l->served()) return l;
  }
  auto to = fabric::resolve(address, false);
  if (!to) return to.failure();
  auto l = link::connect(host_, endpoint_of(*to), std::string(pre_shared_key));
  l->set_hooks(nullptr, nullptr);
  client_links_[std::move(name)] = l;
  host_.serve(l);
  return l;
}

std::shared_ptr<fabric::pending_open> connector::open(std::string_view address, const std::vector<tier>& tiers,
                                                      std::uint64_t max_message_size, std::string_view pre_shared_key,
                                                      fabric::open_handler done) {
  return fabric::multiplexed_link::open_over(client_link(address, pre_shared_key), tiers, max_message_size,
                                             std::move(done));
}

proto::outcome<std::shared_ptr<fabric::listener>> connector::listen(std::string_view address,
                                                                    std::string_view pre_shared_key,
                                                                    fabric::accept_hook on_accept) {
  auto at = fabric::resolve(address, true);
  if (!at) return at.failure();
  auto listening = listen_at(*at);
  if (!listening) return listening.failure();
  // An accepted socket has its listener's family.
  const auto protocol = at->ss_family == AF_INET6 ? asio::ip::tcp::v6() : asio::ip::tcp::v4();
  // The links accepted here before, by the address bound (port 0 binds a new port each time)
  // and the key: a link proven with another key never carries channels to this listener.
  sockaddr_storage bound{};
  socklen_t bound_length = sizeof bound;
  ::getsockname(*listening, reinterpret_cast<sockaddr*>(&bound), &bound_length);
  const auto bound_at = endpoint_of(bound);
  std::erase_if(accepted_, [](auto& entry) { return entry.second.use_count() == 1 && entry.second->empty(); });
  auto& siblings = accepted_[bound_at.address().to_string() + ':' + std::to_string(bound_at.port()) + '\n' +
                             std::string(pre_shared_key)];
  if (!siblings) siblings = std::make_shared<accepted_links>();
  siblings->serve_accepts(on_accept);
  auto adopt = [host = host_, key = std::string(pre_shared_key), protocol, on_accept = std::move(on_accept),
                siblings](int fd) {
    asio::error_code ec;
    asio::ip::tcp::socket socket(host.executor);
    socket.assign(protocol, fd, ec);
    if (ec) {
      ::close(fd);
      return;
    }
    auto l = link::accept(host, std::move(socket), key, siblings);
    l->serve_accepts(on_accept);
    host.serve(l);
  };
  auto listener = std::make_shared<fabric::socket_listener>(host_, *listening, std::move(adopt));
  siblings->set_taker([weak = std::weak_ptr<fabric::socket_listener>(listener)] {
    if (auto l = weak.lock()) l->take_waiting();
  });
  return std::shared_ptr<fabric::listener>(std::move(listener));
}

}  // namespace bellows::tcp
