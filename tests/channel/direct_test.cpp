// Direct placement: a message larger than the largest tier's frames goes straight into the
// buffer of the receive that takes it, so the rings stay at their first tier. Over tcp the
// receiving link reads it off the socket into that buffer; over shm the receiver reads it from
// the sender's buffer (process_vm_readv), here within one process and between two. A receiving
// tcp channel torn down while its lent buffer is being written takes the buffer back at once:
// the rest of the write is dropped (ASan would see a write into the freed buffer) and the
// link's other channels carry on. A sending tcp channel sends what the socket could not take
// from the message's own buffer until the send completes, and copies the rest if it is aborted
// first (the freed buffer is unmapped: a read from it would fail the link).

#include "proto/fetch_guard.hpp"
#include "support/buffer_echo.hpp"
#include "support/graceful_close.hpp"
#include "support/messages.hpp"
#include "support/processes.hpp"
#include "support/provider.hpp"
#include "support/run_until.hpp"

#include <bellows/bellows.hpp>

#include <asio/io_context.hpp>

#include <catch2/catch.hpp>

#include <unistd.h>
#include <algorithm>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

using namespace std::chrono_literals;
namespace bt = bellows::test;

namespace {

/// A connected pair over one link, both ends in this process, with `options` on both sides
/// (by default the suite's, bt::options_for).
struct linked_pair {
  explicit linked_pair(const std::string& name, int channels = 1, bt::provider over = bt::provider::tcp,
                       std::optional<bellows::channel_options> options = std::nullopt)
      : acceptor(io.get_executor(), bt::uri_for(over, name),
                 options.value_or(bt::options_for(bt::uri_for(over, name)))) {
    const auto uri = bt::uri_for(over, name);
    if (!options) options = bt::options_for(uri);
    for (int i = 0; i < channels; ++i) {
      acceptor.async_accept([this](std::error_code ec, bellows::channel ch) {
        if (!ec) accepted.push_back(std::move(ch));
      });
      bellows::async_connect(io.get_executor(), uri, *options, [this](std::error_code ec, bellows::channel ch) {
        if (!ec) connected.push_back(std::move(ch));
      });
      const auto want = static_cast<std::size_t>(i + 1);
      REQUIRE(bt::run_until(
          io, [&] { return accepted.size() == want && connected.size() == want; }, 5s));
    }
  }

  asio::io_context io;
  bellows::acceptor acceptor;
  std::vector<bellows::channel> accepted;
  std::vector<bellows::channel> connected;
};

std::uint64_t word_at(const std::byte* at) {
  std::uint64_t w;
  std::memcpy(&w, at, sizeof w);
  return w;
}

struct result {
  std::optional<std::error_code> ec;
  std::size_t bytes = 0;
  auto handler() {
    return [this](std::error_code e, std::size_t n) {
      ec = e;
      bytes = n;
    };
  }
};

/// Bytes of a message past its first MiB: once they are seen in the receive's buffer, most of
/// the message is still on its way.
constexpr std::size_t probe = 1 << 20;

/// 64 MiB, far more than the sockets hold, with a word at `probe` that is not zero.
std::vector<std::byte> far_larger_than_sockets(unsigned seed) {
  auto message = bt::random_bytes(std::size_t{64} << 20, seed);
  REQUIRE(word_at(message.data() + probe) != 0);
  return message;
}

/// The link's second channel carries a small and a large message (written into a lent buffer)
/// after its first channel went.
void check_link_carries_on(linked_pair& p) {
  const auto small = bt::random_bytes(1000, 12);
  const auto large = bt::random_bytes(std::size_t{2} << 20, 13);
  std::vector<std::byte> got(large.size());
  for (const auto* m : {&small, &large}) {
    result r, s;
    p.accepted[1].async_receive(asio::buffer(got), r.handler());
    p.connected[1].async_send(asio::buffer(*m), s.handler());
    REQUIRE(bt::run_until(
        p.io, [&] { return r.ec && s.ec; }, 10s));
    CHECK(!*r.ec);
    CHECK(!*s.ec);
    REQUIRE(r.bytes == m->size());
    CHECK(std::equal(m->begin(), m->end(), got.begin()));
  }
  CHECK(p.accepted[1].stats().direct_messages_received == 1);
  CHECK(p.connected[1].is_open());
}

/// Runs in the child: echoes one channel on URI. ARGS: role URI.
int run_buffer_echo(const std::vector<std::string>& args) { return bt::serve_buffer_echo(args.at(1)); }
const bt::child_role buffer_echo("buffer-echo", run_buffer_echo);

}  // namespace

