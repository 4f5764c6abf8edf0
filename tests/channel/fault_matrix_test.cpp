// The fault matrix: a peer stopped (SIGSTOP) or killed (SIGKILL) at each named step of the
// protocol, by an observer of its context's protocol steps, over every provider. Each case must end
// with every pending operation of the survivor completed with an error, nothing hung, nothing
// crashed, and the survivor's channel to another, healthy peer untouched.

#include "proto/step.hpp"
#include "reactor/reactor.hpp"
#include "support/messages.hpp"
#include "support/peers.hpp"
#include "support/processes.hpp"
#include "support/provider.hpp"
#include "support/run_until.hpp"

#include <bellows/bellows.hpp>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/use_future.hpp>

#include <catch2/catch.hpp>

#include <array>
#include <csignal>
#include <functional>
#include <future>
#include <optional>
#include <vector>

using namespace std::chrono_literals;
using asio::use_awaitable;
using asio::experimental::as_tuple;
using protocol_step = bellows::proto::step;
namespace bt = bellows::test;

namespace {

/// Large enough to need tier 1 (64 KiB ring), small enough not to be fragmented.
constexpr std::size_t enlarging_size = 20'000;
/// Larger than the largest tier's largest message: enlarges to tier 2, then is fragmented.
constexpr std::size_t fragmented_size = 2 << 20;
constexpr auto quick_shrink = 100ms;

/// Whether the faulty peer takes the step as the sender of its direction (it then starts the
/// traffic) or as the receiver (the survivor sends, the peer answers).
bool peer_sends(protocol_step step) {
  return step != protocol_step::ring_provisioned && step != protocol_step::ack_head_written &&
         step != protocol_step::shrink_ring_provisioned && step != protocol_step::buffer_lent;
}

/// Steps whose message is larger than the largest tier's frames (over tcp: offered directly).
bool large_message_step(protocol_step step) {
  return step == protocol_step::fragment_written || step == protocol_step::direct_offered ||
         step == protocol_step::buffer_lent;
}

/// The steps a channel over `provider` takes. Large messages are offered over every provider:
/// over shm the receiver reads them from the sender's memory, over tcp and rdma it lends the
/// receive's buffer and the sender writes them into it.
std::vector<protocol_step> steps_over(bt::provider provider) {
  std::vector<protocol_step> steps{protocol_step::enlarge_request_due,     protocol_step::enlarge_request_written,
                                   protocol_step::ring_provisioned,        protocol_step::ack_head_written,
                                   protocol_step::fragment_written,        protocol_step::shrink_request_written,
                                   protocol_step::shrink_ring_provisioned, protocol_step::close_written};
  steps.push_back(protocol_step::direct_offered);
  if (provider != bt::provider::shm) steps.push_back(protocol_step::buffer_lent);
  return steps;
}

// ---- the faulty peer, in its own process ----

int signal_at_step = 0;
protocol_step fatal_step{};

asio::awaitable<void> drain(bellows::channel& ch) {
  std::vector<std::byte> inbox(fragmented_size);
  for (;;) {
    auto [ec, n] = co_await ch.async_receive(asio::buffer(inbox), as_tuple(use_awaitable));
    if (ec) co_return;
  }
}

/// ARGS: faulty-peer URI STEP SIGNAL. Accepts one channel and drives it to STEP, where the hook
/// raises SIGNAL; returning at all means the step was never reached.
int run_faulty_peer(const std::vector<std::string>& args) {
  const std::string uri = args.at(1);
  fatal_step = static_cast<protocol_step>(std::stoi(args.at(2)));
  signal_at_step = std::stoi(args.at(3));
  asio::io_context io;
  bellows::detail::reactor::of(io).observe_steps([](protocol_step s) {
    if (s == fatal_step) ::raise(signal_at_step);
  });
  auto options = bt::options_for(uri);
  options.idle_shrink_after = quick_shrink;
  bellows::acceptor acc(io.get_executor(), uri, options);
  bt::child_process::signal_ready();
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        bellows::channel ch = co_await acc.async_accept(use_awaitable);
        asio::co_spawn(io, drain(ch), asio::detached);
        const auto message = bt::random_bytes(large_message_step(fatal_step) ? fragmented_size : enlarging_size, 7);
        switch (fatal_step) {
          case protocol_step::close_written: co_await ch.async_close(as_tuple(use_awaitable)); break;
          case protocol_step::enlarge_request_due:
          case protocol_step::enlarge_request_written:
          case protocol_step::fragment_written:
          case protocol_step::direct_offered:
          case protocol_step::shrink_request_written:
            co_await ch.async_send(asio::buffer(message), as_tuple(use_awaitable));
            break;
          default: break;  // the survivor sends
        }
        // Keeps the channel (and this coroutine frame, which drain() uses) alive.
        asio::steady_timer forever(io, 60s);
        co_await forever.async_wait(as_tuple(use_awaitable));
      },
      asio::detached);
  io.run_for(20s);
  return 0;
}

