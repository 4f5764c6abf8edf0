// The rdma:// handshake's private data and URI parsing: pure code, tested on every host.

#include "fabric/address.hpp"
#include "fabric/verbs/handshake.hpp"

#include <bellows/error.hpp>

#include <catch2/catch.hpp>

#include <netinet/in.h>

namespace hs = bellows::verbs::handshake;
using bellows::fabric::handshake_role;
using bellows::verbs::memory_grant;
using bellows::verbs::open_acceptance;
using bellows::verbs::open_request;

namespace {

open_request sample_request() {
  open_request r{9, 1 << 20, bellows::default_tiers(), true, {}};
  r.nonce[0] = 0x11;
  r.nonce[15] = 0x22;
  return r;
}

memory_grant sample_grant() {
  memory_grant g{{0x1234, 0x7f0000001000}, {0x5678, 0x7f0000002000}, {}};
  g.proof[31] = 0x33;
  return g;
}

}  // namespace

TEST_CASE("rdma handshake: request, acceptance and grants survive encoding, padded with zeros", "[unit][verbs]") {
  auto bytes = hs::encode(sample_request());
  REQUIRE(bytes);
  CHECK(bytes->size() <= 56);  // what an RDMA_PS_TCP connect request may carry
  std::vector<std::byte> padded(bytes->begin(), bytes->end());
  padded.resize(56);
  auto decoded = hs::decode_request(padded);
  REQUIRE(decoded);
  CHECK(decoded->channel_id == 9);
  CHECK(decoded->max_message_size == 1 << 20);
  CHECK(decoded->tiers == bellows::default_tiers());
  CHECK(decoded->demands_proof);
  CHECK(decoded->nonce == sample_request().nonce);

  open_acceptance a{3, {}};
  a.nonce[4] = 0x44;
  auto acceptance = hs::decode_acceptance(hs::encode(a));
  REQUIRE(acceptance);
  CHECK(acceptance->channel_id == 3);
  CHECK(acceptance->nonce == a.nonce);

  auto grant_bytes = hs::encode(sample_grant(), handshake_role::accepting);
  CHECK(grant_bytes.size() <= hs::largest_message);
  auto grant = hs::decode_grant(grant_bytes, handshake_role::accepting);
  REQUIRE(grant);
  CHECK(grant->control.key == 0x1234);
  CHECK(grant->ring.address == 0x7f0000002000);
  CHECK(grant->proof == sample_grant().proof);
  CHECK(!hs::is_refusal(grant_bytes));
}

TEST_CASE("rdma handshake: malformed private data and grants are refused as protocol violations", "[unit][verbs]") {
  auto good = *hs::encode(sample_request());
  auto corrupt = [&](std::size_t at, std::byte value) {
    auto copy = good;
    copy[at] = value;
    return hs::decode_request(copy).failure();
  };
  const auto violation = make_error_code(bellows::error::protocol_violation);
  CHECK(hs::decode_request(std::span(good).first(40)).failure() == violation);  // truncated
  CHECK(corrupt(0, std::byte{0}) == violation);                                 // magic
  CHECK(corrupt(4, std::byte{0}) == violation);                                 // channel id 0
  CHECK(corrupt(16, std::byte{2}) == violation);                                // proof flag neither 0 nor 1
  CHECK(corrupt(33, std::byte{0}) == violation);                                // no tiers
  CHECK(corrupt(33, std::byte{8}) == violation);                                // more tiers than fit
  CHECK(corrupt(34, std::byte{40}) == violation);                               // slot size 2^40
  CHECK(corrupt(34, std::byte{2}) == violation);                                // slot size 4 B
  CHECK(corrupt(36, std::byte{7}) == violation);                                // tiers not ascending

  auto grant = hs::encode(sample_grant(), handshake_role::accepting);
  // One side's grant is not the other's: a reflected grant is refused.
  CHECK(hs::decode_grant(grant, handshake_role::connecting).failure() == violation);
  grant[20] = std::byte{0x01};  // ring address no longer aligned
  CHECK(hs::decode_grant(grant, handshake_role::accepting).failure() == violation);
  std::vector<std::byte> empty;
  CHECK(hs::decode_grant(empty, handshake_role::accepting).failure() == violation);
  CHECK(hs::decode_acceptance(empty).failure() == violation);
  auto acceptance = hs::encode(open_acceptance{0, {}});  // channel id 0
  CHECK(hs::decode_acceptance(acceptance).failure() == violation);
}

TEST_CASE("rdma handshake: refusals carry their reason, foreign rejects mean connection_refused", "[unit][verbs]") {
  CHECK(hs::decode_refusal(hs::encode_refusal(make_error_code(bellows::error::budget_exhausted))) ==
        bellows::error::budget_exhausted);
  CHECK(hs::decode_refusal(hs::encode_refusal(std::make_error_code(std::errc::not_enough_memory))) ==
        std::errc::not_enough_memory);
  std::vector<std::byte> foreign(148);  // what a CM reject without our private data looks like
  CHECK(hs::decode_refusal(foreign) == std::errc::connection_refused);
  CHECK(hs::is_refusal(hs::encode_refusal(make_error_code(bellows::error::authentication_failed))));
  CHECK(!hs::encode(open_request{1, 1, std::vector<bellows::tier>(8, {64, 2}), false, {}}));
}

TEST_CASE("rdma URIs: host and port are parsed, malformed ones are invalid_argument", "[unit][verbs]") {
  auto v4 = bellows::fabric::resolve("192.0.2.1:7471", false);
  REQUIRE(v4);
  CHECK(v4->ss_family == AF_INET);
  CHECK(ntohs(reinterpret_cast<const sockaddr_in&>(*v4).sin_port) == 7471);
  auto v6 = bellows::fabric::resolve("[::1]:9", false);
  REQUIRE(v6);
  CHECK(v6->ss_family == AF_INET6);
  CHECK(bellows::fabric::resolve("0.0.0.0:0", true));
  for (const char* bad :
       {"", "host", ":1", "1.2.3.4:", "1.2.3.4:0", "1.2.3.4:70000", "1.2.3.4:12x", "::1:5", "[::1:5"}) {
    INFO(bad);
    CHECK(bellows::fabric::resolve(bad, false).failure() == bellows::error::invalid_argument);
  }
}
