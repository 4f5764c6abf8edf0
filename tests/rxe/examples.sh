#!/usr/bin/env bash
# The README's rdma:// instructions, followed in the Soft-RoCE guest: the echo server and
# client, the benchmark's peer and measurement as two processes, then a file transfer. Figures from an
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
$build/bench/bellows-perf --serve rdma://0.0.0.0:7472 &
sleep 1
$build/bench/bellows-perf --connect rdma://192.0.2.1:7472 -t lat,bw,rate,scale -s 8,64K -n 500 --channels 0,20 || exit 4
$build/bench/bellows-perf --connect rdma://192.0.2.1:7472 -t lat,bw -s 4M -n 20 -w 2 || exit 4
$build/bench/bellows-perf --connect rdma://192.0.2.1:7472 -t enlarge -n 5 || exit 5
mkdir -p /tmp
/bin/busybox dd if=/dev/urandom of=/tmp/ft-source bs=1048576 count=16 2>/dev/null
$build/examples/bellows_file_transfer receive rdma://192.0.2.1:7473 /tmp/ft-copy &
receiver=\$!
sleep 1
$build/examples/bellows_file_transfer send rdma://192.0.2.1:7473 /tmp/ft-source || exit 6
wait \$receiver || exit 7
/bin/busybox cmp /tmp/ft-source /tmp/ft-copy || exit 8
echo "file transfer over rdma: 16 MiB intact"
$build/tools/bellows-info >/tmp/info.txt || exit 9
/bin/busybox cat /tmp/info.txt
/bin/busybox grep -q "rdma   rxe0 port 1: active, Ethernet (RoCE)" /tmp/info.txt || exit 10
# Root has CAP_IPC_LOCK and no limit to warn about; an ordinary user with a small one is warned.
/bin/busybox grep -q "^warning" /tmp/info.txt && exit 11
echo 'nobody:x:65534:65534:nobody:/:/bin/sh' >>/etc/passwd
/bin/busybox su -s /bin/sh -c "ulimit -l 1024; $build/tools/bellows-info" nobody >/tmp/info-low.txt || exit 12
/bin/busybox grep -q "warning: the locked-memory limit (1.0 MiB) holds about 0 idle rdma channels" /tmp/info-low.txt || exit 13
echo "bellows-info: rxe0 seen, the low locked-memory limit named"
SCRIPT
exec tests/rxe/run_in_guest.sh --timeout 300 --file "$build/examples/bellows_echo_server" \
  --file "$build/examples/bellows_echo_client" --file "$build/bench/bellows-perf" --file "$build/examples/bellows_file_transfer" --file "$build/tools/bellows-info" --file "$script" -- /bin/sh "$script"
