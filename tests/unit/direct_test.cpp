// Direct placement in the channel core: a message above the largest tier's frames is offered,
// the receiver lends its posted buffer (or declines), and the message lands there in one write
// followed by DIRECT_DONE. What is checked is the order of the actions on both sides, that
// nothing is lost when the offer is declined or the receive is cancelled or torn down, and
// that a sender lying about the answer is refused.
#include "proto/shared_access.hpp"
#include "support/core_pair.hpp"
#include "support/messages.hpp"

#include <catch2/catch.hpp>

#include <algorithm>

using namespace bellows;
using namespace bellows::proto;
using namespace bellows::test;

TEST_CASE("core: a message above the largest frame is offered, lent, written into the buffer, then DONE",
          "[core][direct]") {
  pair_of_cores c(true);
  c.holds_unsent = GENERATE(false, true);
  INFO((c.holds_unsent ? "the provider still holds some of the bytes" : "the provider sent every byte at once"));
  const auto message = test::random_bytes(above_largest_frame, 5);
  std::vector<std::byte> inbox(above_largest_frame + 100);
  c.cores[1]->receive(9, pair_of_cores::into(inbox));

  c.cores[0]->send(7, pair_of_cores::ranges(message), clock_time{});
  CHECK(names(c.run(0)) == "place32+t @after DIRECT_OFFER doorbell");  // no send_done: it waits

  c.cores[1]->poll(clock_time{});
  // The answer: head and fields, then the tail, then the doorbell; the receive still pending.
  CHECK(names(c.run(1)) == "lend place40 place8 @with a receive buffer lent doorbell");

  c.cores[0]->poll(clock_time{});
  const auto sent = c.run(0);
  // The message alone (no header, no trailer) into the lent buffer, then DONE behind it; the
  // send completes once the provider has sent them, or else when the receiver says it has it.
  REQUIRE(names(sent) ==
          (c.holds_unsent ? "place0 place32+t doorbell handover" : "place0 place32+t doorbell handover send_done"));
  CHECK(std::get<place>(sent[0]).address == reinterpret_cast<std::uint64_t>(inbox.data()));

  c.cores[1]->poll(clock_time{});
  const auto received = c.run(1);
  // Out of the peer's reach first, then the receipt (the offer's id), then the handler.
  REQUIRE(names(received) == "release place8 doorbell receive_done");
  CHECK(std::get<release_region>(received[0]).region == 1000);
  CHECK(std::get<receive_done>(received[3]).bytes == message.size());

  c.cores[0]->poll(clock_time{});
  const auto completed = c.run(0);
  REQUIRE(names(completed) == (c.holds_unsent ? "send_done" : ""));
  const auto& done = std::get<send_done>(c.holds_unsent ? completed[0] : sent[4]);
  CHECK(done.bytes == message.size());
  CHECK(!done.ec);
  CHECK(std::equal(message.begin(), message.end(), inbox.begin()));
  CHECK(c.cores[0]->stats().direct_messages_sent == 1);
  CHECK(c.cores[1]->stats().direct_messages_received == 1);
  CHECK(c.cores[0]->stats().send_tier == 0);  // no ring had to grow
}

TEST_CASE("core: an offer the receive cannot take is declined and the message comes through the ring",
          "[core][direct]") {
  const auto how =
      GENERATE(as<std::string>{}, "a view", "a buffer in two parts", "a buffer too small", "a driver that cannot lend");
  INFO("received into " << how);
  pair_of_cores c(true);
  c.lending = how != "a driver that cannot lend";
  const auto message = test::random_bytes(above_largest_frame, 6);
  std::vector<std::byte> inbox(above_largest_frame);
  std::vector<std::byte> split_a(1000), split_b(above_largest_frame);
  detail::scatter into = pair_of_cores::into(inbox);
  if (how == "a buffer in two parts") {
    into.is_single = false;
    into.many = {split_a, split_b};
    into.length = split_a.size() + split_b.size();
  }
  if (how == "a buffer too small") into.length = into.single.size() - 1, into.single = into.single.first(into.length);
  if (how == "a view") {
    c.cores[1]->receive_view(9);
  } else {
    c.cores[1]->receive(9, std::move(into));
  }
  c.cores[0]->send(7, pair_of_cores::ranges(message), clock_time{});
  c.run(0);
  std::vector<action> seen[2];
  REQUIRE(exchange(
      c, [&] { return find_done<view_done>(seen[1]) || find_done<receive_done>(seen[1]); }, seen));
  CHECK(find_done<send_done>(seen[0]) != nullptr);
  CHECK(c.cores[0]->stats().direct_messages_sent == 0);
  CHECK(c.cores[1]->stats().direct_messages_received == 0);
  CHECK(c.cores[0]->stats().send_tier == 2);  // fragmented through the largest tier instead
  if (how == "a view") {
    const auto& v = *find_done<view_done>(seen[1]);
    CHECK(!v.ec);
    CHECK(std::equal(message.begin(), message.end(), v.assembled.begin(), v.assembled.end()));
  } else if (how == "a buffer too small") {
    const auto& r = *find_done<receive_done>(seen[1]);
    CHECK(r.ec == error::message_size);
    CHECK(r.bytes == message.size());  // the caller learns what it needed
  } else {
    const auto& r = *find_done<receive_done>(seen[1]);
    CHECK(!r.ec);
    CHECK(r.bytes == message.size());
    std::vector<std::byte> got(split_a);
    if (how == "a buffer in two parts") got.insert(got.end(), split_b.begin(), split_b.end());
    if (how == "a driver that cannot lend") got = inbox;
    got.resize(message.size());
    CHECK(got == message);
  }
}

