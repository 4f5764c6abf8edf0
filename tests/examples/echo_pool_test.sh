#!/usr/bin/env bash
# The thread-pool echo server of the README: one io_context on 4 threads, a strand per channel.
# Eight clients at once must each get every message back intact.
#   tests/examples/echo_pool_test.sh path/to/bellows_echo_server path/to/bellows_echo_client
set -euo pipefail
server=$1
client=$2
uri="shm://echo-pool-test-$$"
log=$(mktemp)
"$server" "$uri" 4 >"$log" 2>&1 &
server_pid=$!
trap 'kill -9 $server_pid 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 1 100); do  # bounded wait until it listens (it prints once the acceptor exists)
  grep -q "echoing on" "$log" && break
  sleep 0.05
done
grep -q "with 4 thread(s)" "$log" || { echo "echo_pool_test: server did not start" >&2; cat "$log" >&2; exit 1; }
clients=()
for i in $(seq 1 8); do
  timeout 60 "$client" "$uri" >"$log.$i" 2>&1 &
  clients+=($!)
done
failed=0
for i in "${!clients[@]}"; do
  if ! wait "${clients[$i]}"; then
    echo "echo_pool_test: client $((i + 1)) failed:" >&2
    cat "$log.$((i + 1))" >&2
    failed=1
  fi
done
rm -f "$log".*
kill -0 $server_pid || { echo "echo_pool_test: the server died" >&2; cat "$log" >&2; exit 1; }
[ $failed = 0 ] && echo "echo_pool_test: 8 clients echoed intact through a 4-thread server"
exit $failed
