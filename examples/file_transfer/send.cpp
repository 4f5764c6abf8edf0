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

#include <sys/mman.h>
#include <cerrno>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <system_error>

using asio::use_awaitable;

namespace file_transfer {

namespace {

std::string describe(const std::error_code& ec) {
  if (ec == bellows::error::connection_reset || ec == bellows::error::end_of_stream)
    return "the receiver vanished (" + ec.message() + ")";
  return ec.message();
}

/// The file mapped read-only, for the checksum: the bytes sent never pass through this process,
/// the checksum is taken from the page cache.
class mapping {
 public:
  mapping(int descriptor, std::uint64_t size) : size_(size) {
    if (size == 0) return;
    void* at = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, descriptor, 0);
    if (at == MAP_FAILED) throw std::runtime_error(std::string("cannot map the source: ") + std::strerror(errno));
    bytes_ = static_cast<const std::byte*>(at);
  }
  ~mapping() {
    if (bytes_ != nullptr) ::munmap(const_cast<std::byte*>(bytes_), size_);
  }
  mapping(const mapping&) = delete;
  mapping& operator=(const mapping&) = delete;
  const std::byte* bytes() const { return bytes_; }

 private:
  const std::byte* bytes_ = nullptr;
  std::uint64_t size_;
};

/// Sends bytes [0, size) of the file as chunks with async_send_file, `depth` of them in flight,
/// so the next chunk is read from the page cache straight into the receiver's ring while the
/// receiver writes out the one before. Each chunk's CRC-32C is taken from `source` as it is
/// sent. Returns the CRC-32C of the whole file.
asio::awaitable<std::uint32_t> send_contents(bellows::channel& ch, int descriptor, const mapping& source,
                                             std::uint64_t size, std::uint64_t chunk, progress& shown) {
  constexpr int depth = 8;
  struct pipeline {
    std::uint64_t next = 0;
    int in_flight = 0;
    std::uint32_t crc = 0;
    std::error_code failure;
    std::uint64_t sent = 0;
  } p;
  asio::steady_timer finished(co_await asio::this_coro::executor, asio::steady_timer::time_point::max());
  std::function<void()> fill = [&] {
    while (p.in_flight < depth && p.next < size && !p.failure) {
      const std::uint64_t offset = p.next;
      const std::uint64_t length = std::min(chunk, size - offset);
      p.next += length;
      ++p.in_flight;
      // Summed just before it is sent, the chunk is still in the CPU's cache when the send
      // reads it from the page cache into the ring: the bytes come from memory once.
      p.crc = crc32c(p.crc, source.bytes() + offset, length);
      ch.async_send_file(descriptor, offset, length, [&, length](std::error_code ec, std::size_t) {
        --p.in_flight;
        if (ec && !p.failure) p.failure = ec;
        if (!ec) {
          p.sent += length;
          shown.advance(length);
        }
        if (p.in_flight == 0 && (p.failure || p.sent == size)) return void(finished.cancel());
        fill();
      });
    }
  };
  fill();
  if (size > 0) co_await finished.async_wait(asio::experimental::as_tuple(use_awaitable));
  if (p.failure) throw std::runtime_error("sending: " + describe(p.failure));
  co_return p.crc;
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
  const mapping source(file.native_handle(), size);
  const std::uint32_t crc = co_await send_contents(ch, file.native_handle(), source, size, chunk, shown);
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