TEST_CASE("core: a lent receive is not cancelled: it completes with the message", "[core][direct]") {
  pair_of_cores c(true);
  const auto message = test::random_bytes(above_largest_frame, 7);
  std::vector<std::byte> inbox(above_largest_frame);
  c.cores[1]->receive(9, pair_of_cores::into(inbox));
  c.cores[0]->send(7, pair_of_cores::ranges(message), clock_time{});
  c.run(0);
  c.cores[1]->poll(clock_time{});
  REQUIRE(names(c.run(1)).starts_with("lend"));
  c.cores[1]->cancel(9);
  CHECK(c.run(1).empty());  // the peer may be writing into it: nothing happens now
  c.cores[0]->cancel(7);
  CHECK(c.run(0).empty());  // offered: no longer the sender's to take back
  std::vector<action> seen[2];
  REQUIRE(exchange(
      c, [&] { return find_done<receive_done>(seen[1]) != nullptr; }, seen));
  CHECK(!find_done<receive_done>(seen[1])->ec);
  CHECK(!find_done<send_done>(seen[0])->ec);
  CHECK(std::equal(message.begin(), message.end(), inbox.begin()));
}

TEST_CASE("core: a send whose offer was declined is not cancelled: the receiver expects it through the ring",
          "[core][direct]") {
  pair_of_cores c(true);
  const auto message = test::random_bytes(above_largest_frame, 10);
  c.cores[1]->receive_view(9);  // declines
  c.cores[0]->send(7, pair_of_cores::ranges(message), clock_time{});
  c.run(0);
  c.cores[1]->poll(clock_time{});
  c.run(1);
  c.cores[0]->poll(clock_time{});
  c.run(0);  // the answer read: the message is on its way through the ring
  c.cores[0]->cancel(7);
  std::vector<action> seen[2];
  REQUIRE(exchange(
      c, [&] { return find_done<view_done>(seen[1]) != nullptr; }, seen));
  const auto& v = *find_done<view_done>(seen[1]);
  CHECK(!v.ec);
  CHECK(std::equal(message.begin(), message.end(), v.assembled.begin(), v.assembled.end()));
  REQUIRE(find_done<send_done>(seen[0]) != nullptr);
  CHECK(!find_done<send_done>(seen[0])->ec);
}

TEST_CASE("core: a channel torn down with a buffer lent takes it back before the receive completes", "[core][direct]") {
  pair_of_cores c(true);
  const auto message = test::random_bytes(above_largest_frame, 8);
  std::vector<std::byte> inbox(above_largest_frame);
  c.cores[1]->receive(9, pair_of_cores::into(inbox));
  c.cores[0]->send(7, pair_of_cores::ranges(message), clock_time{});
  c.run(0);
  c.cores[1]->poll(clock_time{});
  c.run(1);
  c.cores[1]->abort();
  const auto torn = c.run(1);
  REQUIRE(names(torn).starts_with("release"));
  CHECK(std::get<release_region>(torn[0]).region == 1000);
  const auto* r = find_done<receive_done>(torn);
  REQUIRE(r != nullptr);
  CHECK(r->ec == error::channel_closed);
}

