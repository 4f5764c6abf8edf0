#pragma once
// One channel as a pure state machine: both directions (sender and receiver), the application's
// pending operations and their buffers, reassembly of fragmented messages, discarding of what a
// receive could not take, the lifecycle (open, closing, failed, aborted, detached) and the
// statistics. Inputs are the application's requests, the driver's polls and the results of the
// driver's work; outputs are the actions in proto/actions.hpp. No Asio, no system calls, no
// clock: time comes in as an argument, so the core runs the same under the reactor and under
// the simulator, and tests drive it deterministically.

#include "proto/actions.hpp"
#include "proto/receiver.hpp"
#include "proto/sender.hpp"

#include <bellows/detail/byte_ranges.hpp>
#include <bellows/stats.hpp>

#include <memory>
#include <optional>
#include <vector>

namespace bellows::proto {

/// A receive buffer the driver lent the peer: where the peer writes it.
struct lent_region {
  std::uint64_t region = 0;  ///< provider handle, released when the receive is done with it
  std::uint64_t key = 0;
  std::uint64_t address = 0;
};

/// Where both sides' memory is, as agreed when the channel was opened.
struct core_setup {
  local_ring ring;                     ///< our first receive ring
  const std::byte* control = nullptr;  ///< our control block, written by the peer
  std::uint64_t control_bytes = 0;
  std::uint64_t peer_control_key = 0;
  std::uint64_t peer_control_address = 0;
  remote_ring peer_ring;  ///< the peer's first receive ring
  remote_window peer_window;
};

class channel_core {
 public:
  channel_core(direction_options options, const core_setup& setup, clock_time now);

  // ---- the application's requests; every id gets exactly one *_done action ----
  /// Sends `message` whole; the ranges' memory stays the caller's and must outlive the send.
  void send(std::uint64_t id, detail::gather&& message, clock_time now);
  /// Writes `message` into the peer's ring now, where one frame holds it and nothing queued or
  /// awaited comes first: true, and the send is done with no id and no send_done (the driver
  /// completes it once it carried out the writes). False: nothing written; send() it.
  bool send_at_once(const detail::gather& message, clock_time now);
  /// Completes send `id` with `ec` at once; nothing is written.
  void refuse_send(std::uint64_t id, std::error_code ec);
  /// Writes the message now or not at all (see sender::try_send); counts it when written.
  outcome<try_result> try_send(const detail::gather& message, clock_time now);
  void receive(std::uint64_t id, detail::scatter&& into);
  /// Copies the next message into `into` now, where it arrived whole in one frame that `into`
  /// holds and no receive waits before this one: its length, and the receive is done with no id
  /// and no receive_done. Empty: nothing taken; receive() it.
  std::optional<std::uint64_t> receive_at_once(const detail::scatter& into);
  void receive_view(std::uint64_t id);
  /// Graceful close of the sending direction; done once the peer consumed everything.
  void close(std::uint64_t id, clock_time now);
  /// Completes the operation with operation_aborted if it can still be undone: a receive (but
  /// not one whose buffer is lent to the peer: it completes once the message is in), a close
  /// wait, or a send that has written nothing (and offered nothing).
  void cancel(std::uint64_t id);
  void cancel_all();
  /// Local teardown: pending operations end with channel_closed.
  void abort();
  /// The application let go of a zero-copy view.
  void release(frame_token token);

