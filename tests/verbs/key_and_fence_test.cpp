// rdma:// peers proving their key and fenced off from each other, against raw-verbs openers
// (support/raw_opener.hpp): a grant recorded from a genuine handshake and replayed on a new
// connection is refused, and a peer that writes through its own queue pair with another
// channel's key and address lands nothing there and fails only its own channel, as does one that
// writes again with the key of a buffer lent for a message that already arrived. (Right, wrong
// and missing keys over rdma: tests/channel/key_test.cpp, run over rdma in the guest.)

#include "proto/tier_table.hpp"
#include "proto/wire.hpp"
#include "support/raw_opener.hpp"
#include "support/run_until.hpp"

#include <bellows/bellows.hpp>

#include <asio/io_context.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <optional>
#include <string>
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

/// After `writer` wrote where it must not: its own channel fails at its next send, while the
/// bystander's next message still lands in the ring the bystander's peer was granted.
void expect_only_writers_channel_broken(asio::io_context& io, bellows::channel& writers_channel,
                                        bellows::channel& bystanders_channel, raw_opener& bystander) {
  std::optional<std::error_code> writers_send, bystanders_send;
  const std::string text = "after the refused write";
  writers_channel.async_send(asio::buffer(text), [&](std::error_code ec, std::size_t) { writers_send = ec; });
  REQUIRE(run_until(
      io, [&] { return writers_send.has_value() && !writers_channel.is_open(); }, 20s));
  bystanders_channel.async_send(asio::buffer(text), [&](std::error_code ec, std::size_t) { bystanders_send = ec; });
  REQUIRE(run_until(
      io, [&] { return bystanders_send.has_value() && proto::read_header(bystander.ring.bytes()).seq == 1; }, 20s));
  CHECK_FALSE(*bystanders_send);
  CHECK(bystanders_channel.is_open());
  CHECK(bystander.failed_statuses.empty());
}

/// Closes both channels and the acceptor, and lets the teardown run before the openers' verbs
/// objects go.
void close_all(asio::io_context& io, verbs::cm_channel& cm, bellows::acceptor& acc, raw_opener& a,
               bellows::channel a_channel, raw_opener& b, bellows::channel b_channel) {
  cm.forget(a.conn.id);
  cm.forget(b.conn.id);
  { auto closing = std::move(b_channel); }
  { auto closing = std::move(a_channel); }
  acc.close();
  run_until(
      io, [] { return false; }, 200ms);
}

/// Writes a frame carrying `payload` into slot `slot` of the ring `peer` was granted, and rings
/// the channel's doorbell, as a bellows sender on the first tier would.
void write_frame(raw_opener& peer, std::uint32_t slot, std::uint32_t seq, proto::frame_kind kind,
                 std::span<const std::byte> payload) {
  const auto first_tier = (*proto::tier_table::make(bellows::default_tiers()))[0];
  proto::frame_header h{seq,
                        static_cast<std::uint32_t>(payload.size()),
                        kind,
                        0,
                        static_cast<std::uint16_t>(first_tier.slots_for(payload.size())),
                        seq};
  std::vector<std::byte> frame(proto::frame_span(payload.size()));
  const auto header = proto::encode_header(h);
  const auto trailer = proto::encode_trailer(seq);
  std::copy(header.begin(), header.end(), frame.begin());
  std::copy(payload.begin(), payload.end(), frame.begin() + proto::header_bytes);
  std::copy(trailer.begin(), trailer.end(),
            frame.begin() + static_cast<std::ptrdiff_t>(proto::trailer_offset(h.length)));
  const auto& ring = peer.their_grant->ring;
  REQUIRE(post_write(peer.qp(), frame.data(), frame.size(), ring.address + std::uint64_t{slot} * first_tier.slot_size,
                     ring.key));
  REQUIRE(post_doorbell(peer.qp(), peer.acceptance->channel_id, peer.their_grant->control.address,
                        peer.their_grant->control.key));
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

    // The attacker's queue pair went to the error state, and with it only its own channel.
    expect_only_writers_channel_broken(io, attackers_channel, others_channel, other);
    close_all(io, **cm, acc, attacker, std::move(attackers_channel), other, std::move(others_channel));
  }
  ::ibv_dealloc_pd(pd);
}

