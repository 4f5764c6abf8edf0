#!/usr/bin/env bash
# Builds the libFuzzer binaries with clang and runs each for a bounded time from the committed
# corpus (a scratch copy: the repository is not changed). A crash fails the run; its input is
# kept under $BUILD/fuzz-artifacts, to be copied into tests/fuzz/regressions/TARGET/ with the fix.
#   tests/fuzz/run.sh [SECONDS_PER_TARGET]   (default 60; BELLOWS_FUZZ_BUILD_DIR, default build-fuzz)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
seconds=${1:-60}
build=${BELLOWS_FUZZ_BUILD_DIR:-$root/build-fuzz}
targets=(frame receiver control)

# libFuzzer's runtime is only recommended by clang, and CI installs without recommendations.
CXX=clang++ BELLOWS_EXTRA_PACKAGES=libclang-rt-14-dev "$root/scripts/setup.sh" deps
CXX=clang++ cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBELLOWS_FUZZ=ON \
  -DBELLOWS_WERROR="${BELLOWS_WERROR:-OFF}" >/dev/null
cmake --build "$build" -j "${BELLOWS_JOBS:-2}" --target "${targets[@]/#/bellows_fuzz_}"

artifacts=$build/fuzz-artifacts
mkdir -p "$artifacts"
status=0
for t in "${targets[@]}"; do
  work=$(mktemp -d)
  cp "$root/tests/fuzz/corpus/$t/"* "$work/"
  if [[ -d $root/tests/fuzz/regressions/$t ]]; then cp "$root/tests/fuzz/regressions/$t/"* "$work/" 2>/dev/null || true; fi
  log=$build/fuzz-$t.log
  echo "fuzz: $t for ${seconds}s"
  if "$build/tests/fuzz/bellows_fuzz_$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
       -print_final_stats=1 -artifact_prefix="$artifacts/$t-" "$work" >"$log" 2>&1; then
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)
    echo "fuzz: $t: $runs executions, $cov, no crash"
  else
    echo "fuzz: $t FAILED; the log's end:" >&2
    tail -40 "$log" >&2
    ls -l "$artifacts" >&2
    status=1
  fi
  rm -rf "$work"
done
exit $status