TEST_CASE("shm: a message between two processes is read once, from the sender's buffer into the receive's",
          "[shm][direct]") {
  if (!bt::chosen(bt::provider::shm)) return bt::skip_case("shm is not among BELLOWS_TEST_PROVIDERS");
  const auto uri = bt::uri_for(bt::provider::shm, bt::unique_name("fetch-echo"));
  auto peer = bt::child_process::exec_self(buffer_echo, {uri});
  REQUIRE(peer.wait_ready());
  asio::io_context io;
  std::optional<bellows::channel> ch;
  bellows::async_connect(io.get_executor(), uri, bt::options_for(uri), [&](std::error_code ec, bellows::channel c) {
    if (!ec) ch = std::move(c);
  });
  REQUIRE(bt::run_until(
      io, [&] { return ch.has_value(); }, 10s));
  const std::size_t sizes[] = {(512 << 10) + 1, 1 << 20, 3 << 20};
  for (const auto size : sizes) {
    INFO("a message of " << size << " bytes");
    const auto message = bt::random_bytes(size, static_cast<unsigned>(size) + 1);
    std::vector<std::byte> back(size);
    result sent, echoed;
    ch->async_send(asio::buffer(message), sent.handler());
    ch->async_receive(asio::buffer(back), echoed.handler());
    REQUIRE(bt::run_until(
        io, [&] { return sent.ec && echoed.ec; }, 20s));
    CHECK(!*sent.ec);
    CHECK(!*echoed.ec);
    REQUIRE(echoed.bytes == size);
    CHECK(back == message);
  }
  const auto s = ch->stats();
  if (bt::processes_read_each_other()) {
    CHECK(s.direct_messages_sent == std::size(sizes));
    CHECK(s.direct_messages_received == std::size(sizes));
    CHECK(s.send_tier == 0);
    CHECK(s.receive_tier == 0);
  } else {
    WARN("Yama's ptrace scope keeps these processes from reading each other: the ring carried them");
  }
  const auto close = bt::close_and_await_end(io, *ch);
  CHECK(close.closed == std::error_code{});
  CHECK(close.ended == bellows::error::end_of_stream);
  CHECK(peer.wait() == 0);
}

namespace {

/// A send handler that is never meant to run: its destruction notes the fetch guard's value.
struct guard_witness {
  explicit guard_witness(std::optional<std::uint64_t>& at_destruction) : seen(&at_destruction) {}
  guard_witness(guard_witness&& other) noexcept : seen(std::exchange(other.seen, nullptr)) {}
  guard_witness& operator=(guard_witness&&) = delete;
  ~guard_witness() {
    if (seen) *seen = bellows::proto::fetch_guard::current().value;
  }
  void operator()(std::error_code, std::size_t) {}
  std::optional<std::uint64_t>* seen;
};

}  // namespace

TEST_CASE("shm: an io_context destroyed with an offer unanswered moves the guard before its send handler goes",
          "[shm][direct]") {
  if (!bt::chosen(bt::provider::shm)) return bt::skip_case("shm is not among BELLOWS_TEST_PROVIDERS");
  const auto message = bt::random_bytes(std::size_t{1} << 20, 31);
  std::optional<std::uint64_t> guard_at_destruction;
  std::uint64_t guard_at_offer = 0;
  std::vector<bellows::channel> outliving;  // channels may outlive their io_context, as sockets may
  {
    linked_pair p(bt::unique_name("direct-shutdown"), 1, bt::provider::shm);
    guard_at_offer = bellows::proto::fetch_guard::current().value;
    // Offered at once; the peer posts no receive, so nobody answers.
    p.connected[0].async_send(asio::buffer(message), guard_witness(guard_at_destruction));
    p.io.poll();
    CHECK(!guard_at_destruction);
    outliving.push_back(std::move(p.connected[0]));
    outliving.push_back(std::move(p.accepted[0]));
  }  // the io_context goes: its handlers are destroyed without being called, as Asio does
  // The buffer may go with the handler (a coroutine's frame): the guard must have moved by then.
  REQUIRE(guard_at_destruction);
  CHECK(*guard_at_destruction != guard_at_offer);
}