  // ---- the driver's side ----
  /// Reads the control block and the ring, writes what can be written, delivers what arrived.
  void poll(clock_time now);
  /// The answer to a `provision` action: the ring registered, or none (budget short). The
  /// answer's writes come out before its `tier_changed` (provisioned or refused), whose
  /// `elapsed` is left for the driver to fill in: only it can time its own registration.
  /// `under_pressure`: the budget is short, so a larger ring is granted with a request to
  /// shrink back soon.
  void provisioned(const provision_request& request, std::optional<local_ring> ring, bool under_pressure);
  /// The answer to a `lend_buffer` action: where the peer may write the offered message, or
  /// none (the provider cannot lend; the offer is declined and the message comes through the ring).
  void lent(std::uint64_t offer_id, std::optional<lent_region> region);
  /// The answer to a `fetch_message` action: true if the message is in the receive's buffer
  /// (read whole, guard unchanged); false declines the offer, and the message comes through the
  /// ring.
  void fetched(std::uint64_t offer_id, bool whole);
  /// The answer to a `check_handover` action: `left` if no byte of that message or its
  /// DIRECT_DONE waits in this process any more; its send then completes without waiting for
  /// the receiver's receipt (see sender::handed_over).
  void handed_over(std::uint64_t offer_id, bool left, clock_time now);
  /// Asks the peer to shrink its ring of our direction (our budget is short), or lifts that.
  void set_pressure(bool on);
  /// Tells the peer whether the driver polls this channel on every round, whether or not it is
  /// rung: while it does, the peer's doorbells for it may be skipped (see ring_doorbell).
  void set_polled(bool on);
  /// The peer detached the channel: take what it wrote, write nothing more, tell it we let go
  /// too, and fail with connection_reset.
  void peer_detached(clock_time now);
  /// The link died (no socket left to say anything on): take what the peer wrote and fail.
  void link_failed(std::error_code ec, clock_time now);
  /// A `place` or doorbell could not be carried out; the channel fails with `ec` (a link's
  /// failure, as link_failed's).
  void write_failed(std::error_code ec);

  /// Moves the next batch of actions, oldest first, into `batch` (cleared first); false when
  /// there is none. A driver carries out each batch before it asks for the next: the core
  /// hands its work out in steps when their order across steps matters (a credit goes back to
  /// the peer before the next fragment is copied out, so the peer can write meanwhile).
  bool next_batch(std::vector<action>& batch);
  /// Whether next_batch() would hand out anything now: a driver that just carried out a batch
  /// asks this before it asks for the next.
  bool has_output() const noexcept {
    return !out_.empty() || !finished_.empty() || delivery_paused_ || (doorbell_due_ && may_write());
  }
  /// Hands back the range list of a send_done once it is carried out, so that the next send
  /// reuses it instead of allocating (optional: dropping it is correct too).
  void recycle(std::unique_ptr<detail::gather> ranges);

  // ---- state ----
  bool is_open() const noexcept { return !failed_; }
  /// A receive is still waiting for a message.
  bool receiving() const noexcept { return !receives_.empty(); }
  /// The error a new operation gets on a channel that is not open.
  std::error_code closed_reason() const noexcept;
  bool failed() const noexcept { return static_cast<bool>(failed_); }
  /// The peer has been told (or cannot be told any more) that we are gone.
  bool detached() const noexcept { return detached_; }
  /// The oldest pending receive took part of a fragmented message, not yet all of it.
  bool receiving_part_way() const noexcept { return !receives_.empty() && receives_.front().started(); }
  /// The driver must poll on every pass: an ack or credit is awaited.
  bool wants_watching() const noexcept;
  /// When poll() must run next even if the peer rings nothing.
  std::optional<clock_time> next_deadline() const noexcept;
  channel_stats stats() const;
  const direction_options& options() const noexcept { return options_; }
  const sender& outgoing() const noexcept { return tx_; }
  const receiver& incoming() const noexcept { return rx_; }

 private:
  struct pending_send {
    std::uint64_t id;
    std::unique_ptr<detail::gather> message;  // stable: the sender and `place` actions hold spans of it
  };
  struct pending_receive {
    std::uint64_t id;
    detail::scatter into;
    bool view = false;
    std::uint64_t filled = 0;
    std::vector<std::byte> assembled;
    std::uint64_t message_length = 0;  ///< once started: the whole message's, as FRAG_FIRST announced it

    /// Part of a fragmented message is in. Never 0 then: the receiver refuses a FRAG_FIRST
    /// that announces no more than its own bytes (receiver::accept_fragment).
    bool started() const noexcept { return message_length != 0; }
  };

  /// What a receive cancelled part-way through a fragmented message had taken: the next
  /// receive goes on from there, so that a cancellation loses nothing.
  struct partial_message {
    std::vector<std::byte> bytes;
    std::uint64_t length = 0;  ///< the whole message's
  };