TEST_CASE(
    "rdma: a write with the key of a buffer lent for a message that arrived lands nothing and fails only that channel",
    "[verbs][fence][direct]") {
  if (!rdma_here()) return skip_case("no RDMA device here; tests/rxe runs this on Soft-RoCE");
  asio::io_context io;
  const auto port = random_port();
  bellows::acceptor acc(io.get_executor(), rdma_uri(port));
  auto cm = verbs::cm_channel::create(io.get_executor());
  REQUIRE(cm);
  ibv_pd* pd = raw_protection_domain();
  {
    raw_opener sender(pd), bystander(pd);
    auto senders_channel = open_and_accept(io, **cm, acc, sender, port);
    auto bystanders_channel = open_and_accept(io, **cm, acc, bystander, port);

    // The sender offers a message; the receive takes it whole, so its buffer is lent.
    constexpr std::size_t length = 64;
    std::vector<std::uint64_t> inbox(length / 8 + 8);  // 8-aligned, as a lent buffer must be
    const auto* inbox_bytes = reinterpret_cast<const std::byte*>(inbox.data());
    std::optional<std::error_code> received;
    std::size_t received_bytes = 0;
    senders_channel.async_receive(asio::buffer(inbox.data(), inbox.size() * 8), [&](std::error_code ec, std::size_t n) {
      received = ec;
      received_bytes = n;
    });
    write_frame(sender, 0, 1, proto::frame_kind::direct_offer, proto::encode_direct({1, length}));
    const std::byte* lend_slot = sender.control.bytes() + proto::control_block::lend_offset;
    proto::lend_poll answer;
    REQUIRE(run_until(
        io,
        [&] {
          sender.poll();
          answer = proto::poll_lend(lend_slot, 1, 0);
          return answer.status == proto::lend_poll::state::complete;
        },
        20s));
    REQUIRE(answer.record.status == proto::ack_status::granted);
    REQUIRE(answer.record.length == length);

    // The message, then DIRECT_DONE in the next slot: the receive completes with it.
    const std::vector<std::byte> message(length, std::byte{0x5a});
    REQUIRE(post_write(sender.qp(), message.data(), length, answer.record.address,
                       static_cast<std::uint32_t>(answer.record.key)));
    write_frame(sender, 1, 2, proto::frame_kind::direct_done, proto::encode_direct({1, length}));
    REQUIRE(run_until(
        io, [&] { return received.has_value(); }, 20s));
    REQUIRE(!*received);
    REQUIRE(received_bytes == length);
    REQUIRE(std::equal(message.begin(), message.end(), inbox_bytes));
    CHECK(senders_channel.stats().direct_messages_received == 1);

    // The buffer is the application's again: the same key and address now reach nothing.
    const std::vector<std::byte> late(length, std::byte{0xa5});
    REQUIRE(post_write(sender.qp(), late.data(), length, answer.record.address,
                       static_cast<std::uint32_t>(answer.record.key)));
    REQUIRE(run_until(
        io,
        [&] {
          sender.poll();
          return !sender.failed_statuses.empty();
        },
        20s));
    INFO("the late write completed with " << ::ibv_wc_status_str(sender.failed_statuses.front()));
    CHECK(sender.failed_statuses.front() == IBV_WC_REM_ACCESS_ERR);
    CHECK(std::equal(message.begin(), message.end(), inbox_bytes));
    CHECK(all_zero(inbox_bytes + length, inbox.size() * 8 - length));

    // Its queue pair broke, and with it only its own channel.
    expect_only_writers_channel_broken(io, senders_channel, bystanders_channel, bystander);
    close_all(io, **cm, acc, sender, std::move(senders_channel), bystander, std::move(bystanders_channel));
  }
  ::ibv_dealloc_pd(pd);
}
