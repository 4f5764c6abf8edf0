#pragma once
// What network's opening (network_open.cpp) and accepting (network_accept.cpp) share: the
// state of an open or accept in progress, the listener, and rdma_cm's connection parameters.

#include "fabric/verbs/liveness.hpp"
#include "fabric/verbs/network.hpp"

#include <asio/steady_timer.hpp>

#include <cerrno>
#include <optional>
#include <string>

namespace bellows::verbs::network_parts {

inline constexpr int resolve_timeout_ms = 2000;

inline rdma_conn_param connection_parameters(const void* private_data, std::size_t length) {
  rdma_conn_param p{};
  p.private_data = private_data;
  p.private_data_len = static_cast<std::uint8_t>(length);
  // bellows only writes: no RDMA READ or atomics to make room for.
  p.responder_resources = 0;
  p.initiator_depth = 0;
  // Six, not the maximum of seven: Soft-RoCE takes seven as "retry forever", and a dead peer
  // must fail the queue pair (liveness.hpp).
  p.retry_count = retry_count;
  // A receiver that ran out of receives (doorbells, grants) replenishes them on its next poll:
  // wait for it.
  p.rnr_retry_count = 7;
  return p;
}

inline std::error_code errno_or(int fallback) { return {errno != 0 ? errno : fallback, std::system_category()}; }

inline void reject(rdma_cm_id* id, std::error_code why) {
  const auto refusal = handshake::encode_refusal(why);
  ::rdma_reject(id, refusal.data(), static_cast<std::uint8_t>(refusal.size()));
}

}  // namespace bellows::verbs::network_parts

namespace bellows::verbs {

/// An open in progress: the id, and once the address is resolved the link and its memory.
struct network::pending_open {
  rdma_cm_id* id = nullptr;
  std::uint32_t channel_id = 0;
  std::vector<tier> tiers;
  std::uint64_t max_message_size = 0;
  std::string key;
  fabric::nonce nonce = fabric::fresh_nonce();
  open_acceptance acceptance;
  std::shared_ptr<verbs::transport> via;
  std::shared_ptr<qp_link> link;
  open_handler done;
  bool finished = false;
};

/// A connection request accepted, waiting for the opener's grant and proof. Until it checks
/// out, the link has a queue pair and nothing else.
struct network::pending_accept {
  std::weak_ptr<listener> from;
  std::shared_ptr<qp_link> link;
  open_request request;
  fabric::nonce nonce = fabric::fresh_nonce();
  std::optional<asio::steady_timer> deadline;
  bool finished = false;
};

class network::listener {
 public:
  listener(std::shared_ptr<cm_channel> events, rdma_cm_id* id, std::string key, accepting_check accepting,
           accept_hook on_accept)
      : events_(std::move(events)),
        id_(id),
        key_(std::move(key)),
        accepting_(std::move(accepting)),
        on_accept_(std::move(on_accept)) {}
  ~listener() {
    events_->forget(id_);
    ::rdma_destroy_id(id_);
  }
  bool accepting() const { return accepting_ && accepting_(); }
  bool accept(const opened_channel& c) const { return on_accept_ && on_accept_(c); }
  const std::string& key() const noexcept { return key_; }

 private:
  std::shared_ptr<cm_channel> events_;
  rdma_cm_id* id_;
  std::string key_;
  accepting_check accepting_;
  accept_hook on_accept_;
};

}  // namespace bellows::verbs
