// The sender state machine fed whatever a lying peer may write into its control block: credit
// words, flags and ack slots of arbitrary bytes, mixed with honest acks and credits so that the
// fuzzer reaches the states behind them. Whatever the script, every frame the sender places lies
// inside the window the peer granted, every send completes at most once, a message placed
// straight into a lent buffer completes only once the receiver said it is in (its receipt), and
// the only way the direction fails is protocol_violation. Every input is played twice: with
// lent buffers (tcp) and with fetched offers (shm), where a send completes directly only on a
// `received` answer, and a send whose offer may still be being read ends otherwise only after
// the fetch guard moved.
#include "fuzz/script.hpp"
#include "proto/fetch_guard.hpp"
#include "proto/sender.hpp"
#include "proto/shared_access.hpp"

#include <cstring>
#include <deque>
#include <map>
#include <stdexcept>
#include <vector>

using namespace bellows::proto;

namespace {

constexpr std::uint64_t window_key = 7;
constexpr std::uint64_t window_end = std::uint64_t{16} << 20;
// Messages above this are offered for direct placement (the bytes the harness cuts them from
// end at 256 KiB); lent buffers have their own key.
constexpr std::uint64_t offer_above = 128 << 10;
constexpr std::uint64_t lent_key = 99;

class harness {
 public:
  explicit harness(bool fetched = false)
      : fetched_(fetched),
        tx_(options(fetched), remote_ring{window_key, 0, 0, 0}, remote_window{window_key, 0, window_end, false}, now_) {
    std::memset(control_, 0, sizeof control_);
  }

  void run(bellows::fuzz::script& in) {
    for (int step = 0; step < 2048 && !in.empty(); ++step) {
      sender_events ev;
      switch (in.take<std::uint8_t>() % 10) {
        case 0: submit(static_cast<std::uint32_t>(in.take<std::uint32_t>() % message_.size()), ev); break;
        case 1: scribble(in); break;
        case 2: honest_ack(in); break;
        case 3: honest_credit(); break;
        case 4: now_ += std::chrono::microseconds(in.take<std::uint16_t>()) * 64; break;
        case 5: cancel(in.take<std::uint8_t>() % (next_id_ + 1)); break;
        case 6: tx_.close(now_, ev); break;
        case 7: set_flags(in.take<std::uint8_t>()); break;
        case 8: answer_offer(in); break;
        case 9: write_receipt(); break;
      }
      check(ev);
      sender_events stepped;
      tx_.step(control_, now_, stepped);
      check(stepped);
    }
  }

 private:
  static direction_options options(bool fetched) {
    direction_options o{*tier_table::make(bellows::default_tiers())};
    o.max_message_size = 1 << 24;
    o.offer_direct_above = offer_above;
    o.offers_are_fetched = fetched;
    return o;
  }

  void submit(std::uint32_t length, sender_events& ev) {
    const std::span<const std::byte> part(message_.data(), length);
    parts_.push_back(part);
    const std::uint64_t id = ++next_id_;
    open_.insert({id, true});
    tx_.submit(id, gather_list{std::span(&parts_.back(), 1), length, {}}, now_, ev);
  }

  // A cancelled send is completed by the caller, so the sender must never complete it as well.
  void cancel(std::uint64_t id) {
    if (!tx_.cancel(id)) return;
    if (offered_ && id == front_send())
      throw std::logic_error("an offered send was cancelled while the receiver may be reading it");
    open_[id] = false;
  }

  std::uint64_t front_send() const {
    for (const auto& [id, open] : open_)
      if (open) return id;
    return 0;
  }

  void scribble(bellows::fuzz::script& in) {
    const std::size_t offset = in.take<std::uint8_t>() % sizeof control_;
    const std::size_t length = std::min<std::size_t>(in.take<std::uint8_t>() % 16 + 1, sizeof control_ - offset);
    for (std::size_t i = 0; i < length; ++i) control_[offset + i] = static_cast<std::byte>(in.take<std::uint8_t>());
    const bool lend_slot =
        offset < control_block::lend_offset + lend_layout::size && offset + length > control_block::lend_offset;
    if (lend_slot || offset + length > control_block::receipt_offset) lend_slot_scribbled_ = true;
    if (lend_slot) answer_scribbled_ = true;
  }