TEST_CASE("messages above the largest tier's frames go straight into the receive's buffer, both ways",
          "[tcp][shm][verbs][direct]") {
  const auto over = GENERATE(from_range(bt::providers_here()));
  INFO("over " << bt::to_string(over));
  linked_pair p(bt::unique_name("direct"), 1, over);
  auto& client = p.connected[0];
  auto& server = p.accepted[0];
  for (const std::size_t size : {std::size_t{512 << 10} + 1, std::size_t{3} << 20}) {
    INFO("a message of " << size << " bytes");
    const auto message = bt::random_bytes(size, static_cast<unsigned>(size));
    std::vector<std::byte> at_server(size + 64), at_client(size);
    result received, sent, echoed, back;
    server.async_receive(asio::buffer(at_server), received.handler());
    client.async_send(asio::buffer(message), sent.handler());
    REQUIRE(bt::run_until(
        p.io, [&] { return received.ec && sent.ec; }, 10s));
    CHECK(!*received.ec);
    CHECK(!*sent.ec);
    REQUIRE(received.bytes == size);
    CHECK(std::equal(message.begin(), message.end(), at_server.begin()));

    client.async_receive(asio::buffer(at_client), back.handler());
    server.async_send(asio::buffer(at_server.data(), size), echoed.handler());
    REQUIRE(bt::run_until(
        p.io, [&] { return back.ec && echoed.ec; }, 10s));
    CHECK(!*back.ec);
    CHECK(at_client == message);
  }
  for (auto* ch : {&client, &server}) {
    const auto s = ch->stats();
    CHECK(s.direct_messages_sent == 2);
    CHECK(s.direct_messages_received == 2);
    CHECK(s.send_tier == 0);  // no ring grew for them
    CHECK(s.receive_tier == 0);
  }
}

TEST_CASE("shm: large messages come through the rings unless one_copy_above asks for one copy", "[shm][direct]") {
  if (!bt::chosen(bt::provider::shm)) return bt::skip_case("shm is not among BELLOWS_TEST_PROVIDERS");
  bellows::channel_options options;
  std::uint64_t direct_expected = 0;
  std::uint32_t tier_expected = 2;  // the 1 MiB message needs the largest ring, which then carries both
  SECTION("unset: the provider's default, none") {}
  SECTION("0: every message above the largest tier's frames") {
    options.one_copy_above = 0;
    direct_expected = 2;
    tier_expected = 0;
  }
  SECTION("2 MiB: only the 3 MiB message") {
    options.one_copy_above = std::uint64_t{2} << 20;
    direct_expected = 1;
  }
  linked_pair p(bt::unique_name("one-copy-above"), 1, bt::provider::shm, options);
  auto& client = p.connected[0];
  auto& server = p.accepted[0];
  for (const std::size_t size : {std::size_t{1} << 20, std::size_t{3} << 20}) {
    INFO("a message of " << size << " bytes");
    const auto message = bt::random_bytes(size, static_cast<unsigned>(size) + 7);
    std::vector<std::byte> at_server(size);
    result received, sent;
    server.async_receive(asio::buffer(at_server), received.handler());
    client.async_send(asio::buffer(message), sent.handler());
    REQUIRE(bt::run_until(
        p.io, [&] { return received.ec && sent.ec; }, 10s));
    CHECK(!*received.ec);
    CHECK(!*sent.ec);
    REQUIRE(received.bytes == size);
    CHECK(at_server == message);
  }
  const auto s = client.stats();
  CHECK(s.direct_messages_sent == direct_expected);
  CHECK(server.stats().direct_messages_received == direct_expected);
  CHECK(s.send_tier == tier_expected);
}

