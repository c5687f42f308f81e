#!/usr/bin/env bash
# The client's interception modes side by side, in one run inside a network namespace
# (root): tun mode (TUN device + TPROXY), loopback mode, and nginx directly. Runs
# tests/integration/client_tun.py with SP_BENCH=1, which sets up the real controller,
# connector and nginx in the namespace, checks tun mode as the test does, then measures
#
#   throughput      curl downloading 200 MiB from nginx (one flow)
#   first byte      curl time_starttransfer for a small page over a warm tunnel with a
#                   cached grant (a new TCP connection each time; median of 21)
#
# and prints tun/loopback and tun/direct ratios. Prints figures; never fails on them
# (the script's exit status is the test's).
#
#   sudo bench/client_modes.sh [BUILD_DIR]      (default build/release)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build/release}
if [[ ! -x $build/client/sallyport ]]; then
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$build" -j2 --target sallyport-client sallyport-controller \
    sallyport-connector >/dev/null
fi
SP_BENCH=1 exec tests/integration/client_tun.py "$build/controller/sallyport-controller" \
  "$build/connector/sallyport-connector" "$build/client/sallyport"
