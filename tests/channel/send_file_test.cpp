// channel::async_send_file: messages read from a file as their frames are placed. They must be
// indistinguishable from async_send's at the receiver, at every tier, and every way a file can
// be wrong must give a clear error that loses nothing it need not.

#include "support/messages.hpp"
#include "support/peers.hpp"
#include "support/processes.hpp"
#include "support/provider.hpp"
#include "support/run_until.hpp"

#include <bellows/bellows.hpp>

#include <asio/bind_cancellation_slot.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/io_context.hpp>

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <vector>

using namespace std::chrono_literals;
namespace bt = bellows::test;

namespace {

/// A file of random bytes in /tmp, open for reading, removed when the object goes.
class scratch_file {
 public:
  explicit scratch_file(std::size_t size, std::uint64_t seed) : bytes_(bt::random_bytes(size, seed)) {
    char name[] = "/tmp/bellows-send-file-XXXXXX";
    descriptor_ = ::mkstemp(name);
    REQUIRE(descriptor_ >= 0);
    path_ = name;
    REQUIRE(::write(descriptor_, bytes_.data(), bytes_.size()) == static_cast<ssize_t>(bytes_.size()));
  }
  ~scratch_file() {
    ::close(descriptor_);
    ::unlink(path_.c_str());
  }
  scratch_file(const scratch_file&) = delete;
  scratch_file& operator=(const scratch_file&) = delete;

  int descriptor() const { return descriptor_; }
  const std::string& path() const { return path_; }
  std::vector<std::byte> slice(std::size_t offset, std::size_t length) const {
    return {bytes_.begin() + static_cast<std::ptrdiff_t>(offset),
            bytes_.begin() + static_cast<std::ptrdiff_t>(offset + length)};
  }

 private:
  std::vector<std::byte> bytes_;
  std::string path_;
  int descriptor_ = -1;
};

struct send_result {
  std::optional<std::error_code> ec;
  std::size_t bytes = 0;
  auto record() {
    return [this](std::error_code e, std::size_t n) {
      ec = e;
      bytes = n;
    };
  }
};

struct received_message {
  std::optional<std::error_code> ec;
  std::vector<std::byte> bytes;
};

/// Receives one message on `ch` into `into` (its view copied out).
void receive_into(bellows::channel& ch, received_message& into) {
  ch.async_receive_view([&into](std::error_code ec, bellows::message_view view) {
    if (!ec) into.bytes.assign(view.data(), view.data() + view.size());
    into.ec = ec;
  });
}

/// A channel pair over `provider`, both ends in this process.
struct channel_pair {
  explicit channel_pair(bt::provider provider, const char* name)
      : uri(bt::uri_for(provider, bt::unique_name(name))), acc(io.get_executor(), uri, bt::options_for(uri)) {
    REQUIRE(bt::connect_and_accept(io, acc, uri, near, far));
  }
  asio::io_context io;
  std::string uri;
  bellows::acceptor acc;
  std::optional<bellows::channel> near, far;
};

constexpr std::size_t file_size = 3 << 20;

}  // namespace

TEST_CASE("A file sent with async_send_file arrives whole at every tier, in order with ordinary sends",
          "[channel][send_file]") {
  const auto provider = GENERATE(from_range(bt::providers_here()));
  INFO("over " << bt::to_string(provider));
  channel_pair pair(provider, "send-file-tiers");
  scratch_file file(file_size, 7);
  std::mt19937_64 rng(11);
  // The first ring (4 KiB), the second (64 KiB), the third (1 MiB), and past it (fragmented).
  for (const std::size_t length : {std::size_t{1}, std::size_t{200}, std::size_t{4000}, std::size_t{30000},
                                   std::size_t{70000}, std::size_t{500000}, std::size_t{1500000}, file_size}) {
    INFO(length << " bytes");
    const auto offset = std::uniform_int_distribution<std::size_t>(0, file_size - length)(rng);
    const auto marker = bt::random_bytes(rng, 17);
    send_result from_file, plain;
    received_message first, second;
    pair.near->async_send_file(file.descriptor(), offset, length, from_file.record());
    pair.near->async_send(asio::buffer(marker), plain.record());
    receive_into(*pair.far, first);
    REQUIRE(bt::run_until(
        pair.io, [&] { return first.ec.has_value(); }, 20s));
    receive_into(*pair.far, second);
    REQUIRE(bt::run_until(
        pair.io, [&] { return from_file.ec && plain.ec && second.ec; }, 20s));
    CHECK(!*from_file.ec);
    CHECK(from_file.bytes == length);
    CHECK(!*first.ec);
    CHECK(first.bytes == file.slice(offset, length));
    CHECK(!*second.ec);
    CHECK(second.bytes == marker);
  }
}

