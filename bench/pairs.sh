#!/usr/bin/env bash
# One message size over one transport, bellows-perf against ucx_perftest's tag_bw, alternated
# pair by pair at each depth: for a single figure on this VM, whose speed drifts within minutes,
# many short interleaved pairs say more than compare.sh's three rounds of everything.
#   [ROUNDS=7] [SIZE=1M] [DEPTHS=1,32] [TRANSPORT=tcp|shm] bench/pairs.sh [BUILD_DIR]
# Prints one line per pair (MB/s each) and, per depth, the medians and their ratio.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
perf=$build/bench/bellows-perf
rounds=${ROUNDS:-7}
size=${SIZE:-1M}
transport=${TRANSPORT:-tcp}
IFS=, read -r -a depths <<<"${DEPTHS:-1,32}"
[[ -x $perf ]] || { echo "pairs: $perf not found; build first" >&2; exit 2; }
command -v ucx_perftest >/dev/null || { echo "pairs: ucx_perftest not found (apt-get install ucx-utils)" >&2; exit 2; }
# ucx_run from compare.sh: the same way of starting ucx_perftest's two sides.
source <(sed -n '/^ucx_run()/,/^}/p' "$root/bench/compare.sh")

bytes=$(numfmt --from=iec "$size")
case $transport in
  tcp) uri=(--uri "tcp://127.0.0.1:$((20000 + RANDOM % 20000))") tls=tcp ;;
  shm) uri=() tls=posix,cma,self ;;
  *) echo "pairs: TRANSPORT is tcp or shm" >&2; exit 2 ;;
esac

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
declare -A ours theirs
for round in $(seq 1 "$rounds"); do
  for depth in "${depths[@]}"; do
    b=$("$perf" -t bw -s "$size" --outstanding "$depth" "${uri[@]}" | awk '/^bw/ { print $8 }')
    u=$(ucx_run "$tls" -t tag_bw -s "$bytes" -n 2000 -O "$depth" | awk '{ print $3 }')
    [[ -n $b && -n $u ]] || { echo "pairs: round $round at depth $depth gave no figure" >&2; exit 1; }
    echo "round $round depth $depth: bellows $b MB/s, ucx $u MB/s"
    ours[$depth]+="$b "$'\n'
    theirs[$depth]+="$u "$'\n'
  done
done
for depth in "${depths[@]}"; do
  b=$(median <<<"${ours[$depth]%$'\n'}")
  u=$(median <<<"${theirs[$depth]%$'\n'}")
  echo "depth $depth, $size over $transport, medians of $rounds: bellows $b MB/s, ucx $u MB/s, ratio $(awk -v b="$b" -v u="$u" 'BEGIN { printf "%.2f", b / u }')"
done
