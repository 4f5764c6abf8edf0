// bellows-info: what bellows can use on this machine and what stands in its way, before a
// program finds out the hard way. It prints the version, the providers (each RDMA device with
// its ports), the locked-memory and descriptor limits against what N channels need, and the
// default options; --json prints the same as one JSON object.

#include <bellows/bellows.hpp>

#include <infiniband/verbs.h>

#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

constexpr const char* usage = R"(usage: bellows-info [--channels N] [--json]
  --channels  the channel count to check the limits against (default 1000)
  --json      one JSON object instead of text
)";

// What the providers register, for the limits' arithmetic. An rdma registration pins whole
// pages, and the verbs provider gives each its own (fabric/verbs/registration_pool.cpp).
constexpr std::uint64_t page = 4096;
constexpr std::uint64_t control_block_bytes = 128;
// Per io_context and device: the staging ring (at least) and the receives' message slots.
constexpr std::uint64_t staging_bytes = (std::uint64_t{1} << 20) + 16 * 1024;
constexpr std::uint64_t shm_descriptors_per_peer = 4;

std::uint64_t pages_of(std::uint64_t bytes) { return (bytes + page - 1) / page * page; }

struct port_info {
  unsigned number;
  bool active;
  std::string state;
  std::string link_layer;
  unsigned active_mtu;
};
struct device_info {
  std::string name;
  std::vector<port_info> ports;
  std::string problem;  ///< why it could not be queried
};

std::vector<device_info> rdma_devices() {
  std::vector<device_info> found;
  int count = 0;
  ibv_device** list = ::ibv_get_device_list(&count);
  if (list == nullptr) return found;
  for (int i = 0; i < count; ++i) {
    device_info d{::ibv_get_device_name(list[i]), {}, {}};
    ibv_context* ctx = ::ibv_open_device(list[i]);
    ibv_device_attr attr{};
    if (ctx == nullptr || ::ibv_query_device(ctx, &attr) != 0) {
      d.problem = std::strerror(errno);
    } else {
      for (unsigned p = 1; p <= attr.phys_port_cnt; ++p) {
        ibv_port_attr port{};
        if (::ibv_query_port(ctx, static_cast<std::uint8_t>(p), &port) != 0) continue;
        const char* layer = port.link_layer == IBV_LINK_LAYER_ETHERNET ? "Ethernet (RoCE)" : "InfiniBand";
        d.ports.push_back(
            {p, port.state == IBV_PORT_ACTIVE, ::ibv_port_state_str(port.state), layer, 128u << port.active_mtu});
      }
    }
    if (ctx != nullptr) ::ibv_close_device(ctx);
    found.push_back(std::move(d));
  }
  ::ibv_free_device_list(list);
  return found;
}

/// The shm provider's arenas are memfds; a sandbox without memfd_create cannot use it.
bool shm_usable() {
  const int fd = ::memfd_create("bellows-info", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return false;
  ::close(fd);
  return true;
}

/// tcp:// needs only a TCP socket; a sandbox without network may not have one.
bool tcp_usable() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  ::close(fd);
  return true;
}

/// CAP_IPC_LOCK (root's, usually) exempts a process from the locked-memory limit.
bool may_lock_any_amount() {
  std::FILE* status = std::fopen("/proc/self/status", "r");
  if (status == nullptr) return false;
  char line[256];
  unsigned long long effective = 0;
  while (std::fgets(line, sizeof line, status) != nullptr)
    if (std::sscanf(line, "CapEff: %llx", &effective) == 1) break;
  std::fclose(status);
  constexpr unsigned cap_ipc_lock = 14;
  return (effective >> cap_ipc_lock) & 1;
}

struct limit {
  rlim_t soft, hard;
};
limit limit_of(int resource) {
  rlimit r{};
  ::getrlimit(resource, &r);
  return {r.rlim_cur, r.rlim_max};
}

