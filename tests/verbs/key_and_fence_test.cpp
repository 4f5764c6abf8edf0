// rdma:// peers proving their key and fenced off from each other, against raw-verbs openers
// (support/raw_opener.hpp): a grant recorded from a genuine handshake and replayed on a new
// connection is refused, and a peer that writes through its own queue pair with another
// channel's key and address lands nothing there and fails only its own channel. (Right, wrong
// and missing keys over rdma: tests/channel/key_test.cpp, run over rdma in the guest.)

#include "proto/wire.hpp"
#include "support/raw_opener.hpp"
#include "support/run_until.hpp"

#include <bellows/bellows.hpp>

#include <asio/io_context.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <optional>
#include <vector>

using namespace std::chrono_literals;
using namespace bellows::test;
namespace verbs = bellows::verbs;
namespace proto = bellows::proto;

namespace {

/// Opens `peer` to `port` and takes the channel `acc` hands over for it.
bellows::channel open_and_accept(asio::io_context& io, verbs::cm_channel& cm, bellows::acceptor& acc, raw_opener& peer,
                                 std::uint16_t port) {
  std::optional<bellows::channel> accepted;
  acc.async_accept([&](std::error_code ec, bellows::channel ch) {
    INFO("accept: " << ec.message());
    REQUIRE(!ec);
    accepted = std::move(ch);
  });
  peer.open(cm, port);
  REQUIRE(run_until(
      io,
      [&] {
        peer.poll();
        return peer.their_grant && accepted;
      },
      20s));
  return std::move(*accepted);
}

bool all_zero(const std::byte* at, std::size_t length) {
  return std::all_of(at, at + length, [](std::byte b) { return b == std::byte{0}; });
}

}  // namespace

TEST_CASE("rdma: a recorded key grant replayed on a new connection is refused with authentication_failed",
          "[verbs][key]") {
  if (!rdma_here()) return skip_case("no RDMA device here; tests/rxe runs this on Soft-RoCE");
  const std::string key = "recorded secret";
  asio::io_context io;
  const auto port = random_port();
  bellows::channel_options options;
  options.pre_shared_key = key;
  bellows::acceptor acc(io.get_executor(), rdma_uri(port), options);
  auto cm = verbs::cm_channel::create(io.get_executor());
  REQUIRE(cm);
  ibv_pd* pd = raw_protection_domain();
  {
    // A genuine opener, as an eavesdropper would record it: its request and its grant with the
    // proof for the acceptor's nonce. The acceptor answered with a grant of its own: it took it.
    raw_opener genuine(pd, key);
    auto first = open_and_accept(io, **cm, acc, genuine, port);
    const auto registered_after_first = bellows::stats(io).registered_bytes;

    bool accepted_again = false;
    acc.async_accept([&](std::error_code ec, bellows::channel) { accepted_again = !ec; });
    raw_opener replayer(pd);
    replayer.request = genuine.request;  // the same nonce and channel id
    replayer.open(**cm, port, genuine.sent_grant);
    REQUIRE(run_until(
        io,
        [&] {
          replayer.poll();
          return replayer.refusal.has_value();
        },
        20s));
    INFO("the replay was answered with " << replayer.refusal->message());
    CHECK(*replayer.refusal == bellows::error::authentication_failed);
    CHECK(replayer.acceptance->nonce != genuine.acceptance->nonce);
    CHECK_FALSE(replayer.their_grant);
    // Nothing was registered for the replayer, nothing handed over, and the first channel lives.
    CHECK(bellows::stats(io).registered_bytes == registered_after_first);
    run_until(
        io, [&] { return replayer.disconnected; }, 5s);
    CHECK_FALSE(accepted_again);
    CHECK(first.is_open());

    (*cm)->forget(genuine.conn.id);
    (*cm)->forget(replayer.conn.id);
    { auto closing = std::move(first); }
    acc.close();
    run_until(
        io, [] { return false; }, 200ms);  // the acceptor's links flush and let go
  }
  ::ibv_dealloc_pd(pd);
}

TEST_CASE("rdma: a write through one queue pair with another channel's key lands nothing and fails only that channel",
          "[verbs][fence]") {
  if (!rdma_here()) return skip_case("no RDMA device here; tests/rxe runs this on Soft-RoCE");
  asio::io_context io;
  const auto port = random_port();
  bellows::acceptor acc(io.get_executor(), rdma_uri(port));
  auto cm = verbs::cm_channel::create(io.get_executor());
  REQUIRE(cm);
  ibv_pd* pd = raw_protection_domain();
  {
    raw_opener attacker(pd), other(pd);
    auto attackers_channel = open_and_accept(io, **cm, acc, attacker, port);
    auto others_channel = open_and_accept(io, **cm, acc, other, port);

    // The other channel's ring sits in this process: its bytes can be read directly.
    const auto target = other.their_grant->ring;
    const auto* target_bytes = reinterpret_cast<const std::byte*>(target.address);
    REQUIRE(all_zero(target_bytes, 256));
    std::vector<std::byte> forged(64, std::byte{0x5a});
    REQUIRE(post_write(attacker.qp(), forged.data(), forged.size(), target.address, target.key));
    REQUIRE(run_until(
        io,
        [&] {
          attacker.poll();
          return !attacker.failed_statuses.empty();
        },
        20s));
    INFO("the forged write completed with " << ::ibv_wc_status_str(attacker.failed_statuses.front()));
    CHECK(attacker.failed_statuses.front() == IBV_WC_REM_ACCESS_ERR);
    CHECK(all_zero(target_bytes, 256));

    // The attacker's channel is broken: its queue pair went to the error state.
    std::optional<std::error_code> attackers_send;
    const std::string text = "after the attack";
    attackers_channel.async_send(asio::buffer(text), [&](std::error_code ec, std::size_t) { attackers_send = ec; });
    REQUIRE(run_until(
        io, [&] { return attackers_send.has_value() && !attackers_channel.is_open(); }, 20s));

    // The other channel carries on: its message lands in the other peer's ring.
    std::optional<std::error_code> others_send;
    others_channel.async_send(asio::buffer(text), [&](std::error_code ec, std::size_t) { others_send = ec; });
    REQUIRE(run_until(
        io, [&] { return others_send.has_value() && proto::read_header(other.ring.bytes()).seq == 1; }, 20s));
    CHECK_FALSE(*others_send);
    CHECK(others_channel.is_open());
    CHECK(other.failed_statuses.empty());

    (*cm)->forget(attacker.conn.id);
    (*cm)->forget(other.conn.id);
    { auto closing = std::move(others_channel); }
    { auto closing = std::move(attackers_channel); }
    acc.close();
    run_until(
        io, [] { return false; }, 200ms);
  }
  ::ibv_dealloc_pd(pd);
}
