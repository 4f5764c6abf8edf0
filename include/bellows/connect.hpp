#pragma once
// Opening a channel to a listening acceptor, and the per-io_context settings and statistics.

#include <bellows/channel.hpp>
#include <bellows/detail/channel_access.hpp>
#include <bellows/options.hpp>
#include <bellows/stats.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/io_context.hpp>

#include <memory>
#include <string>
#include <string_view>
#include <system_error>

namespace bellows {

namespace detail {
BELLOWS_EXPORT void start_connect(const asio::any_io_executor& ex, std::string uri, channel_options options,
                                  channel_completion done, asio::cancellation_slot slot);
}  // namespace detail

/// Opens a channel to the acceptor listening on `uri`: shm://NAME, tcp://HOST:PORT, or
/// rdma://HOST:PORT (an RC queue pair per channel, set up through rdma_cm; at most 7 tiers).
/// Over shm and tcp, channels to the same peer process share one link (shm: one socket and one
/// arena per side; tcp: one connection), so descriptors grow with peers, not channels.
/// Errors: error::invalid_argument for a malformed URI or options (describe_problem() says
/// which part), std::errc::connection_refused when nothing listens, error::budget_exhausted,
/// std::errc::no_such_device (rdma) without an RDMA device, std::errc::host_unreachable when
/// no route leads to HOST, asio::error::timed_out when the peer has not accepted within
/// channel_options::connect_timeout (the request is withdrawn, as on cancellation).
///
/// @param ex An executor of the io_context whose reactor serves the channel.
/// @param uri Where the acceptor listens; copied, need not outlive the call.
/// @param options The channel's options; the connecting side's tier table governs both
///   directions.
/// @param token The completion token; signature `void(std::error_code ec, channel ch)`.
///
/// Cancellation: any type (terminal, partial, total) completes the connect with
/// asio::error::operation_aborted; a channel the peer accepts afterwards is torn down.
template <ASIO_COMPLETION_TOKEN_FOR(void(std::error_code, channel))
              CompletionToken = asio::default_completion_token_t<asio::any_io_executor>>
auto async_connect(const asio::any_io_executor& ex, std::string_view uri, const channel_options& options,
                   CompletionToken&& token = {}) {
  // No object exists yet to start the operation on, so it does not go through detail::initiate.
  return asio::async_initiate<CompletionToken, void(std::error_code, channel)>(
      [](auto handler, asio::any_io_executor io_ex, std::string target, channel_options opts) {
        auto slot = asio::get_associated_cancellation_slot(handler);
        detail::start_connect(io_ex, std::move(target), std::move(opts),
                              detail::channel_completion(std::move(handler), io_ex), slot);
      },
      token, ex, std::string(uri), options);
}

template <ASIO_COMPLETION_TOKEN_FOR(void(std::error_code, channel))
              CompletionToken = asio::default_completion_token_t<asio::any_io_executor>>
auto async_connect(const asio::any_io_executor& ex, std::string_view uri, CompletionToken&& token = {}) {
  return async_connect(ex, uri, channel_options{}, std::forward<CompletionToken>(token));
}

/// Sets the context-wide options of `io`; call before its first channel or acceptor.
BELLOWS_EXPORT void configure(asio::io_context& io, const context_options& options);
BELLOWS_EXPORT context_stats stats(asio::io_context& io);

/// Runs `io` without ever sleeping: the reactor polls continuously, trading a core for the
/// lowest latency. Returns when `io` is stopped or runs out of work.
BELLOWS_EXPORT void run_polling(asio::io_context& io);

}  // namespace bellows
