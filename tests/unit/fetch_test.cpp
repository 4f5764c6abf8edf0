// Fetched offers in the channel core: where the receiver may read the sender's memory (shm), a
// message above the largest tier's frames is offered with its address, the receiver reads it
// into its posted buffer and answers `received`. What is checked: the actions on both sides,
// the fall back to the ring when the read fails, which messages are offered at all, that bytes
// read after the sender let go of its buffer are never delivered, and that a peer answering
// out of turn is refused.
#include "proto/fetch_guard.hpp"
#include "proto/shared_access.hpp"
#include "support/core_pair.hpp"
#include "support/messages.hpp"

#include <catch2/catch.hpp>

#include <algorithm>

using namespace bellows;
using namespace bellows::proto;
using namespace bellows::test;

namespace {

/// A pair whose offers are fetched, a receive posted on side 1 and a send queued on side 0.
struct fetch_pair {
  explicit fetch_pair(std::uint64_t seed, std::size_t size = above_largest_frame)
      : message(test::random_bytes(size, seed)), inbox(size + 100) {
    c.cores[1]->receive(9, pair_of_cores::into(inbox));
    c.cores[0]->send(7, pair_of_cores::ranges(message), clock_time{});
  }
  pair_of_cores c{false, true};
  std::vector<std::byte> message;
  std::vector<std::byte> inbox;
};

}  // namespace

TEST_CASE("core: a fetched offer is read by the receiver and answered received, with nothing else written",
          "[core][direct][fetch]") {
  fetch_pair f(21);
  auto& c = f.c;
  const auto offered = c.run(0);
  REQUIRE(names(offered) == "place56+t @after DIRECT_OFFER doorbell");  // no send_done: it waits
  const auto guard = fetch_guard::current();
  const auto* offer = std::get<place>(offered[0]).prefix().data() + header_bytes;
  const auto note = decode_fetch(offer);
  REQUIRE(note);
  CHECK(note->source == reinterpret_cast<std::uint64_t>(f.message.data()));
  CHECK(note->offer.length == f.message.size());
  CHECK(note->guard_address == guard.address);
  CHECK(note->guard_value == guard.value);

  c.cores[1]->poll(clock_time{});
  // Read, the whole answer (head and fields, then its tail), the doorbell, then the handler.
  const auto received = c.run(1);
  REQUIRE(names(received) == "fetch place40 place8 doorbell receive_done");
  CHECK(std::get<receive_done>(received[4]).bytes == f.message.size());
  CHECK(std::equal(f.message.begin(), f.message.end(), f.inbox.begin()));

  c.cores[0]->poll(clock_time{});
  const auto completed = c.run(0);
  REQUIRE(names(completed) == "send_done");
  CHECK(!std::get<send_done>(completed[0]).ec);
  CHECK(std::get<send_done>(completed[0]).bytes == f.message.size());
  CHECK(c.cores[0]->stats().direct_messages_sent == 1);
  CHECK(c.cores[1]->stats().direct_messages_received == 1);
  CHECK(c.cores[0]->stats().send_tier == 0);  // no ring had to grow

  // The next message goes as usual: the receiver's ring takes frames again after the fetch.
  std::vector<std::byte> second_inbox(64);
  const auto small = test::random_bytes(40, 22);
  c.cores[1]->receive(10, pair_of_cores::into(second_inbox));
  c.cores[0]->send(8, pair_of_cores::ranges(small), clock_time{});
  std::vector<action> seen[2];
  REQUIRE(exchange(
      c, [&] { return find_done<receive_done>(seen[1]) != nullptr; }, seen));
  CHECK(!find_done<receive_done>(seen[1])->ec);
  CHECK(std::equal(small.begin(), small.end(), second_inbox.begin()));
}

TEST_CASE("core: a fetch that fails is declined and the message comes through the ring", "[core][direct][fetch]") {
  fetch_pair f(23);
  auto& c = f.c;
  c.fetching = false;  // as a receiver the sender's process refuses to be read by
  c.run(0);
  std::vector<action> seen[2];
  REQUIRE(exchange(
      c, [&] { return find_done<receive_done>(seen[1]) != nullptr; }, seen));
  const auto& r = *find_done<receive_done>(seen[1]);
  CHECK(!r.ec);
  CHECK(r.bytes == f.message.size());
  CHECK(std::equal(f.message.begin(), f.message.end(), f.inbox.begin()));
  REQUIRE(find_done<send_done>(seen[0]) != nullptr);
  CHECK(!find_done<send_done>(seen[0])->ec);
  CHECK(c.cores[0]->stats().direct_messages_sent == 0);
  CHECK(c.cores[1]->stats().direct_messages_received == 0);
  CHECK(c.cores[0]->stats().send_tier == 2);  // fragmented through the largest tier instead
}

