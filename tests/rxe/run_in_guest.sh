#!/usr/bin/env bash
# Runs a command inside a throwaway qemu guest whose kernel has Soft-RoCE (rdma_rxe) on a
# dummy network device, so that RDMA verbs code can be tested on a host whose kernel has no
# RDMA support. Nothing leaves the guest: it has no network card, unless --wire gives it one
# whose only other end is another guest's.
#
#   tests/rxe/run_in_guest.sh [--timeout SECONDS] [--file PATH]... [--env NAME=VALUE]...
#                             [--wire listen:PORT|connect:PORT --address IPV4] [--console PATH]
#                             [--pidfile PATH] -- PROGRAM [ARGS...]
#
# --wire gives the guest an e1000 card on qemu's socket networking (qemu carries the frames over
# a loopback socket at PORT, which the listening guest's qemu opens and the other's connects
# to), and Soft-RoCE runs on it with --address/24 instead of on a dummy device. --console keeps
# the serial console at PATH as it is written (to watch a running guest); --pidfile names the
# qemu process (to power the guest off from outside).
#
# PROGRAM and every --file are copied into the guest at the same absolute paths, with the
# shared libraries they need. The guest's output comes back on the serial console; the script
# exits with PROGRAM's exit status (124 when the guest ran out of time, 125 when it did not
# report). Debian bookworm packages it needs are installed when missing (root only).
set -euo pipefail

timeout_s=300
files=()
environment=()
wire=
address=192.0.2.1
console=
pidfile=
while [[ $# -gt 0 ]]; do
  case "$1" in
    --timeout) timeout_s=$2; shift 2 ;;
    --file) files+=("$2"); shift 2 ;;
    --env) environment+=("$2"); shift 2 ;;
    --wire) wire=$2; shift 2 ;;
    --address) address=$2; shift 2 ;;
    --console) console=$2; shift 2 ;;
    --pidfile) pidfile=$2; shift 2 ;;
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
  drivers/net/veth.ko net/sched/sch_netem.ko drivers/net/ethernet/intel/e1000/e1000.ko)
for m in "${module_list[@]}"; do cp "$modules/kernel/$m" "$root/lib/modules/"; done

{
  echo '#!/bin/sh'
  echo 'export PATH=/bin:/sbin:/usr/bin:/usr/sbin'
  echo 'mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev'
  echo 'mount -t configfs configfs /sys/kernel/config 2>/dev/null'
  for m in "${module_list[@]}"; do echo "insmod /lib/modules/$(basename "$m") || echo 'guest: insmod $(basename "$m") failed'"; done
  echo 'mount -t configfs configfs /sys/kernel/config 2>/dev/null'
  echo 'ip link set lo up'
  if [[ -n $wire ]]; then
    netdev=eth0
  else
    netdev=dummy0
    # Loading dummy usually creates dummy0 already.
    echo 'ip link show dummy0 >/dev/null 2>&1 || ip link add dummy0 type dummy'
  fi
  printf 'ip addr add %q/24 dev %s; ip link set %s up\n' "$address" "$netdev" "$netdev"
  # An emulated e1000 takes a moment to report its link up; an address resolved before then
  # times out.
  [[ -n $wire ]] && echo 'for i in $(seq 1 100); do [ "$(cat /sys/class/net/eth0/carrier 2>/dev/null)" = 1 ] && break; sleep 0.1; done'
  echo "rdma link add rxe0 type rxe netdev $netdev || echo 'guest: rdma link add failed'"
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
nic=(-nic none)
case "$wire" in
  '') ;;
  listen:* | connect:*)
    side=${wire%%:*}
    # A MAC per address, so that two guests on one wire differ.
    mac=$(printf '52:54:00:%02x:%02x:%02x' $(echo "$address" | awk -F. '{print $2, $3, $4}'))
    nic=(-netdev "socket,id=wire,$side=127.0.0.1:${wire#*:}" -device "e1000,netdev=wire,mac=$mac") ;;
  *) echo "run_in_guest: --wire takes listen:PORT or connect:PORT" >&2; exit 2 ;;
esac
console=${console:-$work/console.txt}
pid_option=()
[[ -n $pidfile ]] && pid_option=(-pidfile "$pidfile")
set +e
timeout "$timeout_s" qemu-system-x86_64 -accel tcg -cpu max -m 1024 -smp 2 "${nic[@]}" "${pid_option[@]}" \
  -nographic -no-reboot -kernel "$vmlinuz" -initrd "$work/initrd.gz" -append "console=ttyS0 quiet panic=-1" \
  </dev/null >"$console" 2>&1
qemu_status=$?
set -e
# The firmware's screen-control sequences are noise on a log.
tr -d '\r' <"$console" | sed 's/\x1b\[[0-9;?]*[a-zA-Z]//g; s/\x1bc//g' | grep -v '^[[:space:]]*$' || true
if [[ $qemu_status -eq 124 ]]; then
  echo "run_in_guest: the guest did not finish within $timeout_s s" >&2
  exit 124
fi
status=$(tr -d '\r' <"$console" | awk '/^BELLOWS-GUEST-EXIT /{print $2}' | tail -1)
[[ -n $status ]] || { echo "run_in_guest: the guest did not report an exit status" >&2; exit 125; }
exit "$status"
