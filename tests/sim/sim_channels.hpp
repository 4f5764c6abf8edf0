#pragma once
// Channels over the in-process sim link, served by real reactors: the public channel API with
// the fault timing in the test's hands (see fabric/sim/sim_link.hpp). For tests only.

#include "sim/sim_link.hpp"

#include <bellows/channel.hpp>
#include <bellows/options.hpp>

#include <asio/io_context.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>

namespace bellows::sim {

struct sim_links {
  std::shared_ptr<sim_link> a;
  std::shared_ptr<sim_link> b;
};

/// A connected pair of sim link ends, served by the reactors of `io_a` and `io_b` (which may
/// be the same io_context). Budgets are the registered bytes each end may hold.
sim_links make_sim_links(asio::io_context& io_a, asio::io_context& io_b, std::size_t budget_a = SIZE_MAX,
                         std::size_t budget_b = SIZE_MAX);

/// Opens a channel over `links`, as async_connect from a to b would with `options`; the
/// second channel is b's end.
std::pair<channel, channel> open_sim_channel(const sim_links& links, asio::io_context& io_a, asio::io_context& io_b,
                                             const channel_options& options = {});

}  // namespace bellows::sim
