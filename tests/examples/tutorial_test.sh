#!/usr/bin/env bash
# docs/tutorial.md's server and client, as the page runs them: the client must get every size
# back intact (its status) and print the tiers the page shows.
#   tests/examples/tutorial_test.sh path/to/tutorial_echo_server path/to/tutorial_echo_client
set -uo pipefail
server=$1
client=$2
out=$(mktemp)
"$server" &
server_pid=$!
trap 'kill -9 $server_pid 2>/dev/null; rm -f "$out"' EXIT
status=1
for _ in $(seq 1 50); do  # bounded: the server may not be listening yet
  timeout 30 "$client" >"$out" 2>&1
  status=$?
  grep -q "B back" "$out" && break
  sleep 0.1
done
cat "$out"
[[ $status == 0 ]] || { echo "tutorial_test: the client failed ($status)" >&2; exit 1; }
expected=$'      8 B back; sending on tier 0\n   4096 B back; sending on tier 1\n  65536 B back; sending on tier 2\n1048576 B back; sending on tier 2'
[[ $(cat "$out") == "$expected" ]] || { echo "tutorial_test: not the output docs/tutorial.md shows" >&2; exit 1; }
