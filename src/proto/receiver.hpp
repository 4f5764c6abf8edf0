#pragma once
// The receiving half of one channel direction as a pure state machine. It scans its own ring
// (local memory the peer writes), hands frames to the application as views, takes them back
// when released, returns credits, and answers retier requests once the driver provisioned a
// ring. It never performs I/O: writes to the peer come out as events.

#include "proto/direction.hpp"
#include "proto/fifo.hpp"
#include "proto/wire.hpp"

#include <optional>
#include <span>
#include <system_error>
#include <vector>

namespace bellows::proto {

/// Names a delivered frame until the application releases it.
struct frame_token {
  std::uint32_t ring_epoch = 0;
  std::uint64_t ordinal = 0;
};

/// A DATA, FRAG_* or DIRECT_* frame, in order. `message_length` is the whole message's size
/// (for DATA the payload's, for FRAG_FIRST the announced total, 0 for later fragments, for
/// DIRECT_* the offered length); `offer_id` names a DIRECT_* frame's offer.
struct inbound_frame {
  frame_token token;
  frame_kind kind = frame_kind::data;
  std::span<const std::byte> payload;
  std::uint64_t message_length = 0;
  std::uint64_t offer_id = 0;
  /// A DIRECT_OFFER to fetch (fetch_note): the message's address in the sender's memory, and
  /// the guard word there with the value it must still hold after the read. 0: lend instead.
  std::uint64_t fetch_source = 0;
  std::uint64_t guard_address = 0;
  std::uint64_t guard_value = 0;
};

/// The peer asked for a ring of `tier`; answer with receiver::provisioned.
struct provision_request {
  std::uint64_t request_id = 0;
  std::uint32_t tier = 0;
  bool shrink = false;
};

struct receiver_events {
  std::vector<inbound_frame> frames;
  std::optional<provision_request> provision;
  std::vector<std::uint64_t> released_regions;  ///< provider handles no longer referenced
  std::optional<std::uint64_t> credit_word;     ///< write to the peer's control block
  std::optional<ack_record> ack;                ///< write to the peer's ack slot
  std::optional<std::uint64_t> flags_word;      ///< write to the peer's flags word
  bool ring_doorbell = false;                   ///< tell the peer to read its control block
  bool peer_closed = false;                     ///< CLOSE seen; every earlier frame was delivered
  std::optional<std::error_code> failure;

  void clear() {
    frames.clear();
    provision.reset();
    released_regions.clear();
    credit_word.reset();
    ack.reset();
    flags_word.reset();
    ring_doorbell = false;
    peer_closed = false;
    failure.reset();
  }
};

class receiver {
 public:
  receiver(direction_options options, local_ring initial);

  /// Scans the ring from the cursor for complete frames; runs ahead of the application so
  /// retier requests are answered however slowly frames are released.
  void poll(receiver_events& out);
  /// The application is done with a frame; its slots return to the peer as credit.
  void release(frame_token token, receiver_events& out);
  /// The driver's answer to a provision request: a zeroed ring of the requested tier, or none
  /// when the budget would be exceeded (the peer is then told `denied`).
  void provisioned(std::uint64_t request_id, std::optional<local_ring> ring, receiver_events& out);
  /// Asks the peer to shrink back (our budget is short) or lifts that request.
  void set_pressure(bool on, receiver_events& out);
  /// Tells the peer that our reactor polls this channel on every round (a doorbell for it may
  /// be skipped), or that it no longer does.
  void set_polled(bool on, receiver_events& out);
  /// The open offer's message was fetched from the sender's memory: it has come, and the
  /// sender's next frame is a new message.
  void offer_fetched() noexcept { offer_.reset(); }
  /// A buffer was lent for the offer: the sender may offer its next message before this one's
  /// DIRECT_DONE.
  void offer_lent(std::uint64_t offer_id) noexcept;
  void fail(std::error_code ec, receiver_events& out);

  std::uint32_t tier() const noexcept { return current_.ring.tier; }
  bool failed() const noexcept { return static_cast<bool>(failed_); }
  bool awaiting_provision() const noexcept { return pending_.has_value(); }
  bool peer_closed() const noexcept { return closed_; }
  /// Times a scan found a frame's head flag but not yet its tail (a write still being placed).
  std::uint64_t heads_without_tail() const noexcept { return heads_without_tail_; }
  /// Rings this direction holds: the current one, a granted one not yet written to, and retired
  /// ones still referenced.
  std::vector<local_ring> live_rings() const;
  const direction_options& options() const noexcept { return options_; }

 private:
  struct held_frame {
    std::uint16_t slots;
    bool released;
  };
  struct ring_state {
    local_ring ring;
    fifo<held_frame> held;  ///< frames in ring order from the oldest unreleased
    std::uint64_t first_ordinal = 0;
    std::uint64_t consumed = 0;  ///< slots returned, cumulative on this ring
    std::uint64_t reported = 0;  ///< consumed as last written to the peer
  };

  const ring_geometry& geometry() const { return options_.tiers[current_.ring.tier]; }
  void scan(receiver_events& out);
  /// Handles one complete frame at the cursor; false when scanning must stop.
  bool accept(const frame_header& h, const std::byte* frame, receiver_events& out);
  bool accept_fragment(const frame_header& h, const std::byte* payload, receiver_events& out);
  bool accept_retier(const frame_header& h, const std::byte* payload, receiver_events& out);
  bool accept_direct(const frame_header& h, const std::byte* payload, receiver_events& out);
  /// A message of `length` begins in the ring: false if an open offer announced another.
  bool take_offered(std::uint64_t length);
  /// True (and the granted ring is now current) if the peer's next frame is there.
  bool switch_if_written(receiver_events& out);
  std::uint64_t hold(std::uint16_t slots, bool released);
  void advance_consumed(ring_state& ring);
  void report_credit(receiver_events& out);
  std::uint64_t current_flags() const noexcept;
  void violation(receiver_events& out);

  direction_options options_;
  ring_state current_;
  std::vector<ring_state> retired_;
  // Granted but not yet written to. A sender whose ack came late has gone on through the old
  // ring meanwhile, so the next frame is either at the old ring's cursor or at the start of
  // this one; sequence numbers run on across rings, so whichever holds it says which.
  std::optional<local_ring> granted_;
  std::uint32_t cursor_slot_ = 0;
  std::uint32_t expected_seq_ = 1;
  std::uint64_t next_ordinal_ = 0;
  std::uint64_t last_request_id_ = 0;
  std::optional<provision_request> pending_;
  // Fragment reassembly bookkeeping; the bytes themselves go straight to the application.
  bool in_message_ = false;
  std::uint64_t message_total_ = 0;
  std::uint64_t message_received_ = 0;
  struct open_offer {
    std::uint64_t id = 0;
    std::uint64_t length = 0;
    bool lent = false;
  };
  // A DIRECT_OFFER until its message came (DIRECT_DONE, a fetch, or the ring's frames once the
  // offer was declined): nothing else may come in between, except, once a buffer was lent for
  // it, the next message's offer (offer_ahead_).
  std::optional<open_offer> offer_;
  std::optional<open_offer> offer_ahead_;
  std::uint64_t last_offer_id_ = 0;
  bool closed_ = false;
  bool pressure_ = false;
  bool polled_ = false;
  std::uint64_t heads_without_tail_ = 0;
  std::error_code failed_;
};

}  // namespace bellows::proto
