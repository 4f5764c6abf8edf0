#pragma once
// An rdma:// opener built from raw verbs: it speaks the handshake of fabric/verbs/handshake.hpp
// by hand, so a test can make it do what bellows never would: lie in an ack, replay a recorded
// grant, write through one queue pair with another channel's key. Its control block and first
// ring are plain registrations (REMOTE_WRITE), as any peer may choose for its own memory.

#include "fabric/verbs/cm_channel.hpp"
#include "fabric/verbs/handshake.hpp"
#include "support/rdma.hpp"

#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <array>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

namespace bellows::test {

/// Page-aligned, zeroed memory registered on `pd` for remote writes.
struct registered {
  void* data = nullptr;
  ibv_mr* mr = nullptr;
  registered(ibv_pd* pd, std::size_t bytes) {
    data = std::aligned_alloc(4096, bytes);
    std::memset(data, 0, bytes);
    mr = ::ibv_reg_mr(pd, data, bytes, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
  }
  ~registered() {
    if (mr != nullptr) ::ibv_dereg_mr(mr);
    std::free(data);
  }
  registered(const registered&) = delete;
  registered& operator=(const registered&) = delete;
  std::byte* bytes() const { return static_cast<std::byte*>(data); }
  std::uint64_t address() const { return reinterpret_cast<std::uintptr_t>(data); }
};

/// A protection domain on rdma_cm's context of the device, for raw peers' memory.
inline ibv_pd* raw_protection_domain() {
  int device_count = 0;
  ibv_context** contexts = ::rdma_get_devices(&device_count);
  REQUIRE((contexts != nullptr && device_count > 0));
  ibv_pd* pd = ::ibv_alloc_pd(contexts[0]);
  ::rdma_free_devices(contexts);
  REQUIRE(pd != nullptr);
  return pd;
}

inline bool post_write(ibv_qp* qp, const void* bytes, std::size_t length, std::uint64_t address, std::uint32_t rkey,
                       std::uint64_t wr_id = 0) {
  ibv_sge sge{reinterpret_cast<std::uintptr_t>(bytes), static_cast<std::uint32_t>(length), 0};
  ibv_send_wr wr{};
  wr.wr_id = wr_id;
  wr.opcode = IBV_WR_RDMA_WRITE;
  wr.send_flags = IBV_SEND_INLINE | IBV_SEND_SIGNALED;
  wr.sg_list = &sge;
  wr.num_sge = 1;
  wr.wr.rdma.remote_addr = address;
  wr.wr.rdma.rkey = rkey;
  ibv_send_wr* bad = nullptr;
  return ::ibv_post_send(qp, &wr, &bad) == 0;
}

inline bool post_doorbell(ibv_qp* qp, std::uint32_t channel, std::uint64_t address, std::uint32_t rkey) {
  ibv_send_wr wr{};
  wr.opcode = IBV_WR_RDMA_WRITE_WITH_IMM;
  wr.imm_data = htonl(channel);
  wr.wr.rdma.remote_addr = address;
  wr.wr.rdma.rkey = rkey;
  ibv_send_wr* bad = nullptr;
  return ::ibv_post_send(qp, &wr, &bad) == 0;
}

class raw_opener {
 public:
  static constexpr int receive_count = 8;
  static constexpr std::size_t slot = 64;

  /// `key`: the pre-shared key it proves (empty: it demands no proof).
  raw_opener(ibv_pd* pd, std::string key = {})
      : control(pd, 4096), ring(pd, 4096), pd_(pd), key_(std::move(key)), inbox_(pd, 4096) {
    REQUIRE((control.mr && ring.mr && inbox_.mr));
    request.channel_id = 7;
    request.max_message_size = std::uint64_t{1} << 32;
    request.tiers = bellows::default_tiers();
    request.demands_proof = !key_.empty();
    request.nonce = fabric::fresh_nonce();
  }

