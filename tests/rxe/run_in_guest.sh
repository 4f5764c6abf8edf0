#!/usr/bin/env bash
# Runs a command inside a throwaway qemu guest whose kernel has Soft-RoCE (rdma_rxe) on a
# dummy network device, so that RDMA verbs code can be tested on a host whose kernel has no
# RDMA support. Nothing leaves the guest: it has no network card.
#
#   tests/rxe/run_in_guest.sh [--timeout SECONDS] [--file PATH]... [--env NAME=VALUE]... -- PROGRAM [ARGS...]
#
# PROGRAM and every --file are copied into the guest at the same absolute paths, with the
# shared libraries they need. The guest's output comes back on the serial console; the script
# exits with PROGRAM's exit status (124 when the guest ran out of time, 125 when it did not
# report). Debian bookworm packages it needs are installed when missing (root only).
set -euo pipefail

timeout_s=300
files=()
environment=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --timeout) timeout_s=$2; shift 2 ;;
    --file) files+=("$2"); shift 2 ;;
    --env) environment+=("$2"); shift 2 ;;
    --) shift; break ;;
    *) echo "run_in_guest: unknown option $1" >&2; exit 2 ;;
  esac
done
[[ $# -ge 1 ]] || { echo "usage: $0 [--timeout S] [--file PATH]... -- PROGRAM [ARGS...]" >&2; exit 2; }

cache=${BELLOWS_RXE_CACHE:-/var/cache/bellows-rxe}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

need=()
for tool in qemu-system-x86_64:qemu-system-x86 busybox:busybox-static cpio:cpio depmod:kmod rdma:iproute2; do
  command -v "${tool%%:*}" >/dev/null || need+=("${tool##*:}")
done
[[ -e /usr/lib/x86_64-linux-gnu/libibverbs/librxe-rdmav34.so ]] || need+=(ibverbs-providers)
if [[ ${#need[@]} -gt 0 ]]; then
  [[ $(id -u) -eq 0 ]] || { echo "run_in_guest: missing ${need[*]}; install them or run as root" >&2; exit 2; }
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# The kernel: whatever linux-image-amd64 depends on today, fetched once into the cache.
resolve_kernel() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}'; }
package=$(resolve_kernel)
if [[ -z $package && $(id -u) -eq 0 ]]; then  # a fresh machine may not have the package lists yet
  apt-get update -qq
  package=$(resolve_kernel)
fi
[[ -n $package ]] || { echo "run_in_guest: cannot resolve linux-image-amd64" >&2; exit 2; }
kernel_root=$cache/$package
if [[ ! -d $kernel_root/boot ]]; then
  mkdir -p "$cache"
  (cd "$work" && apt-get download "$package" >/dev/null 2>&1) || { echo "run_in_guest: cannot download $package" >&2; exit 2; }
  rm -rf "$kernel_root.tmp" && dpkg -x "$work"/"$package"_*.deb "$kernel_root.tmp"
  mv "$kernel_root.tmp" "$kernel_root"
fi
version=${package#linux-image-}
vmlinuz=$kernel_root/boot/vmlinuz-$version
modules=$kernel_root/lib/modules/$version

# ---- the initramfs ----
root=$work/root
mkdir -p "$root"/{bin,sbin,etc,proc,sys,dev,tmp,run,lib/modules}
cp /bin/busybox "$root/bin/busybox"
for applet in sh mount mkdir cat echo insmod poweroff sleep ls uname seq grep sed mktemp id timeout kill tail rm; do ln -s busybox "$root/bin/$applet"; done

copy_with_libs() {  # copies a file and the shared libraries ldd names, at their own paths
  local path=$1
  [[ -e $root$path ]] && return 0  # busybox's applets stay busybox's
  mkdir -p "$root$(dirname "$path")"
  cp -L "$path" "$root$path"
  { ldd "$path" 2>/dev/null || true; } | awk '/=> \//{print $3} /^[ \t]*\//{print $1}' | while read -r lib; do
    [[ -e $root$lib ]] && continue
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
}
program=$(command -v "$1")
for f in "$program" "${files[@]}" "$(command -v rdma)" "$(command -v ip)" "$(command -v tc)" \
         /usr/lib/x86_64-linux-gnu/libibverbs/librxe-rdmav34.so /lib/x86_64-linux-gnu/libgcc_s.so.1; do
  copy_with_libs "$f"
done
mkdir -p "$root/etc/libibverbs.d"
cp /etc/libibverbs.d/rxe.driver "$root/etc/libibverbs.d/"

# Soft-RoCE and rdma_cm, in dependency order (without crc32_generic `rdma link add` fails);
# veth and netem for the network fault tests (tests/net/faults.sh).
module_list=(crypto/crc32_generic.ko fs/configfs/configfs.ko drivers/infiniband/core/ib_core.ko
  drivers/infiniband/core/ib_uverbs.ko net/ipv4/udp_tunnel.ko net/ipv6/ip6_udp_tunnel.ko
  drivers/infiniband/sw/rxe/rdma_rxe.ko drivers/infiniband/core/iw_cm.ko drivers/infiniband/core/ib_cm.ko
  drivers/infiniband/core/rdma_cm.ko drivers/infiniband/core/rdma_ucm.ko drivers/net/dummy.ko
  drivers/net/veth.ko net/sched/sch_netem.ko)
for m in "${module_list[@]}"; do cp "$modules/kernel/$m" "$root/lib/modules/"; done

{
  echo '#!/bin/sh'
  echo 'export PATH=/bin:/sbin:/usr/bin:/usr/sbin'
  echo 'mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev'
  echo 'mount -t configfs configfs /sys/kernel/config 2>/dev/null'
  for m in "${module_list[@]}"; do echo "insmod /lib/modules/$(basename "$m") || echo 'guest: insmod $(basename "$m") failed'"; done
  echo 'mount -t configfs configfs /sys/kernel/config 2>/dev/null'
  # Loading dummy usually creates dummy0 already.
  echo 'ip link set lo up; ip link show dummy0 >/dev/null 2>&1 || ip link add dummy0 type dummy'
  echo 'ip addr add 192.0.2.1/24 dev dummy0; ip link set dummy0 up'
  echo 'rdma link add rxe0 type rxe netdev dummy0 || echo "guest: rdma link add failed"'
  echo 'export LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/libibverbs BELLOWS_IN_RXE_GUEST=1'
  for e in "${environment[@]}"; do printf 'export %q\n' "$e"; done
  printf 'echo %q\n' "guest: running $*"
  printf '%q ' "$program" "${@:2}"
  echo
  echo 'echo "BELLOWS-GUEST-EXIT $?"'
  echo 'poweroff -f'
} >"$root/init"
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$work/initrd.gz"

# ---- boot ----
# TCG, not KVM: a KVM guest hung at boot on this kind of machine; TCG boots in about 8 s.
set +e
timeout "$timeout_s" qemu-system-x86_64 -accel tcg -cpu max -m 1024 -smp 2 -nic none -nographic -no-reboot \
  -kernel "$vmlinuz" -initrd "$work/initrd.gz" -append "console=ttyS0 quiet panic=-1" </dev/null >"$work/console.txt" 2>&1
qemu_status=$?
set -e
# The firmware's screen-control sequences are noise on a log.
tr -d '\r' <"$work/console.txt" | sed 's/\x1b\[[0-9;?]*[a-zA-Z]//g; s/\x1bc//g' | grep -v '^[[:space:]]*$' || true
if [[ $qemu_status -eq 124 ]]; then
  echo "run_in_guest: the guest did not finish within $timeout_s s" >&2
  exit 124
fi
status=$(tr -d '\r' <"$work/console.txt" | awk '/^BELLOWS-GUEST-EXIT /{print $2}' | tail -1)
[[ -n $status ]] || { echo "run_in_guest: the guest did not report an exit status" >&2; exit 125; }
exit "$status"
