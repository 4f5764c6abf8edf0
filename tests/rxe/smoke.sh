#!/usr/bin/env bash
# Boots the Soft-RoCE guest and checks that RDMA works there at all: the rxe device exists and
# rping (rdma_cm, RC queue pairs, RDMA READ and WRITE) completes three rounds on its address.
# The verbs provider's tests will run in the same guest.
set -euo pipefail
here=$(dirname "${BASH_SOURCE[0]}")
command -v rping >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rdmacm-utils ibverbs-utils >/dev/null
}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
"$here/run_in_guest.sh" --timeout 180 --file "$(command -v rping)" --file "$(command -v ibv_devices)" -- \
  sh -c 'ibv_devices && rping -s -a 192.0.2.1 -C 3 & sleep 1; rping -c -a 192.0.2.1 -C 3 -v' | tee "$log"
grep -q 'rxe0' "$log" || { echo "rxe smoke: no rxe0 device in the guest" >&2; exit 1; }
[[ $(grep -c '^ping data: rdma-ping-' "$log") -eq 3 ]] || { echo "rxe smoke: rping did not complete" >&2; exit 1; }
echo "rxe smoke: Soft-RoCE works in the guest"
