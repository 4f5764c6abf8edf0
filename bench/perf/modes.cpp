#include "modes.hpp"

#include "command_line.hpp"
#include "process.hpp"
#include "turns.hpp"

#include <bellows/bellows.hpp>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <exception>
#include <memory>
#include <span>
#include <sstream>
#include <stdexcept>

using asio::use_awaitable;
using asio::experimental::as_tuple;
using clock_type = std::chrono::steady_clock;

namespace perf {

asio::awaitable<bellows::channel> open(const std::string& uri, const bellows::channel_options& options,
                                       const std::string& role) {
  auto ex = co_await asio::this_coro::executor;
  bellows::channel ch = co_await bellows::async_connect(ex, uri, options, use_awaitable);
  co_await ch.async_send(asio::buffer(role), use_awaitable);
  co_return ch;
}

namespace {

double micros_since(clock_type::time_point start) {
  return std::chrono::duration<double, std::micro>(clock_type::now() - start).count();
}

std::string scheme_of(const std::string& uri) { return uri.substr(0, uri.find(':')); }

std::vector<std::uint64_t> default_sizes(const std::string& mode) {
  if (mode == "rate") return {8};
  if (mode == "scale") return {8};
  return {8, 64, 512, 4096, 32768, 65536, 262144, 1048576};
}

std::uint64_t iterations_for(const settings& s, const std::string& mode, std::uint64_t size) {
  return s.iterations ? s.iterations : default_iterations(mode, size);
}

std::uint64_t warmup_for(const settings& s, std::uint64_t iterations) { return perf::warmup_for(s.warmup, iterations); }

asio::awaitable<void> ping_pong(bellows::channel& ch, std::uint64_t size, std::uint64_t warmup,
                                std::uint64_t iterations, std::vector<double>& half_trips_us) {
  std::vector<std::byte> message(size, std::byte{1}), reply(size);
  half_trips_us.reserve(half_trips_us.size() + iterations);
  for (std::uint64_t i = 0; i < warmup + iterations; ++i) {
    const auto t0 = clock_type::now();
    co_await ch.async_send(asio::buffer(message), use_awaitable);
    const std::size_t n = co_await ch.async_receive(asio::buffer(reply), use_awaitable);
    if (i >= warmup) half_trips_us.push_back(micros_since(t0) / 2);
    if (n != size) throw std::runtime_error("the answer came back with another size");
  }
}

asio::awaitable<void> latency(const std::string& uri, const settings& s, reporter& out) {
  bellows::channel ch = co_await open(uri, channel_options_for(s), "pong");
  for (const auto size : s.sizes.empty() ? default_sizes("lat") : s.sizes) {
    const auto iterations = iterations_for(s, "lat", size);
    std::vector<double> half_trips;
    co_await ping_pong(ch, size, warmup_for(s, iterations), iterations, half_trips);
    const auto sum = summarize(half_trips);
    result r("lat", scheme_of(uri), size, iterations);
    r.set_times(sum.p50, sum.avg, sum.p99);
    r.mb_per_s = static_cast<double>(size) / sum.avg;  // bytes per microsecond
    r.msg_per_s = 1e6 / sum.avg;
    out.add(r);
  }
  co_await ch.async_close(use_awaitable);
}

/// What the senders of one streaming run share: they take turns until `count` are sent.
/// One streaming run: `count` messages of `size`, then the peer's one-byte answer. With
/// `try_first`, each message is first offered to try_send (the progress-engine path); with
/// s.outstanding above 1, that many sends are in flight at once.
asio::awaitable<void> stream(const std::string& uri, const settings& s, const std::string& mode, std::uint64_t size,
                             bool try_first, reporter& out) {
  const auto count = iterations_for(s, mode, size);
  const auto warmup = warmup_for(s, count);
  // Built before the co_await: g++ 12 mishandles a conditional's temporaries inside one.
  std::string role = "view-sink " + std::to_string(warmup + count);
  if (!s.view)
    role = "sink " + std::to_string(warmup + count) + " " + std::to_string(s.outstanding) + " " +
           std::to_string(s.buffer_per_receive ? s.outstanding : 1);
  bellows::channel ch = co_await open(uri, channel_options_for(s), role);
  std::vector<std::byte> block(size, std::byte{7});
  // The warm-up lets the ring grow to its tier before the clock starts, as ucx_perftest's does.
  for (std::uint64_t i = 0; i < warmup; ++i) co_await ch.async_send(asio::buffer(block), use_awaitable);
  const auto stalls_before = ch.stats().credit_stalls;
  const auto t0 = clock_type::now();
  std::error_code ec;
  if (s.outstanding > 1 && !try_first) {
    co_await in_turns(count, s.outstanding, [&](std::uint64_t) -> asio::awaitable<void> {
      co_await ch.async_send(asio::buffer(block), use_awaitable);
    });
  } else {
    for (std::uint64_t i = 0; i < count; ++i) {
      if (try_first && ch.try_send(asio::buffer(block), ec) == bellows::send_status::sent) continue;
      if (ec) throw std::system_error(ec, "try_send");
      co_await ch.async_send(asio::buffer(block), use_awaitable);
    }
  }
  std::byte done[1];
  co_await ch.async_receive(asio::buffer(done), use_awaitable);
  const double us = micros_since(t0);
  result r(mode, scheme_of(uri), size, count);
  r.avg_us = us / static_cast<double>(count);
  r.mb_per_s = static_cast<double>(size * count) / us;
  r.msg_per_s = static_cast<double>(count) / us * 1e6;
  const auto st = ch.stats();
  // How often the sender found the peer's ring full: whether credit came back in time.
  r.extra = {{"send_tier", st.send_tier}, {"credit_stalls", st.credit_stalls - stalls_before}};
  if (s.outstanding > 1) r.extra.push_back({"outstanding", s.outstanding});
  out.add(r);
  co_await ch.async_close(use_awaitable);
}

/// One timed message on a fresh channel, after `untimed` identical ones: from the send to the
/// peer's answer, less one 8 B half round trip (the answer's way back). Every variant first
/// trades one byte with the peer, untimed, so the peer's coroutine has started and its receive
/// is posted: what is timed is the message, not the peer's setup of a new channel.
struct first_message {
  double delivery_us = 0;
  std::uint32_t send_tier = 0;
  double provisioning_us = 0;
};

asio::awaitable<first_message> time_first_message(const std::string& uri, const bellows::channel_options& options,
                                                  const std::vector<std::byte>& message, int untimed,
                                                  double answer_us) {
  bellows::channel ch = co_await open(uri, options, "enlarge");
  std::int64_t provisioning_ns = 0;
  const std::byte ping[1] = {};
  co_await ch.async_send(asio::buffer(ping), use_awaitable);
  co_await ch.async_receive(asio::buffer(&provisioning_ns, sizeof provisioning_ns), use_awaitable);
  for (int i = 0; i < untimed; ++i) {
    co_await ch.async_send(asio::buffer(message), use_awaitable);
    co_await ch.async_receive(asio::buffer(&provisioning_ns, sizeof provisioning_ns), use_awaitable);
  }
  const auto t0 = clock_type::now();
  co_await ch.async_send(asio::buffer(message), use_awaitable);
  co_await ch.async_receive(asio::buffer(&provisioning_ns, sizeof provisioning_ns), use_awaitable);
  first_message m{micros_since(t0) - answer_us, ch.stats().send_tier, static_cast<double>(provisioning_ns) / 1e3};
  co_await ch.async_close(use_awaitable);
  co_return m;
}

/// The first message on a fresh channel that it does not fit, three ways side by side: with
/// the enlargement handshake (default tiers), fragmented through the first ring (first tier
/// only), and on a channel the same message already enlarged. The handshake is the sender's
/// request-to-acknowledgement time, which contains the peer's provisioning (registering the
/// ring, writing the acknowledgement). Sizes: -s, else one just too large for each tier below.
asio::awaitable<void> enlarge(const std::string& uri, const settings& s, reporter& out) {
  double answer_us = 0;
  {
    bellows::channel ch = co_await open(uri, channel_options_for(s), "pong");
    std::vector<double> half_trips;
    co_await ping_pong(ch, 8, 1000, 2000, half_trips);
    answer_us = summarize(half_trips).p50;
    co_await ch.async_close(use_awaitable);
  }
  auto options = channel_options_for(s);
  std::vector<std::uint64_t> sizes = s.sizes;
  if (sizes.empty())
    for (std::uint32_t tier = 1; tier < options.tiers.size(); ++tier)
      sizes.push_back(options.tiers[tier - 1].ring_bytes() / 2 + 1);  // just too large for the tier below
  auto fragmented = options;
  fragmented.tiers.resize(1);
  for (const auto size : sizes) {
    const auto repetitions = iterations_for(s, "enlarge", size);
    const auto warmup = warmup_for(s, repetitions);
    std::vector<double> delivery, frag_delivery, warm_delivery, provisioning;
    // Every fresh channel that enlarges reports its handshake, the already-enlarged variant's
    // untimed first message too. Tier events are posted and may come a channel late, so they
    // are gathered as they come rather than matched to one channel.
    auto handshake = std::make_shared<std::vector<double>>();
    options.on_tier_event = [handshake](const bellows::tier_event& e) {
      if (e.kind == bellows::tier_event::what::granted && !e.shrink)
        handshake->push_back(std::chrono::duration<double, std::micro>(e.elapsed).count());
    };
    std::vector<std::byte> message(size, std::byte{3});
    std::uint32_t tier = 0;
    for (std::uint64_t i = 0; i < warmup + repetitions; ++i) {
      // The warm-up rounds fill the reactors' pools of ready rings, as a running service has.
      if (i == warmup) handshake->clear();
      const auto enlarged = co_await time_first_message(uri, options, message, 0, answer_us);
      if (enlarged.send_tier == 0) break;
      if (i > 0 && enlarged.send_tier != tier) throw std::runtime_error("the same message enlarged to another tier");
      tier = enlarged.send_tier;
      const auto fragmented_us = (co_await time_first_message(uri, fragmented, message, 0, answer_us)).delivery_us;
      const auto warm_us = (co_await time_first_message(uri, options, message, 1, answer_us)).delivery_us;
      if (i < warmup) continue;
      delivery.push_back(enlarged.delivery_us);
      provisioning.push_back(enlarged.provisioning_us);
      frag_delivery.push_back(fragmented_us);
      warm_delivery.push_back(warm_us);
    }
    if (tier == 0) {
      std::fprintf(stderr,
                   "bellows-perf: enlarge: %llu B grew no ring (it fits the first one, or went straight into the "
                   "receive's buffer); skipped\n",
                   static_cast<unsigned long long>(size));
      continue;
    }
    const auto d = summarize(delivery);
    const auto h = summarize(*handshake);
    const auto p = summarize(provisioning);
    result r("enlarge", scheme_of(uri), size, repetitions);
    r.set_times(d.p50, d.avg, d.p99);
    r.extra = {{"to_tier", tier},
               {"ring_KiB", static_cast<double>(options.tiers[tier].ring_bytes()) / 1024},
               {"fragmented_p50", summarize(frag_delivery).p50},
               {"enlarged_before_p50", summarize(warm_delivery).p50},
               {"handshake_p50", h.p50},
               {"handshake_p99", h.p99},
               {"provision_p50", p.p50},
               {"provision_p99", p.p99}};
    out.add(r);
  }
}

process_report own_report(asio::io_context& io) {
  return {0, static_cast<double>(bellows::stats(io).registered_bytes), static_cast<double>(resident_bytes())};
}

/// Waits until the channels of the previous round are gone on both sides, then reports both
/// processes. An aborted channel lets go of its memory once the peer's detach has been read,
/// and a process reads its links only while it has an operation pending: the report is one.
/// Settled means no channel here, none idle there, and this side's registered bytes no
/// longer falling (rdma's pool keeps closed channels' registrations cached, so not zero).
asio::awaitable<std::pair<process_report, process_report>> settled_reports(const std::string& uri, const settings& s) {
  auto ex = co_await asio::this_coro::executor;
  auto& io = static_cast<asio::io_context&>(ex.query(asio::execution::context));
  asio::steady_timer pause(ex);
  double previous_registered = -1;
  for (int attempt = 0; attempt < 2000; ++attempt) {
    const bool own_clear = bellows::stats(io).channels == 0;
    const auto own = own_report(io);
    const auto peer = co_await peer_report(uri, s);
    if (own_clear && own.registered == previous_registered && peer.idle == 0) co_return std::pair{own, peer};
    previous_registered = own.registered;
    pause.expires_after(std::chrono::milliseconds(5));
    co_await pause.async_wait(use_awaitable);
  }
  const auto left = bellows::stats(io);
  throw std::runtime_error(
      "the channels of the previous round did not go away within 10 s: " + std::to_string(left.channels) +
      " channels and " + std::to_string(left.registered_bytes) + " registered bytes are left here");
}

/// N idle channels, what they cost on each side, and the 8 B latency of the active ones
/// beside them.
asio::awaitable<void> scale(const std::string& uri, const settings& s, reporter& out) {
  auto ex = co_await asio::this_coro::executor;
  auto& io = static_cast<asio::io_context&>(ex.query(asio::execution::context));
  for (const auto idle_count : s.channel_counts) {
    const auto [own_before, peer_before] = co_await settled_reports(uri, s);
    std::vector<bellows::channel> idle;
    idle.reserve(idle_count);
    const auto t0 = clock_type::now();
    for (std::uint64_t i = 0; i < idle_count; ++i) idle.push_back(co_await open(uri, channel_options_for(s), "idle"));
    const double connect_us = micros_since(t0);
    const auto peer_after = co_await peer_report(uri, s);
    const auto own_after = own_report(io);
    const auto per_channel = [idle_count](double before, double after) {
      return idle_count ? (after - before) / static_cast<double>(idle_count) : NAN;
    };

    // The active channels ping-pong at once; the last to finish wakes this coroutine.
    const auto iterations = iterations_for(s, "scale", 8);
    std::vector<double> half_trips;
    std::size_t running = s.active;
    asio::steady_timer all_done(ex, clock_type::time_point::max());
    std::exception_ptr failure;
    for (std::uint64_t a = 0; a < s.active; ++a)
      asio::co_spawn(
          ex,
          [&]() -> asio::awaitable<void> {
            bellows::channel ch = co_await open(uri, channel_options_for(s), "pong");
            co_await ping_pong(ch, 8, warmup_for(s, iterations), iterations, half_trips);
            co_await ch.async_close(use_awaitable);
          },
          [&](std::exception_ptr e) {
            if (e && !failure) failure = e;
            if (--running == 0) all_done.cancel();
          });
    co_await all_done.async_wait(as_tuple(use_awaitable));
    if (failure) std::rethrow_exception(failure);

    const auto sum = summarize(half_trips);
    result r("scale", scheme_of(uri), 8, iterations * s.active);
    r.set_times(sum.p50, sum.avg, sum.p99);
    r.extra = {{"idle_channels", static_cast<double>(idle_count)},
               {"reg_B/ch", per_channel(own_before.registered, own_after.registered)},
               {"peer_reg_B/ch", per_channel(peer_before.registered, peer_after.registered)},
               {"rss_B/ch", per_channel(own_before.rss, own_after.rss)},
               {"peer_rss_B/ch", per_channel(peer_before.rss, peer_after.rss)},
               {"connect_us/ch", idle_count ? connect_us / static_cast<double>(idle_count) : NAN}};
    if (peer_after.idle != static_cast<double>(idle_count))
      throw std::runtime_error("the peer does not hold the idle channels it was sent");
    out.add(r);
  }
}

}  // namespace

asio::awaitable<process_report> peer_report(const std::string& uri, const settings& s) {
  bellows::channel ch = co_await open(uri, channel_options_for(s), "report");
  char text[256];
  const std::size_t n = co_await ch.async_receive(asio::buffer(text), use_awaitable);
  process_report r;
  std::istringstream in(std::string(text, n));
  std::string field;
  while (in >> field) {
    const auto eq = field.find('=');
    const double value = std::stod(field.substr(eq + 1));
    const auto key = field.substr(0, eq);
    if (key == "idle") r.idle = value;
    if (key == "registered") r.registered = value;
    if (key == "rss") r.rss = value;
    if (key == "peak_rss") r.peak_rss = value;
  }
  // Waiting for the peer to let go (its channel ends after our close) means this channel's
  // memory is freed the moment it is dropped, not counted in the next report of this side.
  co_await ch.async_close(use_awaitable);
  co_await ch.async_receive(asio::buffer(text), as_tuple(use_awaitable));
  co_return r;
}

bellows::channel_options channel_options_for(const settings& s) {
  bellows::channel_options options;
  if (s.fixed_large) options.tiers = {{16384, 16}, {65536, 16}};  // 256 KiB from the start, then 1 MiB
  if (!s.tiers.empty()) options.tiers = s.tiers;
  // A benchmark must not time a shrink and its re-growth in the middle of a sweep.
  options.idle_shrink_after = std::chrono::hours(1);
  options.one_copy_above = s.one_copy_above;
  return options;
}

asio::awaitable<void> measure(std::string uri, settings s) {
  reporter out(s.json);
  for (const auto& mode : s.modes) {
    if (mode == "lat") {
      co_await latency(uri, s, out);
    } else if (mode == "bw" || mode == "rate") {
      for (const auto size : s.sizes.empty() ? default_sizes(mode) : s.sizes)
        co_await stream(uri, s, mode, size, mode == "rate", out);
    } else if (mode == "enlarge") {
      co_await enlarge(uri, s, out);
    } else if (mode == "scale") {
      co_await scale(uri, s, out);
    } else if (mode == "herd") {
      co_await herd(uri, s, out);
    } else if (mode == "local") {
      co_await local(s, out);
    } else {
      throw std::invalid_argument("unknown mode " + mode);
    }
  }
}

}  // namespace perf
