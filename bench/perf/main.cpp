// bellows-perf: latency, bandwidth, message rate, enlargement time and the cost of many idle
// channels, between two processes, in the manner of ucx_perftest. Prints figures, asserts
// nothing. By default it forks its peer and talks to it over shm; across hosts, start
// `bellows-perf --serve URI` on one and `bellows-perf --connect URI` on the other. The options
// are in `usage` below, which --help prints.

#include "command_line.hpp"
#include "modes.hpp"
#include "peer.hpp"
#include "process.hpp"

#include <bellows/describe_problem.hpp>

#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>

#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <optional>
#include <sstream>
#include <stdexcept>

namespace {

constexpr const char* usage =
    R"(usage: bellows-perf [-t MODES] [-s SIZES] [-n ITERATIONS] [-w WARMUP] [--channels COUNTS]
                    [--active N] [--outstanding N] [--buffer-per-receive] [--fixed-large] [--tiers T]
                    [--view] [--budget BYTES] [--one-copy-above BYTES] [--cpus A,B|none] [--json]
                    [--uri URI | --serve URI | --connect URI]
  MODES   comma-separated: lat (ping-pong, half round trip), bw (streaming), rate (8 B
          streaming through try_send), enlarge (first message on a fresh channel: with the
          handshake, fragmented, already enlarged), scale (idle channels beside active
          ones), herd (COUNTS fresh channels enlarge at the same moment), local (streaming
          with both ends in this process on one thread: the software cost per message, sender
          plus receiver; shm only, default sizes 8,512,4K); default lat,bw
  SIZES   comma-separated bytes, with K or M suffixes (powers of 1024): 8,64K,1M
  COUNTS  scale: idle channel counts, one round each: 0,1000,10000; herd: channels per round
  BYTES   the peer's registered-memory budget (herd: a short one forces denials)
  --outstanding  bw: sends in flight at once, and receives the peer keeps posted (default 1;
          ucx_perftest's tag_bw keeps 32 of each unless given -O); the peer's receives share one
          buffer, as ucx_perftest's do, unless --buffer-per-receive gives each its own
  T       a tier table, SLOTSxBYTES,... ascending (default 16x256,16x4096,16x65536); a
          table the library refuses fails the connect with invalid_argument
  --one-copy-above  both sides' channel_options::one_copy_above (default: the provider's;
          over shm no message goes in one copy unless given, 0 for every one above the frames)
  --view  bw: the peer receives with async_receive_view (the bytes stay in the ring, or in
          memory the view owns) instead of into a buffer of its own
  --cpus  the CPUs the measuring process and its forked peer are pinned to (default 0,1)
  --json  one JSON object per figure, for scripts (bench/compare.sh, ab-perf)
  --uri   where the forked peer listens (default shm://perf-PID)
  --serve be only the peer, listening on URI; --connect: only measure, against such a peer
)";

struct command_line {
  perf::settings settings;
  std::string uri;      ///< where the forked peer listens (default shm://perf-PID)
  std::string serve;    ///< be only the peer, listening here
  std::string connect;  ///< only measure, against a peer listening here
  int client_cpu = 0;
  int peer_cpu = 1;
  bool help = false;
};

command_line parse(int argc, char** argv) {
  command_line c;
  auto& s = c.settings;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      c.help = true;
      continue;
    }
    if (flag == "--json") {
      s.json = true;
      continue;
    }
    if (flag == "--fixed-large") {
      s.fixed_large = true;
      continue;
    }
    if (flag == "--view") {
      s.view = true;
      continue;
    }
    if (flag == "--buffer-per-receive") {
      s.buffer_per_receive = true;
      continue;
    }
    if (i + 1 >= argc) throw std::invalid_argument(flag + " needs a value");
    const std::string value = argv[++i];
    if (flag == "-t") {
      s.modes = perf::parse_list<std::string>(value, [](const std::string& m) {
        for (const char* known : {"lat", "bw", "rate", "enlarge", "scale", "herd", "local"})
          if (m == known) return m;
        throw std::invalid_argument("unknown mode " + m);
      });
    } else if (flag == "-s") {
      s.sizes = perf::parse_list<std::uint64_t>(value, perf::parse_quantity);
    } else if (flag == "-n") {
      s.iterations = perf::parse_quantity(value);
    } else if (flag == "-w") {
      s.warmup = perf::parse_quantity(value);
    } else if (flag == "--channels") {
      s.channel_counts = perf::parse_list<std::uint64_t>(value, perf::parse_quantity);
    } else if (flag == "--tiers") {
      s.tiers = perf::parse_list<bellows::tier>(value, [](const std::string& t) {
        unsigned slots = 0, bytes = 0;
        char x = 0;
        if (std::sscanf(t.c_str(), "%u%c%u", &slots, &x, &bytes) != 3 || x != 'x')
          throw std::invalid_argument("--tiers takes SLOTSxBYTES,...: " + t);
        return bellows::tier{bytes, slots};
      });
    } else if (flag == "--one-copy-above") {
      s.one_copy_above = perf::parse_quantity(value);
    } else if (flag == "--budget") {
      s.peer_budget = perf::parse_quantity(value);
    } else if (flag == "--outstanding") {
      s.outstanding = perf::parse_quantity(value);
      if (s.outstanding == 0) throw std::invalid_argument("--outstanding takes 1 or more sends");
    } else if (flag == "--active") {
      s.active = std::max<std::uint64_t>(1, perf::parse_quantity(value));
    } else if (flag == "--uri") {
      c.uri = value;
    } else if (flag == "--serve") {
      c.serve = value;
    } else if (flag == "--connect") {
      c.connect = value;
    } else if (flag == "--cpus") {
      if (value == "none")
        c.client_cpu = c.peer_cpu = -1;
      else if (std::sscanf(value.c_str(), "%d,%d", &c.client_cpu, &c.peer_cpu) != 2)
        throw std::invalid_argument("--cpus takes A,B or none");
    } else {
      throw std::invalid_argument("unknown option " + flag);
    }
  }
  for (const auto size : s.sizes)
    if (size == 0 || size > s.max_message) throw std::invalid_argument("sizes go from 1 B to 4 MiB");
  if (!s.tiers.empty()) {
    bellows::channel_options options;
    options.tiers = s.tiers;
    if (auto problem = bellows::describe_problem("shm://tiers", options); !problem.empty())
      throw std::invalid_argument("--tiers: " + problem);
  }
  return c;
}

