#include "reactor/protocol_step.hpp"

namespace bellows::detail {

const char* to_string(protocol_step step) noexcept {
  switch (step) {
    case protocol_step::enlarge_request_due: return "before ENLARGE_REQ";
    case protocol_step::enlarge_request_written: return "after ENLARGE_REQ";
    case protocol_step::ring_provisioned: return "after provisioning";
    case protocol_step::ack_head_written: return "between ack head and tail";
    case protocol_step::fragment_written: return "mid-fragment";
    case protocol_step::shrink_request_written: return "during SHRINK (request written)";
    case protocol_step::shrink_ring_provisioned: return "during SHRINK (smaller ring provisioned)";
    case protocol_step::close_written: return "during CLOSE";
  }
  return "?";
}

void set_protocol_step_hook(protocol_step_hook hook) noexcept { step_hook_detail::installed = hook; }

}  // namespace bellows::detail
