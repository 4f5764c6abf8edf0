// A verbs link's part in direct placement: a receive buffer lent to the peer for one message
// above the rings' frames, and the large writes that fill such a buffer, cut into requests that
// the staging ring can hold.

#include "fabric/verbs/qp_link.hpp"

#include <bellows/error.hpp>

#include <algorithm>
#include <cstdint>

namespace bellows::verbs {

std::optional<fabric::region> qp_link::lend(std::span<std::byte> memory) {
  if (state_ != state::open || memory.empty()) return std::nullopt;
  // write() refuses a destination that is not 8-byte aligned (no ring ever is); such a
  // buffer takes its message through the ring instead.
  const auto address = reinterpret_cast<std::uintptr_t>(memory.data());
  if (address % 8 != 0) return std::nullopt;
  lent_buffer lent;
  // The registration grants no remote access by itself: only the window below does, on this
  // queue pair. Past RLIMIT_MEMLOCK it fails, and the offer is declined.
  lent.registration.reset(::ibv_reg_mr(transport_->protection_domain(), memory.data(), memory.size(),
                                       IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_MW_BIND));
  if (!lent.registration) return std::nullopt;
  std::uint32_t key = 0;
  if (bind_window(lent.registration.get(), address, memory.size(), lent.window, key)) return std::nullopt;
  const std::uint64_t handle = lent_handle_bit | ++lent_count_;
  lent_.emplace(handle, std::move(lent));
  return fabric::region{handle, key, address, memory.data(), memory.size()};
}

std::error_code qp_link::write_in_requests(fabric::remote_address dst, fabric::byte_pieces pieces) {
  request_pieces_.clear();
  std::size_t in_request = 0;
  const auto post_request = [&]() -> std::error_code {
    auto ec = post_bytes(IBV_WR_RDMA_WRITE, dst, request_pieces_, false);
    dst.address += in_request;
    request_pieces_.clear();
    in_request = 0;
    return ec;
  };
  for (auto piece : pieces) {
    while (!piece.empty()) {
      const std::size_t take = std::min(piece.size(), largest_request - in_request);
      request_pieces_.push_back(piece.first(take));
      piece = piece.subspan(take);
      in_request += take;
      if (in_request == largest_request)
        if (auto ec = post_request()) return ec;
    }
  }
  return in_request != 0 ? post_request() : std::error_code{};
}

std::error_code qp_link::write_from_file(fabric::remote_address dst, std::span<const std::byte> prefix,
                                         fabric::file_piece piece) {
  // A request at a time, read straight ahead of its post: a message of any size needs no more
  // than one request's bytes here. The file's size was checked when the send began, so a file
  // cut short since fails the channel's write here, with the peer holding a partial buffer.
  std::uint64_t done = 0;
  bool first = true;
  do {
    const std::size_t head = first ? prefix.size() : 0;
    const std::size_t room = largest_request > head ? largest_request - head : 0;
    const auto bytes = static_cast<std::size_t>(std::min<std::uint64_t>(room, piece.length - done));
    file_chunk_.resize(bytes);
    if (auto ec = fabric::read_file_piece({piece.descriptor, piece.offset + done, bytes}, file_chunk_.data()))
      return ec;
    const std::span<const std::byte> request[] = {prefix.first(head), file_chunk_};
    if (auto ec = write(dst, request)) return ec;
    dst.address += head + bytes;
    done += bytes;
    first = false;
  } while (done < piece.length);
  return {};
}

}  // namespace bellows::verbs
