// How peer_timeout becomes a probe interval and an acknowledgement timeout over rdma: RC's seven
// tries must end within two thirds of the timeout, and never wait longer a try than rdma_cm's RoCE
// default (2.1 s). The behaviour itself (a powered-off peer noticed in time) is tests/rxe/two_guests.sh.

#include "fabric/verbs/liveness.hpp"

#include <catch2/catch.hpp>

#include <chrono>

using namespace std::chrono_literals;
using bellows::verbs::ack_timeout_exponent;
using bellows::verbs::probe_interval;

namespace {

/// How long RC's tries take at `exponent`.
std::chrono::microseconds all_tries(unsigned exponent) {
  return std::chrono::microseconds(
      static_cast<long long>((1 + bellows::verbs::retry_count) * 4.096 * static_cast<double>(1ULL << exponent)));
}

}  // namespace

TEST_CASE("probes come every sixth of the peer timeout, and never without one", "[liveness]") {
  CHECK(probe_interval(15s) == 2500ms);
  CHECK(probe_interval(3s) == 500ms);
  CHECK(probe_interval(0ms) == 0ms);
  CHECK(probe_interval(-1ms) == 0ms);
  CHECK(probe_interval(2ms) == 1ms);
}

TEST_CASE("the tries of a write end within two thirds of the peer timeout", "[liveness]") {
  for (std::chrono::milliseconds timeout : {1100ms, 2000ms, 3000ms, 5000ms, 8600ms, 15000ms, 60000ms}) {
    const unsigned e = ack_timeout_exponent(timeout);
    INFO("peer_timeout " << timeout.count() << " ms, exponent " << e);
    CHECK(all_tries(e) <= timeout * 2 / 3);
    // The largest such exponent, unless capped at rdma_cm's RoCE default.
    CHECK((e == 19 || all_tries(e + 1) > timeout * 2 / 3));
  }
  CHECK(ack_timeout_exponent(15s) == 18);
  CHECK(ack_timeout_exponent(3s) == 16);
}

TEST_CASE("the acknowledgement timeout stays between 67 ms and 2.1 s a try", "[liveness]") {
  CHECK(ack_timeout_exponent(1ms) == 14);
  CHECK(ack_timeout_exponent(0ms) == 14);
  CHECK(ack_timeout_exponent(60s) == 19);
  CHECK(ack_timeout_exponent(std::chrono::hours(1)) == 19);
}
