#include "fabric/verbs/connector.hpp"

#include "fabric/address.hpp"

#include <bellows/error.hpp>

namespace bellows::verbs {
namespace {

class rdma_open final : public fabric::pending_open {
 public:
  rdma_open(std::shared_ptr<verbs::network> n, std::shared_ptr<network::pending_open> p)
      : network_(std::move(n)), open_(std::move(p)) {}
  void cancel() override { network_->cancel(open_); }

 private:
  std::shared_ptr<verbs::network> network_;
  std::shared_ptr<network::pending_open> open_;
};

/// Listens until destroyed; rdma_cm's events are watched with the reactor, so there is nothing
/// to start or stop per accept.
class rdma_listener final : public fabric::listener {
 public:
  explicit rdma_listener(std::shared_ptr<network::listener> l) : listener_(std::move(l)) {}
  void want_peers(bool) override {}

 private:
  std::shared_ptr<network::listener> listener_;
};

fabric::opened_channel generic(const opened_channel& c) { return {c.link, c.setup}; }

}  // namespace

verbs::network& connector::network() {
  if (!network_) {
    network_ =
        std::make_shared<verbs::network>(host_.executor, host_.budget, host_.wake_fd, host_.options.peer_timeout);
    host_.serve(network_);
  }
  return *network_;
}

std::shared_ptr<fabric::pending_open> connector::open(std::string_view address, const std::vector<tier>& tiers,
                                                      std::uint64_t max_message_size, std::string_view pre_shared_key,
                                                      fabric::open_handler done) {
  auto to = fabric::resolve(address, false);
  if (!to) {
    done(to.failure());
    return nullptr;
  }
  auto p = network().open(*to, tiers, max_message_size, pre_shared_key, [done](proto::outcome<opened_channel> result) {
    if (!result) return done(result.failure());
    done(generic(*result));
  });
  return std::make_shared<rdma_open>(network_, std::move(p));
}

proto::outcome<std::shared_ptr<fabric::listener>> connector::listen(std::string_view address,
                                                                    std::string_view pre_shared_key,
                                                                    fabric::accept_hook on_accept) {
  auto at = fabric::resolve(address, true);
  if (!at) return at.failure();
  // A listener that exists accepts: the acceptor destroys it when it closes.
  auto l = network().listen(
      *at, pre_shared_key, [] { return true; }, [on_accept](const opened_channel& c) { return on_accept(generic(c)); });
  if (!l) return l.failure();
  return std::shared_ptr<fabric::listener>(std::make_shared<rdma_listener>(std::move(*l)));
}

}  // namespace bellows::verbs