std::string bytes_text(rlim_t bytes) {
  if (bytes == RLIM_INFINITY) return "unlimited";
  char text[32];
  if (bytes >= (rlim_t{1} << 20)) {
    std::snprintf(text, sizeof text, "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  } else {
    std::snprintf(text, sizeof text, "%llu KiB", static_cast<unsigned long long>(bytes >> 10));
  }
  return text;
}
std::string count_text(rlim_t n) { return n == RLIM_INFINITY ? "unlimited" : std::to_string(n); }
std::string json_number(rlim_t n) { return n == RLIM_INFINITY ? "null" : std::to_string(n); }
double seconds(std::chrono::nanoseconds d) { return std::chrono::duration<double>(d).count(); }

struct report {
  std::uint64_t channels = 1000;
  bool shm = false;
  bool tcp = false;
  std::vector<device_info> devices;
  limit memlock{}, nofile{};
  bool memlock_exempt = false;
  std::uint64_t idle_pinned = 0;      ///< per rdma channel and side
  std::uint64_t largest_ring = 0;     ///< added by a channel on the largest tier
  std::uint64_t pinned_needed = 0;    ///< `channels` idle, one busy, one io_context's staging
  std::uint64_t idle_registered = 0;  ///< per channel and side, as the budget counts it
  std::vector<std::string> warnings;
};

report survey(std::uint64_t channels) {
  report r;
  r.channels = channels;
  r.shm = shm_usable();
  r.tcp = tcp_usable();
  r.devices = rdma_devices();
  r.memlock = limit_of(RLIMIT_MEMLOCK);
  r.memlock_exempt = may_lock_any_amount();
  r.nofile = limit_of(RLIMIT_NOFILE);
  const auto tiers = bellows::default_tiers();
  r.idle_registered = tiers.front().ring_bytes() + control_block_bytes;
  r.idle_pinned = pages_of(tiers.front().ring_bytes()) + pages_of(control_block_bytes);
  r.largest_ring = tiers.back().ring_bytes();
  r.pinned_needed = channels * r.idle_pinned + r.largest_ring + staging_bytes;
  if (!r.shm) r.warnings.push_back("memfd_create fails here, so shm:// cannot work (a sandbox or seccomp filter?)");
  if (!r.devices.empty() && !r.memlock_exempt && r.memlock.soft != RLIM_INFINITY && r.memlock.soft < r.pinned_needed) {
    const auto fit = r.memlock.soft > r.largest_ring + staging_bytes
                         ? (r.memlock.soft - r.largest_ring - staging_bytes) / r.idle_pinned
                         : 0;
    r.warnings.push_back("the locked-memory limit (" + bytes_text(r.memlock.soft) + ") holds about " +
                         std::to_string(fit) + " idle rdma channels with one busy, not " + std::to_string(channels) +
                         ": registration will fail with 'Cannot allocate memory'. Raise it (ulimit -l, "
                         "LimitMEMLOCK= for a service; see docs/troubleshooting.md)");
  }
  for (const auto& d : r.devices)
    for (const auto& p : d.ports)
      if (!p.active)
        r.warnings.push_back(d.name + " port " + std::to_string(p.number) + " is " + p.state +
                             ", not active: rdma:// through it will not connect (rdma link shows why)");
  if (r.nofile.soft != RLIM_INFINITY && r.nofile.soft < 64)
    r.warnings.push_back("the descriptor limit (" + count_text(r.nofile.soft) + ") leaves room for very few peers");
  return r;
}

void print_text(const report& r) {
  const bellows::channel_options ch;
  const bellows::context_options ctx;
  std::printf("bellows %s\n\nproviders\n", BELLOWS_VERSION_STRING);
  std::printf("  shm    %s\n", r.shm ? "usable" : "not usable: memfd_create fails here");
  std::printf("  tcp    %s\n", r.tcp ? "usable" : "not usable: no TCP socket can be made here");
  if (r.devices.empty())
    std::printf("  rdma   no RDMA device (with none, Soft-RoCE: rdma link add rxe0 type rxe netdev IFACE)\n");
  for (const auto& d : r.devices) {
    if (!d.problem.empty()) std::printf("  rdma   %s: cannot be opened: %s\n", d.name.c_str(), d.problem.c_str());
    for (const auto& p : d.ports)
      std::printf("  rdma   %s port %u: %s, %s, MTU %u\n", d.name.c_str(), p.number, p.state.c_str(),
                  p.link_layer.c_str(), p.active_mtu);
  }
  std::printf("\n");
  std::printf("limits, against %llu channels (--channels N for another count)\n",
              static_cast<unsigned long long>(r.channels));
  std::printf("  locked memory  %s (hard %s)%s\n", bytes_text(r.memlock.soft).c_str(),
              bytes_text(r.memlock.hard).c_str(),
              r.memlock_exempt ? ", but this process has CAP_IPC_LOCK and is not bound by it" : "");
  std::printf(
      "    rdma pins about %s per idle channel and side, %s more for a channel on the largest tier and\n"
      "    %s of staging per io_context: %llu idle channels and one busy need %s\n",
      bytes_text(r.idle_pinned).c_str(), bytes_text(r.largest_ring).c_str(), bytes_text(staging_bytes).c_str(),
      static_cast<unsigned long long>(r.channels), bytes_text(r.pinned_needed).c_str());
  std::printf("  descriptors    %s (hard %s)\n", count_text(r.nofile.soft).c_str(), count_text(r.nofile.hard).c_str());
  std::printf("    shm uses %llu per peer process and none per channel\n\n",
              static_cast<unsigned long long>(shm_descriptors_per_peer));
  std::printf("default options\n  tiers");
  for (const auto& t : bellows::default_tiers()) std::printf(" %ux%u", t.slot_count, t.slot_size);
  std::printf(" (slots x bytes); an idle channel registers %llu B per side\n",
              static_cast<unsigned long long>(r.idle_registered));
  std::printf("  ack_timeout %.3g s, idle_shrink_after %.3g s, retry_after_denial %.3g s, connect_timeout %.3g s\n",
              seconds(ch.ack_timeout), seconds(ch.idle_shrink_after), seconds(ch.retry_after_denial),
              seconds(ch.connect_timeout));
  std::printf(
      "  max_message_size %s, registered_memory_budget %s, spin_before_sleep %.3g us\n",
      bytes_text(ch.max_message_size).c_str(),
      bytes_text(ctx.registered_memory_budget == SIZE_MAX ? RLIM_INFINITY : ctx.registered_memory_budget).c_str(),
      seconds(ctx.spin_before_sleep) * 1e6);
  for (const auto& w : r.warnings) std::printf("\nwarning: %s\n", w.c_str());
}

std::string quoted(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

void print_json(const report& r) {
  const bellows::channel_options ch;
  const bellows::context_options ctx;
  std::printf("{\"version\":%s,\"providers\":{\"shm\":{\"usable\":%s},\"tcp\":{\"usable\":%s},\"rdma\":{\"devices\":[",
              quoted(BELLOWS_VERSION_STRING).c_str(), r.shm ? "true" : "false", r.tcp ? "true" : "false");
  for (std::size_t i = 0; i < r.devices.size(); ++i) {
    const auto& d = r.devices[i];
    std::printf("%s{\"name\":%s,\"problem\":%s,\"ports\":[", i ? "," : "", quoted(d.name).c_str(),
                d.problem.empty() ? "null" : quoted(d.problem).c_str());
    for (std::size_t j = 0; j < d.ports.size(); ++j)
      std::printf("%s{\"port\":%u,\"state\":%s,\"link_layer\":%s,\"active_mtu\":%u}", j ? "," : "", d.ports[j].number,
                  quoted(d.ports[j].state).c_str(), quoted(d.ports[j].link_layer).c_str(), d.ports[j].active_mtu);
    std::printf("]}");
  }
  std::printf("]}},");
  std::printf(
      "\"limits\":{\"channels\":%llu,\"memlock\":{\"soft\":%s,\"hard\":%s,\"exempt\":%s,\"rdma_needed\":%llu},"
      "\"nofile\":{\"soft\":%s,\"hard\":%s,\"shm_per_peer\":%llu}},",
      static_cast<unsigned long long>(r.channels), json_number(r.memlock.soft).c_str(),
      json_number(r.memlock.hard).c_str(), r.memlock_exempt ? "true" : "false",
      static_cast<unsigned long long>(r.pinned_needed), json_number(r.nofile.soft).c_str(),
      json_number(r.nofile.hard).c_str(), static_cast<unsigned long long>(shm_descriptors_per_peer));
  std::printf("\"defaults\":{\"tiers\":[");
  const auto tiers = bellows::default_tiers();
  for (std::size_t i = 0; i < tiers.size(); ++i)
    std::printf("%s{\"slot_size\":%u,\"slot_count\":%u}", i ? "," : "", tiers[i].slot_size, tiers[i].slot_count);
  std::printf(
      "],\"ack_timeout_s\":%g,\"idle_shrink_after_s\":%g,\"retry_after_denial_s\":%g,\"connect_timeout_s\":%g,"
      "\"max_message_size\":%llu,\"registered_memory_budget\":%s,\"spin_before_sleep_us\":%g},",
      seconds(ch.ack_timeout), seconds(ch.idle_shrink_after), seconds(ch.retry_after_denial),
      seconds(ch.connect_timeout), static_cast<unsigned long long>(ch.max_message_size),
      ctx.registered_memory_budget == SIZE_MAX ? "null" : std::to_string(ctx.registered_memory_budget).c_str(),
      seconds(ctx.spin_before_sleep) * 1e6);
  std::printf("\"warnings\":[");
  for (std::size_t i = 0; i < r.warnings.size(); ++i) std::printf("%s%s", i ? "," : "", quoted(r.warnings[i]).c_str());
  std::printf("]}\n");
}

}  // namespace

int main(int argc, char** argv) {
  bool json = false;
  std::uint64_t channels = 1000;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(usage, stdout);
      return 0;
    }
    if (arg == "--json") {
      json = true;
      continue;
    }
    char* end = nullptr;
    if (arg == "--channels" && i + 1 < argc && argv[i + 1][0] >= '0' && argv[i + 1][0] <= '9') {
      channels = std::strtoull(argv[++i], &end, 10);
      if (*end == '\0' && channels > 0) continue;
    }
    std::fprintf(stderr, "bellows-info: bad argument '%s'\n%s", arg.c_str(), usage);
    return 2;
  }
  const report r = survey(channels);
  if (json) {
    print_json(r);
  } else {
    print_text(r);
  }
  return 0;
}
