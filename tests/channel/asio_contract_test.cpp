// What Asio users expect of any I/O object, checked on channels and acceptors: a moved-from or
// closed object keeps its executor, and an operation started on it completes its handler with
// an error, posted, instead of throwing from the initiating call.

#include "support/messages.hpp"
#include "support/peers.hpp"
#include "support/processes.hpp"
#include "support/provider.hpp"
#include "support/run_until.hpp"

#include <bellows/bellows.hpp>

#include <asio/bind_cancellation_slot.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <asio/strand.hpp>
#include <asio/thread_pool.hpp>
#include <asio/use_awaitable.hpp>

#include <catch2/catch.hpp>

#include <unistd.h>

#include <cstring>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
namespace bt = bellows::test;

namespace {

/// A handler that records its error code, and whether it ran at all.
struct outcome {
  std::optional<std::error_code> ec;
  auto record() {
    return [this](std::error_code e, auto&&...) { ec = e; };
  }
};

/// Starts every channel operation on `ch` and checks that none completes inside its initiating
/// call and that all complete with channel_closed once `io` runs.
void every_operation_fails_closed(asio::io_context& io, bellows::channel& ch) {
  std::byte buffer[8] = {};
  outcome sent, received, viewed, closed;
  ch.async_send(asio::buffer(buffer), sent.record());
  ch.async_receive(asio::buffer(buffer), received.record());
  ch.async_receive_view(viewed.record());
  ch.async_close(closed.record());
  CHECK(!sent.ec);  // posted, not run inline
  CHECK(!received.ec);
  CHECK(!viewed.ec);
  CHECK(!closed.ec);
  REQUIRE(bt::run_until(
      io, [&] { return sent.ec && received.ec && viewed.ec && closed.ec; }, 5s));
  CHECK(*sent.ec == bellows::error::channel_closed);
  CHECK(*received.ec == bellows::error::channel_closed);
  CHECK(*viewed.ec == bellows::error::channel_closed);
  CHECK(*closed.ec == bellows::error::channel_closed);
}

/// True when a one-byte message sent on `from` arrives on `to` within ten seconds.
bool passes_a_byte(asio::io_context& io, bellows::channel& from, bellows::channel& to) {
  std::byte hello[1] = {std::byte{7}}, got[1] = {};
  outcome sent, received;
  from.async_send(asio::buffer(hello), sent.record());
  to.async_receive(asio::buffer(got), received.record());
  return bt::run_until(
             io, [&] { return sent.ec && received.ec; }, 10s) &&
         !*sent.ec && !*received.ec && got[0] == std::byte{7};
}

/// ARGS: unresponsive-listener URI. Listens, then never runs its io_context: a peer that hangs
/// before accepting. Over rdma the connection manager would otherwise accept on its behalf.
int run_unresponsive_listener(const std::vector<std::string>& args) {
  asio::io_context io;
  bellows::acceptor acc(io.get_executor(), args.at(1), bt::options_for(args.at(1)));
  bt::child_process::signal_ready();
  std::this_thread::sleep_for(60s);  // the parent kills it long before
  return 0;
}

const bt::child_role unresponsive_listener("unresponsive-listener", run_unresponsive_listener);

}  // namespace

TEST_CASE(
    "A channel names its peer, moved-from or aborted, it keeps its executor and its operations get channel_closed",
    "[channel][asio]") {
  const auto provider = GENERATE(from_range(bt::providers_here()));
  INFO("over " << bt::to_string(provider));
  const auto uri = bt::uri_for(provider, bt::unique_name("moved-channel"));
  asio::io_context io;
  bellows::acceptor acc(io.get_executor(), uri, bt::options_for(uri));
  std::optional<bellows::channel> near, far;
  REQUIRE(bt::connect_and_accept(io, acc, uri, near, far));

  // Each end names the other; over shm the kernel vouches for the pid and uid.
  const auto seen_by_near = near->remote_endpoint();
  const auto seen_by_far = far->remote_endpoint();
  INFO("near sees " << seen_by_near.to_string() << "; far sees " << seen_by_far.to_string());
  CHECK(seen_by_near.provider == bt::to_string(provider));
  CHECK(seen_by_far.provider == bt::to_string(provider));
  if (seen_by_near.provider == "shm") {
    CHECK(seen_by_near.pid == ::getpid());  // both ends live in this process here
    CHECK(seen_by_far.pid == ::getpid());
    CHECK(seen_by_near.uid == ::geteuid());
  } else {
    CHECK(!seen_by_near.address.empty());
    CHECK(!seen_by_far.address.empty());
    CHECK(seen_by_near.port != 0);
  }

  bellows::channel moved_to = std::move(*near);
  CHECK(near->get_executor() == io.get_executor());
  CHECK(!near->is_open());
  CHECK(moved_to.is_open());
  every_operation_fails_closed(io, *near);

  std::error_code who_ec;
  CHECK(near->remote_endpoint(who_ec).provider.empty());
  CHECK(who_ec == bellows::error::channel_closed);
  moved_to.abort();
  CHECK_THROWS_AS(moved_to.remote_endpoint(), std::system_error);
  CHECK(moved_to.get_executor() == io.get_executor());
  CHECK(!moved_to.is_open());
  every_operation_fails_closed(io, moved_to);
}