TEST_CASE("core: with fetched offers, messages the receiver cannot fetch whole are not offered",
          "[core][direct][fetch]") {
  const auto how = GENERATE(as<std::string>{}, "a message in two ranges", "a message no larger than a frame");
  INFO(how);
  pair_of_cores c(false, true);
  const std::size_t size = how == "a message in two ranges" ? above_largest_frame : 4000;
  const auto message = test::random_bytes(size, 24);
  std::vector<std::byte> inbox(size);
  c.cores[1]->receive(9, pair_of_cores::into(inbox));
  detail::gather g = pair_of_cores::ranges(message);
  if (how == "a message in two ranges") {
    const std::span<const std::byte> all(message);
    g.is_single = false;
    g.many = {all.first(1000), all.subspan(1000)};
  }
  c.cores[0]->send(7, std::move(g), clock_time{});
  std::vector<action> seen[2];
  REQUIRE(exchange(
      c, [&] { return find_done<receive_done>(seen[1]) != nullptr; }, seen));
  CHECK(!find_done<receive_done>(seen[1])->ec);
  CHECK(inbox == message);
  CHECK(names(seen[1]).find("fetch") == std::string::npos);
  CHECK(c.cores[0]->stats().direct_messages_sent == 0);
}

TEST_CASE("core: bytes read after the sender let go of its buffer are not delivered", "[core][direct][fetch]") {
  fetch_pair f(25);
  auto& c = f.c;
  c.run(0);
  // The sender's channel is torn down while the receiver is reading: its send completes (the
  // buffer is the application's again) only after the guard moved, so the read does not count.
  bool send_ended_first = false;
  c.before_guard_check = [&] {
    c.cores[0]->abort();
    const auto torn = c.run(0);
    const auto* s = find_done<send_done>(torn);
    send_ended_first = s != nullptr && s->ec == error::channel_closed;
  };
  c.cores[1]->poll(clock_time{});
  const auto declined = c.run(1);
  CHECK(send_ended_first);
  CHECK(names(declined) == "fetch place40 place8 doorbell");  // declined; the receive still waits
  CHECK(c.cores[1]->stats().direct_messages_received == 0);
  // The sender's detach then ends the receive without a message.
  c.before_guard_check = nullptr;
  c.cores[1]->peer_detached(clock_time{});
  const auto ended = c.run(1);
  const auto* r = find_done<receive_done>(ended);
  REQUIRE(r != nullptr);
  CHECK(r->ec == error::connection_reset);
  CHECK(r->bytes == 0);
}

TEST_CASE("core: an answer of the wrong kind for the offer made is a protocol violation", "[core][direct][fetch]") {
  const auto how = GENERATE(as<std::string>{}, "granted to a fetched offer", "received for a lent offer",
                            "received with another length");
  INFO(how);
  const bool fetched = how != "received for a lent offer";
  pair_of_cores c(!fetched, fetched);
  const auto message = test::random_bytes(above_largest_frame, 26);
  c.cores[0]->send(7, pair_of_cores::ranges(message), clock_time{});
  c.run(0);
  std::vector<std::byte> elsewhere(message.size());
  const auto status = how == "granted to a fetched offer" ? ack_status::granted : ack_status::received;
  const auto length = how == "received with another length" ? message.size() - 1 : message.size();
  const auto lie = encode_lend({1, status, reinterpret_cast<std::uint64_t>(elsewhere.data()), 0, length});
  std::memcpy(c.control[0].data() + control_block::lend_offset, lie.data(), lie.size());
  c.cores[0]->poll(clock_time{});
  const auto refused = c.run(0);
  const auto* s = find_done<send_done>(refused);
  REQUIRE(s != nullptr);
  CHECK(s->ec == error::protocol_violation);
  CHECK(c.cores[0]->closed_reason() == error::protocol_violation);
}

TEST_CASE("core: a DONE after a fetched offer is a protocol violation", "[core][direct][fetch]") {
  fetch_pair f(27);
  auto& c = f.c;
  const auto offered = c.run(0);
  c.cores[1]->poll(clock_time{});
  REQUIRE(find_done<receive_done>(c.run(1)) != nullptr);
  // A lying sender follows its fetched offer with a DIRECT_DONE in the next slot.
  const auto& offer = std::get<place>(offered[0]);
  frame_header h{2, direct_payload_bytes, frame_kind::direct_done, 0, 1, 0};
  h.seq_again = h.seq;
  const auto first_tier = (*tier_table::make(default_tiers()))[0];
  auto* frame =
      reinterpret_cast<std::byte*>(offer.address) + first_tier.slot_size * first_tier.slots_for(fetch_payload_bytes);
  const auto header = encode_header(h);
  std::memcpy(frame, header.data(), header.size());
  const auto payload = encode_direct({1, f.message.size()});
  std::memcpy(frame + header_bytes, payload.data(), payload.size());
  put(frame + trailer_offset(h.length), std::uint64_t{h.seq});
  c.cores[1]->receive(10, pair_of_cores::into(f.inbox));
  c.cores[1]->poll(clock_time{});
  const auto ended = c.run(1);
  const auto* r = find_done<receive_done>(ended);
  REQUIRE(r != nullptr);
  CHECK(r->ec == error::protocol_violation);
}
