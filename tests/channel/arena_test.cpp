// A shm peer that lies about its arena: a memory file that is not sealed against shrinking, one
// smaller than it claims, a hello with the wrong descriptors; and a peer that tries to shrink
// or reseal the arenas it holds once the link is up. The first kind is refused when the link is
// set up; the second cannot succeed, so our stores into its mapping can never fault. And a peer
// whose last message before it died must still be read.

#include "fabric/control_message.hpp"
#include "fabric/shm/listener.hpp"
#include "support/messages.hpp"
#include "support/peers.hpp"
#include "support/processes.hpp"
#include "support/run_until.hpp"

#include <bellows/bellows.hpp>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/use_awaitable.hpp>

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>

using namespace std::chrono_literals;
namespace bt = bellows::test;
namespace shm = bellows::shm;
namespace fabric = bellows::fabric;

namespace {

enum class bad_hello { none, unsealed, smaller_than_announced, one_descriptor, truncated_message };

const char* to_string(bad_hello h) {
  switch (h) {
    case bad_hello::none: return "an honest hello";
    case bad_hello::unsealed: return "an arena not sealed against shrinking";
    case bad_hello::smaller_than_announced: return "an arena smaller than announced";
    case bad_hello::one_descriptor: return "no wake-up descriptor";
    case bad_hello::truncated_message: return "a hello cut short";
  }
  return "?";
}

constexpr std::size_t announced_bytes = 1 << 20;

int make_arena_file(bool sealed, std::size_t bytes) {
  const int fd = ::memfd_create("liar-arena", MFD_CLOEXEC | (sealed ? MFD_ALLOW_SEALING : 0));
  REQUIRE(fd >= 0);
  REQUIRE(::ftruncate(fd, static_cast<off_t>(bytes)) == 0);
  if (sealed) REQUIRE(::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) == 0);
  return fd;
}

void send_hello(int socket, bad_hello how) {
  fabric::link_message hello;
  hello.kind = fabric::message_kind::hello;
  hello.value = announced_bytes;
  hello.key = 1;
  std::vector<int> fds;
  fds.push_back(make_arena_file(how != bad_hello::unsealed,
                                how == bad_hello::smaller_than_announced ? announced_bytes / 2 : announced_bytes));
  if (how != bad_hello::one_descriptor) fds.push_back(::eventfd(0, EFD_CLOEXEC));
  iovec iov{&hello, how == bad_hello::truncated_message ? sizeof hello / 2 : sizeof hello};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 2)] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
  std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  REQUIRE(::sendmsg(socket, &msg, MSG_NOSIGNAL) > 0);
  for (int fd : fds) ::close(fd);
}

/// A connect to a shm peer played by the test itself: the connecting side runs on `io`, and
/// `socket` is the peer's end of the link, accepted by the constructor.
struct raw_shm_peer {
  explicit raw_shm_peer(const char* prefix) : name(bt::unique_name(prefix)) {
    auto opened = shm::listen_on(name);
    REQUIRE(opened);
    listener = *opened;
    bellows::async_connect(io.get_executor(), "shm://" + name,
                           [this](std::error_code ec, bellows::channel) { result = ec; });
    REQUIRE(bt::run_until(io, [&] {
      if (socket < 0) socket = shm::accept_one(listener);
      return socket >= 0;
    }));
  }
  ~raw_shm_peer() {
    if (socket >= 0) ::close(socket);
    ::close(listener);
  }
  raw_shm_peer(const raw_shm_peer&) = delete;
  raw_shm_peer& operator=(const raw_shm_peer&) = delete;

  /// The connect's error, once it has one (within five seconds).
  std::error_code connect_result() {
    REQUIRE(bt::run_until(
        io, [&] { return result.has_value(); }, 5s));
    return *result;
  }

  std::string name;
  int listener = -1;
  asio::io_context io;
  std::optional<std::error_code> result;
  int socket = -1;
};

}  // namespace

TEST_CASE("A shm peer whose hello lies about its arena is refused with protocol_violation", "[shm][fault]") {
  const auto how = GENERATE(bad_hello::unsealed, bad_hello::smaller_than_announced, bad_hello::one_descriptor,
                            bad_hello::truncated_message);
  INFO("the peer sends " << to_string(how));
  raw_shm_peer peer("bad-hello");
  send_hello(peer.socket, how);
  CHECK(peer.connect_result() == bellows::error::protocol_violation);
}

namespace {

/// The next message the survivor sent on `socket`, once one is there (the caller runs the
/// survivor's io_context meanwhile).
std::optional<fabric::link_message> read_message(int socket) {
  fabric::link_message m;
  const ssize_t n = ::recv(socket, &m, sizeof m, MSG_DONTWAIT);
  if (n != static_cast<ssize_t>(sizeof m)) return std::nullopt;
  return m;
}

}  // namespace