TEST_CASE("async_send_file refuses a closed descriptor, a pipe and a range past the end before sending anything",
          "[channel][send_file]") {
  const auto provider = GENERATE(from_range(bt::providers_here()));
  INFO("over " << bt::to_string(provider));
  channel_pair pair(provider, "send-file-refused");
  scratch_file file(4096, 3);
  int pipe_ends[2];
  REQUIRE(::pipe(pipe_ends) == 0);
  const int closed = ::dup(file.descriptor());
  ::close(closed);

  send_result not_open, pipe, past_end, overflowing, good;
  pair.near->async_send_file(closed, 0, 10, not_open.record());
  pair.near->async_send_file(pipe_ends[0], 0, 10, pipe.record());
  pair.near->async_send_file(file.descriptor(), 4000, 97, past_end.record());
  pair.near->async_send_file(file.descriptor(), std::numeric_limits<std::uint64_t>::max(), 2, overflowing.record());
  pair.near->async_send_file(file.descriptor(), 4000, 96, good.record());
  received_message only;
  receive_into(*pair.far, only);
  REQUIRE(bt::run_until(
      pair.io, [&] { return not_open.ec && pipe.ec && past_end.ec && overflowing.ec && good.ec && only.ec; }, 20s));
  ::close(pipe_ends[0]);
  ::close(pipe_ends[1]);
  CHECK(*not_open.ec == std::errc::bad_file_descriptor);
  CHECK(*pipe.ec == bellows::error::invalid_argument);
  CHECK(*past_end.ec == bellows::error::invalid_argument);
  CHECK(*overflowing.ec == bellows::error::invalid_argument);
  CHECK(not_open.bytes + pipe.bytes + past_end.bytes + overflowing.bytes == 0);
  // None of the refused ones reached the peer: the first message it gets is the good one.
  CHECK(!*good.ec);
  CHECK(!*only.ec);
  CHECK(only.bytes == file.slice(4000, 96));
  CHECK(pair.near->is_open());
}

TEST_CASE("A file larger than the largest tier's frames goes straight into a receive's buffer where the link lends it",
          "[channel][send_file][direct]") {
  const auto provider = GENERATE(from_range(bt::providers_here()));
  INFO("over " << bt::to_string(provider));
  channel_pair pair(provider, "send-file-direct");
  scratch_file file(file_size, 19);
  const std::size_t offset = 12345;  // the file's bytes need not start on any boundary
  const std::size_t length = file_size - offset;
  send_result from_file;
  std::optional<std::error_code> received;
  std::size_t received_bytes = 0;
  std::vector<std::byte> inbox(file_size);
  pair.far->async_receive(asio::buffer(inbox), [&](std::error_code ec, std::size_t n) {
    received = ec;
    received_bytes = n;
  });
  pair.near->async_send_file(file.descriptor(), offset, length, from_file.record());
  REQUIRE(bt::run_until(
      pair.io, [&] { return received && from_file.ec; }, 30s));
  CHECK(!*from_file.ec);
  CHECK(!*received);
  REQUIRE(received_bytes == length);
  CHECK(std::vector<std::byte>(inbox.begin(), inbox.begin() + static_cast<std::ptrdiff_t>(length)) ==
        file.slice(offset, length));
  // tcp and rdma lend the buffer; over shm the receiver would have to read a file's bytes
  // from the sender's memory, where they are not, so the ring carries them.
  const auto stats = pair.far->stats();
  CHECK(stats.direct_messages_received == (provider == bt::provider::shm ? 0u : 1u));
}

TEST_CASE(
    "A file that shrinks before its bytes go into a lent buffer fails the send, and the receive gets no part of it",
    "[channel][send_file][direct]") {
  const auto provider = GENERATE(from_range(bt::providers_here()));
  INFO("over " << bt::to_string(provider));
  channel_pair pair(provider, "send-file-direct-truncated");
  scratch_file file(file_size, 23);
  send_result from_file;
  pair.near->async_send_file(file.descriptor(), 0, file_size, from_file.record());
  pair.io.poll();  // offered (tcp, rdma) or its first fragments placed (shm): the size was checked
  REQUIRE(::truncate(file.path().c_str(), 1 << 20) == 0);
  std::optional<std::error_code> received;
  std::vector<std::byte> inbox(file_size);
  pair.far->async_receive(asio::buffer(inbox), [&](std::error_code ec, std::size_t) { received = ec; });
  REQUIRE(bt::run_until(
      pair.io, [&] { return received && from_file.ec; }, 30s));
  CHECK(*from_file.ec == bellows::error::file_truncated);
  CHECK(*received == bellows::error::connection_reset);
  CHECK(!pair.near->is_open());
}