TEST_CASE("A default-constructed channel completes an operation with channel_closed on the system executor",
          "[channel][asio]") {
  bellows::channel never_opened;
  CHECK(!never_opened.is_open());
  CHECK(!never_opened.get_executor());
  std::byte buffer[8] = {};
  // The error comes back as a value, not as use_future's exception: an exception_ptr's count
  // lives in libstdc++, which ThreadSanitizer does not see, so the system executor's thread
  // freeing the exception after this thread had read it was reported as a race.
  auto result = std::make_shared<std::promise<std::pair<std::error_code, std::size_t>>>();
  auto sent = result->get_future();
  never_opened.async_send(asio::buffer(buffer), [result](std::error_code ec, std::size_t bytes) {
    result->set_value({ec, bytes});
  });
  REQUIRE(sent.wait_for(5s) == std::future_status::ready);
  const auto [ec, bytes] = sent.get();
  CHECK(ec == bellows::error::channel_closed);
  CHECK(bytes == 0);
}

TEST_CASE("A moved-from or closed acceptor keeps its executor, an accept completes with channel_closed",
          "[channel][asio]") {
  const auto provider = GENERATE(from_range(bt::providers_here()));
  INFO("over " << bt::to_string(provider));
  const auto uri = bt::uri_for(provider, bt::unique_name("moved-acceptor"));
  asio::io_context io;
  bellows::acceptor first(io.get_executor(), uri, bt::options_for(uri));
  bellows::acceptor second = std::move(first);
  CHECK(first.get_executor() == io.get_executor());
  CHECK(!first.is_open());
  CHECK(second.is_open());
  second.close();
  CHECK(second.get_executor() == io.get_executor());

  outcome from_moved, from_closed;
  first.async_accept(from_moved.record());
  second.async_accept(from_closed.record());
  CHECK(!from_moved.ec);  // posted, not run inline
  CHECK(!from_closed.ec);
  REQUIRE(bt::run_until(
      io, [&] { return from_moved.ec && from_closed.ec; }, 5s));
  CHECK(*from_moved.ec == bellows::error::channel_closed);
  CHECK(*from_closed.ec == bellows::error::channel_closed);
}

TEST_CASE("An acceptor takes any executor of an io_context and refuses another context's with invalid_argument",
          "[channel][asio]") {
  const auto provider = GENERATE(from_range(bt::providers_here()));
  INFO("over " << bt::to_string(provider));
  asio::io_context io;
  const auto strand_of_strand = asio::make_strand(asio::any_io_executor(asio::make_strand(io)));
  const auto tracked = asio::prefer(io.get_executor(), asio::execution::outstanding_work.tracked);
  for (const asio::any_io_executor& ex : {asio::any_io_executor(strand_of_strand), asio::any_io_executor(tracked)}) {
    const auto uri = bt::uri_for(provider, bt::unique_name("any-executor"));
    bellows::acceptor acc(ex, uri, bt::options_for(uri));
    CHECK(acc.is_open());
    CHECK(acc.get_executor() == ex);
  }
  asio::thread_pool pool(1);
  const auto uri = bt::uri_for(provider, bt::unique_name("pool-executor"));
  try {
    bellows::acceptor refused(pool.get_executor(), uri, bt::options_for(uri));
    FAIL("an acceptor was opened on a thread_pool's executor");
  } catch (const std::system_error& e) {
    CHECK(e.code() == bellows::error::invalid_argument);
    CHECK_THAT(e.what(), Catch::Contains("io_context"));
  }
}

TEST_CASE("A connect to a peer that never answers ends with timed_out after connect_timeout", "[channel][asio]") {
  const auto provider = GENERATE(from_range(bt::providers_here()));
  INFO("over " << bt::to_string(provider));
  const auto uri = bt::uri_for(provider, bt::unique_name("connect-timeout"));
  auto peer = bt::child_process::exec_self(unresponsive_listener, {uri});
  REQUIRE(peer.wait_ready());
  asio::io_context io;
  auto options = bt::options_for(uri);
  options.connect_timeout = 300ms;
  outcome unanswered;
  const auto start = std::chrono::steady_clock::now();
  bellows::async_connect(io.get_executor(), uri, options, unanswered.record());
  REQUIRE(bt::run_until(
      io, [&] { return unanswered.ec.has_value(); }, 10s));
  CHECK(*unanswered.ec == asio::error::timed_out);
  CHECK(std::chrono::steady_clock::now() - start >= 300ms);
}