  // What an honest receiver writes for the last request, with one field the fuzzer may bend.
  void honest_ack(bellows::fuzz::script& in) {
    if (!asked_) return;
    const auto& tiers = tx_.options().tiers;
    const std::uint32_t tier = asked_->to_tier < tiers.size() ? asked_->to_tier : 0;
    ack_record a{asked_->request_id,
                 in.take<std::uint8_t>() % 5 == 0 ? ack_status::denied : ack_status::granted,
                 tier,
                 (std::uint64_t{in.take<std::uint8_t>()} << 16),
                 window_key,
                 tiers[tier].slot_size,
                 tiers[tier].slot_count,
                 epoch_ + 1};
    switch (in.take<std::uint8_t>() % 8) {
      case 0: a.ring_address = in.take<std::uint64_t>(); break;
      case 1: a.ring_key = in.take<std::uint64_t>(); break;
      case 2: a.epoch = in.take<std::uint32_t>(); break;
      case 3: a.tier = in.take<std::uint32_t>(); break;
      case 4: a.slot_count = in.take<std::uint32_t>(); break;
      default: break;
    }
    const auto bytes = encode_ack(a);
    std::memcpy(control_ + control_block::ack_offset, bytes.data(), bytes.size());
  }

  // What an honest receiver writes into the lend slot for the last offer: its buffer, or no;
  // the length or the address may be bent.
  void answer_offer(bellows::fuzz::script& in) {
    if (!offered_) return;
    const bool grant = in.take<std::uint8_t>() % 4 != 0;
    if (fetched_) return answer_fetch(grant, in);
    lend_record r{offered_->offer_id, grant ? ack_status::granted : ack_status::denied,
                  grant ? std::uint64_t{1} << 40 : 0, grant ? lent_key : 0, grant ? offered_->length : 0};
    switch (in.take<std::uint8_t>() % 8) {
      case 0: r.length = in.take<std::uint32_t>(); break;
      case 1: r.offer_id = in.take<std::uint8_t>(); break;
      default: break;
    }
    const auto bytes = encode_lend(r);
    std::memcpy(control_ + control_block::lend_offset, bytes.data(), bytes.size());
    if (grant) lent_ = r;
    answer_scribbled_ = false;
    // An answer says nothing of the message before: the next offer comes ahead of its bytes.
    offered_.reset();
  }

  // What an honest receiver writes for a fetched offer: read, or no; length or id may be bent.
  void answer_fetch(bool read, bellows::fuzz::script& in) {
    lend_record r{offered_->offer_id, read ? ack_status::received : ack_status::denied, 0, 0,
                  read ? offered_->length : 0};
    switch (in.take<std::uint8_t>() % 8) {
      case 0: r.length = in.take<std::uint32_t>(); break;
      case 1: r.offer_id = in.take<std::uint8_t>(); break;
      case 2: r.status = ack_status::granted; break;
      default: break;
    }
    const auto bytes = encode_lend(r);
    std::memcpy(control_ + control_block::lend_offset, bytes.data(), bytes.size());
    // A bent field may still come out honest (the same id, the same length).
    const bool honest =
        r.status == ack_status::received && r.offer_id == offered_->offer_id && r.length == offered_->length;
    if (honest) {
      placed_.push_back(offered_->offer_id);
      said_in_below_ = std::max(said_in_below_, offered_->offer_id + 1);
    }
    offered_.reset();
  }

  void write_receipt() {
    if (!done_) return;
    put<std::uint64_t>(control_ + control_block::receipt_offset, *done_);
    said_in_below_ = std::max(said_in_below_, *done_ + 1);
    done_.reset();
  }

  void honest_credit() {
    put<std::uint64_t>(control_ + control_block::credit_offset, make_credit_word(epoch_, produced_[epoch_]));
  }

  void set_flags(std::uint8_t f) { put<std::uint64_t>(control_ + control_block::flags_offset, f & 1); }

