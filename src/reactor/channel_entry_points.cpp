// The functions the public templates (channel.hpp, message_view.hpp) call into the library:
// each takes the reactor's lock and hands over to the channel_state.
#include "reactor/channel_state.hpp"

namespace bellows::detail {

endpoint remote_endpoint_of(const channel_state& s) {
  auto held = s.hold();
  return s.remote_endpoint();
}

channel access::make_channel(std::shared_ptr<channel_state> state) noexcept { return channel(std::move(state)); }
message_view access::make_view(std::shared_ptr<channel_state> owner, frame_ref frame,
                               std::span<const std::byte> bytes) noexcept {
  return message_view(std::move(owner), frame, bytes);
}
message_view access::make_view(std::vector<std::byte> assembled) noexcept { return message_view(std::move(assembled)); }

asio::any_io_executor executor_of(const channel_state& s) noexcept { return s.executor(); }
const asio::io_context* context_kept_busy(const channel_state& s) noexcept { return s.context_kept_busy(); }
std::uint64_t next_operation_id(channel_state& s) noexcept { return s.next_id(); }
std::weak_ptr<channel_state> weak_of(channel_state& s) noexcept { return s.weak_from_this(); }
void start_send(channel_state& s, std::uint64_t id, gather&& message, size_completion done) {
  auto held = s.hold();
  s.start_send(id, std::move(message), std::move(done));
}
void start_receive(channel_state& s, std::uint64_t id, scatter&& into, size_completion done) {
  auto held = s.hold();
  s.start_receive(id, std::move(into), std::move(done));
}
void start_receive_view(channel_state& s, std::uint64_t id, view_completion done) {
  auto held = s.hold();
  s.start_receive_view(id, std::move(done));
}
void start_close(channel_state& s, std::uint64_t id, close_completion done) {
  auto held = s.hold();
  s.start_close(id, std::move(done));
}
void cancel(channel_state& s, std::uint64_t id) noexcept {
  auto held = s.hold();
  s.cancel(id);
}
void cancel_all(channel_state& s) noexcept {
  auto held = s.hold();
  s.cancel_all();
}
send_status try_send(channel_state& s, const gather& message, std::error_code& ec) {
  auto held = s.hold();
  return s.try_send(message, ec);
}
void abort(channel_state& s) noexcept {
  auto held = s.hold();
  s.abort();
}
bool is_open(const channel_state& s) noexcept {
  auto held = s.hold();
  return s.is_open();
}
channel_stats stats_of(const channel_state& s) {
  auto held = s.hold();
  return s.stats();
}
void release_frame(channel_state& s, frame_ref frame) noexcept {
  auto held = s.hold();
  s.release(frame);
}

}  // namespace bellows::detail
