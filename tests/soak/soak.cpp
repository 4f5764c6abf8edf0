// Soak: random traffic on many channels to several echo peers for a bounded time, with random
// sizes (so rings grow and, with a short idle time, shrink again), random cancellations of
// sends and receives, and peers killed and restarted at random. Every message carries its
// channel, its sequence number and a payload derived from both, so the driver proves that no
// message was lost, duplicated, reordered or corrupted. Runs in two rounds: after each, every
// channel is closed, registered memory must be back to zero, and resident memory after the
// second round must be within a small margin of what it was after the first.
//
//   bellows_soak [--channels N] [--seconds S] [--peers P] [--restart-every MS] [--seed X] [--over shm|tcp]

#include "echo_peer.hpp"
#include "memory_report.hpp"
#include "perf/process.hpp"
#include "stuck_report.hpp"
#include "support/messages.hpp"
#include "support/processes.hpp"
#include "support/provider.hpp"
#include "support/sanitizers.hpp"
#include "traffic.hpp"

#include <bellows/bellows.hpp>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

#include <malloc.h>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using asio::use_awaitable;
using asio::experimental::as_tuple;
namespace bt = bellows::test;

namespace {

struct settings {
  int channels = 500;
  int seconds = 60;
  int peers = 4;
  int restart_every_ms = 7000;
  std::uint64_t seed = 1;
  bt::provider over = bt::provider::shm;
};

// ---- the driver ----

/// ARGS: role URI SECONDS.
const bt::child_role soak_peer("peer", [](const std::vector<std::string>& args) {
  return bt::run_echo_peer(args.at(1), std::stoi(args.at(2)));
});

class soak {
 public:
  soak(asio::io_context& io, const settings& s, std::mt19937_64& rng) : io_(io), s_(s), rng_(rng) {
    for (int p = 0; p < s.peers; ++p) {
      uris_.push_back(bt::uri_for(s.over, bt::unique_name("soak-peer")));
      generations_.push_back(0);
      peers_.push_back(start_peer(p));
    }
  }

  /// Runs one round of `seconds`; false if it did not finish in bounded time.
  bool round(int seconds) {
    deadline_ = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
    running_ = s_.channels;
    phase_.assign(s_.channels, "starting");
    open_.assign(s_.channels, nullptr);
    traffic_.assign(s_.channels, nullptr);
    for (int c = 0; c < s_.channels; ++c) asio::co_spawn(io_, drive(c, rng_()), asio::detached);
    asio::co_spawn(io_, restart_peers(rng_(), ++round_), asio::detached);
    const auto hard_limit = deadline_ + 60s;
    while (running_ > 0 && std::chrono::steady_clock::now() < hard_limit) {
      io_.restart();
      io_.run_for(10ms);
      notice_peers_ended();
    }
    if (running_ > 0) {
      for (int c = 0; c < s_.channels; ++c)
        if (std::strcmp(phase_[c], "done") != 0) {
          std::cerr << "soak: channel slot " << c << " stuck in " << phase_[c];
          if (open_[c] != nullptr) {
            std::cerr << ": ";
            bt::describe_stats(std::cerr, open_[c]->stats());
            std::cerr << ", open " << open_[c]->is_open();
          }
          if (traffic_[c] != nullptr) {
            std::cerr << "; in flight:";
            for (const auto& m : traffic_[c]->in_flight()) std::cerr << " " << m.seq << "(" << m.size << ")";
            std::cerr << "; last operations:";
            traffic_[c]->history().print(std::cerr);
          }
          std::cerr << "\n";
        }
      ask_peers_for_stuck_echoes();
    }
    return running_ == 0;
  }

  /// Runs the io_context until every link let go of its memory and is gone. Registered bytes
  /// alone are not enough: a link the reactor dropped lives on, warm rings and mappings of both
  /// arenas included, in the cancelled socket waits it disarmed until those handlers run; the
  /// round may end before they did. Settled: a 10 ms slice ran no handler and nothing lingers.
  bellows::context_stats after_close() {
    auto lingering = [this] {
      const auto now = bellows::stats(io_);
      return now.registered_bytes != 0 || now.links != 0;
    };
    bool settled = false;
    for (int i = 0; i < 500 && !settled; ++i) {
      io_.restart();
      const std::size_t handlers_run = io_.run_for(10ms);
      settled = handlers_run == 0 && !lingering();
    }
    return bellows::stats(io_);
  }

  /// A peer that ended by itself (crashed) fails the run: its channels' connection resets
  /// would otherwise read like a restart's. It is started again, so that the run goes on.
  void notice_peers_ended() {
    for (int p = 0; p < s_.peers; ++p) {
      if (peers_[p]->poll_state() != bt::child_process::state::ended) continue;
      std::cerr << "soak: peer " << p << " (" << uris_[p] << ") ended by itself: " << peers_[p]->wait() << "\n";
      ++t.violations;
      ++generations_[p];
      peers_[p] = start_peer(p);
    }
  }

