#pragma once
// One soak channel's traffic: a sending and a receiving coroutine, as a robust application runs
// them, with random sizes and random cancellations of both, checked message by message against
// what was sent. (Sending a burst and only then receiving deadlocks a bounded channel, as it
// does a socket: with both rings full of unread echoes, neither side's send can proceed.)
//
// Every message is [channel uid u64 | seq u64 | size u64 | payload derived from all three], so
// a lost, duplicated, reordered or corrupted echo is caught where it arrives.

#include "stuck_report.hpp"

#include <bellows/bellows.hpp>

#include <asio/awaitable.hpp>
#include <asio/io_context.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <random>
#include <system_error>
#include <vector>

namespace bellows::test {

/// What every channel of a soak run added up to.
struct soak_totals {
  std::uint64_t messages = 0, bytes = 0, send_cancels = 0, receive_cancels = 0;
  std::uint64_t lost_to_restart = 0, reconnects = 0, restarts = 0, enlargements = 0, shrinks = 0;
  std::uint64_t violations = 0;  ///< lost, duplicated, reordered or corrupted messages, or unexplained errors
};

/// A random message size: mostly the first tier's, some for each larger tier, a few above the
/// largest tier's frames (offered for direct placement, or fragmented).
std::size_t random_soak_size(std::mt19937_64& rng);

class channel_traffic {
 public:
  struct sent {
    std::uint64_t seq;
    std::size_t size;
  };

  /// `out` is the channel slot's send buffer, kept from one channel to the next; `phase` says
  /// what the traffic waits for, for the report of a hang.
  channel_traffic(asio::io_context& io, bellows::channel& ch, std::uint64_t uid, std::mt19937_64& rng,
                  std::vector<std::byte>& out, const char*& phase, soak_totals& totals,
                  std::chrono::steady_clock::time_point deadline);

  /// Sends and receives until the deadline and every echo is back; the error that broke the
  /// channel if one did (a mismatched echo reads as protocol_violation, already counted).
  asio::awaitable<std::optional<std::error_code>> run();

  const std::deque<sent>& in_flight() const noexcept { return in_flight_; }
  const operation_history& history() const noexcept { return history_; }

 private:
  struct delayed_cancel;

  asio::awaitable<void> send_side();
  asio::awaitable<void> receive_side();
  /// Checks one echo against the oldest message in flight; false (and counted) if it is not it.
  bool accept_echo(const std::byte* data, std::size_t n);
  std::shared_ptr<delayed_cancel> canceller(bool armed, std::chrono::microseconds delay);
  asio::awaitable<void> pause(std::chrono::milliseconds d);
  bool over() const { return std::chrono::steady_clock::now() >= deadline_; }

  asio::io_context& io_;
  bellows::channel& ch_;
  std::uint64_t uid_;
  std::mt19937_64& rng_;
  std::vector<std::byte>& out_;
  const char*& phase_;
  soak_totals& t_;
  std::chrono::steady_clock::time_point deadline_;
  std::deque<sent> in_flight_;
  std::uint64_t next_seq_ = 1;
  bool sending_over_ = false;
  std::optional<std::error_code> failure_;
  operation_history history_;
};

}  // namespace bellows::test
