#!/bin/sh
# Data-plane benchmark (not a test; ~4 minutes; loopback only).
#
#   bench/dataplane.sh [BUILD_DIR]        # BUILD_DIR defaults to build/release
#
# Compares, in one run: (a) direct loopback to the target, (b) a direct Sallyport tunnel
# (sp_test_client forward -> sallyport-connector -> target), (b') the same tunnel through
# the controller's relay (sp_test_client forward --relay), (c) a haproxy TLS
# wrap-and-unwrap chain, (d) stunnel client -> stunnel server. Figures: iperf3 single-stream
# throughput, wrk keep-alive request rate and p50/p99 latency, wrk new connections per
# second, and the connector's memory per idle flow (10,000 flows). Prints a table and the
# ratios against the haproxy chain and relayed/direct tunnel: medians of ROUNDS (default 3) interleaved rounds.
# See bench/dataplane.py for the details.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
# The peers measured against (haproxy, stunnel, iperf3, wrk) come from Debian's packages.
"$here/../scripts/install-deps" --e2e
build=${1:-$here/../build/release}
# 10,000 idle flows need fds: ask for 65536, else take the hard limit
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
exec python3 "$here/dataplane.py" \
	"$build/controller/sallyport-controller" \
	"$build/connector/sallyport-connector" \
	"$build/tests/tools/sp_test_client"