// An Asio socket reads what its peer sent before it closed, then the end; a shm link must too.
// The peer's refusal and its death wait in the socket together, and the refusal must be read.
TEST_CASE("A shm peer's last message before it dies is read: its refusal, not a reset", "[shm][fault]") {
  raw_shm_peer peer("last-words");
  send_hello(peer.socket, bad_hello::none);
  std::optional<fabric::link_message> open;
  REQUIRE(bt::run_until(
      peer.io,
      [&] {
        while (auto m = read_message(peer.socket)) {
          if (m->kind == fabric::message_kind::open) open = m;
        }
        return open.has_value();
      },
      5s));
  fabric::link_message refusal;
  refusal.kind = fabric::message_kind::refused;
  refusal.first = open->first;
  refusal.value = EACCES;
  REQUIRE(::send(peer.socket, &refusal, sizeof refusal, MSG_NOSIGNAL) == static_cast<ssize_t>(sizeof refusal));
  ::close(std::exchange(peer.socket, -1));
  CHECK(peer.connect_result() == std::errc::permission_denied);
}

namespace {

/// Every memory file this process holds that is a bellows arena (ours and the peer's).
std::vector<int> arena_descriptors() {
  std::vector<int> found;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    const auto target = std::filesystem::read_symlink(entry.path(), ec).string();
    if (!ec && target.find("memfd:bellows-arena") != std::string::npos)
      found.push_back(std::stoi(entry.path().filename().string()));
  }
  return found;
}

/// ARGS: arena-vandal URI. Accepts a channel, then tries to shrink, grow and reseal every arena
/// it holds; then echoes like the echo server. Exit 20 if any attempt succeeded, 21 if it
/// found fewer than two arenas.
int run_arena_vandal(const std::vector<std::string>& args) {
  const std::string uri = args.at(1);
  asio::io_context io;
  bellows::acceptor acc(io.get_executor(), uri, bt::options_for(uri));
  bt::child_process::signal_ready();
  int verdict = 0;
  bt::echo_result echo;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        bellows::channel ch = co_await acc.async_accept(asio::use_awaitable);
        const auto arenas = arena_descriptors();
        if (arenas.size() < 2) verdict = 21;
        for (int fd : arenas) {
          const bool shrunk = ::ftruncate(fd, 4096) == 0;
          const bool grown = ::ftruncate(fd, off_t{1} << 40) == 0;
          const bool write_sealed = ::fcntl(fd, F_ADD_SEALS, F_SEAL_FUTURE_WRITE) == 0;
          if (shrunk || grown || write_sealed) verdict = 20;
        }
        co_await bt::echo_channel(std::move(ch), echo, 1, io);
      },
      asio::detached);
  io.run_for(30s);
  return verdict != 0 ? verdict : echo.failures == 0 && echo.channels_done == 1 ? 0 : 22;
}

const bt::child_role arena_vandal("arena-vandal", run_arena_vandal);

}  // namespace

TEST_CASE("A shm peer cannot shrink, grow or reseal the arenas it holds, the channel carries on", "[shm][fault]") {
  const auto uri = "shm://" + bt::unique_name("vandal");
  auto vandal = bt::child_process::exec_self(arena_vandal, {uri});
  REQUIRE(vandal.wait_ready());
  asio::io_context io;
  int intact = 0;
  std::optional<std::error_code> end;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        auto ch = co_await bellows::async_connect(io.get_executor(), uri, bt::options_for(uri), asio::use_awaitable);
        std::vector<std::byte> reply(1 << 20);
        for (std::size_t size : {100u, 60'000u, 700'000u, 100u}) {
          const auto message = bt::random_bytes(size, static_cast<unsigned>(size));
          co_await ch.async_send(asio::buffer(message), asio::use_awaitable);
          const auto n = co_await ch.async_receive(asio::buffer(reply), asio::use_awaitable);
          if (n == size && std::equal(message.begin(), message.end(), reply.begin())) ++intact;
        }
        co_await ch.async_close(asio::use_awaitable);
        auto [ec, n] =
            co_await ch.async_receive(asio::buffer(reply), asio::experimental::as_tuple(asio::use_awaitable));
        end = ec;
      },
      asio::detached);
  bt::run_until(
      io, [&] { return end.has_value(); }, 20s);
  CHECK(intact == 4);
  CHECK(end == bellows::error::end_of_stream);
  CHECK(vandal.wait() == 0);
}