  /// Each peer prints its echo loops that wait in a send (echo_peer.hpp).
  void ask_peers_for_stuck_echoes() {
    for (auto& p : peers_) p->kill(SIGUSR1);
    std::this_thread::sleep_for(1s);  // time for their reports to reach stderr before ours ends
  }

  void stop_peers() {
    for (auto& p : peers_) p->kill(SIGKILL);
    for (auto& p : peers_) p->wait();
  }

  bt::soak_totals t;

 private:
  std::unique_ptr<bt::child_process> start_peer(int p) {
    auto child = std::make_unique<bt::child_process>(
        bt::child_process::exec_self(soak_peer, {uris_[p], std::to_string(s_.seconds * 3 + 300)}));
    if (!child->wait_ready()) {
      std::cerr << "soak: peer " << p << " did not start\n";
      std::exit(3);
    }
    return child;
  }

  asio::awaitable<void> pause(std::chrono::milliseconds d) {
    asio::steady_timer timer(io_, d);
    co_await timer.async_wait(as_tuple(use_awaitable));
  }

  bool over() const { return std::chrono::steady_clock::now() >= deadline_; }

  /// Kills a random peer now and then during round `round` and starts it again under the same
  /// name; the first time within the first half of the round, so that every round has one.
  asio::awaitable<void> restart_peers(std::uint64_t seed, int round) {
    std::mt19937_64 rng(seed);
    for (bool first = true;; first = false) {
      auto wait = std::chrono::milliseconds(s_.restart_every_ms / 2 + rng() % s_.restart_every_ms);
      const auto half_left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline_ - std::chrono::steady_clock::now()) / 2;
      if (first) wait = std::min(wait, half_left);
      co_await pause(wait);
      if (over() || round != round_) co_return;
      const int p = static_cast<int>(rng() % s_.peers);
      notice_peers_ended();
      ++generations_[p];  // before the kill: every failure from now on is explained by it
      peers_[p]->kill(SIGKILL);
      peers_[p]->wait();
      peers_[p] = start_peer(p);
      ++t.restarts;
    }
  }

  /// One channel slot: connect, exchange until the deadline, close; reconnect when its peer
  /// was restarted.
  asio::awaitable<void> drive(int slot, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    const int p = slot % s_.peers;
    bellows::channel_options options;
    options.ack_timeout = 30s;
    options.idle_shrink_after = 30ms;
    std::uint64_t uid = static_cast<std::uint64_t>(slot) << 32;
    std::vector<std::byte> out;
    while (!over()) {
      ++uid;
      const int generation = generations_[p];
      std::optional<bellows::channel> ch;
      for (int attempt = 0; attempt < 500 && !ch && !over(); ++attempt) {
        phase_[slot] = "connect";
        auto [ec, c] = co_await bellows::async_connect(io_.get_executor(), uris_[p], options, as_tuple(use_awaitable));
        if (!ec) {
          ch.emplace(std::move(c));
        } else {
          co_await pause(10ms);  // the peer is being restarted
        }
      }
      if (!ch) break;
      if (uid != (static_cast<std::uint64_t>(slot) << 32) + 1) ++t.reconnects;
      open_[slot] = &*ch;
      const bool clean = co_await exchange(*ch, uid, generation, p, rng, out, phase_[slot], traffic_[slot]);
      const auto st = ch->stats();
      t.enlargements += st.enlargements;
      t.shrinks += st.shrinks;
      if (clean) {
        phase_[slot] = "close";
        auto [close_ec] = co_await ch->async_close(as_tuple(use_awaitable));
        phase_[slot] = "end of stream";
        auto [end_ec, view] = co_await ch->async_receive_view(as_tuple(use_awaitable));
        const bool restarted = generations_[p] != generation;
        if ((close_ec || end_ec != bellows::error::end_of_stream) && !restarted) {
          std::cerr << "soak: channel " << uid << " did not close cleanly: " << close_ec.message() << " / "
                    << end_ec.message() << "\n";
          ++t.violations;
        }
        break;
      }
      open_[slot] = nullptr;
    }
    phase_[slot] = "done";
    open_[slot] = nullptr;
    --running_;
  }

  /// Random traffic on one channel until the deadline; false once the channel broke (its peer
  /// was restarted; anything else is counted as a violation).
  asio::awaitable<bool> exchange(bellows::channel& ch, std::uint64_t uid, int generation, int p, std::mt19937_64& rng,
                                 std::vector<std::byte>& out, const char*& phase, const bt::channel_traffic*& watched) {
    bt::channel_traffic traffic(io_, ch, uid, rng, out, phase, t, deadline_);
    watched = &traffic;
    const auto failure = co_await traffic.run();
    watched = nullptr;
    if (!failure) co_return true;
    t.lost_to_restart += traffic.in_flight().size();
    if (generations_[p] == generation && *failure != bellows::error::protocol_violation) {
      std::cerr << "soak: channel " << uid << " failed: " << failure->message() << "\n";
      ++t.violations;
    }
    co_return false;
  }

