#!/usr/bin/env bash
# rdma:// between two kernels: two Soft-RoCE guests whose only network is a wire between them
# (qemu's socket networking), 192.0.2.1 serving and 192.0.2.2 driving, through net_probe.
#
#   tests/rxe/two_guests.sh NET_PROBE
#
#  1. echo: 140 messages of every tier and a fragmented one, echoed intact and in order;
#  2. power-off: two client processes, one driving messages, one with a channel that only waits
#     for a message, while this script kills the server guest's qemu once echoes flow. Both must
#     fail with connection_reset within context_options::peer_timeout (NET_PEER_TIMEOUT_MS, 3000
#     by default) of the driver's last echo, plus a second for an emulated CPU to report.
set -euo pipefail

probe=$(realpath "${1:?usage: two_guests.sh NET_PROBE}")
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
peer_timeout_ms=${NET_PEER_TIMEOUT_MS:-3000}
bound_ms=$((peer_timeout_ms + 1000))
uri=rdma://192.0.2.1:7471
port=$((20000 + $$ % 20000))
work=$(mktemp -d)
server_runner=
cleanup() {
  local status=$?
  if [[ -s $work/server.pid ]]; then kill -9 "$(cat "$work/server.pid")" 2>/dev/null || true; fi
  if [[ -n $server_runner ]]; then wait "$server_runner" 2>/dev/null || true; fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
fail() {
  echo "two_guests: FAILED: $*"
  exit 1
}

"$here/run_in_guest.sh" --timeout 600 --wire "listen:$port" --address 192.0.2.1 --console "$work/server.txt" \
  --pidfile "$work/server.pid" -- "$probe" serve "$uri" --peer-timeout-ms "$peer_timeout_ms" \
  >"$work/server.out" 2>&1 &
server_runner=$!
for ((i = 0; i < 240; i++)); do
  grep -q '^ready' "$work/server.txt" 2>/dev/null && break
  kill -0 "$server_runner" 2>/dev/null || { cat "$work/server.out"; fail "the server guest ended early"; }
  sleep 0.5
done
grep -q '^ready' "$work/server.txt" || { cat "$work/server.txt"; fail "the server never listened"; }
echo "two_guests: the server guest listens at $uri"

# Runs in the client guest (busybox and bash). Its output comes back on the serial console.
cat >"$work/client.sh" <<SCRIPT
probe=$probe
uri=$uri
timeout=$peer_timeout_ms
SCRIPT
cat >>"$work/client.sh" <<'SCRIPT'
"$probe" drive "$uri" --peer-timeout-ms "$timeout" || { echo "two_guests: the echo failed ($?)"; exit 1; }
"$probe" idle "$uri" --peer-timeout-ms "$timeout" >/tmp/idle.out 2>&1 &
idle_pid=$!
for i in $(seq 1 200); do grep -q '^idle' /tmp/idle.out && break; sleep 0.1; done
grep -q '^idle' /tmp/idle.out || { cat /tmp/idle.out; echo "two_guests: the idle channel did not start"; exit 1; }
echo "power-off phase"
"$probe" drive "$uri" --messages 0 --peer-timeout-ms "$timeout"
drive_status=$?
wait "$idle_pid"
idle_status=$?
sed 's/^/idle: /' /tmp/idle.out
echo "statuses: drive $drive_status idle $idle_status"
[ "$drive_status" = 3 ] && [ "$idle_status" = 3 ] && exit 3
exit 1
SCRIPT

# Power the server off once the driver has echoed in the second phase.
(
  for ((i = 0; i < 6000; i++)); do
    if sed -n '/^power-off phase/,$p' "$work/client.txt" 2>/dev/null | grep -q '^echoed 40'; then
      kill -9 "$(cat "$work/server.pid")" && echo "two_guests: server guest powered off after 40 echoes" &&
        touch "$work/powered-off"
      exit 0
    fi
    sleep 0.05
  done
  echo "two_guests: the second phase never reached 40 echoes"
) &
killer=$!

set +e
"$here/run_in_guest.sh" --timeout 600 --wire "connect:$port" --address 192.0.2.2 --console "$work/client.txt" \
  --file "$probe" --file "$work/client.sh" -- /bin/bash "$work/client.sh"
status=$?
set -e
kill "$killer" 2>/dev/null || true
wait "$killer" 2>/dev/null || true
[[ -e $work/powered-off ]] || fail "the client ended (status $status) before the power-off"
[[ $status -eq 3 ]] || fail "the client ended with status $status, not 3 (connection_reset on both channels)"

console=$(tr -d '\r' <"$work/client.txt")
# The driver's last echo, and each failure, on the guest's steady clock.
failure_line='s/.*failed after .*, \([0-9]*\) ms after the last echo, at \([0-9]*\) ms.*/\1 \2/p'
read -r since drive_at < <(grep -v '^idle: ' <<<"$console" | sed -n "$failure_line" | tail -1)
read -r _ idle_at < <(grep '^idle: ' <<<"$console" | sed -n "$failure_line" | tail -1)
[[ -n ${drive_at:-} && -n ${idle_at:-} ]] || fail "a failure did not say when it came"
last_echo=$((drive_at - since))
echo "two_guests: driver's last echo to its connection_reset: $since ms; to the idle channel's: $((idle_at - last_echo)) ms" \
  "(peer_timeout $peer_timeout_ms ms, bound $bound_ms ms)"
((since <= bound_ms && idle_at - last_echo <= bound_ms)) || fail "not within the bound"
echo "two_guests: passed"
