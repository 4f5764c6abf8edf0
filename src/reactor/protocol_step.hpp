#pragma once
// Named steps of the protocol, as this process takes them, and a hook that tests install to stop
// or kill a process at exactly one of them (the fault matrix). No hook is installed in
// production; each step then costs one load and a branch, and none is on the data path.

#include <cstdint>

namespace bellows::detail {

enum class protocol_step : std::uint8_t {
  enlarge_request_due,      ///< sender: an ENLARGE_REQ is about to be written
  enlarge_request_written,  ///< sender: it is in the peer's ring, its doorbell not yet rung
  ring_provisioned,         ///< receiver: the larger ring is registered, no ack written yet
  ack_head_written,         ///< receiver: the ack's head flag is in the peer's slot, its tail not
  fragment_written,         ///< sender: a fragment other than the last is in the peer's ring
  shrink_request_written,   ///< sender: a SHRINK_REQ is in the peer's ring
  shrink_ring_provisioned,  ///< receiver: the smaller ring is registered, no ack written yet
  close_written,            ///< sender: CLOSE is in the peer's ring
};

const char* to_string(protocol_step step) noexcept;

using protocol_step_hook = void (*)(protocol_step);

/// For tests only: `hook` runs at every step this process takes from now on (nullptr: none).
void set_protocol_step_hook(protocol_step_hook hook) noexcept;

namespace step_hook_detail {
inline protocol_step_hook installed = nullptr;
}

inline bool protocol_step_hooked() noexcept { return step_hook_detail::installed != nullptr; }

inline void reach(protocol_step step) {
  if (step_hook_detail::installed != nullptr) [[unlikely]]
    step_hook_detail::installed(step);
}

}  // namespace bellows::detail
