#!/usr/bin/env bash
# Measures, in one run on this machine, bellows over shm and over tcp:// against what a user
# would pick instead: ucx_perftest over shared memory (UCX_TLS=posix,cma,self) and over TCP
# (UCX_TLS=tcp), tests tag_lat, tag_bw and ucp_put_lat, and plain Asio coroutines over a Unix
# socket and TCP loopback; bellows over tcp is compared with the TCP peers only. Then the memory of idle channels at scale, bellows against a fixed 256 KiB first
# tier. Prints ratio tables (bellows / each peer) and draws PNG plots with gnuplot.
#   [ROUNDS=3] [SIZES=8,64,...] [QUICK=1] [OUT=bench/results] [CHANNELS=1,64,1000,10000] [OUTSTANDING=1]
#   bench/compare.sh [BUILD_DIR]
# Streaming runs with OUTSTANDING sends in flight and as many receives posted (default 1) on
# both sides: bellows-perf --outstanding and ucx_perftest -O, whose tag_bw would otherwise keep
# its window of 32 (Asio's baseline keeps one whatever it is set to).
# Every pair of processes is pinned to CPUs 0 and 1. On a virtual machine every library switches
# between fast and slow modes from run to run: each figure is the median of ROUNDS rounds,
# and the rounds interleave the libraries. Installs ucx-utils and gnuplot-nox when missing (root).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
perf=$build/bench/bellows-perf
baseline=$build/bench/asio-baseline
out=${OUT:-$root/bench/results}
rounds=${ROUNDS:-3}
sizes=${SIZES:-8,64,512,4096,32768,65536,262144,1048576}
channels=${CHANNELS:-1,64,1000,10000}
quick=${QUICK:-}
outstanding=${OUTSTANDING:-1}
[[ -n $quick ]] && { rounds=1; sizes=${SIZES:-8,4096,65536}; channels=${CHANNELS:-1,64}; }

for tool in "$perf" "$baseline"; do
  [[ -x $tool ]] || { echo "compare: $tool not found; build first (scripts/setup.sh build)" >&2; exit 2; }
