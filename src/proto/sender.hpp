#pragma once
// The sending half of one channel direction as a pure state machine: messages in, frame
// writes and completions out. It reads only its own control block (credit word, flags, ack
// slot), which the peer writes, and never performs I/O itself.

#include "proto/direction.hpp"
#include "proto/fifo.hpp"
#include "proto/wire.hpp"

#include <array>
#include <optional>
#include <system_error>
#include <vector>

namespace bellows::proto {

/// One frame to place in the peer's ring: header, an inline payload prefix (control payloads,
/// FRAG_FIRST's total length), a slice of the message, then the trailer at `trailer_at`. The
/// trailer must become visible after everything else.
struct frame_write {
  remote_ring ring;
  std::uint64_t offset = 0;  ///< of the frame within the ring
  frame_header header;
  std::array<std::byte, fetch_payload_bytes> inline_payload{};
  std::uint32_t inline_length = 0;
  gather_list source;
  std::uint64_t source_offset = 0;
  std::uint64_t source_length = 0;
  /// Not a frame: the source bytes alone, to `ring.address` under `ring.key` (a buffer the
  /// receiver lent for a DIRECT_OFFER); no header, no trailer.
  bool bare = false;

  std::uint64_t trailer_at() const noexcept { return offset + trailer_offset(header.length); }
};

struct send_completion {
  std::uint64_t id = 0;
  std::error_code ec;
  std::uint64_t bytes = 0;
  bool direct = false;  ///< placed straight into the receiver's buffer
};

/// A tier change of the outgoing direction, for statistics and tracing.
struct retier_event {
  enum class what { requested, granted, denied, timed_out } kind = what::requested;
  std::uint64_t request_id = 0;
  std::uint32_t from_tier = 0;
  std::uint32_t to_tier = 0;
  std::uint64_t trigger_length = 0;  ///< message that asked for it; 0 for a shrink or for throughput
  bool shrink = false;
};

struct sender_events {
  std::vector<frame_write> writes;  ///< place these, in order, before reporting completions
  std::vector<send_completion> completions;
  std::vector<retier_event> retiers;
  bool ring_doorbell = false;
  std::optional<std::error_code> closed;   ///< graceful close finished (or failed)
  std::optional<std::error_code> failure;  ///< the direction is dead; tear the channel down
  /// The offer whose message was just written into the receiver's lent buffer: ask the
  /// provider whether it left, and say so with handed_over().
  std::optional<std::uint64_t> lent_write;

  void clear() {
    lent_write.reset();
    writes.clear();
    completions.clear();
    retiers.clear();
    ring_doorbell = false;
    closed.reset();
    failure.reset();
  }
};

/// What sender::try_send did.
enum class try_result {
  written,    ///< every frame of the message is in the peer's ring
  enlarging,  ///< the message needs a larger ring; one is being asked for
  no_room,    ///< not enough credit now, or earlier messages are still queued
  too_large,  ///< its fragments would need more of the ring than it can ever offer at once
};

class sender {
 public:
  sender(direction_options options, remote_ring initial, remote_window granted, clock_time now);

