#!/usr/bin/env bash
# Two bellows-perf builds over rdma:// in the Soft-RoCE guest, each against a peer of its own
# build, alternated round by round: the 8 B half round trip and the setup time per channel
# (`-t scale`, 40 idle channels). The guest's CPU is emulated, so only the ratio between the
# two builds in the same boot means anything, and little at that: rounds move by a fifth.
#   bench/rxe-ab.sh OLD_BELLOWS_PERF NEW_BELLOWS_PERF [ROUNDS]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[[ $# -ge 2 ]] || { echo "usage: bench/rxe-ab.sh OLD_BELLOWS_PERF NEW_BELLOWS_PERF [ROUNDS]" >&2; exit 2; }
rounds=${3:-6}
work=$(mktemp -d /tmp/rxe-ab.XXXXXX)
trap 'rm -rf "$work"' EXIT
cp "$1" "$work/old-perf" && cp "$2" "$work/new-perf"
cat >"$work/run.sh" <<SCRIPT
$work/old-perf --serve rdma://0.0.0.0:7481 >/dev/null 2>&1 &
$work/new-perf --serve rdma://0.0.0.0:7482 >/dev/null 2>&1 &
sleep 2
round=1
while [ \$round -le $rounds ]; do
  for build in old:7481 new:7482; do
    echo "round \$round \${build%%:*}"
    $work/\${build%%:*}-perf --connect rdma://192.0.2.1:\${build##*:} -t lat,scale -s 8 -n 2000 --channels 40 --json || exit 3
  done
  round=\$((round + 1))
done
SCRIPT
tests/rxe/run_in_guest.sh --timeout 600 --file "$work/old-perf" --file "$work/new-perf" --file "$work/run.sh" \
  -- /bin/sh "$work/run.sh" >"$work/out.txt" 2>&1 || { cat "$work/out.txt" >&2; exit 1; }
python3 - "$work/out.txt" <<'PY'
import json, re, statistics, sys
figures = {}
build = None
for line in open(sys.argv[1]):
    m = re.match(r"round \d+ (old|new)", line)
    if m:
        build = m.group(1)
    elif line.startswith("{"):
        j = json.loads(line)
        figures.setdefault((build, "8 B p50 us" if j["mode"] == "lat" else "setup us/channel"), []).append(
            j["p50_us"] if j["mode"] == "lat" else j["connect_us/ch"])
for what in ("8 B p50 us", "setup us/channel"):
    old, new = figures[("old", what)], figures[("new", what)]
    print(f"{what}: old {' / '.join(f'{x:.0f}' for x in old)}  new {' / '.join(f'{x:.0f}' for x in new)}"
          f"  medians {statistics.median(old):.0f} / {statistics.median(new):.0f}"
          f"  new/old {statistics.median(new) / statistics.median(old):.2f}")
PY
