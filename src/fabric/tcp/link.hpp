#pragma once
// A tcp link: one TCP connection between two reactors, carrying any number of channels. Each
// side's rings and control blocks are heap regions (fabric/tcp/regions.hpp); the peer's writes,
// doorbells and control messages arrive as records (fabric/tcp/record.hpp) that poll() reads and
// places. What this side writes is gathered and sent when the channel's batch of actions ends
// (send_gathered) or at the next poll, so a batch's frames and doorbell leave in one call; a
// large payload is sent from the caller's memory, and copied only where the socket does not take
// it. Once a large write went either way, the connecting side moves its own records to a second
// connection, so that each connection carries bytes one way (link_directions.cpp says why). A
// connection closing is the news that the peer died.

#include "fabric/connector.hpp"
#include "fabric/link_registry.hpp"
#include "fabric/multiplexed_link.hpp"
#include "fabric/peer_proof.hpp"
#include "fabric/tcp/record.hpp"
#include "fabric/tcp/regions.hpp"

#include <asio/ip/tcp.hpp>

#include <sys/uio.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace bellows::tcp {

class link;

/// The links one listener accepted, by their keys: a connecting side's second connection names
/// its link by key (record_kind::bind).
class accepted_links : public fabric::link_registry<link> {
 public:
  /// How to take the connections waiting on the listener, whether or not anyone wants peers.
  void set_taker(std::function<void()> take) { take_ = std::move(take); }
  void take_waiting() const {
    if (take_) take_();
  }

 private:
  std::function<void()> take_;
};

class link final : public fabric::multiplexed_link {
 public:
  /// Client side: connects to `to` in the background; channels opened meanwhile wait for the
  /// handshake.
  /// With a `pre_shared_key`, no channel is set up before both sides proved they hold it.
  static std::shared_ptr<link> connect(const fabric::host& h, const asio::ip::tcp::endpoint& to,
                                       std::string pre_shared_key);
  /// Server side: a connection just accepted, and the listener's other links, which it joins
  /// if it turns out to be one of theirs' second connection.
  static std::shared_ptr<link> accept(const fabric::host& h, asio::ip::tcp::socket socket, std::string pre_shared_key,
                                      std::shared_ptr<accepted_links> siblings);

  void arm() override;
  void disarm() override;
  void shutdown() override;
  bool busy() const noexcept override { return unsent() != 0; }
  void dropped() noexcept override;
  /// Failed, or a link this side opened that no channel uses any more.
  bool finished() const noexcept override { return failed() || (client_side_ && unused()); }

  /// Sends what is queued, then places the records that arrived; returns how many it found.
  std::size_t poll() override;
  bool prepare_to_sleep() override;
  bool prepare_to_idle(std::vector<int>& descriptors) override;
  void last_look() override;
  void woke_up() override {}

  proto::outcome<fabric::region> register_region(std::size_t length) override { return regions_.allocate(length); }
  void release_region(std::uint64_t handle) override;
  bool can_lend() const override { return true; }
  std::optional<fabric::region> lend(std::span<std::byte> memory) override;
  std::error_code write(fabric::remote_address dst, fabric::byte_pieces pieces) override;
  std::error_code write_held(fabric::remote_address dst, fabric::byte_pieces pieces, const void* owner) override;
  void release_held(const void* owner) override;
  std::error_code write_frame(fabric::remote_address dst, fabric::byte_pieces body, fabric::remote_address trailer_dst,
                              std::span<const std::byte> trailer) override;
  std::error_code write_from_file(fabric::remote_address dst, std::span<const std::byte> prefix,
                                  fabric::file_piece piece) override;
  /// Doorbells only queue: the batch's writes leave together, in send_gathered().
  void ring_doorbell(std::uint32_t peer_channel) override;
  void send_gathered() override { flush(); }
  bool gathers_writes() const override { return true; }
  bool holds_unsent() const override { return unsent() != 0; }
  std::size_t registered_bytes() const override { return regions_.registered_bytes(); }

 private:
  /// A record being received: its header, where its payload goes, and how much has come.
  struct incoming {
    record_header header;
    std::byte* to = nullptr;
    std::uint64_t received = 0;
    std::byte first_word[8] = {};  ///< placed last, so that a reader never sees a partial write
    bool dropped = false;          ///< for a lent buffer taken back: read and thrown away
  };

  link(const fabric::host& h, asio::ip::tcp::socket socket, bool client_side, std::uint64_t key,
       std::string pre_shared_key);
  std::shared_ptr<link> self() { return std::static_pointer_cast<link>(shared_from_this()); }

  void connected();
  void transmit(const fabric::link_message& m) override;
  void on_hello(const fabric::link_message& m) override;
  void on_proof(const fabric::link_message& m) override;
  void fail(std::error_code ec) override;
  void fail_from(const std::error_code& asio_error);

