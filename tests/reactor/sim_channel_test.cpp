// Channels with the public API over the in-process sim link, served by the real reactor. The sim
// hands the test every write before it lands, so faults happen at an exact step of the
// protocol: between an acknowledgement's head and tail, between a frame's header and trailer,
// with doorbells that never arrive, between two fragments.

#include "sim/sim_channels.hpp"
#include "support/messages.hpp"
#include "support/run_until.hpp"

#include <bellows/bellows.hpp>

#include <asio/io_context.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <optional>

using namespace std::chrono_literals;
using bellows::sim::link_write;
using bellows::sim::make_sim_links;
using bellows::sim::open_sim_channel;
using bellows::sim::write_target;
namespace bt = bellows::test;
using bt::run_until;

namespace {

struct result {
  std::optional<std::error_code> ec;
  std::size_t bytes = 0;
  bool done() const noexcept { return ec.has_value(); }
};

auto record(result& r) {
  return [&r](std::error_code ec, std::size_t n) {
    r.ec = ec;
    r.bytes = n;
  };
}

/// Runs `io` for `span`, for checking that something does not happen.
void run_for(asio::io_context& io, std::chrono::milliseconds span) {
  const auto deadline = std::chrono::steady_clock::now() + span;
  while (std::chrono::steady_clock::now() < deadline) {
    io.restart();
    io.run_for(1ms);
  }
}

/// One message from `from` to `to`: the send and the receive started, their results recorded.
struct transfer {
  result sent, received;

  transfer(bellows::channel& from, bellows::channel& to, asio::const_buffer message, asio::mutable_buffer into) {
    from.async_send(message, record(sent));
    to.async_receive(into, record(received));
  }
  transfer(const transfer&) = delete;  // the handlers point into it
  transfer& operator=(const transfer&) = delete;
  bool done() const noexcept { return sent.done() && received.done(); }
};

}  // namespace

TEST_CASE("sim under the reactor: messages of every tier arrive intact both ways, then shrink", "[sim-reactor]") {
  asio::io_context io;
  auto links = make_sim_links(io, io);
  bellows::channel_options options;
  options.idle_shrink_after = 20ms;
  // The highest tier a send was granted, from the events: a slow run (a sanitizer) may let a
  // direction idle past 20 ms and shrink before the sweep ends, so its current tier says less.
  std::uint32_t highest_granted = 0;
  options.on_tier_event = [&](const bellows::tier_event& e) {
    if (e.kind == bellows::tier_event::what::granted) highest_granted = std::max(highest_granted, e.to_tier);
  };
  auto channels = open_sim_channel(links, io, io, options);
  auto& a = channels.first;  // clang 14 cannot capture structured bindings
  auto& b = channels.second;

  for (std::size_t size : {0u, 8u, 3000u, 40'000u, 300'000u, 3'000'000u}) {
    const auto message = bt::random_bytes(size, size + 1);
    std::vector<std::byte> got(size + 1);
    transfer there(a, b, asio::buffer(message), asio::buffer(got));
    REQUIRE(run_until(io, [&] { return there.done(); }));
    CHECK(!*there.sent.ec);
    CHECK(!*there.received.ec);
    REQUIRE(there.received.bytes == size);
    CHECK(std::equal(message.begin(), message.end(), got.begin()));

    // And back, so both directions grow.
    std::vector<std::byte> echoed(size + 1);
    transfer back(b, a, asio::buffer(got.data(), size), asio::buffer(echoed));
    REQUIRE(run_until(io, [&] { return back.done(); }));
    CHECK(back.received.bytes == size);
  }
  CHECK(highest_granted == 2);
  CHECK(a.stats().enlargements >= 2);  // more when a direction shrank in between and grew again

  // Idle: a pending receive keeps the reactor serving while both directions shrink back.
  result pending_a, pending_b;
  std::byte none[1];
  a.async_receive(asio::buffer(none), record(pending_a));
  b.async_receive(asio::buffer(none), record(pending_b));
  CHECK(run_until(io, [&] { return a.stats().send_tier == 0 && b.stats().send_tier == 0; }));
  CHECK(a.stats().shrinks >= 1);
  CHECK(a.stats().registered_bytes == 128 + 4096);
  CHECK(!pending_a.done());
  a.cancel();
  b.cancel();
  CHECK(run_until(io, [&] { return pending_a.done() && pending_b.done(); }));
  CHECK(*pending_a.ec == asio::error::operation_aborted);
}

