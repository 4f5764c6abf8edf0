#!/usr/bin/env bash
# End to end: bellows_file_transfer between two processes over shm. A random 64 MiB file must
# arrive with the same sha256; then each failure must be reported clearly, with a failing
# status, and leave no file under the destination's name:
#   missing source, unwritable destination, full disk, sender vanishing, receiver vanishing.
#   tests/examples/file_transfer_test.sh path/to/bellows_file_transfer
set -euo pipefail
transfer=$1
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  mountpoint -q "$work/small" 2>/dev/null && umount "$work/small"
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "file_transfer_test: $*" >&2; exit 1; }
n=0

# start_receiver DEST [prefix command...]: starts a receiver on a fresh URI, waits (bounded)
# until it listens; sets $uri, $receiver and $receiver_log.
start_receiver() {
  local dest=$1
  shift
  n=$((n + 1))
  uri="shm://file-transfer-test-$$-$n"
  receiver_log=$work/receiver-$n.log
  "$@" "$transfer" receive "$uri" "$dest" 2>"$receiver_log" &
  receiver=$!
  pids+=("$receiver")
  for _ in $(seq 1 100); do
    grep -q "^listening" "$receiver_log" && return 0
    kill -0 "$receiver" 2>/dev/null || return 0  # it failed before listening: the caller checks
    sleep 0.05
  done
  fail "the receiver did not start: $(cat "$receiver_log")"
}
# expect_exit PID STATUS: waits for PID and checks its exit status.
expect_exit() {
  local status=0
  wait "$1" || status=$?
  [[ $status -eq $2 ]] || fail "pid $1 exited with $status, expected $2"
}

echo "1. a random 64 MiB file arrives intact"
head -c $((64 << 20)) /dev/urandom >"$work/source"
start_receiver "$work/copy"
"$transfer" send "$uri" "$work/source" 2>"$work/sender.log" || fail "send failed: $(cat "$work/sender.log")"
expect_exit "$receiver" 0
cat "$work/sender.log" "$receiver_log"
[[ $(sha256sum <"$work/source") == $(sha256sum <"$work/copy") ]] || fail "the copy differs from the source"
grep -q "verified by the receiver" "$work/sender.log" || fail "the sender did not report the verification"
[[ ! -e $work/copy.part ]] || fail "the partial file was left behind"

echo "2. a missing source"
if "$transfer" send shm://nobody "$work/no-such-file" 2>"$work/err"; then fail "sending a missing file succeeded"; fi
grep -q "cannot read $work/no-such-file: No such file or directory" "$work/err" || fail "unclear: $(cat "$work/err")"

echo "3. an unwritable destination"
if "$transfer" receive shm://unused "$work/no-such-dir/copy" 2>"$work/err"; then fail "receiving into nowhere succeeded"; fi
grep -q "cannot write $work/no-such-dir/copy.part: No such file or directory" "$work/err" ||
  fail "unclear: $(cat "$work/err")"

echo "4. a full disk"
if unshare -m true 2>/dev/null; then
  # The receiver runs in its own mount namespace, with an 8 MiB file system as its disk.
  mkdir "$work/small"
  small_disk=(unshare -m sh -c 'mount -t tmpfs -o size=8m tmpfs "$0" && exec "$@"' "$work/small")
  start_receiver "$work/small/copy" "${small_disk[@]}"
  if "$transfer" send "$uri" "$work/source" 2>"$work/err"; then fail "a full disk went unnoticed"; fi
  expect_exit "$receiver" 1
  grep -q "the receiver refused the file: cannot reserve 64.0 MiB: No space left on device" "$work/err" ||
    fail "the sender was not told: $(cat "$work/err")"
  grep -q "No space left on device; removed $work/small/copy.part" "$receiver_log" ||
    fail "unclear on the receiver: $(cat "$receiver_log")"
else
  echo "   SKIPPED: no mount namespace can be made here (needs root and unshare)"
fi

# A transfer long enough to interrupt: 256 MiB of a sparse file in 1 KiB chunks takes seconds.
# The non-terminal progress lines come once a second, so the first one proves the transfer is
# under way; if the transfer ends before that, the test fails rather than pass unseen.
truncate -s 256M "$work/large"

# Starts a receiver into $1 and a sender of the large file logging to $2, then waits for the
# first progress line of the side named by $3: "received" (the receiver's log) or "sent" ($2).
start_interruptible_transfer() {
  start_receiver "$1"
  "$transfer" send "$uri" "$work/large" --chunk 1024 2>"$2" &
  sender=$!
  pids+=("$sender")
  local log=$2
  [[ $3 == received ]] && log=$receiver_log
  for _ in $(seq 1 200); do grep -q "^$3 .* of" "$log" && return; sleep 0.05; done
  fail "no progress to interrupt: $(cat "$log")"
}

echo "5. the sender vanishes mid-transfer"
start_interruptible_transfer "$work/copy5" "$work/sender5.log" received
kill -9 "$sender"
expect_exit "$receiver" 1
grep -q "the sender vanished" "$receiver_log" || fail "unclear: $(cat "$receiver_log")"
[[ ! -e $work/copy5 && ! -e $work/copy5.part ]] || fail "a partial file was left behind"

echo "6. the receiver vanishes mid-transfer"
start_interruptible_transfer "$work/copy6" "$work/sender6.log" sent
kill -9 "$receiver"
expect_exit "$sender" 1
grep -q "the receiver vanished" "$work/sender6.log" || fail "unclear: $(cat "$work/sender6.log")"
# A killed receiver cannot clean up, but its partial file never has the final name.
[[ ! -e $work/copy6 ]] || fail "an incomplete file has the destination's name"
echo "file_transfer_test: all cases passed"