  // sending (link_send.cpp)
  std::error_code write_record(fabric::remote_address dst, fabric::byte_pieces pieces, const void* owner);
  void queue(const record_header& h, fabric::byte_pieces payload);
  /// Queues `h`, and `payload` by reference: a large write leaves from the caller's memory in
  /// the next flush, which copies only what the socket does not take, unless `owner` holds it
  /// there until release_held(owner).
  void borrow(const record_header& h, fabric::byte_pieces payload, const void* owner);
  /// Queues a padding record ahead of the write `h` where its first large piece would otherwise
  /// be copied slowly by the kernel (copy_alignment.hpp).
  void pad_for_copies(const record_header& h, fabric::byte_pieces payload);
  /// Copies into the queue, at their places, the rest of the borrowed payloads of `owner`
  /// (nullptr: those no owner holds).
  void copy_borrowed(const void* owner);
  /// Drops the sent bytes ahead of a payload still held by its owner.
  void drop_sent();
  /// Sends what is queued, borrowed payloads included, as far as the socket takes it.
  void flush();
  void send_with_borrowed();
  /// Connected, not failed, and not waiting for the socket to take more.
  bool can_send() const noexcept { return !writing_ && socket_ && !failed() && !connecting_; }
  std::size_t unsent() const noexcept { return out_.size() - out_sent_ + borrowed_bytes_; }
  void wait_for_room();

  // one connection each way (link_directions.cpp)
  /// A large write was sent or came: on the client side of a ready link, the first one opens the
  /// second connection, for this side's records.
  void bulk_seen();
  void open_second();
  void second_connected(const std::error_code& ec);
  /// Queues `moved` once nothing else is queued: what follows goes on the second connection.
  void queue_move();
  /// Sends what is queued up to and with `moved` on the first connection; true once all of it left.
  bool send_through_move();
  /// Server side: a bind named this link; the client's records come on `socket` after `moved`.
  /// Refused unless `client_key` is the peer's and, where this link was proven with a key,
  /// `offered` proves it again for this connection.
  bool take_second(asio::ip::tcp::socket& socket, std::uint64_t client_key, const fabric::proof& offered);
  static bool is_direction_record(record_kind k) noexcept {
    return k == record_kind::second_opened || k == record_kind::second_bound || k == record_kind::moved;
  }
  /// Acts on second_opened, second_bound or moved (begin_record checked where it may come); false
  /// once the link failed.
  bool take_direction_record(record_kind k);
  /// Queues a record without payload and sends it.
  void send_bare(record_kind k);
  /// Server side: a connection whose first record is a bind hands its socket to that link.
  bool take_bind(const record_header& h, const fabric::proof& offered);
  asio::ip::tcp::socket& sending_socket() { return sending_on_second_ ? *second_ : *socket_; }
  /// Server side, once the client moved and its second connection is here: read that one.
  bool reading_second() const noexcept { return moved_ && second_.has_value(); }
  int receiving_descriptor() { return reading_second() ? second_->native_handle() : socket_->native_handle(); }

  // receiving (link_data.cpp)
  /// Reads and places what the socket holds, a bounded number of reads; returns records found.
  std::size_t take_records();
  /// Places what the buffer holds; false once the link failed.
  bool take_buffered(std::size_t& found, std::vector<fabric::link_message>& controls);
  bool begin_record(const record_header& h);
  void place(const std::byte* bytes, std::size_t n);
  void finish_write();
  /// Reads straight into the ring the write being received; false when it should not.
  bool receive_direct(std::size_t& found, bool& drained);
  void watch_for_records();

  std::optional<asio::ip::tcp::socket> socket_;  // reset when the io_context shuts down
  fabric::host host_;
  regions regions_;
  std::uint64_t local_key_;
  bool client_side_;
  std::string pre_shared_key_;
  fabric::nonce own_nonce_{};
  fabric::nonce peer_nonce_{};
  bool proof_expected_ = false;  // the peer's hello came and demanded the proof we demand
  bool connecting_ = false;
  bool armed_ = false;
  bool reading_ = false;         // a wait for readability of socket_ is out
  bool reading_second_ = false;  // ... of second_
  bool writing_ = false;         // a wait for room to write is out

  // A second connection: the client sends on it, the server reads from it (link_directions.cpp).
  std::optional<asio::ip::tcp::socket> second_;
  asio::ip::tcp::endpoint peer_address_;      // client: where the second connection goes
  std::shared_ptr<accepted_links> siblings_;  // server: where a bind finds its link
  bool second_tried_ = false;
  bool second_connecting_ = false;
  bool move_wanted_ = false;            // client: second_ was bound, `moved` not yet queued
  std::optional<std::size_t> move_at_;  // client: out_'s bytes up to there go on socket_
  bool sending_on_second_ = false;      // client
  bool moved_ = false;                  // server: the client's `moved` came
  bool first_record_unread_ = false;    // server: a bind or a hello; read no further

  std::vector<std::byte> out_;
  std::size_t out_sent_ = 0;
  /// A payload held by reference, to be sent after out_'s first `after` bytes; copied at the
  /// end of its batch unless an owner keeps it valid (write_held).
  struct borrowed {
    std::size_t after;
    std::span<const std::byte> bytes;
    const void* owner;
  };
  static constexpr std::size_t max_borrowed = 256;
  std::vector<borrowed> borrowed_;
  std::size_t borrowed_bytes_ = 0;
  bool doorbell_queued_ = false;
  std::vector<iovec> gather_;

  std::vector<std::byte> in_;
  std::size_t in_begin_ = 0;
  std::size_t in_end_ = 0;
  std::optional<incoming> current_;
  bool rung_ = false;  ///< this poll found a doorbell
};

}  // namespace bellows::tcp
