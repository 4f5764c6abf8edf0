#!/usr/bin/env bash
# Sets up a Debian bookworm machine for bellows, builds it, then runs what was asked:
#   scripts/setup.sh demo    build and run the demo
#   scripts/setup.sh test    build and run every test through ctest
#   scripts/setup.sh build   build only
#   scripts/setup.sh deps    install what is missing, nothing more
# Knobs (environment): BELLOWS_BUILD_DIR (default build), BELLOWS_SANITIZE (e.g. address,undefined),
# BELLOWS_WERROR (ON/OFF), BELLOWS_SHARED (ON: libbellows.so), CXX (compiler), BELLOWS_JOBS (default 2),
# BELLOWS_EXTRA_PACKAGES (more Debian packages to install).
set -euo pipefail

action=${1:-test}
case "$action" in demo | test | build | deps) ;; *) echo "usage: $0 demo|test|build|deps" >&2; exit 2 ;; esac

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${BELLOWS_BUILD_DIR:-$root/build}
jobs=${BELLOWS_JOBS:-2}

packages=(cmake make g++ pkg-config libasio-dev liburing-dev libibverbs-dev librdmacm-dev libisal-dev libssl-dev catch2 doxygen iproute2)
[[ ${CXX:-} == clang++* ]] && packages+=(clang)
read -r -a extra <<<"${BELLOWS_EXTRA_PACKAGES:-}"
packages+=("${extra[@]}")
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo=(); [[ $(id -u) -eq 0 ]] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

[[ $action == deps ]] && exit 0

cmake -S "$root" -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DBELLOWS_SANITIZE="${BELLOWS_SANITIZE:-}" -DBELLOWS_WERROR="${BELLOWS_WERROR:-OFF}" \
  -DBUILD_SHARED_LIBS="${BELLOWS_SHARED:-OFF}" >/dev/null
cmake --build "$build_dir" -j "$jobs"

case "$action" in
  demo) "$build_dir/examples/bellows_demo" ;;
  test) ctest --test-dir "$build_dir" --output-on-failure -j "$jobs" --timeout 600 ;;
  build) ;;
esac
