// herd: thousands of fresh channels each send one message that needs the largest tier at the
// same moment, so that every one of them is suspended in the enlargement handshake at once.
// What that costs: wall time until the last answer, and memory on both sides at that moment.

#include "modes.hpp"
#include "process.hpp"

#include <bellows/bellows.hpp>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

#include <chrono>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace perf {

using asio::use_awaitable;
using asio::experimental::as_tuple;

asio::awaitable<void> herd(const std::string& uri, const settings& s, reporter& out) {
  auto ex = co_await asio::this_coro::executor;
  auto& io = static_cast<asio::io_context&>(ex.query(asio::execution::context));
  const auto options = channel_options_for(s);
  // Just too large for the tier below the largest.
  const std::uint64_t size =
      s.sizes.empty() ? options.tiers[options.tiers.size() - 2].ring_bytes() / 2 + 1 : s.sizes[0];
  const std::vector<std::byte> message(size, std::byte{5});
  for (const auto count : s.channel_counts) {
    if (count == 0) continue;
    std::vector<bellows::channel> channels;
    channels.reserve(count);
    for (std::uint64_t i = 0; i < count; ++i)
      channels.push_back(co_await open(uri, options, "herd " + std::to_string(size)));

    std::size_t running = count;
    std::size_t failed = 0;
    asio::steady_timer all_done(ex, std::chrono::steady_clock::time_point::max());
    const auto t0 = std::chrono::steady_clock::now();
    for (auto& ch : channels)
      asio::co_spawn(
          ex,
          [&]() -> asio::awaitable<void> {
            std::byte answer[8];
            auto [send_ec, n] = co_await ch.async_send(asio::buffer(message), as_tuple(use_awaitable));
            auto [receive_ec, m] = co_await ch.async_receive(asio::buffer(answer), as_tuple(use_awaitable));
            if (send_ec || receive_ec) ++failed;
            if (--running == 0) all_done.cancel();
          },
          asio::detached);
    co_await all_done.async_wait(as_tuple(use_awaitable));
    const double wall_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (failed != 0) throw std::runtime_error(std::to_string(failed) + " herd channels failed");

    const auto own_registered = static_cast<double>(bellows::stats(io).registered_bytes);
    const auto peer = co_await peer_report(uri, s);
    std::uint64_t enlargements = 0, denials = 0, timeouts = 0;
    for (const auto& ch : channels) {
      const auto st = ch.stats();
      enlargements += st.enlargements;
      denials += st.denials;
      timeouts += st.ack_timeouts;
    }
    for (auto& ch : channels) co_await ch.async_close(as_tuple(use_awaitable));

    constexpr double mib = 1024.0 * 1024.0;
    result r("herd", uri.substr(0, uri.find(':')), size, count);
    r.avg_us = wall_ms * 1000 / static_cast<double>(count);
    r.extra = {{"channels", static_cast<double>(count)},
               {"wall_ms", wall_ms},
               {"enlarged", static_cast<double>(enlargements)},
               {"denied", static_cast<double>(denials)},
               {"ack_timeouts", static_cast<double>(timeouts)},
               {"reg_MiB", own_registered / mib},
               {"peer_reg_MiB", peer.registered / mib},
               {"peak_rss_MiB", static_cast<double>(peak_resident_bytes()) / mib},
               {"peer_peak_rss_MiB", peer.peak_rss / mib}};
    out.add(r);
  }
}

}  // namespace perf
