#include "fabric/verbs/liveness.hpp"

#include <algorithm>
#include <cstdint>

namespace bellows::verbs {
namespace {

constexpr unsigned tries = 1 + retry_count;
constexpr unsigned shortest_exponent = 14;
constexpr unsigned longest_exponent = 19;

}  // namespace

std::chrono::milliseconds probe_interval(std::chrono::milliseconds peer_timeout) noexcept {
  if (peer_timeout.count() <= 0) return std::chrono::milliseconds(0);
  return std::max(std::chrono::milliseconds(1), peer_timeout / 6);
}

unsigned ack_timeout_exponent(std::chrono::milliseconds peer_timeout) noexcept {
  // The largest exponent with tries x 4.096 us x 2^exponent <= peer_timeout x 2/3.
  const auto budget_us = static_cast<std::uint64_t>(std::max<std::int64_t>(0, peer_timeout.count())) * 2000 / 3;
  const std::uint64_t try_units = budget_us * 1000 / 4096 / tries;  // in 4.096 us
  unsigned exponent = shortest_exponent;
  while (exponent < longest_exponent && (std::uint64_t{1} << (exponent + 1)) <= try_units) ++exponent;
  return exponent;
}

void limit_silence(rdma_cm_id* id, std::chrono::milliseconds peer_timeout) noexcept {
  if (peer_timeout.count() <= 0) return;
  auto exponent = static_cast<std::uint8_t>(ack_timeout_exponent(peer_timeout));
  // Best effort: a kernel without the option keeps rdma_cm's own timeout (2.1 s a try on RoCE),
  // and then the bound does not hold for writes in flight.
  ::rdma_set_option(id, RDMA_OPTION_ID, RDMA_OPTION_ID_ACK_TIMEOUT, &exponent, sizeof exponent);
}

}  // namespace bellows::verbs