  void check(const sender_events& ev) {
    for (const auto& w : ev.writes) {
      if (w.bare) {
        // The answer is read once the send before it completed: bytes scribbled over it meanwhile
        // are the peer's own lie, and name its memory to a provider that checks every write.
        const bool honest = lent_ && w.ring.key == lent_key && w.ring.address == lent_->address;
        if (!answer_scribbled_ && (!honest || w.source_length > lent_->length))
          throw std::logic_error("a direct write outside the lent buffer");
        continue;
      }
      if (fetched_ && w.header.kind == frame_kind::direct_offer) {
        const auto note = decode_fetch(w.inline_payload.data());
        if (w.header.length != fetch_payload_bytes || !note) throw std::logic_error("a fetch offer unreadable");
        if (note->source < reinterpret_cast<std::uint64_t>(message_.data()) ||
            note->source >= reinterpret_cast<std::uint64_t>(message_.data() + message_.size()))
          throw std::logic_error("a fetch offer naming memory the message is not in");
        if (note->guard_address != fetch_guard::current().address)
          throw std::logic_error("a fetch offer naming another guard");
        offered_ = note->offer;
        offered_guard_ = note->guard_value;
      } else if (w.header.kind == frame_kind::direct_offer || w.header.kind == frame_kind::direct_done) {
        const auto note = decode_direct(w.inline_payload.data());
        if (fetched_) throw std::logic_error("a DONE after a fetched offer");
        if (!note) throw std::logic_error("an offer or DONE the receiver could not read");
        if (w.header.kind == frame_kind::direct_offer) offered_ = *note;
        if (w.header.kind == frame_kind::direct_done) {
          done_ = note->offer_id;
          placed_.push_back(note->offer_id);
          lent_.reset();
        }
      }
      const std::uint64_t span = w.header.kind == frame_kind::pad ? 0 : frame_span(w.header.length);
      if (w.ring.key != window_key || w.ring.address + w.offset + span > window_end)
        throw std::logic_error("a frame outside the granted window");
      produced_[w.ring.epoch] += w.header.slots;
    }
    for (const auto& c : ev.completions) {
      if (c.id == 0) continue;
      const auto it = open_.find(c.id);
      if (it == open_.end() || !it->second) throw std::logic_error("a send completed twice or never started");
      it->second = false;
      if (c.direct && !c.ec) {
        // Direct sends complete in the order of their DONEs.
        if (placed_.empty() && fetched_ && lend_slot_scribbled_) continue;  // a forged `received`
        if (placed_.empty()) throw std::logic_error("a direct send completed without its DONE");
        if (placed_.front() >= said_in_below_ && !lend_slot_scribbled_)
          throw std::logic_error("a direct send completed before the receiver said it is in");
        placed_.pop_front();
      }
    }
    for (const auto& r : ev.retiers) {
      if (r.kind == retier_event::what::requested) asked_ = r;
      if (r.kind == retier_event::what::granted) ++epoch_;
    }
    if (ev.failure && *ev.failure != bellows::error::protocol_violation)
      throw std::logic_error("a failure other than protocol_violation: " + ev.failure->message());
    // The receiver may still be reading an unanswered fetched offer: its send ends only after
    // the guard moved, so that the read does not count.
    if (ev.failure && fetched_ && offered_ && fetch_guard::current().value == offered_guard_)
      throw std::logic_error("a send ended while its offer could be read, guard unmoved");
  }

  bool fetched_;
  clock_time now_{std::chrono::seconds(1)};
  sender tx_;
  alignas(64) std::byte control_[control_block::size];
  // The bytes every message is cut from; the sender only points at them.
  static inline const std::vector<std::byte> message_ = [] {
    std::vector<std::byte> bytes(256 * 1024);
    for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<std::byte>(i);
    return bytes;
  }();
  std::deque<std::span<const std::byte>> parts_;  // stable addresses: the sender holds spans of them
  std::map<std::uint64_t, bool> open_;
  std::map<std::uint32_t, std::uint64_t> produced_;
  std::optional<retier_event> asked_;
  std::uint64_t next_id_ = 0;
  std::uint32_t epoch_ = 0;
  std::optional<direct_note> offered_;  ///< the last DIRECT_OFFER, unanswered
  std::uint64_t offered_guard_ = 0;     ///< the guard value a fetched offer named
  std::optional<lend_record> lent_;     ///< the buffer granted, until its DONE
  std::optional<std::uint64_t> done_;   ///< the offer of the last DONE, no receipt yet
  std::uint64_t said_in_below_ = 1;     ///< the receiver said so of every offer below this
  std::deque<std::uint64_t> placed_;    ///< offers whose message and DONE went, not completed
  bool lend_slot_scribbled_ = false;    ///< then a receipt may be forged: only the peer's loss
  bool answer_scribbled_ = false;       ///< the lend slot changed since the last honest answer
};

struct fetching_harness : harness {
  fetching_harness() : harness(true) {}
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  bellows::fuzz::play<harness>(data, size);
  return bellows::fuzz::play<fetching_harness>(data, size);
}
