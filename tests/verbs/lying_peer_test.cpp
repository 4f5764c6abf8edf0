// A peer that lies in an acknowledgement over rdma://: it grants an enlargement but names a
// key it never registered, a ring larger than its registration, or a misaligned address. The
// honest side's channel fails with protocol_violation (a misaligned ring is refused before
// any write; the others by the liar's device, which writes nothing outside a registration).
// The liar is raw verbs (support/raw_opener.hpp): rdma_cm, the bellows handshake, hand-built acks.

#include "proto/wire.hpp"
#include "support/raw_opener.hpp"
#include "support/run_until.hpp"

#include <bellows/bellows.hpp>

#include <asio/io_context.hpp>

#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <cstdlib>
#include <cstring>

using namespace std::chrono_literals;
using namespace bellows::test;
namespace verbs = bellows::verbs;
namespace proto = bellows::proto;

namespace {

enum class ack_lie { forged_key, ring_beyond_registration, misaligned_ring };

const char* to_string(ack_lie l) {
  switch (l) {
    case ack_lie::forged_key: return "a forged key";
    case ack_lie::ring_beyond_registration: return "a ring larger than its registration";
    case ack_lie::misaligned_ring: return "a misaligned ring";
  }
  return "?";
}

}  // namespace

TEST_CASE("rdma: an ack naming memory the peer never granted fails the send with protocol_violation", "[verbs]") {
  if (!rdma_here()) return skip_case("no RDMA device here; tests/rxe runs this on Soft-RoCE");
  const auto lie = GENERATE(ack_lie::forged_key, ack_lie::ring_beyond_registration, ack_lie::misaligned_ring);
  INFO("the ack names " << to_string(lie));
  asio::io_context io;
  const auto port = random_port();
  bellows::channel_options options;
  options.ack_timeout = 30s;  // the lie, not the timeout, must end the send
  bellows::acceptor acc(io.get_executor(), rdma_uri(port), options);

  ibv_pd* pd = raw_protection_domain();
  {
    raw_opener liar(pd);
    registered granted(pd, 4096);
    REQUIRE(granted.mr);
    const auto& tiers = liar.request.tiers;
    auto cm = verbs::cm_channel::create(io.get_executor());
    REQUIRE(cm);
    liar.open(**cm, port);
    std::optional<bellows::channel> honest;
    acc.async_accept([&](std::error_code ec, bellows::channel ch) {
      REQUIRE(!ec);
      honest = std::move(ch);
    });
    REQUIRE(run_until(
        io,
        [&] {
          liar.poll();
          return liar.their_grant && honest;
        },
        10s));
    const auto& answer = *liar.their_grant;
    const auto& ring = liar.ring;

    // A message for the 1 MiB tier: the honest side asks the liar for an enlargement.
    const std::vector<std::byte> message(100'000, std::byte{0x5a});
    std::optional<std::error_code> sent;
    honest->async_send(asio::buffer(message), [&](std::error_code ec, std::size_t) { sent = ec; });
    const auto* head = ring.bytes();
    REQUIRE(run_until(
        io, [&] { return proto::read_header(head).seq == 1; }, 10s));
    const auto header = proto::read_header(head);
    REQUIRE(header.kind == proto::frame_kind::enlarge_req);
    auto asked = proto::decode_retier(head + proto::header_bytes);
    REQUIRE(asked);

    proto::ack_record ack;
    ack.request_id = asked->request_id;
    ack.status = proto::ack_status::granted;
    ack.tier = asked->tier;
    ack.slot_size = tiers[asked->tier].slot_size;
    ack.slot_count = tiers[asked->tier].slot_count;
    ack.epoch = 1;
    ack.ring_key = granted.mr->rkey;
    ack.ring_address = granted.address();  // 4 KiB registered, where a 1 MiB ring is claimed
    if (lie == ack_lie::forged_key) ack.ring_key ^= 0x5a5a00u;
    if (lie == ack_lie::misaligned_ring) ack.ring_address += 8;
    const auto bytes = proto::encode_ack(ack);
    const auto ack_at = answer.control.address + proto::control_block::ack_offset;
    REQUIRE(post_write(liar.qp(), bytes.data(), bytes.size(), ack_at, answer.control.key));
    REQUIRE(post_doorbell(liar.qp(), liar.acceptance->channel_id, ack_at, answer.control.key));

    // A send completes once its frames are handed to the device, as a socket send does; the
    // liar's device refuses the write afterwards and that breaks the channel.
    REQUIRE(run_until(
        io, [&] { return sent.has_value() && !honest->is_open(); }, 20s));
    CHECK((!*sent || *sent == bellows::error::protocol_violation));
    std::optional<std::error_code> next;
    honest->async_send(asio::buffer(message), [&](std::error_code ec, std::size_t) { next = ec; });
    REQUIRE(run_until(
        io, [&] { return next.has_value(); }, 5s));
    CHECK(*next == bellows::error::protocol_violation);
    // Nothing landed beyond what the liar registered, and with a forged key nothing at all.
    if (lie != ack_lie::ring_beyond_registration)
      CHECK(std::all_of(granted.bytes(), granted.bytes() + 4096, [](std::byte b) { return b == std::byte{0}; }));

    honest.reset();
    acc.close();
    (*cm)->forget(liar.conn.id);
    run_until(
        io, [] { return false; }, 200ms);  // the honest side's link flushes and lets go
  }
  ::ibv_dealloc_pd(pd);
}
