#!/usr/bin/env bash
# Integration test: the sallyport-controller program itself — commands, exit codes and
# messages for bad invocations, the operational endpoints, API-key checks, and a clean
# stop on SIGTERM. Usage: controller_cli.sh PATH-TO-sallyport-controller
set -u
bin=${1:?usage: controller_cli.sh PATH-TO-sallyport-controller}
work=$(mktemp -d)
pid=
cleanup() { [[ -n "$pid" ]] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
passed=0 failed=0
check() { # check NAME COMMAND...: passes when the command succeeds
  local name=$1; shift
  if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAIL: $name"; fi
}
expect_exit() { # expect_exit CODE PATTERN COMMAND...: exit code and a stderr line matching
  local code=$1 pattern=$2; shift 2
  "$@" >"$work/out" 2>"$work/err"; local rc=$?
  [[ $rc -eq $code ]] && grep -q -- "$pattern" "$work/err"
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

state="$work/state"
check "no command is a usage error" expect_exit 2 "missing command" "$bin"
check "unknown command" expect_exit 2 'unknown command "frobnicate"' "$bin" frobnicate
check "unknown flag names the flag" expect_exit 2 'unknown flag "--nope"' "$bin" serve --nope
check "bad duration names the key" expect_exit 2 "grant_ttl" "$bin" migrate --grant-ttl 7 --state-dir "$state"
check "public bind without TLS refused" expect_exit 2 "not a loopback address" \
  "$bin" serve --http-listen 0.0.0.0:1 --state-dir "$state"
check "postgres not yet" expect_exit 1 "PostgreSQL" "$bin" migrate --database postgres://x/y
check "--version" bash -c "'$bin' --version | grep -q '^sallyport-controller [0-9]'"
check "--help lists env names" bash -c "'$bin' --help | grep -q SALLYPORT_HTTP_LISTEN"
check "migrate applies" bash -c "'$bin' migrate --state-dir '$state' | grep -q 'applied 2 migrations;'"
check "migrate is idempotent" bash -c "'$bin' migrate --state-dir '$state' | grep -q 'applied 0 migrations'"
check "state dir is private" bash -c "[[ \$(stat -c %a '$state') == 700 ]]"
check "database file is private" bash -c "[[ \$(stat -c %a '$state/controller.db') == 600 ]]"
check "admin-key needs --name" expect_exit 2 "needs --name" "$bin" admin-key create --state-dir "$state"
check "bad role refused" expect_exit 1 'role must be' "$bin" admin-key create --name x --role root --state-dir "$state"
admin=$("$bin" admin-key create --name ops --state-dir "$state" 2>/dev/null)
auditor=$("$bin" admin-key create --name audit --role auditor --state-dir "$state" 2>/dev/null)
check "admin key shape" bash -c "[[ '$admin' =~ ^spk_[A-Za-z0-9_-]{43}$ ]]"
check "connector-token needs a known network" expect_exit 1 'no remote network named "vpc"' \
  "$bin" connector-token create --network vpc --state-dir "$state"
check "key stored hashed only" bash -c "! sqlite3 '$state/controller.db' .dump | grep -q -- '$admin'"
check "audit event for the key" bash -c \
  "sqlite3 '$state/controller.db' \"SELECT count(*) FROM audit_events WHERE action='api_key.create'\" | grep -qx 2"

port=$(free_port)
url="http://127.0.0.1:$port"
"$bin" serve --state-dir "$state" --http-listen "127.0.0.1:$port" --public-url "$url" \
  --log-format json 2>"$work/serve.log" &
pid=$!
for _ in $(seq 600); do curl -s "$url/healthz" >/dev/null && break; sleep 0.05; done
check "healthz" bash -c "curl -sf '$url/healthz' | grep -q '\"ok\"'"
check "readyz" bash -c "curl -sf '$url/readyz' | grep -q '\"ready\"'"
check "jwks has one ES256 key" bash -c \
  "curl -sf '$url/.well-known/jwks.json' | python3 -c 'import json,sys; k=json.load(sys.stdin)[\"keys\"]; assert len(k)==1 and k[0][\"alg\"]==\"ES256\" and \"d\" not in k[0]'"
check "metrics are Prometheus text" bash -c \
  "curl -sf '$url/metrics' | grep -q '^# TYPE sallyport_controller_http_requests_total counter'"
check "unknown path is a JSON 404" bash -c \
  "[[ \$(curl -s -o /dev/null -w '%{http_code}' '$url/nope') == 404 ]] && curl -s '$url/nope' | grep -q '\"code\":\"not_found\"'"
check "log lines are JSON" bash -c "head -1 '$work/serve.log' | python3 -c 'import json,sys; json.loads(sys.stdin.readline())'"
check "no key appears in the log" bash -c "! grep -q -- '$admin' '$work/serve.log'"

kill -TERM "$pid"
wait "$pid"; rc=$?; pid=
check "SIGTERM stops cleanly" test "$rc" -eq 0
check "stop is logged" grep -q '"msg":"stopping"' "$work/serve.log"

echo "controller_cli: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