TEST_CASE("core: a DONE for an offer the receiver declined is a protocol violation", "[core][direct]") {
  pair_of_cores c(true);
  const auto message = test::random_bytes(above_largest_frame, 9);
  c.cores[1]->receive_view(9);  // declines
  c.cores[0]->send(7, pair_of_cores::ranges(message), clock_time{});
  c.run(0);
  c.cores[1]->poll(clock_time{});
  c.run(1);
  // The sender's lend slot now says "declined"; a lying sender reads "granted" into it.
  std::byte* slot = c.control[0].data() + control_block::lend_offset;
  REQUIRE(get<std::uint32_t>(slot + lend_layout::status) == static_cast<std::uint32_t>(ack_status::denied));
  std::vector<std::byte> elsewhere(message.size());
  const auto lie =
      encode_lend({1, ack_status::granted, reinterpret_cast<std::uint64_t>(elsewhere.data()), 0, message.size()});
  std::memcpy(slot, lie.data(), lie.size());
  c.cores[0]->poll(clock_time{});
  c.run(0);
  c.cores[1]->poll(clock_time{});
  const auto refused = c.run(1);
  const auto* v = find_done<view_done>(refused);
  REQUIRE(v != nullptr);
  CHECK(v->ec == error::protocol_violation);
  CHECK(c.cores[1]->closed_reason() == error::protocol_violation);
}

TEST_CASE("core: a receipt written just before the peer detached still completes the send", "[core][direct]") {
  pair_of_cores c(true);
  c.holds_unsent = true;  // so that the send waits for the receipt
  const auto message = test::random_bytes(above_largest_frame, 11);
  std::vector<std::byte> inbox(above_largest_frame);
  c.cores[1]->receive(9, pair_of_cores::into(inbox));
  c.cores[0]->send(7, pair_of_cores::ranges(message), clock_time{});
  c.run(0);
  c.cores[1]->poll(clock_time{});
  c.run(1);  // lent
  c.cores[0]->poll(clock_time{});
  c.run(0);  // written, DONE behind it
  c.cores[1]->poll(clock_time{});
  REQUIRE(find_done<receive_done>(c.run(1)) != nullptr);  // the receipt is in the sender's slot
  // The sender hears of the detach before it polls again, as when both come in one read.
  c.cores[0]->peer_detached(clock_time{});
  const auto settled = c.run(0);
  const auto* s = find_done<send_done>(settled);
  REQUIRE(s != nullptr);
  CHECK(!s->ec);
  CHECK(s->bytes == message.size());
}

TEST_CASE("core: a write refused by the peer's memory is a violation, unless it went into a lent buffer",
          "[core][direct]") {
  const bool how_told_by_link = GENERATE(false, true);
  INFO((how_told_by_link ? "the link failed" : "the write failed"));
  const auto refused = [&](channel_core& core) {
    const auto ec = make_error_code(error::protocol_violation);
    if (how_told_by_link) {
      core.link_failed(ec, clock_time{});
    } else {
      core.write_failed(ec);
    }
  };
  {
    INFO("an ordinary send: a peer that named memory it does not have broke the protocol");
    pair_of_cores c(true);
    const auto message = test::random_bytes(100, 1);
    std::vector<std::byte> inbox(100);
    c.cores[1]->receive(9, pair_of_cores::into(inbox));
    c.cores[0]->send(7, pair_of_cores::ranges(message), clock_time{});
    c.cores[0]->receive(8, pair_of_cores::into(inbox));
    c.run(0);
    refused(*c.cores[0]);
    const auto failed = c.run(0);
    const auto* ended = find_done<receive_done>(failed);
    REQUIRE(ended != nullptr);
    CHECK(ended->ec == error::protocol_violation);
  }
  {
    INFO("a message into a lent buffer: the peer took it back, tearing its channel down");
    pair_of_cores c(true);
    c.holds_unsent = GENERATE(false, true);
    INFO((c.holds_unsent ? "the send waits for the receipt" : "the send completed at handover"));
    const auto message = test::random_bytes(above_largest_frame, 2);
    std::vector<std::byte> inbox(above_largest_frame), other(100);
    c.cores[1]->receive(9, pair_of_cores::into(inbox));
    c.cores[0]->send(7, pair_of_cores::ranges(message), clock_time{});
    c.cores[0]->receive(8, pair_of_cores::into(other));
    c.run(0);
    c.cores[1]->poll(clock_time{});
    c.run(1);
    c.cores[0]->poll(clock_time{});
    const auto written = c.run(0);  // being written into the lent buffer
    const auto* early = find_done<send_done>(written);
    REQUIRE((early == nullptr) == c.holds_unsent);  // done at handover unless bytes were held
    refused(*c.cores[0]);
    const auto failed = c.run(0);
    if (c.holds_unsent) {
      const auto* sent = find_done<send_done>(failed);
      REQUIRE(sent != nullptr);
      CHECK(sent->ec == error::connection_reset);
    } else {
      CHECK(!early->ec);
    }
    const auto* ended = find_done<receive_done>(failed);
    REQUIRE(ended != nullptr);
    CHECK(ended->ec == error::connection_reset);
  }
}
