#pragma once
// The named steps of the protocol, as one side takes them. The channel core reports each as a
// `reached` action in the order it happens among its writes, so that a test can stop or kill a
// process (the fault matrix) or a simulated side (sim::world) at exactly that point. Nothing in
// the library acts on them.

#include <cstdint>

namespace bellows::proto {

enum class step : std::uint8_t {
  enlarge_request_due,      ///< sender: an ENLARGE_REQ is about to be written
  enlarge_request_written,  ///< sender: it is in the peer's ring, its doorbell not yet rung
  ring_provisioned,         ///< receiver: the larger ring is registered, no ack written yet
  ack_head_written,         ///< receiver: the ack's head and fields are placed, its tail not
  fragment_written,         ///< sender: a fragment other than the last is in the peer's ring
  shrink_request_written,   ///< sender: a SHRINK_REQ is in the peer's ring
  shrink_ring_provisioned,  ///< receiver: the smaller ring is registered, no ack written yet
  close_written,            ///< sender: CLOSE is in the peer's ring
  close_received,           ///< receiver: CLOSE seen, the credit for it not yet returned
  direct_offered,           ///< sender: a DIRECT_OFFER is in the peer's ring, its doorbell not yet rung
  buffer_lent,              ///< receiver: a receive's buffer is lent and the answer written, no doorbell yet
};

inline constexpr step all_steps[] = {step::enlarge_request_due,
                                     step::enlarge_request_written,
                                     step::ring_provisioned,
                                     step::ack_head_written,
                                     step::fragment_written,
                                     step::shrink_request_written,
                                     step::shrink_ring_provisioned,
                                     step::close_written,
                                     step::close_received,
                                     step::direct_offered,
                                     step::buffer_lent};

constexpr const char* to_string(step s) noexcept {
  switch (s) {
    case step::enlarge_request_due: return "before ENLARGE_REQ";
    case step::enlarge_request_written: return "after ENLARGE_REQ";
    case step::ring_provisioned: return "after provisioning";
    case step::ack_head_written: return "between ack head and tail";
    case step::fragment_written: return "mid-fragment";
    case step::shrink_request_written: return "during SHRINK (request written)";
    case step::shrink_ring_provisioned: return "during SHRINK (smaller ring provisioned)";
    case step::close_written: return "during CLOSE";
    case step::close_received: return "after CLOSE arrived";
    case step::direct_offered: return "after DIRECT_OFFER";
    case step::buffer_lent: return "with a receive buffer lent";
  }
  return "?";
}

}  // namespace bellows::proto
