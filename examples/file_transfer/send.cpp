// The sending side: reads the file through io_uring while the previous chunk is being sent.

#include "crc32c.hpp"
#include "overlap.hpp"
#include "progress.hpp"
#include "protocol.hpp"

#include <bellows/bellows.hpp>

#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <asio/random_access_file.hpp>
#include <asio/read_at.hpp>
#include <asio/use_awaitable.hpp>

#include <cstring>
#include <stdexcept>
#include <system_error>
#include <vector>

using asio::use_awaitable;

namespace file_transfer {

namespace {

std::string describe(const std::error_code& ec) {
  if (ec == bellows::error::connection_reset || ec == bellows::error::end_of_stream)
    return "the receiver vanished (" + ec.message() + ")";
  return ec.message();
}

asio::awaitable<std::size_t> read_chunk(asio::random_access_file& file, std::uint64_t offset,
                                        std::vector<std::byte>& into, std::size_t length) {
  into.resize(length);
  try {
    co_return co_await asio::async_read_at(file, offset, asio::buffer(into), use_awaitable);
  } catch (const std::system_error& e) {
    // EOF here means the file shrank while it was being sent.
    throw std::runtime_error("reading the source at byte " + std::to_string(offset) + ": " + e.code().message());
  }
}

asio::awaitable<void> send_chunk(bellows::channel& ch, const std::vector<std::byte>& chunk) {
  try {
    co_await ch.async_send(asio::buffer(chunk), use_awaitable);
  } catch (const std::system_error& e) {
    throw std::runtime_error("sending: " + describe(e.code()));
  }
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
  std::uint32_t crc = 0;
  std::vector<std::byte> current, next;
  std::uint64_t offset = 0;
  std::size_t length = static_cast<std::size_t>(std::min(chunk, size));
  if (length > 0) co_await read_chunk(file, 0, current, length);
  while (offset < size) {
    crc = crc32c(crc, current.data(), current.size());
    const std::uint64_t next_offset = offset + current.size();
    const auto next_length = static_cast<std::size_t>(std::min(chunk, size - next_offset));
    // The next read from disk overlaps the send of this chunk.
    if (next_length > 0)
      co_await overlapped(send_chunk(ch, current), read_chunk(file, next_offset, next, next_length));
    else
      co_await send_chunk(ch, current);
    shown.advance(current.size());
    offset = next_offset;
    std::swap(current, next);
  }
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
