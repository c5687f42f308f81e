#!/usr/bin/env bash
# The client's DNS stub against dnsmasq, in one run, on loopback, with dnsperf:
#
#   protected  the stub answering protected names with synthetic addresses, against
#              dnsmasq answering the same names from --address=/corp.test/... (its
#              fastest path: no upstream, no cache miss);
#   forwarded  unprotected names through the stub (stub -> dnsmasq), against dnsmasq
#              asked directly.
#
# Each case runs BENCH_SECONDS (default 5) flat out for queries/s, then as long again at a
# fixed rate with dnsperf -v so every reply's latency is kept; the script prints
# queries/s, mean, p50 and p99 latency and the stub/dnsmasq ratios. Prints figures;
# never fails on them.
#
#   bench/client_dns.sh
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${BENCH_SECONDS:-5}
stub_bin=build/release/client/sallyport-dnsstub
if [[ ! -x $stub_bin ]]; then
  cmake -S . -B build/release -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build build/release -j2 --target sallyport-dnsstub >/dev/null
fi
dnsmasq_bin=$(command -v dnsmasq || echo /usr/sbin/dnsmasq)
command -v dnsperf >/dev/null || { echo "client_dns: dnsperf not installed"; exit 1; }

tmp=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket
for _ in range(50):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0))
    p = u.getsockname()[1]; t = socket.socket()
    try:
        t.bind(("127.0.0.1", p)); print(p); break
    except OSError: pass
    finally: t.close(); u.close()'
}

upstream_port=$(free_port)
"$dnsmasq_bin" --keep-in-foreground --no-resolv --no-hosts --conf-file=/dev/null \
  --port="$upstream_port" --listen-address=127.0.0.1 --bind-interfaces \
  --address=/corp.test/10.1.2.3 --address=/example.test/127.0.0.7 \
  --pid-file="$tmp/dnsmasq.pid" 2>"$tmp/dnsmasq.log" &
pids+=($!)

cat >"$tmp/resources.json" <<'EOF'
[{"address": "app.corp.test"}, {"address": "*.wild.corp.test"},
 {"address": "10.1.2.0/24", "alias": "db.corp.test"}]
EOF
stub_port=$(free_port)
"$stub_bin" --listen "127.0.0.1:$stub_port" --upstream "127.0.0.1:$upstream_port" \
  --resources "$tmp/resources.json" --log-level warn 2>"$tmp/stub.log" &
pids+=($!)

# Same names for both sides of each comparison: 100 wildcard hosts plus the exact and
# alias names; forwarded ones are 100 names under example.test.
{
  echo "app.corp.test A"
  echo "db.corp.test A"
  for i in $(seq 1 100); do echo "host$i.wild.corp.test A"; done
} >"$tmp/protected.txt"
for i in $(seq 1 100); do echo "w$i.example.test A"; done >"$tmp/forwarded.txt"

# Wait until both answer.
for _ in $(seq 1 100); do
  if dnsperf -s 127.0.0.1 -p "$stub_port" -d "$tmp/forwarded.txt" -n 1 -t 1 2>/dev/null |
      grep -q 'Queries completed: *100 '; then break; fi
  sleep 0.1
done

# run NAME PORT FILE -> "qps mean_ms p50_ms p99_ms replies lost"
# Throughput: dnsperf flat out (-q 100 outstanding). Latency: a second run paced at
# BENCH_LATENCY_QPS with -v, so each reply's time is service time rather than time spent
# queued behind dnsperf's own backlog.
latency_qps=${BENCH_LATENCY_QPS:-10000}
run() {
  local name=$1 port=$2 file=$3
  dnsperf -s 127.0.0.1 -p "$port" -d "$file" -l "$seconds" -c 4 -q 100 \
    >"$tmp/$name.out" 2>&1 || true
  dnsperf -s 127.0.0.1 -p "$port" -d "$file" -l "$seconds" -c 4 -q 100 -Q "$latency_qps" -v \
    >"$tmp/$name.lat.out" 2>&1 || true
  local qps lost
  qps=$(awk '/Queries per second:/ {print $4}' "$tmp/$name.out")
  lost=$(awk '/Queries lost:/ {print $3}' "$tmp/$name.out")
  grep '^> ' "$tmp/$name.lat.out" | awk '{print $NF}' | sort -g >"$tmp/$name.lat"
  awk -v qps="$qps" -v lost="$lost" '
    { v[NR] = $1; sum += $1 }
    END {
      if (NR == 0) { printf "%s 0 0 0 0 %s\n", qps, lost; exit }
      p50 = v[int(NR * 0.50) > 0 ? int(NR * 0.50) : 1]
      p99 = v[int(NR * 0.99) > 0 ? int(NR * 0.99) : 1]
      printf "%s %.3f %.3f %.3f %d %s\n", qps, sum / NR * 1000, p50 * 1000, p99 * 1000, NR, lost
    }' "$tmp/$name.lat"
}

echo "machine: $(nproc) cores, $(uname -r); dnsperf -l $seconds -c 4 -q 100 (latency at -Q $latency_qps), loopback"
echo "dnsmasq $("$dnsmasq_bin" --version | head -1 | awk '{print $3}'), c-ares $(pkg-config --modversion libcares), libevent $(pkg-config --modversion libevent_core)"
printf '%-20s %12s %9s %9s %9s %9s %6s\n' case "queries/s" "mean ms" "p50 ms" "p99 ms" "timed" lost
declare -A r
for c in "stub_protected $stub_port protected" "dnsmasq_protected $upstream_port protected" \
         "stub_forwarded $stub_port forwarded" "dnsmasq_forwarded $upstream_port forwarded"; do
  set -- $c
  r[$1]=$(run "$1" "$2" "$tmp/$3.txt")
  set -- $1 ${r[$1]}
  printf '%-20s %12.0f %9s %9s %9s %9s %6s\n' "$1" "$2" "$3" "$4" "$5" "$6" "$7"
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
read -r sp_qps _ _ sp_p99 _ <<<"${r[stub_protected]}"
read -r dp_qps _ _ dp_p99 _ <<<"${r[dnsmasq_protected]}"
read -r sf_qps _ _ sf_p99 _ <<<"${r[stub_forwarded]}"
read -r df_qps _ _ df_p99 _ <<<"${r[dnsmasq_forwarded]}"
echo "protected names: stub/dnsmasq queries/s $(ratio "$sp_qps" "$dp_qps")x," \
     "p99 $(ratio "$sp_p99" "$dp_p99")x (target: queries/s >= 1.0x)"
echo "forwarded names: stub+dnsmasq/dnsmasq queries/s $(ratio "$sf_qps" "$df_qps")x," \
     "p99 $(ratio "$sf_p99" "$df_p99")x"
bad=$(grep '^> ' "$tmp/stub_protected.lat.out" | grep -vc '^> NOERROR' || true)
echo "stub protected replies other than NOERROR: $bad"
