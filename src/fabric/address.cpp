#include "fabric/address.hpp"

#include <bellows/error.hpp>

#include <netdb.h>
#include <charconv>
#include <cstring>
#include <string>

namespace bellows::fabric {

proto::outcome<sockaddr_storage> resolve(std::string_view host_port, bool listening) {
  const auto colon = host_port.rfind(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 == host_port.size()) return error::invalid_argument;
  std::string_view host = host_port.substr(0, colon);
  const std::string_view port_text = host_port.substr(colon + 1);
  unsigned port = 0;
  const auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec != std::errc{} || end != port_text.data() + port_text.size() || port > 65535 || (port == 0 && !listening))
    return error::invalid_argument;
  if (host.front() == '[') {
    if (host.size() < 3 || host.back() != ']') return error::invalid_argument;
    host = host.substr(1, host.size() - 2);
  } else if (host.find(':') != std::string_view::npos) {
    return error::invalid_argument;  // an IPv6 address needs brackets
  }
  if (host.find('\0') != std::string_view::npos) return error::invalid_argument;

  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string host_string(host);
  const std::string port_string = std::to_string(port);
  if (::getaddrinfo(host_string.c_str(), port_string.c_str(), &hints, &found) != 0 || found == nullptr)
    return std::make_error_code(std::errc::host_unreachable);
  sockaddr_storage out{};
  std::memcpy(&out, found->ai_addr, found->ai_addrlen);
  ::freeaddrinfo(found);
  return out;
}

}  // namespace bellows::fabric
