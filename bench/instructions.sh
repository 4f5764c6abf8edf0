#!/usr/bin/env bash
# Instructions per message of `bellows-perf -t local` (both ends of an shm channel on one
# thread), counted by valgrind's callgrind: the software cost of sender plus receiver as a count
# that does not move with the VM's speed, so one change can be weighed against another even
# when timings cannot tell them apart. Two run lengths are counted and subtracted, which
# cancels the setup (connect, accept, warm-up).
#   bench/instructions.sh BELLOWS_PERF [BELLOWS_PERF...]   (SIZES=8,512 to choose sizes)
# 8 B gives the same count every run; from 512 B on it moves by about 5%, since whether the
# ring grows for throughput depends on the clock, which valgrind slows.
# Needs valgrind (Debian package valgrind). Counts instructions, not time: a change that
# trades instructions for cache misses or atomics shows here as a gain it may not be.
set -euo pipefail
(($#)) || { echo "usage: $0 BELLOWS_PERF [BELLOWS_PERF...]" >&2; exit 2; }
command -v valgrind >/dev/null || { echo "$0: valgrind is not installed (apt-get install valgrind)" >&2; exit 2; }
short=20000; long=60000
count() {  # binary size messages -> instructions of the whole run
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$1" -t local -s "$2" -n "$3" -w 100 --cpus none 2>&1 |
    awk '/Collected/ { print $4 }'
}
SIZES=${SIZES:-8}
for size in ${SIZES//,/ }; do
  for binary in "$@"; do
    a=$(count "$binary" "$size" $short)
    b=$(count "$binary" "$size" $long)
    [[ -n $a && -n $b ]] || { echo "$0: $binary did not run under valgrind" >&2; exit 1; }
    echo "$binary  ${size} B: $(( (b - a) / (long - short) )) instructions per message"
  done
done
