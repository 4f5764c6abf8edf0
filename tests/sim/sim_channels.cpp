#include "sim/sim_channels.hpp"

#include "reactor/channel_state.hpp"
#include "reactor/reactor.hpp"

#include <stdexcept>

namespace bellows::sim {

sim_links make_sim_links(asio::io_context& io_a, asio::io_context& io_b, std::size_t budget_a, std::size_t budget_b) {
  auto& ra = detail::reactor::of(io_a);
  auto& rb = detail::reactor::of(io_b);
  auto [a, b] = sim_link::make_pair(io_a, ra.wake_fd(), budget_a, io_b, rb.wake_fd(), budget_b);
  ra.serve(a);
  rb.serve(b);
  return {a, b};
}

std::pair<channel, channel> open_sim_channel(const sim_links& links, asio::io_context& io_a, asio::io_context& io_b,
                                             const channel_options& options) {
  auto [setup_a, setup_b] = sim_link::open_channel(*links.a, *links.b, options.tiers, options.max_message_size);
  auto a = detail::channel_state::make(detail::reactor::of(io_a), io_a.get_executor(), links.a, setup_a, options);
  auto b = detail::channel_state::make(detail::reactor::of(io_b), io_b.get_executor(), links.b, setup_b, options);
  if (!a || !b) throw std::system_error(a ? b.failure() : a.failure(), "bellows sim channel");
  return {detail::access::make_channel(std::move(*a)), detail::access::make_channel(std::move(*b))};
}

}  // namespace bellows::sim
