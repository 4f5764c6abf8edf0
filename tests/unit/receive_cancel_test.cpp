// A receive cancelled part-way through a fragmented message: the fragments it took are kept,
// and the next receive gets the whole message, whichever kind each receive is. (A message
// fragments wherever a ring is smaller than it: after a denial, behind an unanswered request,
// or alongside the request when its fragments fit the ring, so any size may.)
#include "support/core_pair.hpp"
#include "support/messages.hpp"

#include <catch2/catch.hpp>

#include <string>

using namespace bellows;
using namespace bellows::proto;
using namespace std::chrono_literals;
using bellows::test::find_done;
using bellows::test::names;
using bellows::test::pair_of_cores;

namespace {

/// Twice the largest ring: it arrives in parts, each waiting for the credit of the one before.
constexpr std::size_t two_rings = 2 << 20;

/// Side 0 sends `message`; side 1's receive `first` (posted by `post_first`) takes its first
/// fragments, but not all of them, and is cancelled then.
void cancel_part_way(pair_of_cores& c, const std::vector<std::byte>& message, std::uint64_t first,
                     const std::function<void()>& post_first) {
  auto& a = *c.cores[0];
  auto& b = *c.cores[1];
  a.send(1, pair_of_cores::ranges(message), clock_time{});
  c.run(0);
  b.poll(1us);
  REQUIRE(names(c.run(1)).find("provision") != std::string::npos);  // the largest ring
  a.poll(2us);
  CHECK(names(c.run(0)).find("send_done") == std::string::npos);  // the ring holds half of it
  post_first();
  b.poll(3us);
  const auto took_part = c.run(1);
  REQUIRE(find_done<view_done>(took_part) == nullptr);
  REQUIRE(find_done<receive_done>(took_part) == nullptr);
  REQUIRE(b.stats().messages_received == 0);

  b.cancel(first);
  const auto cancelled = c.run(1);
  REQUIRE(cancelled.size() == 1);
  const auto* view = std::get_if<view_done>(&cancelled[0]);
  const auto* buffer = std::get_if<receive_done>(&cancelled[0]);
  REQUIRE((view != nullptr || buffer != nullptr));
  CHECK((view != nullptr ? view->ec : buffer->ec) == proto::cancelled());
}

/// Runs both sides until side 1 completes a receive; returns its actions.
std::vector<action> until_received(pair_of_cores& c) {
  std::vector<action> seen[2];
  const bool done = test::exchange(
      c, [&] { return find_done<view_done>(seen[1]) != nullptr || find_done<receive_done>(seen[1]) != nullptr; }, seen);
  REQUIRE(done);
  return std::move(seen[1]);
}

}  // namespace

TEST_CASE("core: a view cancelled part-way through a message loses none of it: the next view gets it whole",
          "[core][cancel]") {
  pair_of_cores c;
  const auto message = test::random_bytes(two_rings, 11);
  cancel_part_way(c, message, 9, [&] { c.cores[1]->receive_view(9); });
  c.cores[1]->receive_view(10);
  const auto got = until_received(c);
  const auto* done = find_done<view_done>(got);
  REQUIRE(done != nullptr);
  CHECK(done->id == 10);
  CHECK_FALSE(done->ec);
  REQUIRE(done->assembled.size() == message.size());
  CHECK(done->assembled == message);
  CHECK(c.cores[1]->stats().messages_received == 1);

  // The channel goes on: the next message comes whole to the next receive.
  const auto next = test::random_bytes(100, 12);
  c.cores[0]->send(2, pair_of_cores::ranges(next), 10us);
  c.cores[1]->receive_view(11);
  const auto got_after = until_received(c);
  const auto* after = find_done<view_done>(got_after);
  REQUIRE(after != nullptr);
  CHECK(std::vector<std::byte>(after->bytes.begin(), after->bytes.end()) == next);
}

TEST_CASE("core: a receive into buffers cancelled part-way keeps what it took for the next receive, of either kind",
          "[core][cancel]") {
  const auto message = test::random_bytes(two_rings, 13);
  std::vector<std::byte> first(two_rings + 10);
  SECTION("the next receive takes buffers") {
    pair_of_cores c;
    cancel_part_way(c, message, 9, [&] { c.cores[1]->receive(9, pair_of_cores::into(first)); });
    std::fill(first.begin(), first.end(), std::byte{0});  // the cancelled receive's buffer is the caller's again
    std::vector<std::byte> second(two_rings);
    c.cores[1]->receive(10, pair_of_cores::into(second));
    const auto got_done = until_received(c);
    const auto* done = find_done<receive_done>(got_done);
    REQUIRE(done != nullptr);
    CHECK(done->id == 10);
    CHECK_FALSE(done->ec);
    CHECK(done->bytes == message.size());
    CHECK(second == message);
  }
  SECTION("the next receive is a view") {
    pair_of_cores c;
    cancel_part_way(c, message, 9, [&] { c.cores[1]->receive(9, pair_of_cores::into(first)); });
    c.cores[1]->receive_view(10);
    const auto got_done = until_received(c);
    const auto* done = find_done<view_done>(got_done);
    REQUIRE(done != nullptr);
    CHECK_FALSE(done->ec);
    CHECK(done->assembled == message);
  }
  SECTION("the next receive's buffers are too small: message_size with the size, as for any message") {
    pair_of_cores c;
    cancel_part_way(c, message, 9, [&] { c.cores[1]->receive_view(9); });
    std::vector<std::byte> small(1000);
    c.cores[1]->receive(10, pair_of_cores::into(small));
    const auto got_done = until_received(c);
    const auto* done = find_done<receive_done>(got_done);
    REQUIRE(done != nullptr);
    CHECK(done->ec == error::message_size);
    CHECK(done->bytes == message.size());
    // The rest of it is discarded; the message after it comes to the next receive.
    const auto next = test::random_bytes(300, 14);
    c.cores[0]->send(2, pair_of_cores::ranges(next), 10us);
    c.cores[1]->receive(11, pair_of_cores::into(small));
    const auto got_after = until_received(c);
    const auto* after = find_done<receive_done>(got_after);
    REQUIRE(after != nullptr);
    CHECK_FALSE(after->ec);
    CHECK(std::equal(next.begin(), next.end(), small.begin()));
  }
}

TEST_CASE("core: a message kept from a cancelled receive is not handed out once the peer failed", "[core][cancel]") {
  pair_of_cores c;
  const auto message = test::random_bytes(two_rings, 15);
  cancel_part_way(c, message, 9, [&] { c.cores[1]->receive_view(9); });
  c.cores[1]->link_failed(make_error_code(error::connection_reset), 5us);
  c.cores[1]->receive_view(10);
  const auto out = c.run(1);
  const auto* done = find_done<view_done>(out);
  REQUIRE(done != nullptr);
  CHECK(done->ec == error::connection_reset);
}
