#pragma once
// The compiled entry points behind the public templates. Nothing here is part of the API.

#include <bellows/detail/buffers.hpp>
#include <bellows/detail/completion.hpp>
#include <bellows/stats.hpp>

#include <asio/any_io_executor.hpp>

#include <cstdint>
#include <memory>
#include <system_error>

namespace bellows {
class message_view;
class channel;
enum class send_status;
}  // namespace bellows

namespace bellows::detail {

class channel_state;
class acceptor_state;

/// Names a frame the application holds through a message_view.
struct frame_ref {
  std::uint32_t ring_epoch = 0;
  std::uint64_t ordinal = 0;
};

using size_completion = completion<std::error_code, std::size_t>;
using view_completion = completion<std::error_code, message_view>;
using close_completion = completion<std::error_code>;
using channel_completion = completion<std::error_code, channel>;

asio::any_io_executor executor_of(const channel_state& s) noexcept;
std::uint64_t next_operation_id(channel_state& s) noexcept;
void start_send(channel_state& s, std::uint64_t id, gather message, size_completion done);
void start_receive(channel_state& s, std::uint64_t id, scatter into, size_completion done);
void start_receive_view(channel_state& s, std::uint64_t id, view_completion done);
void start_close(channel_state& s, std::uint64_t id, close_completion done);
/// Cancels a pending operation if it can still be undone (a send that wrote nothing).
void cancel(channel_state& s, std::uint64_t id) noexcept;
void cancel_all(channel_state& s) noexcept;
send_status try_send(channel_state& s, const gather& message, std::error_code& ec);
void abort(channel_state& s) noexcept;
bool is_open(const channel_state& s) noexcept;
channel_stats stats_of(const channel_state& s);
void release_frame(channel_state& s, frame_ref frame) noexcept;

asio::any_io_executor executor_of(const acceptor_state& s) noexcept;
std::uint64_t next_operation_id(acceptor_state& s) noexcept;
void start_accept(const std::shared_ptr<acceptor_state>& s, std::uint64_t id, channel_completion done);
void cancel(acceptor_state& s, std::uint64_t id) noexcept;
void close(acceptor_state& s) noexcept;

/// Installs `cancel(state, id)` on the handler's cancellation slot, if it has one.
template <class Handler, class State>
void on_cancellation(Handler& handler, const std::shared_ptr<State>& state, std::uint64_t id) {
  auto slot = asio::get_associated_cancellation_slot(handler);
  if (!slot.is_connected()) return;
  slot.assign([weak = std::weak_ptr<State>(state), id](asio::cancellation_type) {
    if (auto s = weak.lock()) cancel(*s, id);
  });
}

}  // namespace bellows::detail
