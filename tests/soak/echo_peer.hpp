#pragma once
// The soak's echo peer, in a process of its own: every message back as it came, each loop's
// phase watched so that, asked with SIGUSR1, the peer prints the loops that wait in a send (a
// message that never comes back may be stuck on either side).

#include "stuck_report.hpp"
#include "support/processes.hpp"

#include <bellows/bellows.hpp>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/signal_set.hpp>
#include <asio/use_awaitable.hpp>

#include <chrono>
#include <csignal>
#include <functional>
#include <iostream>
#include <list>
#include <sstream>
#include <string>

namespace bellows::test {

/// The echo loops of one peer process and what each waits for.
class echo_watch {
 public:
  struct loop {
    const char* phase = "receive";
    std::chrono::steady_clock::time_point since = std::chrono::steady_clock::now();
    std::uint64_t echoed = 0;
    std::size_t last_size = 0;
    const channel* ch = nullptr;
  };
  std::list<loop>::iterator add(const channel& ch) {
    loop l;
    l.ch = &ch;
    return loops_.insert(loops_.end(), l);
  }
  void remove(std::list<loop>::iterator it) { loops_.erase(it); }
  static void enter(loop& l, const char* phase) {
    l.phase = phase;
    l.since = std::chrono::steady_clock::now();
  }
  /// The loops waiting in a send, with how long they have waited.
  void report(std::ostream& out, const std::string& who) const {
    std::size_t sending = 0;
    const auto now = std::chrono::steady_clock::now();
    for (const auto& l : loops_) {
      if (std::string(l.phase) == "receive") continue;
      ++sending;
      out << who << ": echo loop in " << l.phase << " for "
          << std::chrono::duration_cast<std::chrono::milliseconds>(now - l.since).count() << " ms after " << l.echoed
          << " echoes, last message " << l.last_size << " B: ";
      describe_stats(out, l.ch->stats());
      out << "\n";
    }
    out << who << ": " << loops_.size() << " echo loops, " << sending << " not waiting in a receive\n";
  }

 private:
  std::list<loop> loops_;
};

/// The loop of echo_until_end (support/echo.hpp), its phase kept in `watch`.
inline asio::awaitable<void> watched_echo(bellows::channel ch, echo_watch& watch) {
  const auto me = watch.add(ch);
  const char* failed = nullptr;
  std::error_code ec;
  while (failed == nullptr) {
    echo_watch::enter(*me, "receive");
    auto [receive_ec, view] = co_await ch.async_receive_view(asio::experimental::as_tuple(asio::use_awaitable));
    if (receive_ec) {
      ec = receive_ec;
      if (ec != bellows::error::end_of_stream) failed = "receive";
      break;
    }
    me->last_size = view.buffer().size();
    echo_watch::enter(*me, "send");
    auto [send_ec, n] = co_await ch.async_send(view.buffer(), asio::experimental::as_tuple(asio::use_awaitable));
    if (send_ec) ec = send_ec, failed = "send";
    ++me->echoed;
  }
  if (failed != nullptr) std::cerr << "soak peer: " << failed << " failed: " << ec.message() << "\n";
  echo_watch::enter(*me, "close");
  co_await ch.async_close(asio::experimental::as_tuple(asio::use_awaitable));
  watch.remove(me);
}

/// Accepts at `uri` and echoes on every channel for `seconds`.
inline int run_echo_peer(const std::string& uri, int seconds) {
  asio::io_context io;
  bellows::channel_options options;
  options.ack_timeout = std::chrono::seconds(30);
  options.idle_shrink_after = std::chrono::milliseconds(30);
  bellows::acceptor acc(io.get_executor(), uri, options);
  echo_watch watch;
  asio::signal_set report_on(io, SIGUSR1);
  std::function<void()> report = [&] {
    report_on.async_wait([&](std::error_code ec, int) {
      if (ec) return;
      std::ostringstream text;  // one write: the peers report at once
      watch.report(text, "soak peer " + uri);
      std::cerr << text.str();
      report();
    });
  };
  report();
  child_process::signal_ready();
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        for (;;) {
          // Into a variable first: g++ 12 miscompiles a co_await inside co_spawn's arguments.
          bellows::channel accepted = co_await acc.async_accept(asio::use_awaitable);
          asio::co_spawn(io, watched_echo(std::move(accepted), watch), asio::detached);
        }
      },
      asio::detached);
  io.run_for(std::chrono::seconds(seconds));
  return 0;
}

}  // namespace bellows::test
