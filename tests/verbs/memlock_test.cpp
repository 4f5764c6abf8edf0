// A process under a small locked-memory limit (RLIMIT_MEMLOCK, which bounds what RDMA may pin
// for a user without CAP_IPC_LOCK): what does not fit is refused or made smaller, and no message
// and no channel is lost to it. The guest runs its tests as root, so the child drops the
// capability before it lowers the limit.

#include "support/echo.hpp"
#include "support/messages.hpp"
#include "support/processes.hpp"
#include "support/rdma.hpp"
#include "support/run_until.hpp"

#include <bellows/bellows.hpp>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/use_awaitable.hpp>

#include <catch2/catch.hpp>

#include <linux/capability.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <cstdio>
#include <iostream>

using namespace std::chrono_literals;
using asio::use_awaitable;
using asio::experimental::as_tuple;
namespace bt = bellows::test;

namespace {

constexpr rlim_t locked_memory_limit = 64 * 1024;

/// Subjects this process to RLIMIT_MEMLOCK as an unprivileged user is, and lowers it to `bytes`.
bool limit_locked_memory(rlim_t bytes) {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct caps[2]{};
  if (::syscall(SYS_capget, &header, caps) != 0) return false;
  const auto lock_bit = 1u << (CAP_IPC_LOCK % 32);
  caps[CAP_IPC_LOCK / 32].effective &= ~lock_bit;
  caps[CAP_IPC_LOCK / 32].permitted &= ~lock_bit;
  if (::syscall(SYS_capset, &header, caps) != 0) return false;
  const rlimit limit{bytes, bytes};
  return ::setrlimit(RLIMIT_MEMLOCK, &limit) == 0;
}

/// Echoes messages of every size between an acceptor and a connector of this process, under the
/// limit. 0 when all came back intact, the channel stayed open and an enlargement was denied
/// (proof that the limit bit); 1 otherwise, with the reasons on stderr.
int echo_under_memlock(const std::vector<std::string>&) {
  if (!limit_locked_memory(locked_memory_limit)) {
    std::perror("memlock child: dropping CAP_IPC_LOCK or lowering RLIMIT_MEMLOCK");
    return 2;
  }
  asio::io_context io;
  const std::string uri = bt::rdma_uri(bt::random_port());
  bellows::acceptor acc(io.get_executor(), uri);
  // 1000 B and up do not go inline: they need the staging ring. 60,000 B asks for a ring that
  // the limit does not hold, so it is denied and goes in fragments. 1 MiB is offered for the
  // receive's buffer, which cannot be registered under the limit: declined, it goes the same way.
  const std::vector<std::size_t> sizes{8, 1000, 3000, 60'000, 200'000, 1 << 20, 8};
  int intact = 0;
  std::uint64_t denials = 0;
  bool done = false;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        auto ch = co_await acc.async_accept(use_awaitable);
        const bt::echo_end end = co_await bt::echo_until_end(ch);
        if (end.failed != nullptr)
          std::cerr << "memlock child: echo " << end.failed << " failed: " << end.ec.message() << "\n";
      },
      asio::detached);
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        auto ch = co_await bellows::async_connect(io.get_executor(), uri, use_awaitable);
        std::vector<std::byte> reply(1 << 20);
        for (std::size_t i = 0; i < sizes.size(); ++i) {
          const auto message = bt::random_bytes(sizes[i], i + 1);
          auto [send_ec, sent] = co_await ch.async_send(asio::buffer(message), as_tuple(use_awaitable));
          auto [ec, n] = co_await ch.async_receive(asio::buffer(reply), as_tuple(use_awaitable));
          if (!send_ec && !ec && n == message.size() && std::equal(message.begin(), message.end(), reply.begin())) {
            ++intact;
          } else {
            std::cerr << "memlock child: " << sizes[i] << " B: send " << send_ec.message() << ", receive "
                      << ec.message() << ", " << n << " B back\n";
          }
        }
        denials = ch.stats().denials;
        if (const auto lent = ch.stats().direct_messages_received; lent != 0) {
          std::cerr << "memlock child: " << lent << " messages written into a buffer registered past the limit\n";
          intact = 0;
        }
        co_await ch.async_close(as_tuple(use_awaitable));
        done = true;
      },
      asio::detached);
  if (!bt::run_until(
          io, [&] { return done; }, 60s)) {
    std::cerr << "memlock child: the echoes did not finish within 60 s\n";
    return 1;
  }
  if (denials == 0) std::cerr << "memlock child: no enlargement was denied; the limit did not bite\n";
  std::cerr << "memlock child: " << intact << " of " << sizes.size() << " intact, " << denials << " denials\n";
  return intact == static_cast<int>(sizes.size()) && denials > 0 ? 0 : 1;
}

const bt::child_role memlock_echo("rdma-echo-under-memlock", echo_under_memlock);

}  // namespace

TEST_CASE(
    "rdma: under a 64 KiB locked-memory limit every message arrives: what does not fit is denied or staged "
    "smaller",
    "[verbs]") {
  if (!bt::rdma_here()) return bt::skip_case("no RDMA device here; tests/rxe runs this on Soft-RoCE");
  auto child = bt::child_process::exec_self(memlock_echo, {});
  CHECK(child.wait(90s) == 0);
}
