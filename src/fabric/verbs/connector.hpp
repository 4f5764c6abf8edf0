#pragma once
// rdma://HOST:PORT: channels over RC queue pairs set up by rdma_cm, one per channel. The network
// (rdma_cm events, a transport per device) is made on first use and polled by the reactor.

#include "fabric/connector.hpp"
#include "fabric/verbs/network.hpp"

#include <memory>

namespace bellows::verbs {

class connector final : public fabric::connector {
 public:
  explicit connector(const fabric::host& h) : host_(h) {}

  std::shared_ptr<fabric::pending_open> open(std::string_view address, const std::vector<tier>& tiers,
                                             std::uint64_t max_message_size, std::string_view pre_shared_key,
                                             fabric::open_handler done) override;
  proto::outcome<std::shared_ptr<fabric::listener>> listen(std::string_view address, std::string_view pre_shared_key,
                                                           fabric::accept_hook on_accept) override;

  verbs::network& network();

 private:
  fabric::host host_;
  std::shared_ptr<verbs::network> network_;
};

}  // namespace bellows::verbs
