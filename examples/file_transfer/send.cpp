// The sending side: the file goes with channel::async_send_file, read from the page cache
// straight into the receiver's ring, several chunks in flight.

#include "crc32c.hpp"
#include "progress.hpp"
#include "protocol.hpp"

#include <bellows/bellows.hpp>

#include <asio/co_spawn.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/random_access_file.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

#include <unistd.h>
#include <cerrno>
#include <cstring>
#include <span>
#include <stdexcept>
#include <system_error>
#include <vector>

using asio::use_awaitable;
using asio::experimental::as_tuple;

namespace file_transfer {

namespace {

std::string describe(const std::error_code& ec) {
  if (ec == bellows::error::connection_reset || ec == bellows::error::end_of_stream)
    return "the receiver vanished (" + ec.message() + ")";
  return ec.message();
}

/// Reads exactly `into.size()` bytes at `offset`, or throws naming where the file failed.
/// Read in place rather than through io_uring: on this project's VM an io_uring read of a
/// chunk in the page cache cost more in system calls and wake-ups than its copy, and halved
/// the transfer. A read that waits for the disk holds only this sender's own io thread, and
/// async_send_file reads the same way.
void read_exactly(asio::random_access_file& file, std::uint64_t offset, std::span<std::byte> into) {
  while (!into.empty()) {
    const ssize_t n = ::pread(file.native_handle(), into.data(), into.size(), static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0)
      throw std::runtime_error("reading the source at byte " + std::to_string(offset) + ": " +
                               (n < 0 ? std::strerror(errno) : "the file ended early"));
    into = into.subspan(static_cast<std::size_t>(n));
    offset += static_cast<std::uint64_t>(n);
  }
}

/// Sends bytes [0, size) of the file as chunks with async_send_file, `depth` of them in flight,
/// so the next chunk is read from the page cache straight into the receiver's ring while the
/// receiver writes out the one before. Returns the CRC-32C of the whole file, taken from the
/// file independently of the channel: each chunk is read into a buffer of this side just
/// before it is sent. Reading it costs one more copy; mapping the file instead cost more on
/// this project's VM, where the first touch of each mapped page is slow (2.4 GB/s against
/// 11 GB/s for read-and-sum), and leaves the chunk's page-cache lines in the CPU's cache for
/// the send, which reads them next.
asio::awaitable<std::uint32_t> send_contents(bellows::channel& ch, asio::random_access_file& file, std::uint64_t size,
                                             std::uint64_t chunk, progress& shown) {
  constexpr int depth = 8;
  struct pipeline {
    int in_flight = 0;
    std::error_code failure;
  } p;
  asio::steady_timer slot_freed(co_await asio::this_coro::executor, asio::steady_timer::time_point::max());
  std::vector<std::byte> staging(std::min(chunk, size));
  std::uint32_t crc = 0;
  for (std::uint64_t offset = 0; offset < size && !p.failure;) {
    const std::uint64_t length = std::min(chunk, size - offset);
    read_exactly(file, offset, std::span(staging).first(length));
    crc = crc32c(crc, staging.data(), length);
    // One thread: a completion either comes during the wait and ends it, or came before the
    // check, which sees it.
    while (p.in_flight == depth && !p.failure) co_await slot_freed.async_wait(as_tuple(use_awaitable));
    if (p.failure) break;
    ++p.in_flight;
    ch.async_send_file(file.native_handle(), offset, length, [&, length](std::error_code ec, std::size_t) {
      --p.in_flight;
      if (ec && !p.failure) p.failure = ec;
      if (!ec) shown.advance(length);
      slot_freed.cancel();
    });
    offset += length;
  }
  while (p.in_flight > 0) co_await slot_freed.async_wait(as_tuple(use_awaitable));
  if (p.failure) throw std::runtime_error("sending: " + describe(p.failure));
  co_return crc;
}

asio::awaitable<std::string> receive_answer(bellows::channel& ch, const char* stage) {
  char text[512];
  try {
    const std::size_t n = co_await ch.async_receive(asio::buffer(text), use_awaitable);
    co_return std::string(text, n);
  } catch (const std::system_error& e) {
    throw std::runtime_error(std::string("waiting for the receiver's answer ") + stage + ": " + describe(e.code()));
  }
}

asio::awaitable<void> run(std::string uri, asio::random_access_file& file, std::uint64_t chunk) {
  auto ex = co_await asio::this_coro::executor;
  const std::uint64_t size = file.size();
  bellows::channel ch;
  try {
    ch = co_await bellows::async_connect(ex, uri, use_awaitable);
  } catch (const std::system_error& e) {
    throw std::runtime_error("cannot connect to " + uri + ": " + e.code().message());
  }
  offer o;
  o.file_size = size;
  o.chunk = chunk;
  co_await ch.async_send(asio::buffer(&o, sizeof o), use_awaitable);
  if (auto answer = co_await receive_answer(ch, "to the offer"); answer != accepted)
    throw std::runtime_error("the receiver refused the file: " + answer);

  progress shown("sent", size);
  const std::uint32_t crc = co_await send_contents(ch, file, size, chunk, shown);
  trailer t;
  t.file_size = size;
  t.crc32c = crc;
  co_await ch.async_send(asio::buffer(&t, sizeof t), use_awaitable);
  const auto verdict = co_await receive_answer(ch, "to the checksum");
  if (verdict != accepted) throw std::runtime_error("the receiver rejected the file: " + verdict);
  shown.finish();
  std::fprintf(stderr, "CRC-32C %08x verified by the receiver\n", crc);
  co_await ch.async_close(use_awaitable);
}

}  // namespace

void send_file(const std::string& uri, const std::string& source, std::uint64_t chunk) {
  asio::io_context io;
  asio::random_access_file file(io);
  std::error_code ec;
  file.open(source, asio::file_base::read_only, ec);
  if (ec) throw std::runtime_error("cannot read " + source + ": " + ec.message());
  std::exception_ptr failure;
  asio::co_spawn(io, run(uri, file, chunk), [&](std::exception_ptr e) { failure = e; });
  io.run();
  if (failure) std::rethrow_exception(failure);
}

}  // namespace file_transfer