int run_measurement(const std::string& uri, const perf::settings& s) {
  asio::io_context io;
  std::optional<std::string> failure;
  asio::co_spawn(io, perf::measure(uri, s), [&](std::exception_ptr e) {
    try {
      if (e) std::rethrow_exception(e);
    } catch (const std::exception& x) {
      failure = x.what();
    }
  });
  io.run();
  if (failure) std::fprintf(stderr, "bellows-perf: %s\n", failure->c_str());
  return failure ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  command_line c;
  try {
    c = parse(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bellows-perf: %s\n%s", e.what(), usage);
    return 2;
  }
  if (c.help) {
    std::fputs(usage, stdout);
    return 0;
  }
  if (!c.serve.empty())
    return perf::run_peer(c.serve, c.settings.max_message, c.settings.peer_budget, c.settings.one_copy_above, -1);
  if (!c.connect.empty()) return run_measurement(c.connect, c.settings);

  const std::string uri = c.uri.empty() ? "shm://perf-" + std::to_string(::getpid()) : c.uri;
  int ready[2];
  if (::pipe(ready) != 0) return 2;
  const pid_t peer = ::fork();
  if (peer == 0) {
    ::close(ready[0]);
    perf::pin_to(c.peer_cpu);
    ::_exit(perf::run_peer(uri, c.settings.max_message, c.settings.peer_budget, c.settings.one_copy_above, ready[1]));
  }
  ::close(ready[1]);
  perf::pin_to(c.client_cpu);
  pollfd p{ready[0], POLLIN, 0};
  char byte = 0;
  int status = 2;
  if (::poll(&p, 1, 10'000) == 1 && ::read(ready[0], &byte, 1) == 1)
    status = run_measurement(uri, c.settings);
  else
    std::fprintf(stderr, "bellows-perf: the peer did not start listening on %s\n", uri.c_str());
  // The figures are out; the peer serves until told otherwise.
  ::kill(peer, SIGKILL);
  ::waitpid(peer, nullptr, 0);
  return status;
}