const bt::child_role faulty_peer("faulty-peer", run_faulty_peer);

// ---- the survivor ----

template <class T>
bool ready(std::future<T>& f) {
  return f.wait_for(0s) == std::future_status::ready;
}

struct pending {
  std::optional<std::error_code> result;
  bool done() const { return result.has_value(); }
};

/// Round trips of every tier and a graceful close on the healthy channel.
bool healthy_channel_works(asio::io_context& io, bellows::channel& ch) {
  bool intact = true;
  bool finished = false;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        std::vector<std::byte> reply(1 << 20);
        for (std::size_t size : {100u, 60'000u, 700'000u}) {
          const auto message = bt::random_bytes(size, static_cast<unsigned>(size));
          co_await ch.async_send(asio::buffer(message), use_awaitable);
          const auto n = co_await ch.async_receive(asio::buffer(reply), use_awaitable);
          intact = intact && n == size && std::equal(message.begin(), message.end(), reply.begin());
        }
        finished = true;
      },
      [&](std::exception_ptr e) { intact = intact && !e; });
  bt::run_until(
      io, [&] { return finished; }, 10s);
  return finished && intact;
}

}  // namespace

TEST_CASE("Fault matrix: a peer stopped or killed at each protocol step", "[channel][fault]") {
  const auto provider = GENERATE(from_range(bt::providers_here()));
  const auto step = GENERATE_COPY(from_range(steps_over(provider)));
  const int signal = GENERATE(SIGSTOP, SIGKILL);
  INFO("over " << bt::to_string(provider) << ", " << (signal == SIGSTOP ? "stopped " : "killed ")
               << bellows::proto::to_string(step));

  const auto faulty_uri = bt::uri_for(provider, bt::unique_name("faulty"));
  const auto healthy_uri = bt::uri_for(provider, bt::unique_name("healthy"));
  auto faulty = bt::child_process::exec_self(
      faulty_peer, {faulty_uri, std::to_string(static_cast<int>(step)), std::to_string(signal)});
  auto healthy = bt::start_echo_server(healthy_uri, 1);
  REQUIRE(faulty.wait_ready());
  REQUIRE(healthy.wait_ready());

  asio::io_context io;
  auto options = bt::options_for(faulty_uri);
  // A stopped peer never answers: the survivor's wait for an ack must end by its timeout. A
  // killed one must be noticed by its death, well before this timeout.
  options.ack_timeout = signal == SIGSTOP ? 300ms : 30s;
  options.idle_shrink_after = quick_shrink;
  auto connecting_faulty = bellows::async_connect(io.get_executor(), faulty_uri, options, asio::use_future);
  auto connecting_healthy =
      bellows::async_connect(io.get_executor(), healthy_uri, bt::options_for(healthy_uri), asio::use_future);
  bt::run_until(
      io, [&] { return ready(connecting_faulty) && ready(connecting_healthy); }, 10s);
  bellows::channel ch = connecting_faulty.get();
  bellows::channel other = connecting_healthy.get();

  // The survivor always waits to receive; as the sender it also sends what makes the peer
  // provision (and, for the shrink, receives nothing larger afterwards).
  std::vector<std::byte> inbox(fragmented_size);
  pending receive, send;
  // Whatever the peer sent before the fault must arrive intact; the receive after it fails.
  int intact_messages = 0;
  int delivered_messages = 0;
  std::function<void(std::error_code, std::size_t)> on_receive = [&](std::error_code ec, std::size_t n) {
    if (ec) {
      receive.result = ec;
      return;
    }
    ++delivered_messages;
    const auto sent = bt::random_bytes(n, 7);
    intact_messages += std::equal(sent.begin(), sent.end(), inbox.begin()) ? 1 : 0;
    ch.async_receive(asio::buffer(inbox), on_receive);
  };
  // Fragments arrive only where the receive cannot be lent: a buffer in two parts does that.
  const std::array<asio::mutable_buffer, 2> halves{
      asio::buffer(inbox.data(), fragmented_size / 2),
      asio::buffer(inbox.data() + fragmented_size / 2, fragmented_size / 2)};
  if (step == protocol_step::fragment_written) {
    ch.async_receive(halves, on_receive);
  } else {
    ch.async_receive(asio::buffer(inbox), on_receive);
  }
  const auto message = bt::random_bytes(step == protocol_step::buffer_lent ? fragmented_size : enlarging_size, 8);
  if (!peer_sends(step))
    ch.async_send(asio::buffer(message), [&](std::error_code ec, std::size_t) { send.result = ec; });

  auto state = bt::child_process::state::running;
  bt::run_until(
      io,
      [&] {
        // A stop is reported once; look again only while the peer still runs.
        if (state == bt::child_process::state::running) state = faulty.poll_state();
        return state != bt::child_process::state::running;
      },
      10s);
  INFO("the peer is " << (state == bt::child_process::state::ended ? "gone" : "running or stopped"));
  REQUIRE(state == (signal == SIGSTOP ? bt::child_process::state::stopped : bt::child_process::state::ended));
  if (signal == SIGKILL) CHECK(faulty.wait() == -SIGKILL);

  // A probe sent after the fault: queued behind a pending handshake, or written at once.
  pending probe;
  const auto small = bt::random_bytes(100, 9);
  ch.async_send(asio::buffer(small), [&](std::error_code ec, std::size_t) { probe.result = ec; });

  if (signal == SIGSTOP) {
    // A stopped peer is not a dead one. A send waiting for its ack goes on in fragments after
    // the timeout and then waits for credit the stopped peer cannot return, without failing;
    // the healthy peer is served meanwhile; then the stopped peer is killed.
    if (step == protocol_step::buffer_lent) {
      // An offer has no timeout: its send waits for the stopped peer without failing. Over rdma
      // the answer may be seen without its doorbell, and the peer's NIC then takes the bytes
      // into the lent buffer while its process is stopped: the send may complete, but only
      // successfully, as a socket's does once the peer's kernel has its bytes.
      io.restart();
      io.run_for(2 * options.ack_timeout);
      CHECK(ch.stats().ack_timeouts == 0);
      if (provider == bt::provider::rdma) {
        CHECK((!send.done() || !*send.result));
      } else {
        CHECK(!send.done());
      }
    } else if (!peer_sends(step) && step != protocol_step::shrink_ring_provisioned) {
      bt::run_until(io, [&] { return ch.stats().ack_timeouts == 1; });
      CHECK(ch.stats().ack_timeouts == 1);
      CHECK(!send.done());
    }
    if (step == protocol_step::close_written) {
      // The CLOSE is in our ring; its doorbell never rang, or was skipped because we poll this
      // channel on every round. A receiver that looks at its ring may take it, as a socket
      // takes a FIN from a peer stopped right after sending it; nothing else may end the receive.
      CHECK((!receive.done() || *receive.result == bellows::error::end_of_stream));
    } else {
      CHECK(!receive.done());
    }
    CHECK(healthy_channel_works(io, other));
    faulty.kill(SIGKILL);
    CHECK(faulty.wait() == -SIGKILL);
  }

  const auto dead = std::chrono::steady_clock::now();
  auto all_done = [&] { return receive.done() && probe.done() && (peer_sends(step) || send.done()); };
  bt::run_until(io, all_done, 3s);
  INFO("receive: " << (receive.result ? receive.result->message() : "pending")
                   << "; probe: " << (probe.result ? probe.result->message() : "pending")
                   << "; send: " << (send.result ? send.result->message() : "pending") << "; channel "
                   << (ch.is_open() ? "open" : "closed"));
  REQUIRE(all_done());
  CHECK(std::chrono::steady_clock::now() - dead < 2s);
  CHECK(*receive.result);  // end_of_stream after a CLOSE that did arrive, else the death
  if (*receive.result == bellows::error::end_of_stream) {
    // The peer closed gracefully before it died: as with a socket, the half-open channel
    // learns of the death from its next operation.
    pending after;
    ch.async_send(asio::buffer(small), [&](std::error_code ec, std::size_t) { after.result = ec; });
    bt::run_until(
        io, [&] { return after.done() && !ch.is_open(); }, 2s);
  }
  CHECK(!ch.is_open());
  // Whatever came is whole: a message read from a peer stopped or killed mid-protocol included.
  CHECK(delivered_messages == intact_messages);
  // Over shm the offered message lies in the peer's memory, which we read ourselves, stopped
  // peer or not; but its doorbell never rang, so it comes only if our reactor looked at the ring
  // before the peer died (after that, nothing is read from it). Either count is right there.
  if (provider != bt::provider::shm || step != protocol_step::direct_offered)
    CHECK(intact_messages == (step == protocol_step::shrink_request_written ? 1 : 0));

  if (signal == SIGKILL) CHECK(healthy_channel_works(io, other));
  // Both directions closed gracefully: ours completes, then theirs ends our receive.
  bool closed = false;
  std::optional<std::error_code> end;
  other.async_close([&](std::error_code ec) { closed = !ec; });
  other.async_receive(asio::buffer(inbox), [&](std::error_code ec, std::size_t) { end = ec; });
  bt::run_until(
      io, [&] { return closed && end; }, 5s);
  CHECK(closed);
  CHECK(end == bellows::error::end_of_stream);
  CHECK(healthy.wait() == 0);
}

