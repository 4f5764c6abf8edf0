// The channel core alone: two cores whose actions a few lines of test code carry out over plain
// heap memory (a `place` is a memcpy to the address it names). What is checked is the order of
// the actions, which is the contract every driver relies on: a frame's trailer after its body,
// an ack's tail after its head and fields, the doorbell after everything it announces, each
// operation completed exactly once, and the named steps where they happen.
#include "proto/shared_access.hpp"
#include "support/core_pair.hpp"
#include "support/messages.hpp"

#include <catch2/catch.hpp>

#include <sys/mman.h>
#include <unistd.h>
#include <algorithm>
#include <cstring>
#include <map>
#include <variant>

using namespace bellows;
using namespace bellows::proto;
using namespace std::chrono_literals;
using bellows::test::names;
using bellows::test::pair_of_cores;

TEST_CASE("core: a message is placed body then trailer, the doorbell rung, then the send completed", "[core]") {
  pair_of_cores c;
  const auto message = test::random_bytes(100, 1);
  c.cores[0]->send(7, pair_of_cores::ranges(message), clock_time{});
  const auto sent = c.run(0);
  CHECK(names(sent) == "place16+t doorbell send_done");
  const auto& frame = std::get<place>(sent[0]);
  CHECK(frame.trailer_address == frame.address + trailer_offset(message.size()));
  CHECK(get<std::uint32_t>(frame.trailer().data()) == get<std::uint32_t>(frame.prefix().data()));  // seq both
  CHECK(std::get<send_done>(sent[2]).id == 7);
  CHECK(std::get<send_done>(sent[2]).bytes == message.size());

  std::vector<std::byte> got(200);
  c.cores[1]->receive(9, pair_of_cores::into(got));
  c.cores[1]->poll(clock_time{});
  const auto received = c.run(1);
  REQUIRE(names(received) == "receive_done");
  CHECK(std::get<receive_done>(received[0]).bytes == message.size());
  CHECK(std::equal(message.begin(), message.end(), got.begin()));
  CHECK(c.cores[1]->stats().messages_received == 1);
  CHECK(c.cores[0]->stats().messages_sent == 1);
}

