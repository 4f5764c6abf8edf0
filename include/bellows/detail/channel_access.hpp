#pragma once
// The compiled entry points behind the public templates. Nothing here is part of the API.

#include <bellows/detail/buffers.hpp>
#include <bellows/detail/completion.hpp>
#include <bellows/detail/export.hpp>
#include <bellows/endpoint.hpp>
#include <bellows/error.hpp>
#include <bellows/stats.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/associated_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/post.hpp>
#include <asio/system_executor.hpp>

#include <cstdint>
#include <memory>
#include <span>
#include <system_error>
#include <utility>
#include <vector>

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

/// The type-erased completion of an operation with signature `Signature`.
template <class Signature>
struct completion_for;
template <class... Args>
struct completion_for<void(Args...)> {
  using type = completion<Args...>;
};
template <class Signature>
using completion_for_t = typename completion_for<Signature>::type;

using size_completion = completion_for_t<void(std::error_code, std::size_t)>;
using view_completion = completion_for_t<void(std::error_code, message_view)>;
using close_completion = completion_for_t<void(std::error_code)>;
using channel_completion = completion_for_t<void(std::error_code, channel)>;

/// Builds the objects whose constructors are not public: only the library makes them.
struct access {
  static channel make_channel(std::shared_ptr<channel_state> state) noexcept;
  static message_view make_view(std::shared_ptr<channel_state> owner, frame_ref frame,
                                std::span<const std::byte> bytes) noexcept;
  static message_view make_view(std::vector<std::byte> assembled) noexcept;
};

BELLOWS_EXPORT asio::any_io_executor executor_of(const channel_state& s) noexcept;
BELLOWS_EXPORT const asio::io_context* context_kept_busy(const channel_state& s) noexcept;
BELLOWS_EXPORT std::uint64_t next_operation_id(channel_state& s) noexcept;
BELLOWS_EXPORT void start_send(channel_state& s, std::uint64_t id, gather&& message, size_completion done);
BELLOWS_EXPORT void start_receive(channel_state& s, std::uint64_t id, scatter&& into, size_completion done);
BELLOWS_EXPORT void start_receive_view(channel_state& s, std::uint64_t id, view_completion done);
BELLOWS_EXPORT void start_close(channel_state& s, std::uint64_t id, close_completion done);
/// Cancels a pending operation if it can still be undone (a send that wrote nothing).
BELLOWS_EXPORT void cancel(channel_state& s, std::uint64_t id) noexcept;
BELLOWS_EXPORT void cancel_all(channel_state& s) noexcept;
BELLOWS_EXPORT send_status try_send(channel_state& s, const gather& message, std::error_code& ec);
BELLOWS_EXPORT void abort(channel_state& s) noexcept;
BELLOWS_EXPORT bool is_open(const channel_state& s) noexcept;
BELLOWS_EXPORT channel_stats stats_of(const channel_state& s);
BELLOWS_EXPORT endpoint remote_endpoint_of(const channel_state& s);
BELLOWS_EXPORT void release_frame(channel_state& s, frame_ref frame) noexcept;

BELLOWS_EXPORT asio::any_io_executor executor_of(const acceptor_state& s) noexcept;
BELLOWS_EXPORT const asio::io_context* context_kept_busy(const acceptor_state& s) noexcept;
BELLOWS_EXPORT std::uint64_t next_operation_id(acceptor_state& s) noexcept;
BELLOWS_EXPORT void start_accept(acceptor_state& s, std::uint64_t id, asio::any_io_executor channel_executor,
                                 channel_completion done);
BELLOWS_EXPORT void cancel(acceptor_state& s, std::uint64_t id) noexcept;
BELLOWS_EXPORT void close(acceptor_state& s) noexcept;

/// The state as the cancellation hook holds it: weakly, since a cancellation may come after
/// the channel or acceptor is gone.
BELLOWS_EXPORT std::weak_ptr<channel_state> weak_of(channel_state& s) noexcept;
BELLOWS_EXPORT std::weak_ptr<acceptor_state> weak_of(acceptor_state& s) noexcept;

/// Installs `cancel(state, id)` on the handler's cancellation slot, if it has one: any type of
/// cancellation (terminal, partial or total) then reaches the operation.
template <class Handler, class State>
void on_cancellation(Handler& handler, State& state, std::uint64_t id) {
  auto slot = asio::get_associated_cancellation_slot(handler);
  if (!slot.is_connected()) return;
  slot.assign([weak = weak_of(state), id](asio::cancellation_type) {
    if (auto s = weak.lock()) cancel(*s, id);
  });
}

/// Completes `handler` with error::channel_closed and empty values, posted to its associated
/// executor (else `ex`, else the system executor): what an operation on a closed or moved-from
/// object gets, as an Asio socket's handler does, never inside the initiating call.
template <class Signature>
struct closed_outcome;
template <class... Values>
struct closed_outcome<void(std::error_code, Values...)> {
  template <class Handler>
  static void post(Handler handler, const asio::any_io_executor& ex) {
    const asio::any_io_executor fallback = ex ? ex : asio::any_io_executor(asio::system_executor());
    auto target = asio::get_associated_executor(handler, fallback);
    asio::post(target, [h = std::move(handler)]() mutable {
      std::move(h)(make_error_code(error::channel_closed), Values{}...);
    });
  }
};

/// How every operation on a channel or an acceptor starts: the handler gets an operation id and
/// its cancellation hook, then `start(state, id, args..., completion)` runs on the object's state.
/// The completion dispatches to the handler's associated executor, never inside this call. A
/// null state (closed or moved-from object) completes with error::channel_closed instead.
/// The state goes by plain pointer: the object that owns it outlives this call, and a
/// shared_ptr would cost two atomic updates per operation (Asio's awaitable copies the
/// initiation's arguments into its frame).
template <class Signature, class Token, class State, class Start, class... Args>
auto initiate(Token&& token, State* state, const asio::any_io_executor& object_executor, Start start, Args&&... args) {
  return asio::async_initiate<Token, Signature>(
      [](auto handler, State* s, const asio::any_io_executor& object_ex, Start begin, auto... values) {
        if (!s) return closed_outcome<Signature>::post(std::move(handler), object_ex);
        const auto id = next_operation_id(*s);
        on_cancellation(handler, *s, id);
        begin(*s, id, std::move(values)...,
              completion_for_t<Signature>(std::move(handler), object_ex, context_kept_busy(*s)));
      },
      token, state, object_executor, start, std::forward<Args>(args)...);
}

}  // namespace bellows::detail