TEST_CASE("A file that shrinks during its send closes the channel with file_truncated, earlier messages arrive",
          "[channel][send_file]") {
  const auto provider = GENERATE(from_range(bt::providers_here()));
  INFO("over " << bt::to_string(provider));
  channel_pair pair(provider, "send-file-truncated");
  scratch_file file(file_size, 5);
  const auto before = bt::random_bytes(100, 9);
  send_result earlier, from_file, later;
  pair.near->async_send(asio::buffer(before), earlier.record());
  // The peer has not received yet, so at most the first ring's worth of the file is placed
  // inside this call; the rest is read after the truncation below.
  pair.near->async_send_file(file.descriptor(), 0, file_size, from_file.record());
  REQUIRE(::truncate(file.path().c_str(), 1 << 20) == 0);
  pair.near->async_send(asio::buffer(before), later.record());
  received_message first, second;
  receive_into(*pair.far, first);
  REQUIRE(bt::run_until(
      pair.io, [&] { return first.ec.has_value(); }, 20s));
  // Taking the file's fragments makes room for the ones read after the truncation.
  receive_into(*pair.far, second);
  REQUIRE(bt::run_until(
      pair.io, [&] { return second.ec && from_file.ec && later.ec; }, 20s));
  CHECK(!*earlier.ec);
  CHECK(!*first.ec);
  CHECK(first.bytes == before);
  CHECK(*from_file.ec == bellows::error::file_truncated);
  CHECK(*later.ec == bellows::error::file_truncated);
  CHECK(!pair.near->is_open());
  // The receiver never gets a message made of what the file had left.
  CHECK(*second.ec == bellows::error::connection_reset);
}

TEST_CASE("A queued async_send_file that is cancelled sends nothing, the channel goes on", "[channel][send_file]") {
  const auto provider = GENERATE(from_range(bt::providers_here()));
  INFO("over " << bt::to_string(provider));
  channel_pair pair(provider, "send-file-cancelled");
  scratch_file file(file_size, 13);
  send_result large, cancelled, after;
  asio::cancellation_signal signal;
  pair.near->async_send_file(file.descriptor(), 0, file_size, large.record());
  pair.near->async_send_file(file.descriptor(), 100, 1000,
                             asio::bind_cancellation_slot(signal.slot(), cancelled.record()));
  signal.emit(asio::cancellation_type::terminal);
  pair.near->async_send_file(file.descriptor(), 2000, 3000, after.record());
  received_message first, second;
  receive_into(*pair.far, first);
  REQUIRE(bt::run_until(
      pair.io, [&] { return first.ec && large.ec && cancelled.ec; }, 20s));
  receive_into(*pair.far, second);
  REQUIRE(bt::run_until(
      pair.io, [&] { return second.ec && after.ec; }, 20s));
  CHECK(!*large.ec);
  CHECK(*cancelled.ec == asio::error::operation_aborted);
  CHECK(cancelled.bytes == 0);
  CHECK(!*after.ec);
  CHECK(first.bytes == file.slice(0, file_size));
  CHECK(second.bytes == file.slice(2000, 3000));
}

TEST_CASE("An async_send_file to a peer killed mid-transfer completes with connection_reset", "[channel][send_file]") {
  const auto provider = GENERATE(from_range(bt::providers_here()));
  INFO("over " << bt::to_string(provider));
  const auto uri = bt::uri_for(provider, bt::unique_name("send-file-killed"));
  auto peer = bt::start_passive_server(uri);
  REQUIRE(peer.wait_ready());
  asio::io_context io;
  scratch_file file(file_size, 17);
  std::optional<bellows::channel> ch;
  bellows::async_connect(io.get_executor(), uri, bt::options_for(uri), [&](std::error_code ec, bellows::channel c) {
    if (!ec) ch = std::move(c);
  });
  REQUIRE(bt::run_until(
      io, [&] { return ch.has_value(); }, 10s));
  send_result in_flight;
  // The peer never receives, so the send waits for room in its ring until the peer dies.
  ch->async_send_file(file.descriptor(), 0, file_size, in_flight.record());
  CHECK(!bt::run_until(
      io, [&] { return in_flight.ec.has_value(); }, 300ms));
  peer.kill();
  REQUIRE(bt::run_until(
      io, [&] { return in_flight.ec.has_value(); }, 20s));
  CHECK(*in_flight.ec == bellows::error::connection_reset);
}