  /// Connects to `port`; once the connection is up it SENDs its grant (or `replayed`, verbatim).
  void open(verbs::cm_channel& cm, std::uint16_t port, std::optional<std::vector<std::byte>> replayed = {}) {
    auto bytes = verbs::handshake::encode(request);
    REQUIRE(bytes);
    connect_to(
        cm, conn, port, std::string(reinterpret_cast<const char*>(bytes->data()), bytes->size()),
        [&](rdma_cm_id* id) {
          if (!conn.create_queue_pair(id, pd_)) return false;
          // Receives for the acceptor's grant and the honest side's doorbells.
          for (int i = 0; i < receive_count; ++i)
            if (!post_receive(id->qp, i)) return false;
          return true;
        },
        [this, replayed](const verbs::cm_event& e) {
          if (e.type == RDMA_CM_EVENT_ESTABLISHED) {
            auto a = verbs::handshake::decode_acceptance(e.private_data);
            REQUIRE(a);
            acceptance = *a;
            sent_grant = replayed ? *replayed : own_grant();
            REQUIRE(send(sent_grant));
          } else if (e.type == RDMA_CM_EVENT_DISCONNECTED || e.type == RDMA_CM_EVENT_REJECTED) {
            disconnected = true;
          }
        });
  }

  /// Takes its completions: the acceptor's grant or refusal, and failed writes.
  void poll() {
    if (conn.own_cq == nullptr) return;
    ibv_wc wc[8];
    const int n = ::ibv_poll_cq(conn.own_cq, 8, wc);
    for (int i = 0; i < n; ++i) {
      if (wc[i].status != IBV_WC_SUCCESS) {
        failed_statuses.push_back(wc[i].status);
        continue;
      }
      if (wc[i].opcode != IBV_WC_RECV) continue;
      const auto* at = inbox_.bytes() + wc[i].wr_id * slot;
      const std::span<const std::byte> message(at, wc[i].byte_len);
      if (verbs::handshake::is_refusal(message)) {
        refusal = verbs::handshake::decode_refusal(message);
      } else {
        auto g = verbs::handshake::decode_grant(message, fabric::handshake_role::accepting);
        REQUIRE(g);
        their_grant = *g;
      }
      post_receive(conn.id->qp, static_cast<int>(wc[i].wr_id));
    }
  }

  bool send(std::span<const std::byte> bytes) {
    ibv_sge sge{reinterpret_cast<std::uintptr_t>(bytes.data()), static_cast<std::uint32_t>(bytes.size()), 0};
    ibv_send_wr wr{};
    wr.opcode = IBV_WR_SEND;
    wr.send_flags = IBV_SEND_INLINE;
    wr.sg_list = &sge;
    wr.num_sge = 1;
    ibv_send_wr* bad = nullptr;
    return ::ibv_post_send(conn.id->qp, &wr, &bad) == 0;
  }

  ibv_qp* qp() const { return conn.id->qp; }

  verbs::open_request request;
  connection conn;
  registered control, ring;
  std::optional<verbs::open_acceptance> acceptance;
  std::vector<std::byte> sent_grant;
  std::optional<verbs::memory_grant> their_grant;
  std::optional<std::error_code> refusal;
  std::vector<ibv_wc_status> failed_statuses;
  bool disconnected = false;

 private:
  std::vector<std::byte> own_grant() const {
    verbs::memory_grant g{{control.mr->rkey, control.address()}, {ring.mr->rkey, ring.address()}};
    if (!key_.empty())
      g.proof = fabric::prove(key_, fabric::handshake_role::connecting, request.nonce, acceptance->nonce,
                              request.channel_id, acceptance->channel_id);
    const auto bytes = verbs::handshake::encode(g, fabric::handshake_role::connecting);
    return {bytes.begin(), bytes.end()};
  }

  bool post_receive(ibv_qp* qp, int index) {
    ibv_sge sge{reinterpret_cast<std::uintptr_t>(inbox_.bytes() + index * slot), static_cast<std::uint32_t>(slot),
                inbox_.mr->lkey};
    ibv_recv_wr wr{};
    wr.wr_id = static_cast<std::uint64_t>(index);
    wr.sg_list = &sge;
    wr.num_sge = 1;
    ibv_recv_wr* bad = nullptr;
    return ::ibv_post_recv(qp, &wr, &bad) == 0;
  }

  ibv_pd* pd_;
  std::string key_;
  registered inbox_;
};

}  // namespace bellows::test