  /// Queues a message; it is written on a later step(). Sends complete in submission order.
  void submit(std::uint64_t id, gather_list message, clock_time now, sender_events& out);
  /// Writes CLOSE after every queued message; `closed` is reported once the peer consumed it.
  void close(clock_time now, sender_events& out);
  /// Reads the control block (credit, flags, ack), handles timeouts and writes what it can.
  void step(const std::byte* control_block, clock_time now, sender_events& out);
  /// Reads the control block and reports what it says (credit, an ack, a finished close) but
  /// writes nothing: for a peer that will not read anything more.
  void settle(const std::byte* control_block, clock_time now, sender_events& out);
  /// Writes a message now or not at all, for callers that must never queue. Call step()
  /// first so that the latest credit and ack are seen. Fails like submit on a closed or
  /// failed direction.
  outcome<try_result> try_send(gather_list message, clock_time now, sender_events& out);
  /// Writes a message that one frame of the current ring holds, now, as the front of an empty
  /// queue would be written: true, and the send is done. False leaves the message unwritten
  /// (no room, a wait is due, or it would go another way): submit it then.
  bool write_at_once(const gather_list& message, clock_time now, sender_events& out);
  /// The provider holds no byte of the message written into the lent buffer for `offer_id`, nor
  /// of its DIRECT_DONE: the send completes now, as a ring send does once written, without the
  /// round trip of the receiver's receipt. Not called (or `offer_id` stale): it completes on the
  /// receipt, so that a completed send never needs the application to run the io_context for its
  /// bytes to leave (tcp: what the socket did not take waits in the link's queue). The caller
  /// steps the sender afterwards, which sends what the completion let go.
  void handed_over(std::uint64_t offer_id, sender_events& out);
  /// Removes a queued send that has written nothing yet; false if there is none such.
  bool cancel(std::uint64_t id) noexcept;
  /// Abandons everything: every queued send and a pending close complete with `ec`.
  void fail(std::error_code ec, sender_events& out);

  std::uint32_t tier() const noexcept { return ring_.tier; }
  bool awaiting_ack() const noexcept { return outstanding_ || offer_ || held_by_receipt(); }
  /// A message written into a buffer the peer lent may still be on its way, and the peer may
  /// take that buffer back by tearing its channel down: a write refused then is no lie.
  bool writing_into_lent_buffer() const noexcept { return lent_write_.has_value(); }
  bool stalled_on_credit() const noexcept { return stalled_; }
  /// Times the queue stopped because the peer's ring had no room for its front (see
  /// channel_stats::credit_stalls).
  std::uint64_t credit_stalls() const noexcept { return credit_stalls_; }
  bool failed() const noexcept { return static_cast<bool>(failed_); }
  std::size_t queued() const noexcept { return queue_.size(); }
  std::uint32_t free_slots() const noexcept;
  /// Times the ack slot showed the head flag of the awaited ack without its tail.
  std::uint64_t partial_acks_seen() const noexcept { return partial_acks_seen_; }
  /// When step() must run next even if nothing is written to the control block.
  std::optional<clock_time> next_deadline() const noexcept;
  const direction_options& options() const noexcept { return options_; }

 private:
  struct queued_send {
    std::uint64_t id;
    gather_list message;
    clock_time enqueued;
    std::uint64_t written = 0;
    bool offered = false;         ///< a DIRECT_OFFER named it: it goes one way or the other
    bool offer_declined = false;  ///< goes through the ring
  };
  struct pending_request {
    retier_request request;
    bool shrink;
    clock_time sent;
    /// No ack within ack_timeout: sends go on through the current ring until it comes.
    bool fell_back = false;
  };