TEST_CASE("A connect withdrawn before the peer accepted leaves nothing behind: the next accept gets the next peer",
          "[channel][asio]") {
  // Over shm an open waits unread until the acceptor accepts; over rdma the connection manager
  // accepts at once, and a peer that leaves is dropped from the backlog (acceptor_state).
  const auto uri = bt::uri_for(bt::provider::shm, bt::unique_name("withdrawn"));
  asio::io_context io;
  bellows::acceptor acc(io.get_executor(), uri, bt::options_for(uri));
  auto impatient = bt::options_for(uri);
  impatient.connect_timeout = 200ms;
  outcome withdrawn;
  bellows::async_connect(io.get_executor(), uri, impatient, withdrawn.record());
  REQUIRE(bt::run_until(
      io, [&] { return withdrawn.ec.has_value(); }, 10s));
  CHECK(*withdrawn.ec == asio::error::timed_out);

  std::optional<bellows::channel> near, far;
  REQUIRE(bt::connect_and_accept(io, acc, uri, near, far));
  // The accepted channel is the patient peer's: a message goes through it.
  CHECK(passes_a_byte(io, *near, *far));
}

TEST_CASE("An acceptor reopened under a closed one's name takes new peers, even over a link that outlived it",
          "[channel][asio]") {
  // Connectors reuse the link already open to a name. The first pair's channels keep that link
  // alive after its acceptor closed, so the second connect goes over it, and the peer's end must
  // hand the open to the acceptor listening now.
  const auto p = GENERATE(bt::provider::shm, bt::provider::tcp);
  const auto uri = bt::uri_for(p, bt::unique_name("reopened"));
  CAPTURE(uri);
  asio::io_context io;
  std::optional<bellows::channel> first_near, first_far;
  {
    bellows::acceptor first(io.get_executor(), uri, bt::options_for(uri));
    REQUIRE(bt::connect_and_accept(io, first, uri, first_near, first_far));
  }
  bellows::acceptor second(io.get_executor(), uri, bt::options_for(uri));
  std::optional<bellows::channel> near, far;
  REQUIRE(bt::connect_and_accept(io, second, uri, near, far));
  CHECK(passes_a_byte(io, *near, *far));
  CHECK(passes_a_byte(io, *first_near, *first_far));  // the old acceptor's channels live on
}

TEST_CASE("A receive cancelled at any moment takes no message: one it began goes whole to the next receive",
          "[channel][asio]") {
  const auto provider = GENERATE(from_range(bt::providers_here()));
  INFO("over " << bt::to_string(provider));
  const auto uri = bt::uri_for(provider, bt::unique_name("cancel-part-way"));
  auto server = bt::start_echo_server(uri, 1);
  REQUIRE(server.wait_ready());
  asio::io_context io;
  std::optional<bellows::channel> ch;
  bellows::async_connect(io.get_executor(), uri, bt::options_for(uri), [&](std::error_code ec, bellows::channel c) {
    if (!ec) ch = std::move(c);
  });
  REQUIRE(bt::run_until(
      io, [&] { return ch.has_value(); }, 10s));

  // Each echo is larger than the largest ring's frames, so it comes in fragments; the receive
  // is cancelled after a delay that grows each round, so that some cancellations land before
  // the echo, some part-way through it, some after it was taken.
  const int rounds = bt::scaled(provider, 24, 6);
  int cancelled = 0, intact = 0;
  bool finished = false;
  auto exchange = [&]() -> asio::awaitable<void> {
    for (int i = 0; i < rounds; ++i) {
      const auto message = bt::random_bytes((3u << 20) + static_cast<unsigned>(i), static_cast<unsigned>(i));
      co_await ch->async_send(asio::buffer(message), asio::use_awaitable);
      // Shared with the timer's handler, which may be queued already when the receive completes.
      struct cancel_state {
        asio::cancellation_signal signal;
        bool receive_done = false;
      };
      auto cancel = std::make_shared<cancel_state>();
      asio::steady_timer timer(io, std::chrono::microseconds(80 * i));
      timer.async_wait([cancel](std::error_code ec) {
        if (!ec && !cancel->receive_done) cancel->signal.emit(asio::cancellation_type::terminal);
      });
      auto [ec, view] = co_await ch->async_receive_view(
          asio::bind_cancellation_slot(cancel->signal.slot(), asio::experimental::as_tuple(asio::use_awaitable)));
      cancel->receive_done = true;
      timer.cancel();
      if (ec == asio::error::operation_aborted) {
        ++cancelled;
        std::tie(ec, view) = co_await ch->async_receive_view(asio::experimental::as_tuple(asio::use_awaitable));
      }
      const auto got = view.buffer();
      if (!ec && got.size() == message.size() && std::memcmp(got.data(), message.data(), got.size()) == 0) ++intact;
    }
    co_await ch->async_close(asio::use_awaitable);
    auto [end, last] = co_await ch->async_receive_view(asio::experimental::as_tuple(asio::use_awaitable));
    CHECK(end == bellows::error::end_of_stream);
    finished = true;
  };
  asio::co_spawn(io, exchange(), asio::detached);
  REQUIRE(bt::run_until(
      io, [&] { return finished; }, 60s));
  CHECK(intact == rounds);
  CHECK(cancelled > 0);
  CHECK(server.wait() == 0);
}