TEST_CASE("sim under the reactor: the peer dies between an acknowledgement's head and its tail", "[sim-reactor]") {
  asio::io_context io;
  auto links = make_sim_links(io, io);
  auto channels = open_sim_channel(links, io, io);
  auto& a = channels.first;
  auto& b = channels.second;

  // B answers A's ENLARGE_REQ: only the head word of its ack lands, then B's process "dies".
  int acks_torn = 0;
  links.b->set_write_hook([&](const link_write& w) -> std::size_t {
    if (w.target != write_target::ack) return SIZE_MAX;
    ++acks_torn;
    links.b->kill();
    return 8;
  });

  // Needs tier 1 and more than tier 0's ring can take at once, so it waits for the ack.
  const auto message = bt::random_bytes(20'000, 1);
  std::vector<std::byte> got(message.size());
  transfer t(a, b, asio::buffer(message), asio::buffer(got));
  REQUIRE(run_until(
      io, [&] { return t.done(); }, 1000ms));
  CHECK(acks_torn == 1);
  // A saw a head without a tail and must not act on it: the send fails, nothing hangs.
  CHECK(*t.sent.ec == bellows::error::connection_reset);
  CHECK(t.sent.bytes == 0);
  CHECK(*t.received.ec == bellows::error::connection_reset);
  CHECK(a.stats().enlargements == 0);
}

TEST_CASE("sim under the reactor: a torn frame is not delivered until its trailer lands", "[sim-reactor]") {
  asio::io_context io;
  auto links = make_sim_links(io, io);
  auto channels = open_sim_channel(links, io, io);
  auto& a = channels.first;
  auto& b = channels.second;

  // The frame's header lands, its payload and trailer are held back.
  bool torn = false;
  links.a->set_write_hook([&](const link_write& w) -> std::size_t {
    if (torn || w.target != write_target::ring) return SIZE_MAX;
    torn = true;
    return 16;
  });
  const auto message = bt::random_bytes(100, 2);
  std::vector<std::byte> got(message.size());
  transfer t(a, b, asio::buffer(message), asio::buffer(got));
  run_for(io, 50ms);
  CHECK(torn);
  CHECK(t.sent.done());       // the writes were issued; the provider places them later
  CHECK(!t.received.done());  // a header without its trailer is not a frame yet
  CHECK(b.stats().messages_received == 0);

  links.a->release_writes();
  links.a->ring_doorbell(1);  // what the writer does after placing; the held write needs one more
  REQUIRE(run_until(io, [&] { return t.received.done(); }));
  CHECK(!*t.received.ec);
  CHECK(t.received.bytes == message.size());
  CHECK(got == message);
}

TEST_CASE("sim under the reactor: an ack whose doorbell never rings is still found", "[sim-reactor]") {
  asio::io_context io;
  auto links = make_sim_links(io, io);
  auto channels = open_sim_channel(links, io, io);
  auto& a = channels.first;
  auto& b = channels.second;

  // Every doorbell B rings for A is lost: A must watch its control block while it waits.
  links.b->hold_doorbells(true);
  const auto message = bt::random_bytes(40'000, 3);
  std::vector<std::byte> got(message.size());
  transfer t(a, b, asio::buffer(message), asio::buffer(got));
  REQUIRE(run_until(io, [&] { return t.done(); }));
  CHECK(!*t.sent.ec);
  CHECK(!*t.received.ec);
  CHECK(got == message);
  CHECK(a.stats().enlargements == 1);
}

TEST_CASE("sim under the reactor: the peer dies between two fragments", "[sim-reactor]") {
  asio::io_context io;
  // B's budget holds its first ring and nothing more: A's large message is fragmented.
  auto links = make_sim_links(io, io, SIZE_MAX, 128 + 4096);
  auto channels = open_sim_channel(links, io, io);
  auto& a = channels.first;
  auto& b = channels.second;

  int ring_writes = 0;
  links.a->set_write_hook([&](const link_write& w) -> std::size_t {
    if (w.target == write_target::ring && ++ring_writes == 12) links.a->kill();
    return SIZE_MAX;
  });
  const auto message = bt::random_bytes(200'000, 4);
  std::vector<std::byte> got(message.size());
  transfer t(a, b, asio::buffer(message), asio::buffer(got));
  REQUIRE(run_until(
      io, [&] { return t.done(); }, 1000ms));
  CHECK(ring_writes >= 12);
  CHECK(a.stats().denials == 1);
  CHECK(*t.sent.ec == bellows::error::connection_reset);
  // Half a message is never handed out.
  CHECK(*t.received.ec == bellows::error::connection_reset);
  CHECK(b.stats().messages_received == 0);
}

TEST_CASE("sim under the reactor: a link failing as it sends what a batch gathered fails the channel's operations",
          "[sim-reactor]") {
  asio::io_context io;
  auto links = make_sim_links(io, io);
  auto channels = open_sim_channel(links, io, io);
  auto& a = channels.first;

  // A waits for a message; its next send's batch ends in a send_gathered that fails the link
  // while the channel is still carrying out that batch. The failure's completions must not wait
  // for another batch, which a failed channel may never get.
  std::vector<std::byte> got(64);
  result waiting;
  a.async_receive(asio::buffer(got), record(waiting));
  run_for(io, 5ms);
  REQUIRE(!waiting.done());
  links.a->fail_in_next_send_gathered();
  const auto message = bt::random_bytes(100, 5);
  result sent;
  a.async_send(asio::buffer(message), record(sent));
  REQUIRE(run_until(
      io, [&] { return waiting.done() && sent.done(); }, 1000ms));
  CHECK(*waiting.ec == bellows::error::connection_reset);
}
