#!/usr/bin/env bash
# Runs bellows_bench and ucx_perftest (UCX over shared memory: UCX_TLS=posix,self) one after the
# other on this machine, in several rounds, and prints their figures side by side with the ratio
# bellows / UCX, then the median ratios.
#   [ROUNDS=3] [ITERATIONS=100000] [MESSAGES=20000] [VERBOSE=1] bench/compare_ucx.sh [path/to/bellows_bench]
# Installs Debian's ucx-utils when ucx_perftest is missing (needs root). Figures, not verdicts:
# run it on an otherwise idle machine.
set -euo pipefail

bench=${1:-"$(dirname "$0")/../build/bench/bellows_bench"}
iterations=${ITERATIONS:-100000}
messages=${MESSAGES:-20000}

if [[ ! -x $bench ]]; then
  echo "compare_ucx: $bench not found; build first (scripts/setup.sh build)" >&2
  exit 2
fi
if ! command -v ucx_perftest >/dev/null; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "compare_ucx: ucx_perftest missing; run as root or: apt-get install ucx-utils" >&2
    exit 2
  fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ucx-utils >/dev/null
fi

# One ucx_perftest run: a server in the background, then the client against localhost. Prints
# the client's "Final:" line. The client retries while the server is still starting.
ucx_run() {
  local port=$((20000 + RANDOM % 20000)) out
  UCX_TLS=posix,self timeout 120 ucx_perftest -p "$port" -c 1 "$@" >/dev/null 2>&1 &
  local server=$!
  for attempt in 1 2 3 4 5 6 7 8 9 10; do
    sleep 0.2
    if out=$(UCX_TLS=posix,self timeout 120 ucx_perftest -p "$port" -c 0 localhost "$@" 2>/dev/null | grep '^Final:'); then
      wait "$server" || true
      echo "$out"
      return 0
    fi
  done
  kill "$server" 2>/dev/null || true
  echo "compare_ucx: ucx_perftest $* did not run" >&2
  return 1
}

# The same pinning for both: the measuring side on CPU 0, its peer on CPU 1 (on a virtual machine
# the host may still move those CPUs around, which is why there are several rounds).
rounds=${ROUNDS:-3}
printf '%-6s %11s %11s %7s %11s %11s %7s %11s %11s %7s\n' round "p50 us" "UCX p50" ratio "avg us" "UCX avg" ratio \
  "MB/s" "UCX MB/s" ratio
ratios=()
for round in $(seq 1 "$rounds"); do
  ours=$("$bench" --iterations "$iterations" --messages "$messages" --cpus 0,1)
  ucx_lat=$(ucx_run -t tag_lat -s 8 -n "$iterations")
  ucx_bw=$(ucx_run -t tag_bw -s 65536 -n "$messages")
  [[ -n ${VERBOSE:-} ]] && printf '%s\n%s\n%s\n' "$ours" "$ucx_lat" "$ucx_bw"

  # bellows_bench: "... lat 8 B  p50 X us  avg Y us ..." and "... bw 65536 B  Z MB/s  R msg/s ...".
  # ucx_perftest's Final line: iterations, p50, avg, overall latency (us), bandwidth average and
  # overall (its MB/s are 2^20 bytes per second), message rate average and overall.
  read -r our_p50 our_avg < <(awk '/ lat /{for(i=1;i<=NF;i++){if($i=="p50")p=$(i+1);if($i=="avg")a=$(i+1)}} END{print p, a}' <<<"$ours")
  our_mbs=$(awk '/ bw /{for(i=1;i<=NF;i++) if($i=="MB/s") m=$(i-1)} END{print m}' <<<"$ours")
  read -r ucx_p50 ucx_avg < <(awk '{print $3, $4}' <<<"$ucx_lat")
  ucx_mbs=$(awk '{printf "%.1f", $7 * 1.048576}' <<<"$ucx_bw")  # to 10^6 bytes, as bellows_bench prints
  line=$(awk -v r="$round" -v op="$our_p50" -v up="$ucx_p50" -v oa="$our_avg" -v ua="$ucx_avg" -v om="$our_mbs" -v um="$ucx_mbs" \
    'BEGIN{printf "%-6s %11.3f %11.3f %7.2f %11.3f %11.3f %7.2f %11.1f %11.1f %7.2f", r, op, up, op/up, oa, ua, oa/ua, om, um, om/um}')
  echo "$line"
  ratios+=("$line")
done
median() { printf '%s\n' "${ratios[@]}" | awk -v c="$1" '{print $c}' | sort -g | awk '{v[NR]=$1} END{print v[int((NR+1)/2)]}'; }
echo "median bellows/UCX: 8 B latency p50 $(median 4)x, average $(median 7)x; 64 KiB bandwidth $(median 10)x"
echo "(latency ratio above 1: bellows is slower; bandwidth ratio above 1: bellows is faster)"
