#!/usr/bin/env bash
# Real network faults for tcp://: a server and a client in two network namespaces joined by a
# veth pair (198.51.100.0/24, nothing else reachable), run through net_probe.
#
#   faults.sh clean|netem|link_down|link_down_idle|syn_unanswered NET_PROBE
#
#   clean           every tier, and a fragmented message, echoed intact and in order
#   netem           the same through tc netem delay, jitter, loss and reordering on both ends
#   link_down       the link taken down mid-transfer: the client fails with connection_reset
#                   within the documented bound (context_options::peer_timeout)
#   link_down_idle  the same while the client only waits for a message
#   syn_unanswered  a connect that nothing answers fails within the same bound, not after
#                   channel_options::connect_timeout (10 s in net_probe)
#
# Skips (status 77) with the reason where namespaces or netem cannot be made.
set -euo pipefail

case_name=${1:?usage: faults.sh CASE NET_PROBE}
probe=${2:?usage: faults.sh CASE NET_PROBE}
peer_timeout_ms=${NET_PEER_TIMEOUT_MS:-3000}
# peer_timeout's documented bound (itself and a sixth more, at least a second more), and
# half a second for the processes to be scheduled and report.
probe_gap_ms=$((peer_timeout_ms / 6 > 1000 ? peer_timeout_ms / 6 : 1000))
bound_ms=$((peer_timeout_ms + probe_gap_ms + 500))

skip() {
  echo "SKIPPED ($case_name): $*"
  exit 77
}

[[ $(id -u) -eq 0 ]] || skip "network namespaces need root"
command -v ip >/dev/null || skip "ip (iproute2) is not installed"

id=$$
server_ns=bellows-a-$id
client_ns=bellows-b-$id
work=$(mktemp -d)
server_pid=
client_pid=
cleanup() {
  for pid in $server_pid $client_pid; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  ip netns del "$server_ns" 2>/dev/null || true
  ip netns del "$client_ns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap "exit 143" TERM INT  # ctest's timeout: still remove the namespaces

ip netns add "$server_ns" 2>"$work/netns.err" || skip "cannot create a network namespace: $(cat "$work/netns.err")"
ip netns add "$client_ns"
# Made inside the namespaces, so the names cannot collide with anything outside them.
ip link add va netns "$server_ns" type veth peer name vb netns "$client_ns" 2>"$work/veth.err" ||
  skip "cannot create a veth pair: $(cat "$work/veth.err")"
ip -n "$server_ns" addr add 198.51.100.1/24 dev va
ip -n "$client_ns" addr add 198.51.100.2/24 dev vb
for ns in "$server_ns" "$client_ns"; do ip -n "$ns" link set lo up; done
ip -n "$server_ns" link set va up
ip -n "$client_ns" link set vb up

if [[ $case_name == netem ]]; then
  read -r -a impairment <<<"${NET_IMPAIRMENT:-delay 2ms 1ms loss 1% reorder 25% 50%}"
  ip netns exec "$server_ns" tc qdisc add dev va root netem "${impairment[@]}" 2>"$work/netem.err" ||
    skip "tc netem is not available in kernel $(uname -r): $(cat "$work/netem.err")"
  ip netns exec "$client_ns" tc qdisc add dev vb root netem "${impairment[@]}"
  echo "netem on both ends: ${impairment[*]}"
fi

uri=tcp://198.51.100.1:7400
ip netns exec "$server_ns" "$probe" serve "$uri" --peer-timeout-ms "$peer_timeout_ms" >"$work/server.out" \
  2>"$work/server.err" &
server_pid=$!
for _ in $(seq 100); do
  grep -q '^ready' "$work/server.out" && break
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.1
done
grep -q '^ready' "$work/server.out" || { echo "net_probe serve did not start:"; cat "$work/server.err"; exit 1; }

now_ms() {  # bash's own clock: busybox date (in the qemu guest) has no milliseconds
  local micros=${EPOCHREALTIME/./}
  echo $((micros / 1000))
}
# Runs the client in its namespace in the background, its output in client.out.
start_client() {
  ip netns exec "$client_ns" timeout 150 "$probe" "$@" --peer-timeout-ms "$peer_timeout_ms" >"$work/client.out" \
    2>&1 &
  client_pid=$!
}
# Waits (bounded) until the client printed a line matching $1.
await_line() {
  for _ in $(seq 600); do
    grep -q "$1" "$work/client.out" && return 0
    kill -0 "$client_pid" 2>/dev/null || break
    sleep 0.05
  done
  grep -q "$1" "$work/client.out"
}

case $case_name in
  clean | netem)
    start_client drive "$uri" --messages 140
    status=0
    wait "$client_pid" || status=$?
    tail -n 3 "$work/client.out"
    [[ $status -eq 0 ]] || { echo "FAIL: the client ended with status $status"; cat "$work/server.err"; exit 1; }
    grep -q '^delivered 140 messages' "$work/client.out" || { echo "FAIL: not every message came back"; exit 1; }
    if [[ $case_name == netem ]]; then  # what netem did to the traffic: packets sent and dropped
      ip netns exec "$server_ns" tc -s qdisc show dev va | sed -n 's/^ *Sent/server side: sent/p'
      ip netns exec "$client_ns" tc -s qdisc show dev vb | sed -n 's/^ *Sent/client side: sent/p'
    fi
    ;;
  link_down | link_down_idle)
    if [[ $case_name == link_down ]]; then
      start_client drive "$uri" --messages 0
      await_line '^echoed 60$' || { echo "FAIL: the transfer did not get going"; cat "$work/client.out"; exit 1; }
    else
      start_client idle "$uri"
      await_line '^idle$' || { echo "FAIL: the client did not reach its idle receive"; cat "$work/client.out"; exit 1; }
    fi
    down_at=$(now_ms)
    ip -n "$server_ns" link set va down
    status=0
    wait "$client_pid" || status=$?
    took=$(($(now_ms) - down_at))
    tail -n 2 "$work/client.out"
    echo "link down to the client's failure: $took ms (peer_timeout $peer_timeout_ms ms, bound $bound_ms ms)"
    [[ $status -eq 3 ]] || { echo "FAIL: expected connection_reset (status 3), got status $status"; exit 1; }
    ((took <= bound_ms)) || { echo "FAIL: the dead link was noticed after $took ms, over the bound"; exit 1; }
    ;;
  syn_unanswered)
    # Nothing answers the SYN: the server's end is down, and a permanent neighbour entry keeps
    # address resolution (which gives up on its own after 3 s) out of the way.
    server_mac=$(ip -n "$server_ns" link show va | awk '/link\/ether/{print $2}')
    ip -n "$client_ns" neigh replace 198.51.100.1 lladdr "$server_mac" dev vb nud permanent
    ip -n "$server_ns" link set va down
    started_at=$(now_ms)
    start_client drive "$uri" --messages 1
    status=0
    wait "$client_pid" || status=$?
    took=$(($(now_ms) - started_at))
    tail -n 2 "$work/client.out"
    echo "connect to the client's failure: $took ms (peer_timeout $peer_timeout_ms ms, bound $bound_ms ms," \
      "connect_timeout 10000 ms)"
    grep -q 'connect failed' "$work/client.out" || { echo "FAIL: the connect did not fail"; exit 1; }
    ((took <= bound_ms)) || { echo "FAIL: the unanswered connect failed after $took ms, over the bound"; exit 1; }
    ;;
  *)
    echo "faults.sh: unknown case $case_name" >&2
    exit 2
    ;;
esac
echo "PASS ($case_name)"