  const ring_geometry& geometry() const { return options_.tiers[ring_.tier]; }
  std::uint32_t cursor_slot() const { return static_cast<std::uint32_t>(produced_ % geometry().slot_count); }
  void read_control(const std::byte* control_block, clock_time now, sender_events& out);
  void apply_ack(const ack_record& ack, clock_time now, sender_events& out);
  void fall_back_if_unanswered(clock_time now, sender_events& out);
  /// An outstanding request holds the sends that cannot go ahead of it (none outstanding, or
  /// it fell back: none are held).
  bool held_by_request() const noexcept { return outstanding_ && !outstanding_->fell_back; }
  /// Slots a message's fragments need in the current ring, with room for one PAD at the wrap
  /// wherever the cursor stands.
  std::uint64_t fragment_slots(std::uint64_t length) const;
  /// Whether all of a message's fragments fit the ring's free room from the cursor on.
  bool fragments_fit_now(std::uint64_t length) const;
  /// Whether the queue's front may go through the current ring before the request's answer.
  bool may_go_ahead(const queued_send& front) const;
  void pump(clock_time now, sender_events& out);
  /// Counts a new wait for credit, the queue stopped at a message of `waiting_length`. Enough of
  /// them close together, for messages that take several of the ring's slots, mean the next
  /// tier's ring would hold more of them at once: growth for throughput.
  void note_stall(clock_time now, std::uint64_t waiting_length);
  /// Whether a frame of `slots` fits now, with the PAD that the wrap may need before it.
  bool room_for(std::uint64_t slots) const noexcept;
  /// Writes `message` as one frame where the ring has room for it.
  bool write_whole(const gather_list& message, clock_time now, sender_events& out);
  /// The frame_header::gap for `message`, from a file, as a DATA frame of `slots` at the cursor.
  std::uint8_t file_gap(const gather_list& message, std::uint64_t slots) const noexcept;
  /// A file message shorter than this is not worth a gap.
  static constexpr std::uint64_t file_gap_min_length = 4096;
  /// Asks for the next tier because the sender keeps outrunning its ring (see note_stall).
  void grow_for_throughput(clock_time now, sender_events& out);
  bool pump_one(clock_time now, sender_events& out);
  /// Whether a message goes to the receiver as a DIRECT_OFFER before anything else.
  bool offered_direct(const queued_send& s) const noexcept;
  /// Writes a message's DIRECT_OFFER once the ring has room for it, for the DONE of a lent
  /// buffer, and for `also_reserved` more slots.
  void offer_direct(queued_send& s, sender_events& out, std::uint64_t also_reserved = 0);
  void read_lend_slot(const std::byte* control_block, sender_events& out);
  void apply_lend(const lend_record& answer, sender_events& out);
  /// Reads the receiver's word that the lent buffer holds the message.
  void read_receipt(const std::byte* control_block, sender_events& out);
  /// The front send is in a lent buffer and completes only on the receipt.
  bool held_by_receipt() const noexcept { return lent_write_ && !lent_write_completed_; }
  void start_retier(std::uint32_t to, bool shrink, std::uint64_t trigger, clock_time now, sender_events& out);
  /// Makes room for a frame of `slots` at the cursor, writing PAD first if it would wrap.
  bool reserve(std::uint64_t slots, sender_events& out);
  frame_write& emit(frame_kind kind, std::uint32_t length, std::uint64_t slots, sender_events& out);
  /// `direct`: its message went straight into the receiver's buffer.
  void complete_front(std::error_code ec, std::uint64_t bytes, sender_events& out, bool direct = false);
  void report_close_if_done(sender_events& out);

  direction_options options_;
  remote_ring ring_;
  remote_window granted_;
  fifo<queued_send> queue_;
  std::uint64_t produced_ = 0;  ///< slots written into the current ring, PAD included
  std::uint64_t consumed_ = 0;  ///< slots the peer has returned on the current ring
  std::uint32_t next_seq_ = 1;
  std::optional<pending_request> outstanding_;
  std::uint64_t last_request_id_ = 0;
  std::uint64_t last_acked_id_ = 0;
  clock_time denied_until_{};
  clock_time last_large_{};
  bool pressure_ = false;
  bool stalled_ = false;
  std::uint32_t stalls_in_window_ = 0;
  std::uint64_t credit_stalls_ = 0;
  clock_time stall_window_start_{};
  bool outrunning_ring_ = false;
  std::uint64_t partial_acks_seen_ = 0;
  /// An unanswered DIRECT_OFFER: of the queue's front, or of the message behind it while the
  /// front is written into a lent buffer (its answer is read once the front completed).
  std::optional<std::uint64_t> offer_;
  bool offer_fetched_ = false;  ///< the receiver may be reading that message from our memory
  std::uint64_t last_offer_id_ = 0;
  std::uint64_t last_answered_offer_ = 0;
  /// The offer whose message was last written into a lent buffer, until the receiver's word.
  std::optional<std::uint64_t> lent_write_;
  bool lent_write_completed_ = false;  ///< its send completed at handover, not on the receipt
  bool close_requested_ = false;
  bool close_written_ = false;
  bool close_reported_ = false;
  std::error_code failed_;
};

}  // namespace bellows::proto
