// A tcp peer that lies: records of an unknown kind, control messages of the wrong size or before
// the hello, writes under a wrong key or outside every region, a doorbell with a payload, padding
// of no bytes or too many, answers about a second connection never asked for, a stream cut
// mid-record. Each is refused with a named error before
// anything is placed. And the plain failures: nothing listening, a name that does not resolve.
// Large messages from and into memory at any offset within a page, which the sending link pads
// in front of where the kernel's copies would be slow, arrive whole.

#include "fabric/tcp/record.hpp"
#include "support/messages.hpp"
#include "support/peers.hpp"
#include "support/processes.hpp"
#include "support/provider.hpp"
#include "support/raw_tcp.hpp"
#include "support/run_until.hpp"

#include <bellows/bellows.hpp>

#include <asio/io_context.hpp>

#include <catch2/catch.hpp>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>
#include <vector>

using namespace std::chrono_literals;
namespace bt = bellows::test;
namespace fabric = bellows::fabric;
using bellows::tcp::record_header;
using bellows::tcp::record_kind;
using bt::append;
using bt::append_control;
using bt::hello_with;

namespace {

enum class lie {
  hello_without_key,
  open_before_hello,
  wrong_magic,
  control_of_wrong_size,
  unknown_record_kind,
  write_under_wrong_key,
  write_outside_every_region,
  write_past_region_end,
  write_into_a_loan_never_made,
  doorbell_with_payload,
  empty_padding,
  padding_beyond_its_limit,
  bound_unasked,
  moved_to_connecting_side,
  stream_cut_mid_record,
};

const char* to_string(lie l) {
  switch (l) {
    case lie::hello_without_key: return "a hello without a key";
    case lie::open_before_hello: return "an open before its hello";
    case lie::wrong_magic: return "a control message with the wrong magic";
    case lie::control_of_wrong_size: return "a control record of the wrong size";
    case lie::unknown_record_kind: return "a record of an unknown kind";
    case lie::write_under_wrong_key: return "a write under a key that is not ours";
    case lie::write_outside_every_region: return "a write into no region";
    case lie::write_past_region_end: return "a write running past its region's end";
    case lie::write_into_a_loan_never_made: return "a write where a lent receive buffer would be, none lent";
    case lie::doorbell_with_payload: return "a doorbell with a payload";
    case lie::empty_padding: return "a padding record of no bytes";
    case lie::padding_beyond_its_limit: return "a padding record longer than padding may be";
    case lie::bound_unasked: return "second_bound for a second connection never opened";
    case lie::moved_to_connecting_side: return "moved, which only the connecting side sends";
    case lie::stream_cut_mid_record: return "a write cut short by the connection closing";
  }
  return "?";
}

void append_write(std::vector<std::byte>& out, std::uint64_t key, std::uint64_t address, std::size_t length,
                  std::size_t sent) {
  record_header h;
  h.kind = record_kind::write;
  h.key = key;
  h.address = address;
  h.length = length;
  append(out, &h, sizeof h);
  out.resize(out.size() + sent, std::byte{0x5a});
}

/// Lies about memory the connecting side did grant: the liar first answers its hello and reads
/// its open, which names its control block.
bool needs_a_grant(lie how) { return how == lie::write_past_region_end || how == lie::stream_cut_mid_record; }

/// What the liar sends once it has read the connecting side's hello (which names its key), and
/// for a lie that needs_a_grant, once it sent its own hello and read the open naming `granted`.
std::vector<std::byte> lie_bytes(lie how, std::uint64_t their_key, std::uint64_t granted) {
  constexpr std::uint64_t first_region = std::uint64_t{1} << 40;
  std::vector<std::byte> out;
  if (how == lie::hello_without_key) {
    append_control(out, hello_with(0));
    return out;
  }
  if (how == lie::open_before_hello) {
    fabric::link_message open;
    open.kind = fabric::message_kind::open;
    open.first = 1;
    append_control(out, open);
    return out;
  }
  if (how == lie::wrong_magic) {
    auto hello = hello_with(7);
    hello.magic = 0x12345678;
    append_control(out, hello);
    return out;
  }
  if (!needs_a_grant(how)) append_control(out, hello_with(7));
  switch (how) {
    case lie::control_of_wrong_size: append_control(out, hello_with(7), 10); break;
    case lie::unknown_record_kind: {
      record_header h;
      h.kind = static_cast<record_kind>(9);
      append(out, &h, sizeof h);
      break;
    }
    case lie::write_under_wrong_key: append_write(out, their_key ^ 2, first_region, 8, 8); break;
    case lie::write_outside_every_region: append_write(out, their_key, first_region * 900, 8, 8); break;
    case lie::write_past_region_end: append_write(out, their_key, granted + 64, 1 << 20, 0); break;
    case lie::write_into_a_loan_never_made:
      // Writes into buffers taken back are dropped; this one names a loan that never was.
      append_write(out, their_key, first_region << 23, 8, 8);
      break;
    case lie::doorbell_with_payload: {
      record_header h;
      h.kind = record_kind::doorbell;
      h.channel = 1;
      h.length = 8;
      append(out, &h, sizeof h);
      out.resize(out.size() + 8);
      break;
    }
    case lie::empty_padding:
    case lie::padding_beyond_its_limit: {
      record_header h;
      h.kind = record_kind::padding;
      h.length = how == lie::empty_padding ? 0 : bellows::tcp::max_padding + 1;
      append(out, &h, sizeof h);
      out.resize(out.size() + h.length);
      break;
    }
    case lie::bound_unasked:
    case lie::moved_to_connecting_side: {
      record_header h;
      h.kind = how == lie::bound_unasked ? record_kind::second_bound : record_kind::moved;
      append(out, &h, sizeof h);
      break;
    }
    case lie::stream_cut_mid_record: append_write(out, their_key, granted, 64, 10); break;
    default: break;
  }
  return out;
}

}  // namespace

