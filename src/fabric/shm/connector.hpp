#pragma once
// shm://NAME: channels to a process on this host that listens on NAME. All channels between two
// reactors share one link (one socket, one arena per side), so descriptors grow with peers, not
// with channels: opening reuses the link already open to NAME. So a peer's link can outlive the
// acceptor that took it; an acceptor listening under NAME again takes the opens that arrive on
// such links too, as it takes those of peers that connect afresh.

#include "fabric/connector.hpp"
#include "fabric/link_registry.hpp"
#include "fabric/shm/link.hpp"

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace bellows::shm {

class connector final : public fabric::connector {
 public:
  explicit connector(const fabric::host& h) : host_(h) {}

  std::shared_ptr<fabric::pending_open> open(std::string_view address, const std::vector<tier>& tiers,
                                             std::uint64_t max_message_size, std::string_view pre_shared_key,
                                             fabric::open_handler done) override;
  proto::outcome<std::shared_ptr<fabric::listener>> listen(std::string_view address, std::string_view pre_shared_key,
                                                           fabric::accept_hook on_accept) override;

  /// The link to shm://`name`, reusing the one already open to that peer.
  proto::outcome<std::shared_ptr<link>> client_link(const std::string& name);

 private:
  link_options link_options_for() const;

  fabric::host host_;
  std::map<std::string, std::weak_ptr<link>> client_links_;
  /// The links accepted under each name, by their addresses, which a later acceptor of that
  /// name serves as well.
  std::map<std::string, std::shared_ptr<fabric::link_registry<link>>> accepted_;
};

}  // namespace bellows::shm
