// Doorbell elision: a reactor that polls a busy channel on every round tells the peer, which
// then skips its doorbells for that channel (over shm); before the reactor stops polling it
// tells the peer to ring again and looks once more. The race this guards (a doorbell skipped
// just as the reactor goes to sleep) shows as a message never delivered, so the echo below
// pauses at random across the moment the far reactor stops spinning.

#include "support/peers.hpp"
#include "support/provider.hpp"
#include "support/run_until.hpp"

#include <bellows/bellows.hpp>

#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>

#include <catch2/catch.hpp>

#include <atomic>
#include <cstring>
#include <functional>
#include <optional>
#include <random>
#include <thread>

using namespace std::chrono_literals;
namespace bt = bellows::test;

namespace {

/// The far end: echoes every message on one accepted channel, on its own thread and
/// io_context, until the channel ends; then keeps the channel's final statistics.
class echo_thread {
 public:
  explicit echo_thread(const std::string& uri)
      : acceptor_(io_.get_executor(), uri, bt::options_for(uri)), guard_(asio::make_work_guard(io_)) {
    acceptor_.async_accept([this](std::error_code ec, bellows::channel ch) {
      if (ec) return finish();
      channel_ = std::move(ch);
      receive();
    });
    thread_ = std::thread([this] { io_.run(); });
  }
  ~echo_thread() {
    // A test that failed before the near end closed: stop rather than wait.
    io_.stop();
    thread_.join();
  }
  /// Waits for the channel to end, up to `limit`; the statistics are then safe to read.
  bool wait_done(std::chrono::seconds limit) {
    for (auto until = std::chrono::steady_clock::now() + limit; std::chrono::steady_clock::now() < until;) {
      if (done_.load()) return true;
      std::this_thread::sleep_for(1ms);
    }
    return done_.load();
  }
  const bellows::channel_stats& final_stats() const { return stats_; }

 private:
  void receive() {
    channel_->async_receive(asio::buffer(buffer_), [this](std::error_code ec, std::size_t n) {
      if (ec) return finish();
      channel_->async_send(asio::buffer(buffer_, n), [this](std::error_code sent, std::size_t) {
        if (sent) return finish();
        receive();
      });
    });
  }
  void finish() {
    if (channel_) stats_ = channel_->stats();
    guard_.reset();
    done_ = true;
  }

  asio::io_context io_;
  bellows::acceptor acceptor_;
  asio::executor_work_guard<asio::io_context::executor_type> guard_;
  std::optional<bellows::channel> channel_;
  std::byte buffer_[64];
  bellows::channel_stats stats_;
  std::atomic<bool> done_ = false;
  std::thread thread_;
};

/// Sends `value` and waits for its echo, up to ten seconds; true if the same value came back.
bool round_trip(asio::io_context& io, bellows::channel& ch, std::uint64_t value) {
  std::byte out[8], in[8] = {};
  std::memcpy(out, &value, sizeof value);
  std::optional<std::error_code> sent, received;
  std::size_t length = 0;
  ch.async_send(asio::buffer(out), [&](std::error_code ec, std::size_t) { sent = ec; });
  ch.async_receive(asio::buffer(in), [&](std::error_code ec, std::size_t n) {
    received = ec;
    length = n;
  });
  if (!bt::run_until(
          io, [&] { return sent && received; }, 10s))
    return false;
  return !*sent && !*received && length == sizeof in && std::memcmp(in, out, sizeof in) == 0;
}

/// `count` round trips back to back, each started from the last one's completion, so that
/// this side's reactor stays busy throughout as a client's would; the number that came back
/// intact, within a minute for all.
int round_trips_back_to_back(asio::io_context& io, bellows::channel& ch, std::uint64_t& value, int count) {
  struct trips {
    bellows::channel& ch;
    std::uint64_t& value;
    int left;
    int intact = 0;
    bool failed = false;
    std::byte out[8] = {}, in[8] = {};
    void next() {
      if (left-- == 0) return;
      ++value;
      std::memcpy(out, &value, sizeof value);
      ch.async_send(asio::buffer(out), [this](std::error_code ec, std::size_t) { failed |= static_cast<bool>(ec); });
      ch.async_receive(asio::buffer(in), [this](std::error_code ec, std::size_t n) {
        if (ec || n != sizeof in || std::memcmp(in, out, sizeof in) != 0) {
          failed = true;
          return;
        }
        ++intact;
        next();
      });
    }
  } t{ch, value, count};
  t.next();
  bt::run_until(
      io, [&] { return t.failed || t.intact == count; }, 60s);
  return t.failed ? -1 : t.intact;
}

}  // namespace

TEST_CASE("A channel polled on every round spares its peer the doorbells, and is rung again once idle",
          "[channel][doorbell]") {
  const auto p = GENERATE(from_range(bt::providers_here()));
  const auto uri = bt::uri_for(p, "polled-channel");
  echo_thread far(uri);

  asio::io_context io;
  std::optional<bellows::channel> near;
  bellows::async_connect(io.get_executor(), uri, bt::options_for(uri), [&](std::error_code ec, bellows::channel c) {
    if (!ec) near = std::move(c);
  });
  REQUIRE(bt::run_until(
      io, [&] { return near.has_value(); }, 10s));

  // Back to back: each reactor finds the channel busy and polls it on every round.
  const int busy_trips = bt::scaled(p, 2'000, 200);
  std::uint64_t value = 0;
  REQUIRE(round_trips_back_to_back(io, *near, value, busy_trips) == busy_trips);
  const auto busy = near->stats();

  // Pauses around the far reactor's spin (hundreds of microseconds), so that its going to
  // sleep races with our next message; every message must still arrive.
  std::mt19937_64 rng(18);  // fixed: the pauses matter by their spread, not their order
  std::uniform_int_distribution<int> pause_us(0, 3'000);
  const int paused_trips = bt::scaled(p, 300, 50);
  for (int i = 0; i < paused_trips; ++i) {
    std::this_thread::sleep_for(std::chrono::microseconds(pause_us(rng)));
    REQUIRE(round_trip(io, *near, ++value));
  }
  const auto paused = near->stats();

  std::optional<std::error_code> closed;
  near->async_close([&](std::error_code ec) { closed = ec; });
  REQUIRE(bt::run_until(
      io, [&] { return closed.has_value(); }, 10s));
  CHECK(!*closed);
  REQUIRE(far.wait_done(10s));
  const auto& far_stats = far.final_stats();
  CHECK(far_stats.messages_received == static_cast<std::uint64_t>(busy_trips + paused_trips));

  if (p == bt::provider::shm) {
    CHECK(busy.doorbells_skipped > 0);
    CHECK(far_stats.doorbells_skipped > 0);
    // The far reactor stopped polling during the pauses and said so: we rang it again.
    CHECK(paused.doorbells_rung > busy.doorbells_rung);
  } else {
    // RDMA writes are not ordered with our read of the flag, and tcp writes travel in the
    // doorbell's company anyway: every doorbell is rung.
    CHECK(paused.doorbells_skipped == 0);
    CHECK(far_stats.doorbells_skipped == 0);
    CHECK(paused.doorbells_rung > 0);
  }
}
