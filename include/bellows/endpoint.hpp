#pragma once
// Who is at the other end of a channel, as the provider knows it: the process and user over
// shm (from the kernel's SO_PEERCRED, not from anything the peer claims), the address and port
// over tcp and rdma.

#include <cstdint>
#include <optional>
#include <string>

namespace bellows {

/// The peer of a channel (channel::remote_endpoint()); only the provider's fields are set.
struct endpoint {
  /// "shm", "rdma" or another provider's scheme; empty for a channel that is not open.
  std::string provider;
  std::optional<std::int64_t> pid;   ///< shm: the peer's process id when it connected
  std::optional<std::uint32_t> uid;  ///< shm: the peer's user id when it connected
  std::string address;               ///< tcp, rdma: the peer's IP address (v4 or v6, as text)
  std::uint16_t port = 0;            ///< tcp: the peer's port; rdma: its rdma_cm port

  /// "shm pid 4242 uid 1000", "rdma 192.0.2.7:7472".
  std::string to_string() const {
    std::string out = provider;
    if (pid) out += " pid " + std::to_string(*pid);
    if (uid) out += " uid " + std::to_string(*uid);
    if (!address.empty()) {
      const bool v6 = address.find(':') != std::string::npos;
      out += " " + (v6 ? "[" + address + "]" : address) + ":" + std::to_string(port);
    }
    return out;
  }
};

}  // namespace bellows
