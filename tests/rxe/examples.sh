#!/usr/bin/env bash
# The README's rdma:// instructions, followed in the Soft-RoCE guest: the echo server and
# client, then the benchmark's peer and measurement as two processes. Figures from an
# emulated CPU mean nothing; the point is that the commands work.
#   tests/rxe/examples.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
build=$(cd "${1:-build}" && pwd)
script=$(mktemp "$build/rxe-examples.XXXXXX.sh")
trap 'rm -f "$script"' EXIT
cat >"$script" <<SCRIPT
$build/examples/bellows_echo_server rdma://192.0.2.1:7471 &
sleep 1
$build/examples/bellows_echo_client rdma://192.0.2.1:7471 || exit 3
$build/bench/bellows_bench --serve rdma://0.0.0.0:7472 --iterations 2000 --messages 2000 &
sleep 1
$build/bench/bellows_bench --connect rdma://192.0.2.1:7472 --iterations 2000 --messages 2000 || exit 4
SCRIPT
exec tests/rxe/run_in_guest.sh --timeout 200 --file "$build/examples/bellows_echo_server" \
  --file "$build/examples/bellows_echo_client" --file "$build/bench/bellows_bench" --file "$script" -- /bin/sh "$script"
