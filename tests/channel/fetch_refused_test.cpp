// Over shm a message above the largest tier's frames is read by the receiver straight from the
// sender's memory, where the kernel allows it. Where it does not (Yama's ptrace scope, a peer
// that made itself non-dumpable, a reader without the privilege), nothing may be lost: the
// message comes through the ring instead. Two ways to get there, both between two processes:
// the kernel refuses from the start (the link's probe sees it and no offer names memory), or
// it starts refusing after the link came up (the receiver's read fails, it declines the offer,
// and the sender falls back to the ring).

#include "support/buffer_echo.hpp"
#include "support/graceful_close.hpp"
#include "support/memory_reads.hpp"
#include "support/messages.hpp"
#include "support/processes.hpp"
#include "support/provider.hpp"
#include "support/run_until.hpp"

#include <bellows/bellows.hpp>

#include <asio/buffer.hpp>
#include <asio/io_context.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

using namespace std::chrono_literals;
namespace bt = bellows::test;

namespace {

const std::string refuse_request = "refuse reads";
const std::string allow_request = "allow reads";

bool is_text(std::span<const std::byte> bytes, const std::string& text) {
  return bytes.size() == text.size() &&
         std::equal(text.begin(), text.end(), bytes.begin(), [](char c, std::byte b) { return std::byte(c) == b; });
}

/// Runs in the child: accepts one channel on URI and sends back every message from the buffer
/// it was received into, until the peer closes. Its memory is unreadable to the parent from the
/// start if MODE is "refusing", and from the message "refuse reads" to "allow reads" (both
/// echoed once the change is made). ARGS: role URI MODE.
int run_refusing_echo(const std::vector<std::string>& args) {
  std::optional<bt::memory_reads_refused> refusing;
  if (args.at(2) == "refusing") refusing.emplace();
  return bt::serve_buffer_echo(args.at(1), [&](std::span<const std::byte> message) {
    if (is_text(message, refuse_request)) refusing.emplace();
    if (is_text(message, allow_request)) refusing.reset();
  });
}
const bt::child_role refusing_echo("refusing-echo", run_refusing_echo);

/// The parent's side: one channel to a refusing_echo child.
struct echo_peer {
  echo_peer(const char* name, const std::string& mode)
      : uri(bt::uri_for(bt::provider::shm, bt::unique_name(name))),
        child(bt::child_process::exec_self(refusing_echo, {uri, mode})) {}

  void connect() {
    bellows::async_connect(io.get_executor(), uri, bt::options_for(uri), [&](std::error_code ec, bellows::channel c) {
      if (!ec) ch = std::move(c);
    });
    REQUIRE(bt::run_until(
        io, [&] { return ch.has_value(); }, 10s));
  }

  /// Sends `message` and checks that the child's echo of it comes back whole.
  void round_trip(const std::vector<std::byte>& message) {
    INFO("a message of " << message.size() << " bytes");
    std::vector<std::byte> back(message.size());
    std::optional<std::error_code> sent, echoed;
    std::size_t echoed_bytes = 0;
    ch->async_send(asio::buffer(message), [&](std::error_code ec, std::size_t) { sent = ec; });
    ch->async_receive(asio::buffer(back), [&](std::error_code ec, std::size_t n) {
      echoed = ec;
      echoed_bytes = n;
    });
    REQUIRE(bt::run_until(
        io, [&] { return sent && echoed; }, 20s));
    CHECK(!*sent);
    CHECK(!*echoed);
    REQUIRE(echoed_bytes == message.size());
    CHECK(back == message);
  }

  void round_trip(const std::string& text) {
    round_trip(std::vector<std::byte>(reinterpret_cast<const std::byte*>(text.data()),
                                      reinterpret_cast<const std::byte*>(text.data()) + text.size()));
  }

  void close() {
    const auto close = bt::close_and_await_end(io, *ch);
    CHECK(close.closed == std::error_code{});
    CHECK(close.ended == bellows::error::end_of_stream);
    CHECK(child.wait() == 0);
  }

  std::string uri;
  bt::child_process child;
  asio::io_context io;
  std::optional<bellows::channel> ch;
};

// Above the largest tier's frames (512 KiB): offered for fetching where reads are allowed.
const std::size_t large_sizes[] = {(512 << 10) + 1, 1 << 20, 3 << 20};

}  // namespace

TEST_CASE("shm: between processes that may not read each other's memory, large messages come whole through the ring",
          "[shm][direct]") {
  if (!bt::chosen(bt::provider::shm)) return bt::skip_case("shm is not among BELLOWS_TEST_PROVIDERS");
  echo_peer peer("fetch-refused", "refusing");
  REQUIRE(peer.child.wait_ready());
  const bt::memory_reads_refused refusing;
  peer.connect();
  for (const auto size : large_sizes) peer.round_trip(bt::random_bytes(size, size + 3));
  const auto s = peer.ch->stats();
  CHECK(s.direct_messages_sent == 0);
  CHECK(s.direct_messages_received == 0);
  CHECK(s.messages_received == std::size(large_sizes));
  peer.close();
}

TEST_CASE(
    "shm: a peer whose memory became unreadable after the link came up has its offers declined, and loses nothing",
    "[shm][direct]") {
  if (!bt::chosen(bt::provider::shm)) return bt::skip_case("shm is not among BELLOWS_TEST_PROVIDERS");
  if (!bt::processes_read_each_other())
    return bt::skip_case("Yama's ptrace scope keeps these processes from reading each other from the start");
  echo_peer peer("fetch-declined", "allowing");
  REQUIRE(peer.child.wait_ready());
  peer.connect();
  const auto message = bt::random_bytes(std::size_t{1} << 20, 41);
  peer.round_trip(message);
  REQUIRE(peer.ch->stats().direct_messages_sent == 1);  // the link may read: fetched both ways
  REQUIRE(peer.ch->stats().direct_messages_received == 1);

  std::optional<bt::memory_reads_refused> refusing;
  peer.round_trip(refuse_request);  // the child refuses from here on
  refusing.emplace();
  for (const auto size : large_sizes) peer.round_trip(bt::random_bytes(size, size + 5));
  CHECK(peer.ch->stats().direct_messages_sent == 1);
  CHECK(peer.ch->stats().direct_messages_received == 1);

  // Declined offers leave nothing behind: once reads are allowed again, they are fetched again.
  peer.round_trip(allow_request);
  refusing.reset();
  peer.round_trip(message);
  CHECK(peer.ch->stats().direct_messages_sent == 2);
  CHECK(peer.ch->stats().direct_messages_received == 2);
  peer.close();
}
