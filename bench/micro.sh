#!/usr/bin/env bash
# Micro-benchmarks of the common library, each printed next to its reference from the
# same run: ES256 via our token module against raw OpenSSL (both in-process, and
# `openssl speed ecdsap256` as the library's own figure), DNS parse+answer rate, and
# resource lookup latency among 10,000 resources. Prints figures; never fails on them.
#
#   bench/micro.sh [token|dns|resource]...
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ ! -x build/release/bench/sallyport-bench-micro ]]; then
  cmake -S . -B build/release -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build build/release -j "$(nproc)" --target sallyport-bench-micro >/dev/null
fi
echo "machine: $(nproc) cores, $(uname -r), $(openssl version)"
build/release/bench/sallyport-bench-micro "$@"
if [[ $# -eq 0 || " $* " == *" token "* ]]; then
  echo "openssl speed (reference, same run):"
  openssl speed -seconds 2 ecdsap256 2>/dev/null | grep -E '^ *256 bits ecdsa' |
    awk '{printf "  %-44s %14.1f %-8s\n  %-44s %14.1f %-8s\n", "openssl speed ecdsap256 sign", $(NF-1), "ops/s", "openssl speed ecdsap256 verify", $NF, "ops/s"}'
fi