TEST_CASE("A tcp peer that lies in its records is refused with protocol_violation, a cut stream with connection_reset",
          "[tcp][fault]") {
  const auto how = GENERATE(
      lie::hello_without_key, lie::open_before_hello, lie::wrong_magic, lie::control_of_wrong_size,
      lie::unknown_record_kind, lie::write_under_wrong_key, lie::write_outside_every_region, lie::write_past_region_end,
      lie::write_into_a_loan_never_made, lie::doorbell_with_payload, lie::empty_padding, lie::padding_beyond_its_limit,
      lie::bound_unasked, lie::moved_to_connecting_side, lie::stream_cut_mid_record);
  INFO("the peer sends " << to_string(how));
  std::uint16_t port = 0;
  const int listener = bt::listen_on_loopback(port);

  asio::io_context io;
  std::optional<std::error_code> result;
  bellows::async_connect(io.get_executor(), "tcp://127.0.0.1:" + std::to_string(port),
                         [&](std::error_code ec, bellows::channel) { result = ec; });
  // The connecting side's hello comes first: a header and one control message.
  int peer = -1;
  std::vector<std::byte> hello(sizeof(record_header) + sizeof(fabric::link_message));
  std::size_t got = 0;
  REQUIRE(bt::run_until(
      io,
      [&] {
        if (peer < 0) peer = ::accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (peer < 0) return false;
        const ssize_t n = ::recv(peer, hello.data() + got, hello.size() - got, MSG_DONTWAIT);
        if (n > 0) got += static_cast<std::size_t>(n);
        return got == hello.size();
      },
      5s));
  fabric::link_message theirs;
  std::memcpy(&theirs, hello.data() + sizeof(record_header), sizeof theirs);
  REQUIRE(theirs.kind == fabric::message_kind::hello);
  REQUIRE(theirs.key != 0);

  std::uint64_t granted = 0;
  if (needs_a_grant(how)) {
    std::vector<std::byte> ours;
    append_control(ours, hello_with(7));
    REQUIRE(::send(peer, ours.data(), ours.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(ours.size()));
    fabric::link_message open;
    REQUIRE(bt::read_control(io, peer, open));
    REQUIRE(open.kind == fabric::message_kind::open);
    granted = open.control;
  }
  const auto bytes = lie_bytes(how, theirs.key, granted);
  REQUIRE(::send(peer, bytes.data(), bytes.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size()));
  if (how == lie::stream_cut_mid_record) ::shutdown(peer, SHUT_WR);
  REQUIRE(bt::run_until(
      io, [&] { return result.has_value(); }, 5s));
  INFO("the connect ended with " << result->message());
  if (how == lie::stream_cut_mid_record) {
    CHECK(*result == bellows::error::connection_reset);
  } else {
    CHECK(*result == bellows::error::protocol_violation);
  }
  // The liar's connection was closed: it reads the end of the stream after whatever was sent.
  CHECK(bt::closed_by_peer(io, peer));
  ::close(peer);
  ::close(listener);
}

TEST_CASE("A tcp connect where nothing listens fails with connection_refused, a bad name with host_unreachable",
          "[tcp][fault]") {
  std::uint16_t port = 0;
  const int listener = bt::listen_on_loopback(port);
  ::close(listener);  // the port was free a moment ago, and nothing listens on it now

  asio::io_context io;
  std::optional<std::error_code> refused, unresolved;
  bellows::async_connect(io.get_executor(), "tcp://127.0.0.1:" + std::to_string(port),
                         [&](std::error_code ec, bellows::channel) { refused = ec; });
  bellows::async_connect(io.get_executor(), "tcp://no-such-host.invalid:7000",
                         [&](std::error_code ec, bellows::channel) { unresolved = ec; });
  REQUIRE(bt::run_until(
      io, [&] { return refused && unresolved; }, 5s));
  CHECK(*refused == std::errc::connection_refused);
  CHECK(*unresolved == std::errc::host_unreachable);
}

TEST_CASE("A tcp channel names its peer's address and port", "[tcp]") {
  const auto uri = bt::uri_for(bt::provider::tcp, bt::unique_name("named"));
  asio::io_context io;
  bellows::acceptor acc(io.get_executor(), uri);
  std::optional<bellows::channel> accepted, connected;
  acc.async_accept([&](std::error_code ec, bellows::channel ch) {
    if (!ec) accepted = std::move(ch);
  });
  bellows::async_connect(io.get_executor(), uri, [&](std::error_code ec, bellows::channel ch) {
    if (!ec) connected = std::move(ch);
  });
  REQUIRE(bt::run_until(
      io, [&] { return accepted && connected; }, 5s));
  const auto theirs = connected->remote_endpoint();
  CHECK(theirs.provider == "tcp");
  CHECK(theirs.address == "127.0.0.1");
  CHECK("tcp://127.0.0.1:" + std::to_string(theirs.port) == uri);
  const auto ours = accepted->remote_endpoint();
  CHECK(ours.provider == "tcp");
  CHECK(ours.address == "127.0.0.1");
  CHECK(ours.port != 0);
  CHECK(ours.port != theirs.port);
}

TEST_CASE("tcp: large messages from and into memory at any offset within a page arrive whole", "[tcp]") {
  const auto uri = bt::uri_for(bt::provider::tcp, bt::unique_name("offsets"));
  asio::io_context io;
  bellows::acceptor acc(io.get_executor(), uri);
  std::optional<bellows::channel> sender, receiver;
  REQUIRE(bt::connect_and_accept(io, acc, uri, sender, receiver));
  // 64 KiB goes through the ring, 1 MiB straight into the receive's buffer (both from the
  // sender's memory); offsets near the start of a page are the ones the link pads for.
  constexpr std::size_t page = 4096;
  std::vector<std::byte> from_memory((2 << 20) + 2 * page), into_memory((2 << 20) + 2 * page);
  const auto page_start = [](std::vector<std::byte>& v) {
    return v.data() + page - (reinterpret_cast<std::uintptr_t>(v.data()) & (page - 1));
  };
  std::byte* const from_page = page_start(from_memory);
  std::byte* const into_page = page_start(into_memory);
  unsigned seed = 1;
  for (const std::size_t size : {std::size_t{64} << 10, std::size_t{1} << 20}) {
    for (const std::size_t from : {0, 8, 16, 24, 40, 64, 100, 2048, 4000, 4080, 4088}) {
      for (const std::size_t into : {0, 16, 24, 4080}) {
        INFO(size << " bytes from page offset " << from << " into page offset " << into);
        const auto message = bt::random_bytes(size, ++seed);
        std::copy(message.begin(), message.end(), from_page + from);
        std::fill_n(into_page + into, size, std::byte{0});
        std::optional<std::error_code> sent, received;
        std::size_t got = 0;
        receiver->async_receive(asio::buffer(into_page + into, size), [&](std::error_code ec, std::size_t n) {
          received = ec;
          got = n;
        });
        sender->async_send(asio::buffer(from_page + from, size), [&](std::error_code ec, std::size_t) { sent = ec; });
        REQUIRE(bt::run_until(
            io, [&] { return sent && received; }, 10s));
        INFO("send: " << sent->message() << ", receive: " << received->message());
        REQUIRE(!*sent);
        REQUIRE(!*received);
        REQUIRE(got == size);
        CHECK(std::equal(message.begin(), message.end(), into_page + into));
      }
    }
  }
  CHECK(receiver->stats().direct_messages_received == 44);
}
