#!/usr/bin/env bash
# Self-test of Sallyport's OIDC test tools: starts the loopback test IdP (provider.mjs)
# and the misbehaving issuer (evil-idp.mjs), and checks discovery, the authorization-code
# flow with PKCE through drive-login.mjs, the device flow, key rotation, and every
# evil-idp mode. Ends with "oidc selftest: N passed, N failed"; exits 0 only when all
# passed. Every process it starts is stopped on exit.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$here"

"$root/scripts/install-test-tools" || { echo "oidc selftest: install-test-tools failed" >&2; exit 1; }

work=$(mktemp -d /tmp/sallyport-oidc-selftest.XXXXXX)
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok    $*"; }
bad() { failed=$((failed + 1)); echo "FAIL  $*"; }

# json FILE EXPR: prints a field of the one-line JSON in FILE (EXPR in JS, `j` is the value).
json() { node -e 'const j=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8").trim().split("\n").pop()); const v=('"$2"'); process.stdout.write(typeof v==="string"?v:JSON.stringify(v))' "$1"; }

# start NAME CMD...: runs CMD in the background, waits for its ready line, keeps its pid.
start() {
  local name=$1; shift
  "$@" >"$work/$name.out" 2>"$work/$name.err" &
  local pid=$!
  pids+=("$pid")
  local i
  for ((i = 0; i < 100; i++)); do
    if [[ -s "$work/$name.out" ]] && grep -q '}' "$work/$name.out"; then return 0; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "oidc selftest: $name did not start" >&2
  cat "$work/$name.err" >&2
  return 1
}

# run NAME CMD...: runs CMD, output in $work/NAME.json; ok/bad by its exit status.
run() {
  local name=$1; shift
  if "$@" >"$work/$name.json" 2>"$work/$name.err"; then
    ok "$name"
  else
    bad "$name: $(cat "$work/$name.json") $(tail -3 "$work/$name.err")"
    return 1
  fi
}

start provider node provider.mjs --config sample-config.json --port 0 || exit 1
issuer=$(json "$work/provider.out" j.issuer)
[[ $(json "$work/provider.out" j.pid) == "${pids[0]}" ]] && ok "provider ready line ($issuer)" ||
  bad "provider ready line: $(cat "$work/provider.out")"

ctl=(--client-id sallyport-controller --client-secret sallyport-controller-test-secret)
cb=http://127.0.0.1:18080/auth/callback

run discovery node rp-check.mjs --step discovery --issuer "$issuer"

