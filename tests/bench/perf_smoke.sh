#!/usr/bin/env bash
# Runs every bellows-perf mode briefly, as JSON and as a table, and checks that the output
# parses and holds what each mode promises. No timing is judged: figures only have to exist.
#   tests/bench/perf_smoke.sh path/to/bellows-perf
set -euo pipefail
perf=$1
fail() { echo "perf_smoke: $*" >&2; exit 1; }

json=$(timeout 120 "$perf" -t lat,bw,rate,scale -s 8,4K -n 200 -w 10 --channels 0,16 --json)
# enlarge: by default one size per tier above the first; 8 B fits the first ring and is skipped.
json+=$'\n'$(timeout 120 "$perf" -t enlarge -n 3 --json)
skip_log=$(mktemp)
trap 'rm -f "$skip_log"' EXIT
[[ -z $(timeout 60 "$perf" -t enlarge -s 8 -n 3 --json 2>"$skip_log") ]] || fail "enlarge measured 8 B"
grep -q "grew no ring (it fits the first one" "$skip_log" || fail "enlarge did not say why it skipped 8 B"
echo "$json"
number='-?[0-9][0-9.e+-]*'
line_pattern="^\{\"mode\":\"(lat|bw|rate|enlarge|scale)\",\"provider\":\"shm\",\"size\":[0-9]+,\"iterations\":[0-9]+(,\"[A-Za-z0-9_/]+\":(null|$number))*\}$"
while IFS= read -r line; do
  [[ $line =~ $line_pattern ]] || fail "not a result line: $line"
done <<<"$json"

# field MODE KEY: the values of KEY on MODE's lines, one per line.
field() { grep "\"mode\":\"$1\"" <<<"$json" | grep -o "\"$2\":[^,}]*" | cut -d: -f2; }
for mode in lat bw rate enlarge scale; do
  [[ $(grep -c "\"mode\":\"$mode\"" <<<"$json") -eq 2 ]] || fail "expected two $mode results"
done
for value in $(field lat p50_us) $(field bw mb_per_s) $(field rate msg_per_s) $(field enlarge p50_us) \
  $(field enlarge handshake_p50) $(field enlarge handshake_p99) $(field enlarge fragmented_p50) \
  $(field enlarge enlarged_before_p50) $(field enlarge provision_p99) $(field scale p50_us); do
  [[ $value =~ ^$number$ ]] || fail "a figure is missing: $value"
done
[[ $(field enlarge to_tier | tr '\n' ' ') == "1 2 " ]] || fail "enlarge did not visit tiers 1 and 2"
# The second scale round has 16 idle channels: a 4 KiB ring and a 128 B control block each.
[[ $(field scale 'reg_B/ch' | tail -1) == 4224 ]] || fail "an idle channel should register 4224 B here"
[[ $(field scale 'peer_reg_B/ch' | tail -1) == 4224 ]] || fail "an idle channel should register 4224 B there"

# herd: every channel enlarged at once, and answered; with a budget for two rings the rest are
# denied and go in fragments.
herd=$(timeout 60 "$perf" -t herd --channels 16 --json)
herd_field() { grep -o "\"$1\":[^,}]*" <<<"$herd" | cut -d: -f2; }
[[ $(herd_field enlarged) == 16 && $(herd_field denied) == 0 ]] || fail "herd: not every channel enlarged: $herd"
herd=$(timeout 60 "$perf" -t herd --channels 16 --budget 3M --json)
[[ $(herd_field denied) -gt 0 ]] || fail "herd: a 3 MiB budget denied nothing: $herd"

# The fixed-large comparison starts every channel at 256 KiB.
large=$(timeout 60 "$perf" -t scale --fixed-large --channels 4 -n 100 --json)
[[ $(field() { grep -o "\"$2\":[^,}]*" <<<"$large" | cut -d: -f2; }; field scale 'reg_B/ch') == 262272 ]] ||
  fail "a fixed-large idle channel should register 256 KiB + 128 B: $large"

# bw with several sends in flight: the peer counts every message before it answers.
outstanding=$(timeout 60 "$perf" -t bw -s 8,1M -n 200 -w 10 --outstanding 4 --json)
[[ $(grep -c '"outstanding":4' <<<"$outstanding") -eq 2 ]] || fail "bw --outstanding 4 did not run: $outstanding"
own=$(timeout 60 "$perf" -t bw -s 1M -n 200 -w 10 --outstanding 4 --buffer-per-receive --json)
[[ $(grep -c '"outstanding":4' <<<"$own") -eq 1 ]] || fail "bw --buffer-per-receive did not run: $own"

# local: both ends in this process; each size streams and reports its time per message.
local=$(timeout 60 "$perf" -t local -s 8,4K -n 500 -w 10 --json)
[[ $(grep -c '"mode":"local","provider":"shm"' <<<"$local") -eq 2 ]] || fail "local did not run both sizes: $local"
for value in $(grep -o '"avg_us":[^,}]*' <<<"$local" | cut -d: -f2); do
  [[ $value =~ ^$number$ ]] || fail "local: a figure is missing: $local"
done

# The table: a header, then one row per size.
table=$(timeout 60 "$perf" -t lat -s 8,64 -n 100)
echo "$table"
[[ $(head -1 <<<"$table") == mode* ]] || fail "the table has no header"
[[ $(grep -cE '^lat +shm +(8|64) ' <<<"$table") -eq 2 ]] || fail "the table lacks its rows"

# Bad input: a clear message and a failing status.
if out=$("$perf" -t nonsense -n 10 2>&1); then fail "an unknown mode was accepted"; fi
grep -q "unknown mode nonsense" <<<"$out" || fail "unclear message for an unknown mode: $out"
if out=$("$perf" -s 0 2>&1); then fail "a zero size was accepted"; fi
grep -q "sizes go from" <<<"$out" || fail "unclear message for a bad size: $out"
if out=$("$perf" -t bw --outstanding 0 2>&1); then fail "zero sends in flight were accepted"; fi
grep -q "outstanding takes 1 or more" <<<"$out" || fail "unclear message for --outstanding 0: $out"
echo "perf_smoke: all modes ran and parsed"
