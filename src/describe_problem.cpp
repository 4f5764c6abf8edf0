// The checks behind error::invalid_argument, in words. They mirror what the connectors and the
// tier table refuse (fabric/shm/link.cpp, fabric/verbs/address.cpp, proto/tier_table.cpp).
#include "proto/tier_table.hpp"

#include <bellows/describe_problem.hpp>

#include <sys/un.h>
#include <bit>
#include <charconv>
#include <string>

namespace bellows {
namespace {

std::string quoted(std::string_view text) { return "'" + std::string(text) + "'"; }

std::string shm_problem(std::string_view name) {
  // The socket name is "\0bellows.shm." + NAME, in sockaddr_un's sun_path.
  constexpr std::size_t longest = sizeof(sockaddr_un::sun_path) - std::string_view("_bellows.shm.").size();
  if (name.empty()) return "shm name is empty";
  if (name.size() > longest) return "shm name longer than " + std::to_string(longest) + " bytes";
  return {};
}

/// rdma://HOST:PORT and tcp://HOST:PORT, named by `scheme` in what it says.
std::string host_port_problem(const std::string& scheme, std::string_view host_port) {
  const auto colon = host_port.rfind(':');
  if (colon == std::string_view::npos || colon + 1 == host_port.size())
    return scheme + " address " + quoted(host_port) + " has no port (" + scheme + "://HOST:PORT)";
  std::string_view host = host_port.substr(0, colon);
  const std::string_view port_text = host_port.substr(colon + 1);
  if (host.empty()) return scheme + " address " + quoted(host_port) + " has no host";
  unsigned long port = 0;
  const auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec == std::errc::result_out_of_range || (ec == std::errc{} && port > 65535))
    return scheme + " port " + std::string(port_text) + " out of range";
  if (ec != std::errc{} || end != port_text.data() + port_text.size())
    return scheme + " port " + quoted(port_text) + " is not a number";
  if (host.front() == '[') {
    if (host.size() < 3 || host.back() != ']') return scheme + " host " + quoted(host) + " has an unclosed bracket";
  } else if (host.find(':') != std::string_view::npos) {
    return scheme + " host " + quoted(host) + " is an IPv6 address without brackets ([ADDRESS]:PORT)";
  }
  return {};
}

std::string tier_problem(const std::vector<tier>& tiers) {
  if (tiers.empty()) return "no tiers";
  if (tiers.size() > proto::max_tiers)
    return std::to_string(tiers.size()) + " tiers, at most " + std::to_string(proto::max_tiers);
  std::uint32_t previous_payload = 0;
  for (std::size_t i = 0; i < tiers.size(); ++i) {
    const tier& t = tiers[i];
    const std::string name = "tier " + std::to_string(i);
    if (!std::has_single_bit(t.slot_size))
      return name + " slot_size " + std::to_string(t.slot_size) + " is not a power of two";
    if (t.slot_size < proto::min_slot_size)
      return name + " slot_size " + std::to_string(t.slot_size) + " is below " + std::to_string(proto::min_slot_size);
    if (!std::has_single_bit(t.slot_count))
      return name + " slot_count " + std::to_string(t.slot_count) + " is not a power of two";
    if (t.slot_count < proto::min_slot_count || t.slot_count > 65536)
      return name + " slot_count " + std::to_string(t.slot_count) + " is outside " +
             std::to_string(proto::min_slot_count) + "..65536";
    if (t.ring_bytes() > (std::uint64_t{1} << 31)) return name + " ring is larger than 2 GiB";
    const proto::ring_geometry g{t.slot_size, t.slot_count};
    if (g.max_frame_payload() <= previous_payload)
      return name + " holds no larger messages than tier " + std::to_string(i - 1) + " (tiers must grow)";
    previous_payload = g.max_frame_payload();
  }
  return {};
}

}  // namespace

std::string describe_problem(std::string_view uri, const channel_options& options) {
  if (uri.find('\0') != std::string_view::npos) return "URI contains a NUL byte";
  const auto end = uri.find("://");
  if (end == std::string_view::npos || end == 0)
    return "URI " + quoted(uri) + " has no scheme (shm://NAME, tcp://HOST:PORT or rdma://HOST:PORT)";
  const std::string_view scheme = uri.substr(0, end);
  const std::string_view rest = uri.substr(end + 3);
  std::string problem;
  if (scheme == "shm") {
    problem = shm_problem(rest);
  } else if (scheme == "rdma" || scheme == "tcp") {
    problem = host_port_problem(std::string(scheme), rest);
  } else {
    problem = "unknown scheme " + quoted(scheme) + " (this build knows shm, tcp and rdma)";
  }
  return problem.empty() ? tier_problem(options.tiers) : problem;
}

}  // namespace bellows