# code_flow NAME USER PASSWORD CLIENT-ARGS -- EXPECTATIONS: authorization code + PKCE.
code_flow() {
  local name=$1 user=$2 pass=$3; shift 3
  local client=() expect=()
  while [[ $# -gt 0 && $1 != -- ]]; do client+=("$1"); shift; done
  shift
  expect=("$@")
  node rp-check.mjs --step authorize --issuer "$issuer" "${client[@]}" --redirect-uri "$cb" \
    --state-file "$work/$name.state" >"$work/$name.auth" 2>>"$work/$name.err" ||
    { bad "$name: authorize"; return 1; }
  node drive-login.mjs --url "$(json "$work/$name.auth" j.url)" --username "$user" --password "$pass" \
    >"$work/$name.login" 2>>"$work/$name.err" ||
    { bad "$name: drive-login $(cat "$work/$name.login")"; return 1; }
  run "$name" node rp-check.mjs --step exchange --issuer "$issuer" "${client[@]}" --redirect-uri "$cb" \
    --state-file "$work/$name.state" --redirect "$(json "$work/$name.login" j.redirect)" "${expect[@]}"
}

code_flow code-flow-eng eng-user eng-pass "${ctl[@]}" -- \
  --expect-groups engineering --expect-email-verified true --expect-alg ES256 --expect-amr pwd
code_flow code-flow-fin fin-user fin-pass "${ctl[@]}" -- \
  --expect-sub fin-user --expect-groups finance --expect-alg ES256
code_flow code-flow-by-email-local-part ops.user ops-pass "${ctl[@]}" -- \
  --expect-sub 00uops0001 --expect-groups operations
code_flow code-flow-unverified unverified-user unverified-pass "${ctl[@]}" -- \
  --expect-email-verified false --expect-alg ES256
code_flow code-flow-mfa mfa-user mfa-pass "${ctl[@]}" -- \
  --expect-amr pwd,mfa --expect-groups engineering,admins
code_flow code-flow-rs256-post-skip-consent eng-user eng-pass \
  --client-id sallyport-controller-rs256 --client-secret sallyport-controller-rs256-test-secret --auth post -- \
  --expect-alg RS256 --expect-groups engineering

# A wrong password is refused on the login page.
node rp-check.mjs --step authorize --issuer "$issuer" "${ctl[@]}" --redirect-uri "$cb" \
  --state-file "$work/badpw.state" >"$work/badpw.auth"
if node drive-login.mjs --url "$(json "$work/badpw.auth" j.url)" --username eng-user --password wrong \
     >"$work/badpw.json" 2>/dev/null; then
  bad "wrong password accepted: $(cat "$work/badpw.json")"
elif [[ $(json "$work/badpw.json" j.error) == login_failed ]]; then
  ok "wrong password refused"
else
  bad "wrong password: $(cat "$work/badpw.json")"
fi

# Deny on the consent page sends access_denied back to the relying party.
node rp-check.mjs --step authorize --issuer "$issuer" "${ctl[@]}" --redirect-uri "$cb" \
  --state-file "$work/deny.state" >"$work/deny.auth"
node drive-login.mjs --url "$(json "$work/deny.auth" j.url)" --username fin-user --password fin-pass --deny \
  >"$work/deny.json" 2>/dev/null
if [[ $(json "$work/deny.json" 'new URL(j.redirect).searchParams.get("error")') == access_denied ]]; then
  ok "consent denied -> access_denied"
else
  bad "consent deny: $(cat "$work/deny.json")"
fi

# An unregistered redirect_uri is refused at the IdP (no redirect to it).
node rp-check.mjs --step authorize --issuer "$issuer" "${ctl[@]}" --redirect-uri http://127.0.0.1:18081/evil \
  --state-file "$work/badredirect.state" >"$work/badredirect.auth"
if node drive-login.mjs --url "$(json "$work/badredirect.auth" j.url)" --username eng-user --password eng-pass \
     >"$work/badredirect.json" 2>/dev/null; then
  bad "unregistered redirect_uri followed: $(cat "$work/badredirect.json")"
else
  ok "unregistered redirect_uri refused"
fi

# RFC 8252: the native client's loopback redirect on any port, through a relying party
# with a login cookie (drive-login --rp-start / --jar / --follow).
if start fake-rp node rp-check.mjs --step fake-rp --issuer "$issuer" --client-id sallyport-cli; then
  rp=$(json "$work/fake-rp.out" j.url)
  if node drive-login.mjs --rp-start "$rp/auth/login" --jar "$work/rp.cookies" --follow \
       --username eng-user --password eng-pass >"$work/follow.json" 2>"$work/follow.err" &&
     [[ $(json "$work/follow.json" j.status) == 200 ]] &&
     [[ $(json "$work/follow.json" 'JSON.parse(j.body).signed_in') == eng-user ]] &&
     grep -q sp_session "$work/rp.cookies"; then
    ok "native loopback client via --rp-start/--jar/--follow"
  else
    bad "native loopback client: $(cat "$work/follow.json") $(tail -3 "$work/follow.err")"
  fi
else
  bad "fake relying party did not start"
fi

# Device flow (RFC 8628): client side by rp-check, user side by drive-login.
if run device-start node rp-check.mjs --step device-start --issuer "$issuer" "${ctl[@]}" \
     --state-file "$work/device.state"; then
  if run device-user node drive-login.mjs --device-code "$(json "$work/device-start.json" j.user_code)" \
       --verification-uri "$(json "$work/device-start.json" j.verification_uri)" \
       --username fin-user --password fin-pass; then
    run device-token node rp-check.mjs --step device-token --issuer "$issuer" "${ctl[@]}" \
      --state-file "$work/device.state" --expect-groups finance --expect-alg ES256
  fi
fi

# The user cancels on the device page: the device's token request gets access_denied.
if run device-deny-start node rp-check.mjs --step device-start --issuer "$issuer" --client-id sallyport-cli \
     --state-file "$work/device-deny.state"; then
  run device-deny-user node drive-login.mjs --device-code "$(json "$work/device-deny-start.json" j.user_code)" \
    --verification-uri "$(json "$work/device-deny-start.json" j.verification_uri)" \
    --username eng-user --password eng-pass --deny &&
  run device-deny-token node rp-check.mjs --step device-token --issuer "$issuer" --client-id sallyport-cli \
    --state-file "$work/device-deny.state" --expect-error access_denied
fi

# Key rotation: a new active ES256 key, the old one still published, new tokens signed
# with the new key; then the old key dropped.
ec_kids() { node -e '
  fetch(process.argv[1] + "/jwks").then((r) => r.json()).then((j) => {
    process.stdout.write(j.keys.filter((k) => k.kty === "EC").map((k) => k.kid).join(" "));
  })' "$issuer"; }
old_kids=$(ec_kids)
curl_post() { node -e 'fetch(process.argv[1], { method: "POST" }).then(async (r) => {
  process.stdout.write(await r.text()); process.exit(r.ok ? 0 : 1); })' "$1"; }
if curl_post "$issuer/_test/rotate-keys" >"$work/rotate.json"; then
  new_kid=$(json "$work/rotate.json" j.active_kid)
  kids=$(ec_kids)
  if [[ $(wc -w <<<"$kids") -eq 2 && " $kids " == *" $old_kids "* && " $kids " == *" $new_kid "* ]]; then
    ok "rotate-keys: JWKS has two ES256 keys ($kids)"
  else
    bad "rotate-keys: JWKS EC kids '$kids', old '$old_kids', new '$new_kid'"
  fi
  code_flow code-flow-after-rotation eng-user eng-pass "${ctl[@]}" -- --expect-kid "$new_kid" --expect-alg ES256
  if curl_post "$issuer/_test/drop-old-keys" >/dev/null && [[ $(ec_kids) == "$new_kid" ]]; then
    ok "drop-old-keys: only $new_kid left"
  else
    bad "drop-old-keys: EC kids '$(ec_kids)'"
  fi
else
  bad "rotate-keys: $(cat "$work/rotate.json")"
fi

# The misbehaving issuer: every mode once, checking the token carries its defect.
if start evil node evil-idp.mjs --port 0; then
  evil=$(json "$work/evil.out" j.issuer)
  for mode in good tampered-signature alg-none hs256-with-public-key wrong-iss wrong-aud expired \
              wrong-nonce missing-nonce unverified-email unknown-kid-then-rotate azp-mismatch; do
    run "evil-$mode" node rp-check.mjs --step evil --issuer "$evil" --mode "$mode" \
      --client-id sallyport-controller --client-secret x --redirect-uri "$cb"
  done
else
  bad "evil-idp did not start"
fi

# The provider logged no internal error.
if grep -q -E 'server_error|internal error' "$work/provider.err"; then
  bad "provider logged errors: $(grep -E 'server_error|internal error' "$work/provider.err" | head -3)"
else
  ok "provider logged no internal error"
fi

echo "oidc selftest: $passed passed, $failed failed"
((failed == 0))
