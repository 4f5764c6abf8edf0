// The offer ahead: while a lent buffer's bytes travel, the sender's next large message is
// already offered, and the receiver lends it the receive behind the lent one. What is checked
// is that this never changes what the application sees: messages in order, into the receives
// in the order they were posted, a late second receive, one that cannot be lent, cancellation
// and teardown with two buffers lent.
#include "support/core_pair.hpp"
#include "support/messages.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <cstring>
#include <functional>
#include <string>

using namespace bellows;
using namespace bellows::proto;
using namespace bellows::test;

namespace {

/// Two large sends queued, the first one's buffer lent and its answer read by the sender: the
/// second one's offer has gone ahead of the first one's bytes.
struct two_sends {
  explicit two_sends(bool second_receive_posted) {
    c.cores[1]->receive(9, pair_of_cores::into(inbox[0]));
    if (second_receive_posted) c.cores[1]->receive(10, pair_of_cores::into(inbox[1]));
    c.cores[0]->send(7, pair_of_cores::ranges(first), clock_time{});
    c.cores[0]->send(8, pair_of_cores::ranges(second), clock_time{});
    c.run(0);
    c.cores[1]->poll(clock_time{});
    c.run(1);  // the first lent
    c.cores[0]->poll(clock_time{});
    sent = c.run(0);
  }

  pair_of_cores c{true};
  std::vector<std::byte> first = test::random_bytes(above_largest_frame, 21);
  std::vector<std::byte> second = test::random_bytes(above_largest_frame + 8, 22);
  std::vector<std::byte> inbox[2] = {std::vector<std::byte>(second.size()), std::vector<std::byte>(second.size())};
  std::vector<action> sent;

  /// Takes the first message's DONE out of sight (its trailer unwritten) and returns a way to
  /// put it back: the receiver then sees only the offer ahead.
  std::function<void()> hide_done() {
    std::uint64_t trailer = 0;
    for (const auto& a : sent)
      if (auto* p = std::get_if<place>(&a); p && p->has_trailer) trailer = p->trailer_address;
    REQUIRE(trailer != 0);
    std::byte saved[8];
    std::memcpy(saved, reinterpret_cast<std::byte*>(trailer), 8);
    std::memset(reinterpret_cast<std::byte*>(trailer), 0, 8);
    return
        [trailer, word = std::to_array(saved)] { std::memcpy(reinterpret_cast<std::byte*>(trailer), word.data(), 8); };
  }
};

}  // namespace

TEST_CASE("core: the next send is offered ahead of a lent buffer's bytes and lent the next receive meanwhile",
          "[core][direct]") {
  two_sends t(true);
  auto& c = t.c;
  // The second's offer and a doorbell for it, then the first's bytes and DONE; the first is
  // done once they left.
  REQUIRE(names(t.sent) == "place32+t @after DIRECT_OFFER doorbell place0 place32+t doorbell handover send_done");

  // The second offer: the receive behind the lent one is lent to the driver; DONE and the
  // receipt meanwhile; then the driver's answer goes out as the grant.
  c.cores[1]->poll(clock_time{});
  REQUIRE(names(c.run(1)) ==
          "lend release place8 doorbell receive_done place40 place8 @with a receive buffer lent doorbell");
  c.cores[0]->poll(clock_time{});
  REQUIRE(names(c.run(0)) == "place0 place32+t doorbell handover send_done");
  c.cores[1]->poll(clock_time{});
  CHECK(names(c.run(1)) == "release place8 doorbell receive_done");
  c.cores[0]->poll(clock_time{});
  CHECK(names(c.run(0)).empty());
  CHECK(std::equal(t.first.begin(), t.first.end(), t.inbox[0].begin()));
  CHECK(t.inbox[1] == t.second);
  CHECK(c.cores[0]->stats().direct_messages_sent == 2);
  CHECK(c.cores[1]->stats().direct_messages_received == 2);
  CHECK(c.cores[0]->closed_reason() == std::error_code{});
}

