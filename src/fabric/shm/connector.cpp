#include "fabric/shm/connector.hpp"

#include "fabric/shm/listener.hpp"
#include "fabric/socket_listener.hpp"

#include <bellows/error.hpp>

namespace bellows::shm {

link_options connector::link_options_for() const {
  return {host_.options.shm_arena_bytes, host_.options.allow_other_users, host_.wake_fd};
}

proto::outcome<std::shared_ptr<link>> connector::client_link(const std::string& name) {
  std::erase_if(client_links_, [](const auto& entry) { return entry.second.expired(); });
  if (auto it = client_links_.find(name); it != client_links_.end()) {
    // Reused even when no channel uses it right now (a new channel right after the last one
    // closed keeps its warm arena), unless the reactor already dropped it.
    if (auto l = it->second.lock(); l && !l->failed() && l->served()) return l;
  }
  auto l = link::connect(host_.executor, name, link_options_for(), host_.budget);
  if (!l) return l.failure();
  (*l)->set_hooks(nullptr, nullptr);
  client_links_[name] = *l;
  host_.serve(*l);
  return l;
}

std::shared_ptr<fabric::pending_open> connector::open(std::string_view address, const std::vector<tier>& tiers,
                                                      std::uint64_t max_message_size,
                                                      std::string_view /*pre_shared_key: the uid check*/,
                                                      fabric::open_handler done) {
  return fabric::multiplexed_link::open_over(client_link(std::string(address)), tiers, max_message_size,
                                             std::move(done));
}

proto::outcome<std::shared_ptr<fabric::listener>> connector::listen(std::string_view address,
                                                                    std::string_view /*pre_shared_key: the uid check*/,
                                                                    fabric::accept_hook on_accept) {
  const std::string name(address);
  auto listening = listen_on(name);
  if (!listening) return listening.failure();
  std::erase_if(accepted_, [](auto& entry) {
    return entry.second->empty() && entry.second.use_count() == 1;  // no listener adds to it
  });
  auto& accepted = accepted_[name];
  if (!accepted) accepted = std::make_shared<fabric::link_registry<link>>();
  accepted->serve_accepts(on_accept);
  auto adopt = [host = host_, options = link_options_for(), on_accept = std::move(on_accept), accepted](int fd) {
    auto l = link::accept(host.executor, fd, options, host.budget);
    if (!l) return;  // refused peer (another user) or no memory: its connect fails on EOF
    (*l)->serve_accepts(on_accept);
    // Keyed by address: a link made where a gone one was takes over its expired entry.
    accepted->add(reinterpret_cast<std::uintptr_t>(l->get()), *l);
    host.serve(*l);
  };
  return std::shared_ptr<fabric::listener>(
      std::make_shared<fabric::socket_listener>(host_, *listening, std::move(adopt)));
}

}  // namespace bellows::shm