  /// A receive's buffer, lent to the peer for one offered message (or being filled from the
  /// peer's memory by the driver, for a fetched offer).
  struct lending {
    std::uint64_t offer_id = 0;
    std::uint64_t receive_id = 0;
    std::uint64_t length = 0;
    std::optional<lent_region> region;  ///< empty while the driver is asked
  };

  bool may_write() const noexcept { return !failed_ && !peer_gone_; }
  void take(const sender_events& ev, clock_time now);
  void take(const receiver_events& ev);
  void settle(clock_time now);
  void place_frame(const frame_write& w);
  void place_control(std::size_t offset, std::span<const std::byte> bytes);
  void report_retier(const retier_event& r, clock_time now);
  /// Queues an operation's completion; completions go out after the input's writes and doorbell.
  template <class Done>
  void complete(Done&& done) {
    finished_.emplace_back(std::in_place_type<std::decay_t<Done>>, std::forward<Done>(done));
  }
  void end_of_input();
  void push_doorbell();
  void fail(std::error_code ec);
  /// How a failure of the link, or of a write through it, fails this channel.
  std::error_code as_channel_failure(std::error_code ec) const;
  void send_finished(const send_completion& c);

  // Delivery (channel_core_delivery.cpp): frames to pending receives, in order.
  void deliver();
  bool deliver_front();
  void release_front();
  /// A DIRECT_OFFER at the front: lend the front receive's buffer, or decline.
  bool deliver_offer(const inbound_frame& f);
  /// Lends receives_[index]'s buffer for the offer (lent_ or lent_ahead_), or declines it.
  void lend_or_decline(const inbound_frame& f, std::size_t index);
  /// The offer that came while the buffer before it was lent: lent to the receive behind the
  /// lent one as soon as that is posted; decided like any offer once the message before is in.
  bool deliver_parked_offer();
  void lend_ahead_if_posted();
  /// A DIRECT_DONE at the front: the lent receive is complete.
  bool deliver_direct_done(const inbound_frame& f);
  /// The peer broke the protocol in what delivery found: fail, handing nothing more out.
  bool refuse_frames();
  void answer_offer(std::uint64_t offer_id, const std::optional<lent_region>& region, std::uint64_t length);
  /// Completes the front receive and removes it.
  void finish_front(std::error_code ec, std::uint64_t length);
  /// `op` is being cancelled after it took part of a message: keeps that part in partial_.
  void keep_partial(pending_receive& op);
  /// Hands partial_ to the front receive `op`; false if it cannot take the message (finished
  /// with message_size, the rest discarded).
  bool resume_partial(pending_receive& op);
  void end_receives();

  direction_options options_;
  core_setup setup_;
  sender tx_;
  receiver rx_;
  sender_events tx_events_;
  receiver_events rx_events_;
  std::vector<action> out_;
  std::vector<action> finished_;
  fifo<pending_send> sends_;
  std::vector<std::unique_ptr<detail::gather>> spare_ranges_;
  fifo<pending_receive> receives_;
  fifo<inbound_frame> ready_;
  std::optional<std::uint64_t> close_id_;
  std::optional<std::error_code> close_result_;
  std::optional<lending> lent_;        ///< the front receive's
  std::optional<lending> lent_ahead_;  ///< the next receive's, for the parked offer
  std::optional<inbound_frame> parked_offer_;
  std::optional<partial_message> partial_;
  bool discarding_ = false;
  bool credit_due_ = false;       ///< a credit word was placed since delivery last looked
  bool delivery_paused_ = false;  ///< frames wait until the batch with the credit is carried out
  bool doorbell_due_ = false;
  bool peer_gone_ = false;
  bool detached_ = false;
  bool aborted_ = false;
  std::error_code failed_;
  channel_stats counters_;
  clock_time requested_at_{};
  /// A check_handover to ask for after the doorbell; every input's end_of_input() hands it out,
  /// so has_output() need not look at it.
  std::optional<std::uint64_t> handover_due_;
};

}  // namespace bellows::proto
