#pragma once
// rdma://HOST:PORT and tcp://HOST:PORT: HOST is an IPv4 address, a bracketed IPv6 address or
// a name (resolved with getaddrinfo, which may block on DNS: connect time, never the data path).

#include "proto/outcome.hpp"

#include <sys/socket.h>

#include <string_view>

namespace bellows::fabric {

/// The address the part after "rdma://" or "tcp://" names; error::invalid_argument when malformed,
/// host_unreachable when the name does not resolve. `listening` allows port 0 (any port).
proto::outcome<sockaddr_storage> resolve(std::string_view host_port, bool listening);

}  // namespace bellows::fabric
