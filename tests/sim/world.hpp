#pragma once
// A deterministic two-endpoint simulation of one channel: the library's channel core on each
// side, over sim_providers, with a virtual clock, a seeded event queue and fault injection
// (torn writes, delayed doorbells, slow provisioning, a small budget, a side that dies at a
// named protocol step). The application side sends whole messages, keeps a zero-copy receive
// pending, holds what it receives for a while, and checks each delivery byte for byte against
// what was sent.

#include "proto/channel_core.hpp"
#include "sim/sim_provider.hpp"

#include <bellows/tier.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <queue>
#include <random>
#include <string>
#include <system_error>
#include <vector>

namespace bellows::sim {

using namespace std::chrono_literals;
using proto::clock_time;

enum class side { a = 0, b = 1 };
inline side other(side s) { return s == side::a ? side::b : side::a; }
inline const char* to_string(side s) { return s == side::a ? "A" : "B"; }

struct fault_options {
  double torn_write_rate = 0;                       ///< share of writes placed in two steps
  std::chrono::nanoseconds torn_write_delay = 5us;  ///< longest gap between the two steps
  double doorbell_delay_rate = 0;                   ///< share of doorbells delivered late (hence reordered)
  std::chrono::nanoseconds doorbell_delay = 50us;   ///< longest extra delay
  std::chrono::nanoseconds provision_delay_min = 1us;
  std::chrono::nanoseconds provision_delay_max = 1us;
  std::size_t budget_bytes = SIZE_MAX;               ///< registered memory each endpoint may hold
  std::chrono::nanoseconds app_release_delay = 0us;  ///< longest time the app holds a frame
  double receive_cancel_rate = 0;  ///< share of receives the app cancels within receive_cancel_delay, then posts again
  std::chrono::nanoseconds receive_cancel_delay = 20us;
};

struct world_options {
  std::uint64_t seed = 1;
  std::vector<tier> tiers = default_tiers();
  std::chrono::nanoseconds ack_timeout = 1ms;
  std::chrono::nanoseconds idle_shrink_after = 10ms;
  std::chrono::nanoseconds retry_after_denial = 2ms;
  std::chrono::nanoseconds link_latency = 1us;       ///< doorbell delivery time
  std::chrono::nanoseconds death_detection = 100us;  ///< until the survivor notices
  fault_options faults;
  /// The side that dies when it reaches the step, as its process would die there.
  std::optional<std::pair<side, proto::step>> death;
};

/// What happened, for tests and for the demo's narration.
struct trace_event {
  enum class what {
    enlarge_requested,
    shrink_requested,
    provisioned,
    acked_granted,
    acked_denied,
    ack_timed_out,
    ring_released,
    peer_died,
    failed,
    closed,
  } kind;
  clock_time at;
  side where;
  std::uint32_t from_tier = 0;
  std::uint32_t to_tier = 0;
  std::uint64_t bytes = 0;  ///< trigger message length, or ring size
};

struct endpoint_report {
  std::uint64_t sends_ok = 0;
  std::uint64_t ack_timeouts = 0;  ///< requests that went unanswered past ack_timeout (sends went on)
  std::uint64_t sends_failed = 0;  ///< any other error
  std::uint64_t delivered = 0;
  std::uint64_t delivered_bytes = 0;
  std::uint64_t receives_cancelled = 0;        ///< completed as cancelled (receive_cancel_rate)
  std::uint64_t cancelled_part_way = 0;        ///< of those, taken part-way through a fragmented message
  std::uint64_t mismatches = 0;                ///< deliveries differing from the next successfully sent message
  std::uint64_t frame_corruptions = 0;         ///< frame bytes changed while the app still held them
  std::optional<std::error_code> receive_end;  ///< how the incoming stream ended
  std::optional<std::error_code> close_result;
  std::optional<std::error_code> failure;
  bool dead = false;
};

class world {
 public:
  explicit world(world_options options);
  ~world();
  world(const world&) = delete;
  world& operator=(const world&) = delete;

  /// Submits a message from `from`, split into `pieces` gather pieces. Returns its send id.
  std::uint64_t send(side from, std::vector<std::byte> message, std::size_t pieces = 1);
  void close(side s);
  void kill(side s);
  /// The receiver on side `s` raises or lowers its pressure bit for the peer.
  void set_pressure(side s, bool on);
  /// Changes how much memory side `s` may register from now on.
  void set_budget(side s, std::size_t bytes);

  /// Runs events until `done()` holds, nothing is left to do, or `limit` of virtual time passes.
  /// A run that spends max_events_at_one_instant events without the clock moving is a livelock:
  /// it stops and check_invariants() reports it.
  bool run_until(const std::function<bool()>& done, std::chrono::nanoseconds limit);
  static constexpr std::uint64_t max_events_at_one_instant = 1'000'000;
  /// Runs every event due within `d`, then sets the clock to now + d.
  void run_for(std::chrono::nanoseconds d);
  bool idle() const;

  clock_time now() const noexcept { return now_; }
  const endpoint_report& report(side s) const;
  std::uint32_t send_tier(side s) const;
  std::uint32_t receive_tier(side s) const;
  std::size_t registered_bytes(side s) const;
  /// Control block plus every ring the endpoint's receiver still holds; must equal
  /// registered_bytes while no provisioning is in progress.
  std::size_t live_ring_bytes(side s) const;
  std::size_t pending_sends(side s) const;
  const proto::sender& sender_of(side s) const;
  const proto::receiver& receiver_of(side s) const;
  channel_stats stats(side s) const;
  const std::vector<trace_event>& trace() const noexcept { return trace_; }
  std::function<void(const trace_event&)> on_trace;
  const proto::tier_table& tiers() const noexcept;
  /// Checks invariants that must hold between events; returns a description of the first
  /// broken one, or an empty string.
  std::string check_invariants() const;

 private:
  struct endpoint;
  struct event {
    clock_time at;
    std::uint64_t order;
    std::function<void()> run;
    bool operator>(const event& o) const { return at != o.at ? at > o.at : order > o.order; }
  };

  void schedule(std::chrono::nanoseconds delay, std::function<void()> run);
  bool run_one();
  std::chrono::nanoseconds random_delay(std::chrono::nanoseconds max);
  bool chance(double p);
  void emit(trace_event::what kind, side where, std::uint32_t from, std::uint32_t to, std::uint64_t bytes);

  endpoint& ep(side s) { return *endpoints_[static_cast<int>(s)]; }
  const endpoint& ep(side s) const { return *endpoints_[static_cast<int>(s)]; }
  struct executor;
  void activate(side s);
  /// Carries out side `s`'s core actions, as the reactor's executor does for a real channel.
  void run(side s);
  void receive_next(side s);
  void on_delivered(side s, proto::view_done& done);
  void on_send_done(side s, const proto::send_done& done);
  void provision(side s, proto::provision request);
  void ring_peer(side s);
  void arm_timer(side s);
  void note_failure(side s);
  void fail_endpoint(side s, std::error_code ec);

  world_options options_;
  std::mt19937_64 rng_;
  clock_time now_{};
  std::uint64_t order_ = 0;
  std::priority_queue<event, std::vector<event>, std::greater<>> events_;
  std::unique_ptr<endpoint> endpoints_[2];
  std::vector<trace_event> trace_;
  clock_time instant_{};
  std::uint64_t events_at_instant_ = 0;
  bool livelocked_ = false;
};

}  // namespace bellows::sim
