#pragma once
// A received message handed over without a copy: while the view lives, its bytes stay in the
// channel's receive ring and the slots they occupy are not returned to the sender. Destroying
// the view (or reset()) gives them back. A message that arrived in fragments (because it was
// larger than what the ring could carry in one frame) is assembled into memory the view owns.

#include <bellows/detail/channel_access.hpp>

#include <asio/buffer.hpp>

#include <cstddef>
#include <memory>
#include <span>
#include <utility>
#include <vector>

namespace bellows {

/// A received message (channel::async_receive_view). Move-only: the bytes it lends stay valid
/// until it is destroyed, reset or assigned to, and may outlive the channel.
class message_view {
 public:
  /// An empty view.
  message_view() noexcept = default;
  /// Takes over `other`'s message; `other` becomes empty.
  message_view(message_view&& other) noexcept { *this = std::move(other); }
  /// Gives back this view's message (see reset()), then takes over `other`'s.
  message_view& operator=(message_view&& other) noexcept {
    if (this != &other) {
      reset();
      owner_ = std::move(other.owner_);
      frame_ = other.frame_;
      bytes_ = std::exchange(other.bytes_, {});
      owned_ = std::move(other.owned_);
    }
    return *this;
  }
  message_view(const message_view&) = delete;
  message_view& operator=(const message_view&) = delete;
  ~message_view() { reset(); }

  /// The message's bytes; empty for an empty view or an empty message.
  std::span<const std::byte> bytes() const noexcept { return owned_.empty() ? bytes_ : std::span(owned_); }
  const std::byte* data() const noexcept { return bytes().data(); }  ///< bytes().data()
  std::size_t size() const noexcept { return bytes().size(); }       ///< the message's length
  bool empty() const noexcept { return size() == 0; }                ///< size() == 0
  /// The bytes as an Asio buffer, for sending them on (to another channel or a socket).
  asio::const_buffer buffer() const noexcept { return asio::buffer(data(), size()); }
  /// True when the bytes lie in the receive ring rather than in memory the view owns.
  bool zero_copy() const noexcept { return owner_ != nullptr; }

  /// Returns the ring slots now; the view becomes empty.
  void reset() noexcept {
    if (owner_) detail::release_frame(*owner_, frame_);
    owner_.reset();
    bytes_ = {};
    owned_.clear();
  }

 private:
  friend struct detail::access;
  message_view(std::shared_ptr<detail::channel_state> owner, detail::frame_ref frame, std::span<const std::byte> bytes)
      : owner_(std::move(owner)), frame_(frame), bytes_(bytes) {}
  explicit message_view(std::vector<std::byte> assembled) : owned_(std::move(assembled)) {}

  std::shared_ptr<detail::channel_state> owner_;
  detail::frame_ref frame_;
  std::span<const std::byte> bytes_;
  std::vector<std::byte> owned_;
};

}  // namespace bellows