TEST_CASE("large messages sent eight at a time arrive in order and intact, however the receives are posted",
          "[tcp][shm][verbs][direct]") {
  const auto over = GENERATE(from_range(bt::providers_here()));
  const auto posting = GENERATE(as<std::string>{}, "all before the sends", "each from the previous handler",
                                "alternating buffers and views");
  INFO("over " << bt::to_string(over) << ", receives posted " << posting);
  linked_pair p(bt::unique_name("direct-deep"), 1, over);
  constexpr std::size_t count = 8;
  std::vector<std::vector<std::byte>> messages;
  for (std::size_t i = 0; i < count; ++i)
    messages.push_back(bt::random_bytes((i % 2 ? std::size_t{3} << 20 : (512 << 10) + 1) + i * 4096, 40 + i));
  std::vector<std::vector<std::byte>> inboxes(count, std::vector<std::byte>(std::size_t{4} << 20));
  std::vector<std::optional<std::error_code>> sent(count);
  std::vector<std::vector<std::byte>> got(count);
  std::size_t received = 0;
  std::optional<std::error_code> failed;
  auto& server = p.accepted[0];
  // Receive i takes message i: a buffer (lendable), or for odd i in the last pattern a view.
  std::function<void(std::size_t)> post = [&](std::size_t i) {
    auto done = [&, i](std::error_code ec, std::span<const std::byte> bytes, bool next) {
      if (ec) failed = ec;
      got[i].assign(bytes.begin(), bytes.end());
      ++received;
      if (next && i + 1 < count) post(i + 1);
    };
    const bool next = posting == "each from the previous handler";
    if (posting == "alternating buffers and views" && i % 2) {
      server.async_receive_view(
          [done, next](std::error_code ec, bellows::message_view v) { done(ec, v.bytes(), next); });
    } else {
      server.async_receive(asio::buffer(inboxes[i]), [&, done, i, next](std::error_code ec, std::size_t n) {
        done(ec, std::span(inboxes[i]).first(ec ? 0 : n), next);
      });
    }
  };
  if (posting == "each from the previous handler") {
    post(0);
  } else {
    for (std::size_t i = 0; i < count; ++i) post(i);
  }
  for (std::size_t i = 0; i < count; ++i)
    p.connected[0].async_send(asio::buffer(messages[i]), [&, i](std::error_code ec, std::size_t) { sent[i] = ec; });
  REQUIRE(bt::run_until(
      p.io, [&] { return received == count && std::all_of(sent.begin(), sent.end(), [](auto& s) { return s; }); },
      20s));
  CHECK(!failed);
  for (std::size_t i = 0; i < count; ++i) {
    INFO("message " << i);
    CHECK(!*sent[i]);
    CHECK(got[i] == messages[i]);
  }
  CHECK(server.stats().direct_messages_received == (posting == "alternating buffers and views" ? count / 2 : count));
}

TEST_CASE("a view receive declines an offer: a message above the largest tier's frames comes whole through the ring",
          "[tcp][shm][direct]") {
  const auto over = GENERATE(bt::provider::shm, bt::provider::tcp);
  INFO("over " << bt::to_string(over));
  if (!bt::chosen(over))
    return bt::skip_case(std::string(bt::to_string(over)) + " is not among BELLOWS_TEST_PROVIDERS");
  linked_pair p(bt::unique_name("direct-view"), 1, over);
  const std::size_t sizes[] = {(512 << 10) + 1, std::size_t{3} << 20};
  for (const auto size : sizes) {
    INFO("a message of " << size << " bytes");
    const auto message = bt::random_bytes(size, size + 7);
    std::optional<std::error_code> received, sent;
    bellows::message_view view;
    p.accepted[0].async_receive_view([&](std::error_code ec, bellows::message_view v) {
      received = ec;
      view = std::move(v);
    });
    p.connected[0].async_send(asio::buffer(message), [&](std::error_code ec, std::size_t) { sent = ec; });
    REQUIRE(bt::run_until(
        p.io, [&] { return received && sent; }, 10s));
    CHECK(!*received);
    CHECK(!*sent);
    REQUIRE(view.size() == size);
    CHECK(std::equal(message.begin(), message.end(), view.bytes().begin()));
  }
  const auto s = p.accepted[0].stats();
  CHECK(s.messages_received == std::size(sizes));
  CHECK(s.bytes_received == sizes[0] + sizes[1]);
  // A lent buffer would have to outlive the view's memory, and over shm reading into it was
  // measured slower than the ring at 4 MiB (README).
  CHECK(s.direct_messages_received == 0);
  CHECK(s.receive_tier == 2);
}

