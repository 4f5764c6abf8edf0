#pragma once
// The links accepted under one shm name or tcp address, held weakly by key. A listener reopened
// there serves them too: a peer whose link outlived the old listener opens its next channel
// over that link, not over a new one.

#include "fabric/connector.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <unordered_map>

namespace bellows::fabric {

/// `Link` has serve_accepts(const accept_hook&) (fabric::multiplexed_link's).
template <class Link>
class link_registry {
 public:
  /// Adds `l` under `key`, replacing whatever was there. Gone links are swept only once the
  /// registry has doubled since the last sweep, which keeps an accept constant-time on average.
  void add(std::uint64_t key, const std::shared_ptr<Link>& l) {
    if (links_.size() >= 2 * live_after_sweep_) sweep();
    links_[key] = l;
  }
  /// The live link under `key`, or null.
  std::shared_ptr<Link> find(std::uint64_t key) const {
    const auto it = links_.find(key);
    return it == links_.end() ? nullptr : it->second.lock();
  }
  /// Channels the peers of the live links open go to `on_accept` from now on.
  void serve_accepts(const accept_hook& on_accept) const {
    for (const auto& [key, weak] : links_)
      if (auto l = weak.lock()) l->serve_accepts(on_accept);
  }
  /// Sweeps, then says whether no link is left alive.
  bool empty() {
    sweep();
    return links_.empty();
  }
  /// Entries held, gone links not yet swept included.
  std::size_t entries() const noexcept { return links_.size(); }

  static constexpr std::size_t minimum_sweep_size = 32;

 private:
  void sweep() {
    std::erase_if(links_, [](const auto& entry) { return entry.second.expired(); });
    live_after_sweep_ = std::max<std::size_t>(links_.size(), minimum_sweep_size);
  }

  std::unordered_map<std::uint64_t, std::weak_ptr<Link>> links_;
  std::size_t live_after_sweep_ = minimum_sweep_size;
};

}  // namespace bellows::fabric