TEST_CASE("core: a side polled on every round says so in the peer's flags word, without a doorbell", "[core]") {
  pair_of_cores c;
  const auto flags_of = [&](int side) {
    return get<std::uint64_t>(c.control[side].data() + control_block::flags_offset);
  };
  c.cores[1]->set_polled(true);
  CHECK(names(c.run(1)) == "place8");
  CHECK(flags_of(0) == control_block::polled_flag);

  // Side 0's doorbells carry where side 1 said it, for the driver to read after its writes.
  const auto message = test::random_bytes(8, 3);
  c.cores[0]->send(1, pair_of_cores::ranges(message), clock_time{});
  const auto sent = c.run(0);
  REQUIRE(names(sent) == "place16+t doorbell send_done");
  const auto& doorbell = std::get<ring_doorbell>(sent[1]);
  CHECK(doorbell.peer_polls ==
        reinterpret_cast<const std::uint64_t*>(c.control[0].data() + control_block::flags_offset));
  CHECK(doorbell.mask == control_block::polled_flag);

  // Pressure and polling share the word; lifting one keeps the other. (Pressure asks for a
  // shrink, so side 1 needs a ring above the first tier.)
  const auto large = test::random_bytes(20'000, 2);
  c.cores[0]->send(2, pair_of_cores::ranges(large), clock_time{});
  c.run(0);
  for (int round = 0; round < 2; ++round) {
    c.cores[1]->poll(clock_time{});
    c.run(1);
    c.cores[0]->poll(clock_time{});
    c.run(0);
  }
  REQUIRE(c.cores[1]->stats().receive_tier == 1);
  CHECK(flags_of(0) == control_block::polled_flag);
  c.cores[1]->set_pressure(true);
  c.run(1);
  CHECK(flags_of(0) == (control_block::polled_flag | control_block::pressure_flag));
  c.cores[1]->set_polled(false);
  CHECK(names(c.run(1)) == "place8");
  CHECK(flags_of(0) == control_block::pressure_flag);
  c.cores[1]->set_polled(false);
  CHECK(c.run(1).empty());  // nothing changed, nothing written

  // A failed side writes nothing more, this word included.
  c.cores[1]->abort();
  c.run(1);
  c.cores[1]->set_polled(true);
  CHECK(c.run(1).empty());
  CHECK(flags_of(0) == control_block::pressure_flag);
}

TEST_CASE("core: an enlargement names its steps, and the ack's tail is written after its head", "[core]") {
  pair_of_cores c;
  const auto message = test::random_bytes(20'000, 2);  // needs tier 1
  c.cores[0]->send(1, pair_of_cores::ranges(message), clock_time{});
  CHECK(names(c.run(0)) == "@before ENLARGE_REQ place32+t @after ENLARGE_REQ tier doorbell");

  c.cores[1]->poll(clock_time{});
  const auto answer = c.run(1);
  // The receiver provisions (the test driver answers at once), then acks in two writes.
  CHECK(names(answer) == "provision @after provisioning place48 @between ack head and tail place8 tier doorbell");
  const auto& head = std::get<place>(answer[2]);
  const auto& tail = std::get<place>(answer[4]);
  CHECK(tail.address == head.address + ack_layout::tail);

  c.cores[0]->poll(1us);
  const auto resumed = c.run(0);
  // The grant is reported before the write it let go, so a driver can time the handshake alone.
  CHECK(names(resumed) == "tier place16+t doorbell send_done");
  CHECK(c.cores[0]->stats().enlargements == 1);
  CHECK(c.cores[0]->stats().send_tier == 1);
  // The receiver leaves its first ring when it finds the message in the new one.
  CHECK(c.cores[1]->stats().receive_tier == 0);
  c.cores[1]->poll(2us);
  CHECK(names(c.run(1)) == "release");
  CHECK(c.cores[1]->stats().receive_tier == 1);
}

TEST_CASE("core: a message whose fragments fit the ring goes alongside its enlarge request", "[core]") {
  pair_of_cores c;
  const auto first = test::random_bytes(3'000, 4);    // needs tier 1, fits the 4 KiB ring in two frames
  const auto second = test::random_bytes(20'000, 5);  // needs tier 1, would take the first ring ten times over
  c.cores[0]->send(1, pair_of_cores::ranges(first), clock_time{});
  c.cores[0]->send(2, pair_of_cores::ranges(second), clock_time{});
  // The request, then the first message in fragments without waiting; the second waits.
  CHECK(names(c.run(0)) ==
        "@before ENLARGE_REQ place32+t @after ENLARGE_REQ tier place24+t @mid-fragment place16+t doorbell send_done");

  std::vector<std::byte> got(30'000);
  c.cores[1]->receive(9, pair_of_cores::into(got));
  c.cores[1]->poll(clock_time{});
  const auto answered = c.run(1);
  CHECK(names(answered) ==
        "provision @after provisioning place48 @between ack head and tail place8 tier place8 doorbell receive_done");
  CHECK(std::equal(first.begin(), first.end(), got.begin()));

  c.cores[0]->poll(1us);
  CHECK(names(c.run(0)) == "tier place16+t doorbell send_done");  // the second, whole, in the granted ring
  CHECK(c.cores[0]->stats().send_tier == 1);
  c.cores[1]->receive(10, pair_of_cores::into(got));
  c.cores[1]->poll(2us);
  const auto moved = c.run(1);
  CHECK(names(moved) == "release receive_done");
  CHECK(std::equal(second.begin(), second.end(), got.begin()));
  CHECK(c.cores[1]->stats().receive_tier == 1);
  CHECK(c.cores[1]->stats().messages_received == 2);
}

TEST_CASE("core: cancellation, oversized sends and abort complete each operation once", "[core]") {
  pair_of_cores c;
  auto& a = *c.cores[0];
  const auto huge = test::random_bytes((1u << 24) + 1, 3);
  a.send(1, pair_of_cores::ranges(huge), clock_time{});
  auto out = c.run(0);
  REQUIRE(names(out) == "send_done");
  CHECK(std::get<send_done>(out[0]).ec == error::message_size);
  CHECK(a.is_open());

  a.receive_view(2);
  a.receive_view(3);
  CHECK(c.run(0).empty());
  a.cancel(2);
  out = c.run(0);
  REQUIRE(names(out) == "view_done");
  CHECK(std::get<view_done>(out[0]).ec == cancelled());
  a.cancel(2);  // once only
  CHECK(c.run(0).empty());

  a.abort();
  out = c.run(0);
  CHECK(names(out) == "detach view_done");
  CHECK(std::get<view_done>(out[1]).ec == error::channel_closed);
  CHECK_FALSE(a.is_open());
  a.abort();
  CHECK(c.run(0).empty());
  a.send(4, pair_of_cores::ranges(huge), clock_time{});
  out = c.run(0);
  REQUIRE(names(out) == "send_done");
  CHECK(std::get<send_done>(out[0]).ec == error::channel_closed);
}

TEST_CASE("core: a peer gone writes nothing more and ends pending operations", "[core]") {
  pair_of_cores c;
  const auto message = test::random_bytes(300, 4);
  c.cores[0]->send(1, pair_of_cores::ranges(message), clock_time{});
  c.run(0);
  c.cores[1]->receive_view(5);
  c.cores[1]->receive_view(6);
  c.cores[1]->link_failed(make_error_code(error::connection_reset), clock_time{});
  const auto out = c.run(1);
  // What the peer wrote before it went is delivered; then the rest fail; no detach on a dead link.
  CHECK(names(out) == "view_done view_done");
  CHECK_FALSE(std::get<view_done>(out[0]).ec);
  CHECK(std::get<view_done>(out[0]).bytes.size() == message.size());
  CHECK(std::get<view_done>(out[1]).ec == error::connection_reset);
  CHECK(c.cores[1]->detached());
}

TEST_CASE("core: a send or receive done at once writes and takes what a queued one would, and defers otherwise",
          "[core]") {
  pair_of_cores c;
  auto& a = *c.cores[0];
  auto& b = *c.cores[1];
  const auto message = test::random_bytes(100, 6);
  const detail::gather whole = pair_of_cores::ranges(message);
  REQUIRE(a.send_at_once(whole, clock_time{}));
  CHECK(names(c.run(0)) == "place16+t doorbell");  // no send_done: the driver completes it
  CHECK(a.stats().messages_sent == 1);

  b.poll(clock_time{});
  c.run(1);
  std::vector<std::byte> small(99), got(200);
  CHECK_FALSE(b.receive_at_once(pair_of_cores::into(small)));  // too small: the queued receive says so
  const auto length = b.receive_at_once(pair_of_cores::into(got));
  REQUIRE(length);
  CHECK(*length == message.size());
  CHECK(std::equal(message.begin(), message.end(), got.begin()));
  CHECK(b.stats().messages_received == 1);
  CHECK_FALSE(b.receive_at_once(pair_of_cores::into(got)));  // nothing more arrived

  // Where a queued send would wait or go another way, nothing is written at once.
  const auto large = test::random_bytes(20'000, 7);  // needs tier 1: waits for the ack
  detail::gather file_piece;
  file_piece.length = 100;
  file_piece.file = detail::file_range{0, 0};
  CHECK_FALSE(a.send_at_once(pair_of_cores::ranges(large), clock_time{}));
  CHECK_FALSE(a.send_at_once(file_piece, clock_time{}));
  CHECK(c.run(0).empty());
  a.send(1, pair_of_cores::ranges(large), clock_time{});
  c.run(0);
  CHECK_FALSE(a.send_at_once(whole, clock_time{}));  // behind the queued one
  a.send(2, pair_of_cores::ranges(message), clock_time{});
  b.poll(1us);
  c.run(1);
  a.poll(2us);
  CHECK(names(c.run(0)) == "tier place16+t place16+t doorbell send_done send_done");  // in order

  // The receive posted first takes the first message; the one done at once the next.
  std::vector<std::byte> big(30'000);
  b.receive(3, pair_of_cores::into(big));
  CHECK_FALSE(b.receive_at_once(pair_of_cores::into(got)));  // nothing arrived yet
  b.poll(3us);
  const auto delivered = c.run(1);
  CHECK(names(delivered).find("receive_done") != std::string::npos);
  CHECK(std::equal(large.begin(), large.end(), big.begin()));
  std::fill(got.begin(), got.end(), std::byte{0});
  REQUIRE(b.receive_at_once(pair_of_cores::into(got)) == message.size());
  CHECK(std::equal(message.begin(), message.end(), got.begin()));

  a.abort();
  CHECK_FALSE(a.send_at_once(whole, clock_time{}));
}

TEST_CASE("core: a file's frame puts its bytes at their offset within a cache line, and the receiver skips the gap",
          "[core]") {
  pair_of_cores c;
  auto& a = *c.cores[0];
  auto& b = *c.cores[1];
  // Onto the second tier (4 KiB slots), where file frames are long enough for a gap.
  const auto large = test::random_bytes(20'000, 8);
  std::vector<std::byte> got(40'000);
  a.send(1, pair_of_cores::ranges(large), clock_time{});
  c.run(0);
  b.poll(1us);
  c.run(1);
  a.poll(2us);
  c.run(0);
  b.receive(2, pair_of_cores::into(got));
  b.poll(3us);
  REQUIRE(names(c.run(1)).find("receive_done") != std::string::npos);

  const auto contents = test::random_bytes(64 << 10, 9);
  const int file = ::memfd_create("file-gap", 0);
  REQUIRE(file >= 0);
  REQUIRE(::write(file, contents.data(), contents.size()) == static_cast<ssize_t>(contents.size()));
  const auto file_message = [&](std::uint64_t offset, std::uint64_t length) {
    detail::gather piece;
    piece.length = length;
    piece.file = detail::file_range{file, offset};
    return piece;
  };
  // What the DATA frame's header says the gap is, and where the message starts (a PAD may
  // come first).
  const auto sent_frame = [&](const std::vector<action>& sent) {
    for (const auto& step : sent) {
      const auto* frame = std::get_if<place>(&step);
      if (frame == nullptr || read_header(frame->prefix().data()).kind != frame_kind::data) continue;
      return std::pair{read_header(frame->prefix().data()).gap, frame->address + frame->prefix_length};
    }
    FAIL("no DATA frame");
    return std::pair{std::uint8_t{0}, std::uint64_t{0}};
  };
  const auto received_whole = [&](std::uint64_t offset, std::uint64_t length, clock_time now) {
    b.receive(10, pair_of_cores::into(got));
    b.poll(now);
    REQUIRE(names(c.run(1)).find("receive_done") != std::string::npos);
    CHECK(std::equal(got.begin(), got.begin() + static_cast<std::ptrdiff_t>(length),
                     contents.begin() + static_cast<std::ptrdiff_t>(offset)));
  };

  clock_time now = 10us;
  for (const std::uint64_t offset : {0, 16, 37, 4095, 8000}) {
    INFO("a file message at offset " << offset);
    a.send(3, file_message(offset, 10'000), now);
    const auto [gap, message_at] = sent_frame(c.run(0));
    CHECK((message_at - offset) % 64 == 0);  // level with its source
    CHECK(gap < 64);
    received_whole(offset, 10'000, now += 1us);
  }
  // No gap for a short file message, for one that the gap would push into another slot, or
  // for a message from memory.
  a.send(4, file_message(0, 4000), now);
  CHECK(sent_frame(c.run(0)).first == 0);
  received_whole(0, 4000, now += 1us);
  a.send(5, file_message(0, 2 * 4096 - frame_overhead), now);
  CHECK(sent_frame(c.run(0)).first == 0);
  received_whole(0, 2 * 4096 - frame_overhead, now += 1us);
  a.send(6, pair_of_cores::ranges(large), now);
  CHECK(sent_frame(c.run(0)).first == 0);
  ::close(file);
}

TEST_CASE("core: a queue that finds the peer's ring full counts one credit stall, and goes on with the credit",
          "[core]") {
  pair_of_cores c;
  auto& a = *c.cores[0];
  auto& b = *c.cores[1];
  const auto message = test::random_bytes(100, 8);
  auto sends_done = [](const std::vector<action>& actions) {
    return std::count_if(actions.begin(), actions.end(),
                         [](const action& x) { return std::holds_alternative<send_done>(x); });
  };
  // No receive is posted and the receiver does not look: the first ring (4 KiB) fills, and the
  // sends behind it queue.
  constexpr long sends = 60;
  long completed = 0;
  for (std::uint64_t id = 1; id <= sends; ++id) {
    a.send(id, pair_of_cores::ranges(message), clock_time{});
    completed += sends_done(c.run(0));
  }
  REQUIRE(completed > 0);
  REQUIRE(completed < sends);
  const long queued = sends - completed;
  CHECK(a.stats().credit_stalls == 1);  // the sends queued behind the first that stopped add none
  a.poll(1us);
  completed += sends_done(c.run(0));
  CHECK(a.stats().credit_stalls == 1);  // nor does looking again with no new credit

  // The receiver takes every message; the credit it returns lets the queue go on.
  std::vector<std::byte> into(200);
  std::uint64_t next_receive = 1000;
  long received = 0;
  b.receive(next_receive++, pair_of_cores::into(into));
  for (int round = 0; round < 1000 && received < sends; ++round) {
    b.poll(2us);
    for (const auto& x : c.run(1)) {
      if (const auto* done = std::get_if<receive_done>(&x)) {
        REQUIRE_FALSE(done->ec);
        CHECK(std::equal(message.begin(), message.end(), into.begin()));
        ++received;
        b.receive(next_receive++, pair_of_cores::into(into));
      }
    }
    a.poll(2us);
    completed += sends_done(c.run(0));
  }
  CHECK(received == sends);
  CHECK(completed == sends);
  CHECK(a.stats().credit_stalls >= 1);
  CHECK(a.stats().credit_stalls <= static_cast<std::uint64_t>(queued));  // at most one per message that queued
  CHECK(b.stats().credit_stalls == 0);                                   // the receiver sent nothing
}