TEST_CASE("tcp: a channel torn down while the peer writes into its lent buffer drops the rest, and the link carries on",
          "[tcp][direct]") {
  if (!bt::chosen(bt::provider::tcp)) return bt::skip_case("tcp is not among BELLOWS_TEST_PROVIDERS");
  linked_pair p(bt::unique_name("direct-abort"), 2);
  const auto message = far_larger_than_sockets(11);
  auto inbox = std::make_unique<std::vector<std::byte>>(message.size());
  result received, sent;
  p.accepted[0].async_receive(asio::buffer(*inbox), received.handler());
  p.connected[0].async_send(asio::buffer(message), sent.handler());
  // The link writes the buffer only inside run(): between handlers it can be read here.
  REQUIRE(bt::run_until(
      p.io, [&] { return word_at(inbox->data() + probe) != 0; }, 10s));
  REQUIRE(!received.ec);  // lent, and being written

  p.accepted[0].abort();
  REQUIRE(bt::run_until(
      p.io, [&] { return received.ec && sent.ec; }, 5s));
  CHECK(*received.ec == bellows::error::channel_closed);
  CHECK(*sent.ec == bellows::error::connection_reset);  // its receiver went away first
  inbox.reset();  // the application frees it: nothing may be written there any more

  // The rest of the 64 MiB still arrives, and is dropped.
  check_link_carries_on(p);
}

TEST_CASE("tcp: a large send's bytes leave from its own buffer until it completes, and an aborted one's are let go of",
          "[tcp][direct]") {
  if (!bt::chosen(bt::provider::tcp)) return bt::skip_case("tcp is not among BELLOWS_TEST_PROVIDERS");
  linked_pair p(bt::unique_name("direct-held"), 2);
  // The link sends most of it from the message's memory as the socket makes room, long after
  // the batch that wrote it. Each handler frees the message, so a byte read from it afterwards
  // is a read of freed memory.
  const auto original = far_larger_than_sockets(21);
  const std::size_t size = original.size();
  auto message = std::make_unique<std::vector<std::byte>>(original);
  std::vector<std::byte> inbox(size);
  result received, sent;
  auto free_on_completion = [&](std::error_code ec, std::size_t n) {
    sent.ec = ec;
    sent.bytes = n;
    message.reset();
  };
  p.accepted[0].async_receive(asio::buffer(inbox), received.handler());
  p.connected[0].async_send(asio::buffer(*message), free_on_completion);

  SECTION("a completed send's buffer is the application's again") {
    REQUIRE(bt::run_until(
        p.io, [&] { return received.ec && sent.ec; }, 20s));
    CHECK(!*sent.ec);
    CHECK(!*received.ec);
    REQUIRE(received.bytes == size);
    CHECK(inbox == original);
    CHECK(p.accepted[0].stats().direct_messages_received == 1);
  }
  SECTION("a sending channel aborted while its bytes leave") {
    REQUIRE(bt::run_until(
        p.io, [&] { return word_at(inbox.data() + probe) != 0; }, 10s));
    REQUIRE(!sent.ec);  // most of it still to go
    p.connected[0].abort();
    REQUIRE(bt::run_until(
        p.io, [&] { return received.ec && sent.ec; }, 5s));
    CHECK(*sent.ec == bellows::error::channel_closed);
    CHECK(message == nullptr);
    // What the link had taken on still arrives, as what a closed socket had queued does: the
    // bytes it copied when the send let go of them included, each at its place.
    CHECK(!*received.ec);
    REQUIRE(received.bytes == size);
    CHECK(inbox == original);
    result after;
    p.accepted[0].async_receive(asio::buffer(inbox), after.handler());
    REQUIRE(bt::run_until(
        p.io, [&] { return after.ec.has_value(); }, 5s));
    CHECK(*after.ec == bellows::error::connection_reset);
    check_link_carries_on(p);
  }
}