TEST_CASE("Fault matrix: a peer stopped before its ack and then resumed: the send goes on, then switches",
          "[channel][fault]") {
  const auto provider = GENERATE(from_range(bt::providers_here()));
  const auto step = GENERATE(protocol_step::ring_provisioned, protocol_step::ack_head_written);
  INFO("over " << bt::to_string(provider) << ", stopped " << bellows::proto::to_string(step) << ", then resumed");
  const auto uri = bt::uri_for(provider, bt::unique_name("resumed"));
  auto faulty =
      bt::child_process::exec_self(faulty_peer, {uri, std::to_string(static_cast<int>(step)), std::to_string(SIGSTOP)});
  REQUIRE(faulty.wait_ready());

  asio::io_context io;
  auto options = bt::options_for(uri);
  options.ack_timeout = 300ms;
  auto connecting = bellows::async_connect(io.get_executor(), uri, options, asio::use_future);
  REQUIRE(bt::run_until(
      io, [&] { return ready(connecting); }, 10s));
  bellows::channel ch = connecting.get();
  const auto message = bt::random_bytes(enlarging_size, 8);
  pending send;
  ch.async_send(asio::buffer(message), [&](std::error_code ec, std::size_t) { send.result = ec; });

  auto state = bt::child_process::state::running;
  bt::run_until(
      io,
      [&] {
        if (state == bt::child_process::state::running) state = faulty.poll_state();
        return state != bt::child_process::state::running;
      },
      10s);
  REQUIRE(state == bt::child_process::state::stopped);
  // Unanswered past ack_timeout: the send goes on in fragments and waits for credit.
  bt::run_until(io, [&] { return ch.stats().ack_timeouts == 1; });
  CHECK(ch.stats().ack_timeouts == 1);
  CHECK(!send.done());

  faulty.kill(SIGCONT);
  REQUIRE(bt::run_until(
      io, [&] { return send.done(); }, 10s));
  CHECK(!*send.result);
  CHECK(ch.stats().enlargements == 1);  // the late grant was honoured ...
  CHECK(ch.stats().send_tier == 1);     // ... and the channel moved to its ring
  CHECK(ch.is_open());
  // The channel carries on in the new ring.
  pending again;
  ch.async_send(asio::buffer(message), [&](std::error_code ec, std::size_t) { again.result = ec; });
  REQUIRE(bt::run_until(
      io, [&] { return again.done(); }, 10s));
  CHECK(!*again.result);
  CHECK(ch.stats().enlargements == 1);
  faulty.kill(SIGKILL);
  CHECK(faulty.wait() == -SIGKILL);
}
