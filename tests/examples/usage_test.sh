#!/usr/bin/env bash
# Every program answers --help with its usage on stdout and status 0, and an unknown option or
# a malformed value with the usage on stderr and status 2, before it starts anything.
#   tests/examples/usage_test.sh PROGRAM...   (each followed by nothing: the bad inputs are below)
set -uo pipefail
failed=0
check() {  # check EXPECTED_STATUS STREAM PROGRAM ARGS...
  local expected=$1 stream=$2 program=$3
  shift 3
  local out err status
  out=$(mktemp) err=$(mktemp)
  timeout 10 "$program" "$@" >"$out" 2>"$err"
  status=$?
  local where=$out
  [[ $stream == stderr ]] && where=$err
  if [[ $status != "$expected" ]] || ! grep -q '^usage: ' "$where"; then
    echo "usage_test: $(basename "$program") $*: status $status (expected $expected), usage on $stream expected" >&2
    sed 's/^/  stdout: /' "$out" >&2
    sed 's/^/  stderr: /' "$err" >&2
    failed=1
  fi
  rm -f "$out" "$err"
}
for program in "$@"; do
  name=$(basename "$program")
  check 0 stdout "$program" --help
  check 0 stdout "$program" -h
  check 2 stderr "$program" --no-such-option
  case $name in
    bellows-perf) check 2 stderr "$program" -t nosuchmode; check 2 stderr "$program" -n -5; check 2 stderr "$program" -s 12Q ;;
    asio-baseline) check 2 stderr "$program" -t rate; check 2 stderr "$program" -n lots ;;
    bellows_demo) check 2 stderr "$program" 0; check 2 stderr "$program" 12abc ;;
    bellows_echo_server) check 2 stderr "$program" shm://usage-test 0; check 2 stderr "$program" shm://usage-test two ;;
    bellows_echo_client) check 2 stderr "$program" shm://a shm://b ;;
    bellows_file_transfer) check 2 stderr "$program" copy shm://x /tmp/y; check 2 stderr "$program" send shm://x /tmp/y --chunk 0 ;;
    bellows_sim_demo) check 2 stderr "$program" extra ;;
    ring-copy-model) check 2 stderr "$program" /dev/null --shift 4096; check 2 stderr "$program" /dev/null --chunk 1000 ;;
    bellows-info) check 2 stderr "$program" --channels many; check 2 stderr "$program" --channels 0 ;;
  esac
done
exit $failed