  asio::io_context& io_;
  const settings& s_;
  std::mt19937_64& rng_;
  std::vector<std::string> uris_;
  std::vector<int> generations_;
  std::vector<std::unique_ptr<bt::child_process>> peers_;
  std::chrono::steady_clock::time_point deadline_;
  int running_ = 0;
  std::vector<bellows::channel*> open_;
  std::vector<const bt::channel_traffic*> traffic_;  ///< the open channels' traffic, reported if one hangs
  std::vector<const char*> phase_;                   ///< what each channel slot waits for, reported if it hangs
  int round_ = 0;
};

int usage() {
  std::cerr << "usage: bellows_soak [--channels N] [--seconds S] [--peers P] [--restart-every MS] [--seed X]"
               " [--over shm|tcp]\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && std::string(argv[1]) == bt::child_flag)
    return bt::child_role::run(std::vector<std::string>(argv + 2, argv + argc));
  settings s;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) return usage();
    const std::string value = argv[++i];
    try {
      if (flag == "--channels")
        s.channels = std::stoi(value);
      else if (flag == "--seconds")
        s.seconds = std::stoi(value);
      else if (flag == "--peers")
        s.peers = std::stoi(value);
      else if (flag == "--restart-every")
        s.restart_every_ms = std::stoi(value);
      else if (flag == "--seed")
        s.seed = std::stoull(value);
      else if (flag == "--over" && (value == "shm" || value == "tcp"))
        s.over = value == "shm" ? bt::provider::shm : bt::provider::tcp;
      else
        return usage();
    } catch (const std::exception&) {
      return usage();
    }
  }
  if (s.channels < 1 || s.seconds < 2 || s.peers < 1 || s.restart_every_ms < 100) return usage();

  std::mt19937_64 rng(s.seed);
  asio::io_context io;
  const std::size_t rss_at_start = perf::resident_bytes();
  soak run(io, s, rng);
  int failures = 0;
  std::size_t rss_after[2] = {};
  for (int r = 0; r < 2; ++r) {
    if (!run.round(s.seconds / 2)) {
      std::cerr << "soak: round " << r + 1 << " did not finish within a minute of its deadline\n";
      ++failures;
    }
    const auto after = run.after_close();
    const std::size_t registered = after.registered_bytes;
    if (registered != 0) {
      std::cerr << "soak: " << registered << " B still registered after every channel closed\n";
      ++failures;
    }
    if (after.links != 0) {
      std::cerr << "soak: " << after.links << " links still open 5 s after every channel closed\n";
      ++failures;
    }
    ::malloc_trim(0);
    rss_after[r] = perf::resident_bytes();
    std::printf("round %d: registered after close %zu B, resident %.1f MiB\n", r + 1, registered,
                static_cast<double>(rss_after[r]) / (1 << 20));
  }
  run.stop_peers();
  // The first round warms the allocator and the reactor's tables; the second must not grow.
  // Sanitizers keep freed memory in quarantine and shadow, so only a plain build is judged.
  constexpr std::size_t rss_margin = std::size_t{8} << 20;
  const auto grown = static_cast<long long>(rss_after[1]) - static_cast<long long>(rss_after[0]);
  if (bt::sanitized) std::printf("resident memory not judged: built with a sanitizer\n");
  if (!bt::sanitized && grown > static_cast<long long>(rss_margin)) {
    std::cerr << "soak: resident memory grew by " << grown << " B over the second round\n";
    bt::report_resident_memory(std::cerr);
    ++failures;
  }
  const auto& t = run.t;
  std::printf(
      "soak: %d channels, %d peers, %d s, seed %llu\n"
      "  %llu messages (%.1f MiB) echoed intact, in order; %llu enlargements, %llu shrinks\n"
      "  %llu sends and %llu receives cancelled\n"
      "  %llu peer restarts, %llu reconnects, %llu in-flight messages lost with a killed peer\n"
      "  resident: %.1f MiB at start, %.1f after round 1, %.1f after round 2 (margin %zu MiB)\n"
      "  violations: %llu\n",
      s.channels, s.peers, s.seconds, static_cast<unsigned long long>(s.seed),
      static_cast<unsigned long long>(t.messages), static_cast<double>(t.bytes) / (1 << 20),
      static_cast<unsigned long long>(t.enlargements), static_cast<unsigned long long>(t.shrinks),
      static_cast<unsigned long long>(t.send_cancels), static_cast<unsigned long long>(t.receive_cancels),
      static_cast<unsigned long long>(t.restarts), static_cast<unsigned long long>(t.reconnects),
      static_cast<unsigned long long>(t.lost_to_restart), static_cast<double>(rss_at_start) / (1 << 20),
      static_cast<double>(rss_after[0]) / (1 << 20), static_cast<double>(rss_after[1]) / (1 << 20), rss_margin >> 20,
      static_cast<unsigned long long>(t.violations));
  if (t.messages == 0 || t.enlargements == 0 || t.shrinks == 0 || t.restarts == 0) {
    std::cerr << "soak: the run did not exercise every path (messages, enlargements, shrinks, restarts)\n";
    ++failures;
  }
  return failures == 0 && t.violations == 0 ? 0 : 1;
}
