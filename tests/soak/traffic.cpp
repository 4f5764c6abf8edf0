#include "traffic.hpp"

#include "support/messages.hpp"

#include <asio/bind_cancellation_slot.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

#include <cstring>
#include <functional>
#include <iostream>

using namespace std::chrono_literals;
using asio::use_awaitable;
using asio::experimental::as_tuple;
using namespace asio::experimental::awaitable_operators;

namespace bellows::test {

namespace {

/// Messages above this are offered for direct placement, or fragmented through the largest
/// default tier (half of 1 MiB).
constexpr std::size_t above_largest_frames = 512 * 1024;

}  // namespace

std::size_t random_soak_size(std::mt19937_64& rng) {
  const auto p = rng() % 100;
  if (p < 70) return stamp_bytes + rng() % 1000;            // the first tier
  if (p < 90) return 1000 + rng() % 30'000;                 // tier 1
  if (p < 98) return 40'000 + rng() % 460'000;              // tier 2
  return above_largest_frames + 1 + rng() % (1536 * 1024);  // above every tier's frames
}

/// Cancels the operation bound to `signal` after a delay, unless it finished first. Shared
/// with the timer's handler, which may already be queued when the operation finishes.
struct channel_traffic::delayed_cancel {
  asio::cancellation_signal signal;
  asio::steady_timer timer;
  bool done = false;
  std::function<bool()> still_wanted;  ///< asked when the delay is over; empty: always
  explicit delayed_cancel(asio::io_context& io) : timer(io) {}
  void finished() {
    done = true;
    timer.cancel();
  }
};

channel_traffic::channel_traffic(asio::io_context& io, bellows::channel& ch, std::uint64_t uid, std::mt19937_64& rng,
                                 std::vector<std::byte>& out, const char*& phase, soak_totals& totals,
                                 std::chrono::steady_clock::time_point deadline)
    : io_(io), ch_(ch), uid_(uid), rng_(rng), out_(out), phase_(phase), t_(totals), deadline_(deadline) {}

asio::awaitable<std::optional<std::error_code>> channel_traffic::run() {
  co_await (send_side() && receive_side());
  co_return failure_;
}

asio::awaitable<void> channel_traffic::pause(std::chrono::milliseconds d) {
  asio::steady_timer timer(io_, d);
  co_await timer.async_wait(as_tuple(use_awaitable));
}

std::shared_ptr<channel_traffic::delayed_cancel> channel_traffic::canceller(bool armed,
                                                                            std::chrono::microseconds delay) {
  auto c = std::make_shared<delayed_cancel>(io_);
  if (armed && delay.count() == 0) {
    // Straight after the operation started: it is cancelled unless it already completed.
    asio::post(io_, [c] {
      if (!c->done) c->signal.emit(asio::cancellation_type::terminal);
    });
  } else if (armed) {
    c->timer.expires_after(delay);
    c->timer.async_wait([c](std::error_code ec) {
      if (!ec && !c->done && (!c->still_wanted || c->still_wanted())) c->signal.emit(asio::cancellation_type::terminal);
    });
  }
  return c;
}

asio::awaitable<void> channel_traffic::send_side() {
  while (!over() && !failure_) {
    const int burst = 1 + static_cast<int>(rng_() % 3);
    for (int i = 0; i < burst && !failure_; ++i) {
      const std::size_t size = random_soak_size(rng_);
      fill_stamped(out_, uid_, next_seq_, size);
      const bool try_cancel = rng_() % 10 == 0;
      auto cancel = canceller(try_cancel, 0us);
      phase_ = try_cancel ? "send (cancelled)" : "send";
      auto [ec, n] = co_await ch_.async_send(
          asio::buffer(out_), asio::bind_cancellation_slot(cancel->signal.slot(), as_tuple(use_awaitable)));
      cancel->finished();
      history_.add("send", size, ec ? (ec == asio::error::operation_aborted ? "cancelled" : "failed") : "ok");
      if (ec == asio::error::operation_aborted) {
        ++t_.send_cancels;  // nothing of it was written: the sequence number is used again
        continue;
      }
      if (ec) {
        failure_ = ec;
        break;
      }
      in_flight_.push_back({next_seq_++, size});
      if (out_.capacity() > 64 * 1024) std::vector<std::byte>().swap(out_);  // 500 idle channels hold no MiBs
    }
    // The next burst once every echo is back, now and then after a pause long enough to shrink.
    for (int i = 0; i < 60'000 && !in_flight_.empty() && !failure_; ++i) co_await pause(1ms);
    phase_ = "pause";
    if (rng_() % 4 == 0) co_await pause(std::chrono::milliseconds(rng_() % 80));
  }
  sending_over_ = true;
}

asio::awaitable<void> channel_traffic::receive_side() {
  while (!failure_ && !(sending_over_ && in_flight_.empty())) {
    // Any receive may be cancelled, a fragmented message's part-way included: what it took
    // waits for the next receive. With nothing in flight the receive waits for the next
    // burst's echo and is cancelled after a few milliseconds if nothing is in flight then.
    const bool idle = in_flight_.empty();
    const bool try_cancel = idle || rng_() % 10 == 0;
    const auto delay = idle ? std::chrono::microseconds(1000 + rng_() % 20'000)
                            : std::chrono::microseconds(rng_() % 2 == 0 ? 0 : rng_() % 2000);
    auto cancel = canceller(try_cancel, delay);
    if (idle) cancel->still_wanted = [this] { return in_flight_.empty(); };
    phase_ = try_cancel ? "receive (cancelled)" : "receive";
    auto [ec, view] =
        co_await ch_.async_receive_view(asio::bind_cancellation_slot(cancel->signal.slot(), as_tuple(use_awaitable)));
    cancel->finished();
    history_.add("receive", ec ? 0 : view.buffer().size(),
                 ec ? (ec == asio::error::operation_aborted ? "cancelled" : "failed") : "ok");
    if (ec == asio::error::operation_aborted) {
      ++t_.receive_cancels;
      continue;
    }
    if (ec) {
      failure_ = ec;
      break;
    }
    if (!accept_echo(static_cast<const std::byte*>(view.buffer().data()), view.buffer().size())) {
      failure_ = make_error_code(bellows::error::protocol_violation);
      break;
    }
  }
}

bool channel_traffic::accept_echo(const std::byte* data, std::size_t n) {
  std::uint64_t head[3] = {};
  if (n >= stamp_bytes) std::memcpy(head, data, stamp_bytes);
  if (in_flight_.empty() || head[0] != uid_ || head[1] != in_flight_.front().seq || n != in_flight_.front().size) {
    std::cerr << "soak: channel " << uid_ << " expected seq "
              << (in_flight_.empty() ? std::string("none") : std::to_string(in_flight_.front().seq)) << ", got channel "
              << head[0] << " seq " << head[1] << " (" << n << " B)\n";
    ++t_.violations;
    return false;
  }
  if (!is_stamped(data, uid_, head[1], n)) {
    std::cerr << "soak: channel " << uid_ << " seq " << head[1] << " corrupted\n";
    ++t_.violations;
  }
  in_flight_.pop_front();
  ++t_.messages;
  t_.bytes += n;
  return true;
}

}  // namespace bellows::test