done
missing=()
command -v ucx_perftest >/dev/null || missing+=(ucx-utils)
command -v gnuplot >/dev/null || missing+=(gnuplot-nox)
if ((${#missing[@]})); then
  [[ $(id -u) -eq 0 ]] || { echo "compare: run as root, or: apt-get install ${missing[*]}" >&2; exit 2; }
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
mkdir -p "$out"
data=$out/figures.tsv  # impl  mode  size  round  p50_us  avg_us  MB/s
echo -e "impl\tmode\tsize\tround\tp50_us\tavg_us\tmb_per_s" >"$data"

# bellows-perf and asio-baseline print JSON lines; keep implementation, mode, size and figures.
json_to_rows() {
  local impl=$1 round=$2
  awk -v impl="$impl" -v round="$round" '
    /^\{/ { gsub(/[{}"]/, ""); n = split($0, kv, ","); delete f
            for (i = 1; i <= n; i++) { split(kv[i], p, ":"); f[p[1]] = p[2] }
            printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", impl, f["mode"], f["size"], round, f["p50_us"], f["avg_us"], f["mb_per_s"] }'
}

# The same repetition counts as bellows-perf: enough for a median, bounded for large sizes.
iterations() {  # mode size
  local most bytes
  if [[ $1 == lat ]]; then most=100000 bytes=$((256 << 20)); else most=200000 bytes=$((4 << 30)); fi
  local n=$((bytes / $2))
  ((n < 200)) && n=200
  ((n > most)) && n=$most
  [[ -n $quick ]] && n=$(((n + 9) / 10))
  echo "$n"
}

# One ucx_perftest run: the server on CPU 1 in the background, the client on CPU 0 retrying
# while the server starts. Prints "p50 avg MB/s" (UCX's MB/s are 2^20 bytes: converted).
ucx_run() {
  local tls=$1
  shift
  local port=$((20000 + RANDOM % 20000)) line=""
  UCX_TLS=$tls timeout 300 ucx_perftest -p "$port" -c 1 "$@" >/dev/null 2>&1 &
  local server=$!
  for _ in $(seq 1 50); do
    sleep 0.1
    if line=$(UCX_TLS=$tls timeout 300 ucx_perftest -p "$port" -c 0 localhost "$@" 2>/dev/null | grep '^Final:'); then
      break
    fi
  done
  wait "$server" 2>/dev/null || true
  [[ -n $line ]] || { echo "compare: ucx_perftest $* (UCX_TLS=$tls) did not run" >&2; return 1; }
  awk '{ printf "%s %s %.1f\n", $3, $4, $6 * 1.048576 }' <<<"$line"
}

echo "compare: $rounds round(s), sizes $sizes, $outstanding in flight when streaming; results in $out"
for round in $(seq 1 "$rounds"); do
  echo "round $round: bellows"
  "$perf" -t lat,bw -s "$sizes" --outstanding "$outstanding" --cpus 0,1 --json | json_to_rows bellows-shm "$round" >>"$data"
  echo "round $round: bellows over tcp (loopback)"
  "$perf" -t lat,bw -s "$sizes" --outstanding "$outstanding" --cpus 0,1 --json --uri "tcp://127.0.0.1:$((20000 + RANDOM % 10000))" |
    json_to_rows bellows-tcp "$round" >>"$data"
  for transport in unix tcp; do
    echo "round $round: asio over $transport"
    "$baseline" --transport "$transport" -t lat,bw -s "$sizes" --cpus 0,1 --json |
      json_to_rows "asio-$transport" "$round" >>"$data"
  done
  for tls in posix,cma,self tcp; do
    name=ucx-${tls%%,*}
    echo "round $round: ucx_perftest, UCX_TLS=$tls"
    for size in ${sizes//,/ }; do
      for test in tag_lat ucp_put_lat tag_bw; do
        mode=lat depth=()
        [[ $test == tag_bw ]] && mode=bw depth=(-O "$outstanding")
        if figures=$(ucx_run "$tls" -t "$test" -s "$size" -n "$(iterations "$mode" "$size")" "${depth[@]}"); then
          read -r p50 avg mbs <<<"$figures"
          impl=$name
          [[ $test == ucp_put_lat ]] && impl=$name-put
          [[ $mode == bw ]] && p50=null
          echo -e "$impl\t$mode\t$size\t$round\t$p50\t$avg\t$mbs" >>"$data"
        fi
      done
    done
  done
done

# Medians over the rounds: impl mode size p50 avg MB/s.
medians=$out/medians.tsv
awk -F'\t' 'NR > 1 { key = $1 "\t" $2 "\t" $3; p[key] = p[key] " " $5; a[key] = a[key] " " $6; m[key] = m[key] " " $7 }
  function median(list,   v, n, i, j, t) {
    n = split(list, v, " "); if (v[1] == "null" || n == 0) return "null"
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] + 0 < v[i] + 0) { t = v[i]; v[i] = v[j]; v[j] = t }
    return v[int((n + 1) / 2)] }
  END { for (k in p) printf "%s\t%s\t%s\t%s\n", k, median(p[k]), median(a[k]), median(m[k]) }' "$data" |
  sort -t$'\t' -k1,1 -k2,2 -k3,3n >"$medians"

peers=(ucx-posix ucx-posix-put ucx-tcp ucx-tcp-put asio-unix asio-tcp)
tcp_peers=(ucx-tcp ucx-tcp-put asio-tcp)
# table MODE COLUMN(4: p50, 6: MB/s) TITLE OURS PEER...
table() {
  local mode=$1 column=$2 title=$3 ours=$4
  shift 4
  echo
  echo "$title (median of $rounds; ratio = $ours / peer)"
  awk -F'\t' -v mode="$mode" -v col="$column" -v peers="$*" -v us="$ours" '
    $2 == mode { v[$1 "|" $3] = $col; sizes[$3] = 1 }
    END {
      np = split(peers, pe, " "); printf "%9s %11s", "size", us
      for (i = 1; i <= np; i++) if ((pe[i] "|8") in v || (pe[i] "|65536") in v) { printf " %13s %7s", pe[i], "ratio"; used[i] = 1 }
      printf "\n"
      n = 0; for (s in sizes) list[++n] = s + 0
      for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (list[j] < list[i]) { t = list[i]; list[i] = list[j]; list[j] = t }
      for (k = 1; k <= n; k++) {
        s = list[k]; ours = v[us "|" s]; printf "%9d %11s", s, ours
        for (i = 1; i <= np; i++) if (used[i]) {
          theirs = v[pe[i] "|" s]
          if (theirs == "" || theirs == "null" || theirs + 0 == 0) printf " %13s %7s", "-", "-"
          else printf " %13s %7.2f", theirs, ours / theirs
        }
        printf "\n"
      } }' "$medians"
}
{
  table lat 4 "8 B .. 1 MiB half round trip, p50 in microseconds (ratio below 1: bellows is faster)" \
    bellows-shm "${peers[@]}"
  table bw 6 "streaming bandwidth in MB/s ($outstanding in flight; 10^6 B/s; ratio above 1: bellows is faster)" bellows-shm "${peers[@]}"
  table lat 4 "over TCP on loopback: half round trip, p50 in microseconds" bellows-tcp "${tcp_peers[@]}"
  table bw 6 "over TCP on loopback: streaming bandwidth in MB/s, $outstanding in flight" bellows-tcp "${tcp_peers[@]}"
} | tee "$out/comparison.txt"

echo
echo "memory at scale: idle channels between two processes, bellows from 4 KiB vs a fixed 256 KiB first tier"
scale=$out/scale.tsv
echo -e "design\tidle_channels\tp50_us\treg_B_per_ch\tpeer_reg_B_per_ch\trss_B_per_ch\tpeer_rss_B_per_ch" >"$scale"
for design in bellows fixed-256KiB; do
  flag=()
  [[ $design == fixed-256KiB ]] && flag=(--fixed-large)
  "$perf" -t scale --channels "0,$channels" "${flag[@]}" --cpus 0,1 --json | awk -v d="$design" '
    /^\{/ { gsub(/[{}"]/, ""); n = split($0, kv, ","); delete f
            for (i = 1; i <= n; i++) { split(kv[i], p, ":"); f[p[1]] = p[2] }
            printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d, f["idle_channels"], f["p50_us"], f["reg_B/ch"], f["peer_reg_B/ch"], f["rss_B/ch"], f["peer_rss_B/ch"] }' >>"$scale"
done
column -t -s$'\t' "$scale" | tee "$out/scale.txt"

# Plots: one data file per implementation, so that gnuplot draws one line each.
plot_dir=$out/plots
mkdir -p "$plot_dir"
series() {  # mode impl column -> file
  awk -F'\t' -v mode="$1" -v impl="$2" -v col="$3" '$1 == impl && $2 == mode && $col != "null" { print $3, $col }' "$medians" \
    >"$plot_dir/$1-$2.dat"
  [[ -s $plot_dir/$1-$2.dat ]]
}
plot_lines() {  # mode column
  local lines=() impl
  for impl in bellows-shm bellows-tcp "${peers[@]}"; do
    series "$1" "$impl" "$2" && lines+=("'$plot_dir/$1-$impl.dat' using 1:2 with linespoints title '$impl'")
  done
  local IFS=,
  echo "${lines[*]}"
}
gnuplot <<GNUPLOT
set terminal pngcairo size 900,560 noenhanced
set logscale xy
set grid
set key top left
set xlabel "message size (bytes)"
set output "$plot_dir/latency.png"
set title "half round trip, p50 (lower is better), $(nproc) CPUs, $(uname -m)"
set ylabel "microseconds"
plot $(plot_lines lat 4)
set output "$plot_dir/bandwidth.png"
set title "streaming bandwidth (higher is better)"
set ylabel "MB/s"
set key bottom right
plot $(plot_lines bw 6)
GNUPLOT
awk -F'\t' 'NR > 1 && $2 > 0 { print $2, $4, $6, $7 > ("'"$plot_dir"'/scale-" $1 ".dat") }' "$scale"
awk -F'\t' 'NR > 1 { print $2 + ($2 == 0), $3 > ("'"$plot_dir"'/idle-latency-" $1 ".dat") }' "$scale"
gnuplot <<GNUPLOT
set terminal pngcairo size 900,560 noenhanced
set logscale xy
set grid
set output "$plot_dir/memory.png"
set title "memory per idle channel (this process), bellows vs a fixed 256 KiB first tier"
set xlabel "idle channels between the two processes"
set ylabel "bytes per channel"
set key center right
plot '$plot_dir/scale-bellows.dat' using 1:2 with linespoints title 'bellows registered', \
     '$plot_dir/scale-bellows.dat' using 1:3 with linespoints title 'bellows RSS', \
     '$plot_dir/scale-fixed-256KiB.dat' using 1:2 with linespoints title 'fixed 256 KiB registered', \
     '$plot_dir/scale-fixed-256KiB.dat' using 1:3 with linespoints title 'fixed 256 KiB RSS'
set output "$plot_dir/idle-latency.png"
set title "8 B half round trip of one active channel beside idle ones (0 plotted at 1)"
set ylabel "microseconds, p50"
unset logscale y
set yrange [0:*]
plot '$plot_dir/idle-latency-bellows.dat' using 1:2 with linespoints title 'bellows', \
     '$plot_dir/idle-latency-fixed-256KiB.dat' using 1:2 with linespoints title 'fixed 256 KiB'
GNUPLOT
echo "plots: $plot_dir/{latency,bandwidth,memory,idle-latency}.png"
