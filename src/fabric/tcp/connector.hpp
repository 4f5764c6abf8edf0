#pragma once
// tcp://HOST:PORT: channels to a process that listens there, over TCP. All channels between two
// reactors share one link (two connections, one each way), so descriptors grow with peers, not
// with channels: opening reuses the link already open to that address.

#include "fabric/connector.hpp"
#include "fabric/tcp/link.hpp"

#include <map>
#include <memory>
#include <string>

namespace bellows::tcp {

class connector final : public fabric::connector {
 public:
  explicit connector(const fabric::host& h) : host_(h) {}

  std::shared_ptr<fabric::pending_open> open(std::string_view address, const std::vector<tier>& tiers,
                                             std::uint64_t max_message_size, std::string_view pre_shared_key,
                                             fabric::open_handler done) override;
  proto::outcome<std::shared_ptr<fabric::listener>> listen(std::string_view address, std::string_view pre_shared_key,
                                                           fabric::accept_hook on_accept) override;

 private:
  /// The link to `address` proven with `pre_shared_key`, reusing the one already open.
  proto::outcome<std::shared_ptr<link>> client_link(std::string_view address, std::string_view pre_shared_key);

  fabric::host host_;
  std::map<std::string, std::weak_ptr<link>, std::less<>> client_links_;
  /// The links accepted at each bound address and key, kept from one listener to the next: a
  /// peer's link can outlive the listener that accepted it (the connecting side reuses it), and
  /// the next listener there takes its opens and its second connection.
  std::map<std::string, std::shared_ptr<accepted_links>> accepted_;
};

}  // namespace bellows::tcp