TEST_CASE("core: an offer ahead waits for a receive posted after the lent one completes", "[core][direct]") {
  two_sends t(false);
  REQUIRE(names(t.sent).starts_with("place32+t @after DIRECT_OFFER doorbell place0"));
  t.c.cores[1]->poll(clock_time{});
  // The first message is in; the offer ahead has no receive to lend yet, and is not answered.
  const auto first_in = t.c.run(1);
  REQUIRE(names(first_in) == "release place8 doorbell receive_done");
  t.c.cores[0]->poll(clock_time{});
  CHECK(find_done<send_done>(t.c.run(0)) == nullptr);  // the second waits for its answer
  t.c.cores[1]->receive(10, pair_of_cores::into(t.inbox[1]));
  REQUIRE(names(t.c.run(1)).starts_with("lend"));
  std::vector<action> seen[2];
  REQUIRE(exchange(
      t.c, [&] { return find_done<receive_done>(seen[1]) != nullptr; }, seen));
  CHECK(!find_done<receive_done>(seen[1])->ec);
  CHECK(t.inbox[1] == t.second);
  CHECK(t.c.cores[1]->stats().direct_messages_received == 2);
}

TEST_CASE("core: an offer ahead is lent to a receive posted while the lent one's bytes are still coming",
          "[core][direct]") {
  two_sends t(false);
  const auto show_done = t.hide_done();
  t.c.cores[1]->poll(clock_time{});
  CHECK(t.c.run(1).empty());  // parked: no receive to lend yet, and nothing else to do
  t.c.cores[1]->receive(10, pair_of_cores::into(t.inbox[1]));
  REQUIRE(names(t.c.run(1)) == "lend place40 place8 @with a receive buffer lent doorbell");
  show_done();
  std::vector<action> seen[2];
  REQUIRE(exchange(
      t.c, [&] { return t.c.cores[1]->stats().direct_messages_received == 2 && find_done<send_done>(seen[0]); }, seen));
  CHECK(std::equal(t.first.begin(), t.first.end(), t.inbox[0].begin()));
  CHECK(t.inbox[1] == t.second);
}

TEST_CASE("core: an offer ahead that the next receive cannot take comes through the ring after the lent one",
          "[core][direct]") {
  two_sends t(false);
  t.c.cores[1]->receive_view(10);  // a view: declined at once, the lent receive still pending
  std::vector<action> seen[2];
  REQUIRE(exchange(
      t.c, [&] { return find_done<view_done>(seen[1]) != nullptr; }, seen));
  const auto* r = find_done<receive_done>(seen[1]);
  REQUIRE(r != nullptr);  // the lent one first
  CHECK(!r->ec);
  CHECK(std::equal(t.first.begin(), t.first.end(), t.inbox[0].begin()));
  const auto& v = *find_done<view_done>(seen[1]);
  CHECK(!v.ec);
  CHECK(std::equal(t.second.begin(), t.second.end(), v.assembled.begin(), v.assembled.end()));
  CHECK(t.c.cores[1]->stats().direct_messages_received == 1);
  CHECK(t.c.cores[0]->stats().send_tier == 2);  // fragmented through the largest tier
}

TEST_CASE("core: neither the send offered ahead nor the receive lent ahead is cancelled", "[core][direct]") {
  two_sends t(true);
  t.c.cores[0]->cancel(8);
  CHECK(t.c.run(0).empty());  // offered: the receiver may be lending a buffer for it
  t.c.cores[1]->poll(clock_time{});
  REQUIRE(find_done<receive_done>(t.c.run(1)) != nullptr);  // the second lent, the first received
  t.c.cores[1]->cancel(10);
  CHECK(t.c.run(1).empty());
  std::vector<action> seen[2];
  REQUIRE(exchange(
      t.c, [&] { return find_done<receive_done>(seen[1]) && find_done<send_done>(seen[0]); }, seen));
  CHECK(!find_done<receive_done>(seen[1])->ec);
  CHECK(!find_done<send_done>(seen[0])->ec);
  CHECK(t.inbox[1] == t.second);
}

TEST_CASE("core: a channel torn down with two buffers lent takes both back before their receives complete",
          "[core][direct]") {
  two_sends t(true);
  // The first one's DONE not yet in: the receiver lends the second receive while the first is
  // still lent.
  t.hide_done();
  t.c.cores[1]->poll(clock_time{});
  REQUIRE(names(t.c.run(1)) == "lend place40 place8 @with a receive buffer lent doorbell");
  t.c.cores[1]->abort();
  const auto torn = t.c.run(1);
  REQUIRE(names(torn).starts_with("release release"));
  CHECK(std::get<release_region>(torn[0]).region == 1000);
  CHECK(std::get<release_region>(torn[1]).region == 1001);
  int closed = 0;
  for (const auto& a : torn)
    if (auto* r = std::get_if<receive_done>(&a)) closed += r->ec == error::channel_closed ? 1 : 0;
  CHECK(closed == 2);
}
