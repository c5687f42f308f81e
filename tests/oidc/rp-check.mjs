#!/usr/bin/env node
// A minimal relying party used only by tests/oidc/selftest.sh to check Sallyport's test
// IdPs: it builds authorization requests (PKCE S256, state, nonce), exchanges codes,
// runs the device flow's client side, and verifies or inspects the ID tokens it gets.
// It is a test of the tools, not of Sallyport's controller (which is the real RP).
//
// Steps (--step):
//   discovery     --issuer URL
//   authorize     --issuer URL --client-id ID --redirect-uri URI --state-file F
//                 prints {"url":"…"}; keeps state, nonce and code_verifier in F
//   exchange      (client options) --redirect-uri URI --state-file F --redirect URL [expectations]
//   device-start  (client options) --state-file F      prints {"user_code","verification_uri",…}
//   device-token  (client options) --state-file F [expectations]
//   fake-rp       --issuer URL --client-id ID (a native, public client)
//                 serves GET /auth/login and GET /callback on 127.0.0.1 (a free port,
//                 redirect_uri http://127.0.0.1:PORT/callback per RFC 8252); prints
//                 {"url":"http://127.0.0.1:PORT"}; the callback answers 200 with the
//                 signed-in user as JSON only when the login cookie matches the state
//   evil          --issuer URL --client-id ID --redirect-uri URI --mode MODE
//                 runs a whole flow against evil-idp.mjs and checks the token has MODE's defect
// Client options: --client-id ID [--client-secret S] [--auth basic|post|none]
// Expectations:   --expect-groups a,b --expect-email-verified true|false --expect-alg ES256
//                 --expect-amr pwd,mfa --expect-kid KID --expect-sub SUB
//                 --expect-error ERR (device-token: the token endpoint must answer ERR)
// Prints one JSON line; exits 0 when every check holds, 1 otherwise.
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';

import { createLocalJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify } from 'jose';

import { cli, fail, printJson } from './lib/common.mjs';

const args = cli({
  step: { type: 'string' },
  issuer: { type: 'string' },
  'client-id': { type: 'string' },
  'client-secret': { type: 'string' },
  auth: { type: 'string' },
  'redirect-uri': { type: 'string' },
  'state-file': { type: 'string' },
  redirect: { type: 'string' },
  scope: { type: 'string', default: 'openid email profile groups' },
  mode: { type: 'string' },
  'expect-groups': { type: 'string' },
  'expect-email-verified': { type: 'string' },
  'expect-alg': { type: 'string' },
  'expect-amr': { type: 'string' },
  'expect-kid': { type: 'string' },
  'expect-sub': { type: 'string' },
  'expect-error': { type: 'string' },
}, 'usage: rp-check.mjs --step discovery|authorize|exchange|device-start|device-token|evil … (see the file header)\n');

if (!args.issuer) fail('rp-check.mjs: --issuer is required');
const problems = [];
const check = (ok, what) => { if (!ok) problems.push(what); return ok; };

let serving = false; // fake-rp: report problems to the HTTP caller instead of exiting

function finish(result) {
  if (serving) throw new Error(problems.join('; ') || 'failed');
  if (problems.length) {
    printJson({ ok: false, problems, ...result });
    process.exit(1);
  }
  printJson({ ok: true, ...result });
  process.exit(0);
}

async function getJson(url, init) {
  const res = await fetch(url, { ...init, signal: AbortSignal.timeout(10000) });
  const text = await res.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    body = { raw: text };
  }
  return { status: res.status, body };
}

async function discover() {
  const { status, body } = await getJson(`${args.issuer}/.well-known/openid-configuration`);
  if (status !== 200) {
    problems.push(`discovery: HTTP ${status}`);
    finish({});
  }
  return body;
}

function clientAuth(form) {
  const id = args['client-id'];
  const secret = args['client-secret'];
  const method = args.auth ?? (secret ? 'basic' : 'none');
  const headers = { 'content-type': 'application/x-www-form-urlencoded' };
  if (method === 'basic') {
    headers.authorization = `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`;
  } else {
    form.set('client_id', id);
    if (method === 'post') form.set('client_secret', secret);
  }
  return headers;
}

async function tokenRequest(meta, form) {
  const headers = clientAuth(form);
  return getJson(meta.token_endpoint, { method: 'POST', headers, body: form.toString() });
}

async function fetchJwks(meta) {
  const { status, body } = await getJson(meta.jwks_uri);
  check(status === 200, `jwks: HTTP ${status}`);
  return body;
}

// Full ID token validation as an RP must do it, then the test's expectations.
async function validateIdToken(meta, idToken, { nonce } = {}) {
  const header = decodeProtectedHeader(idToken);
  const jwks = await fetchJwks(meta);
  const allowed = meta.id_token_signing_alg_values_supported ?? ['ES256'];
  let payload;
  try {
    ({ payload } = await jwtVerify(idToken, createLocalJWKSet(jwks), {
      issuer: meta.issuer,
      audience: args['client-id'],
      algorithms: allowed.filter((a) => a !== 'none' && !a.startsWith('HS')),
      clockTolerance: 5,
    }));
  } catch (err) {
    problems.push(`id_token: ${err.code ?? err.name}: ${err.message}`);
    return { header };
  }
  if (nonce !== undefined) check(payload.nonce === nonce, `nonce: got ${payload.nonce}, sent ${nonce}`);
  if (Array.isArray(payload.aud) && payload.aud.length > 1) {
    check(payload.azp === args['client-id'], 'azp must name this client when aud has several');
  }
  check(typeof payload.iat === 'number', 'iat missing');
  expectClaims(header, payload);
  return { header, payload };
}

function expectClaims(header, payload) {
  if (args['expect-alg']) check(header.alg === args['expect-alg'], `alg: got ${header.alg}, want ${args['expect-alg']}`);
  if (args['expect-kid']) check(header.kid === args['expect-kid'], `kid: got ${header.kid}, want ${args['expect-kid']}`);
  if (args['expect-sub']) check(payload.sub === args['expect-sub'], `sub: got ${payload.sub}`);
  if (args['expect-groups'] !== undefined) {
    const want = args['expect-groups'].split(',').filter(Boolean).sort().join(',');
    const got = Array.isArray(payload.groups) ? [...payload.groups].sort().join(',') : String(payload.groups);
    check(got === want, `groups: got ${got}, want ${want}`);
  }
  if (args['expect-email-verified'] !== undefined) {
    const want = args['expect-email-verified'] === 'true';
    check(payload.email_verified === want, `email_verified: got ${payload.email_verified}, want ${want}`);
  }
  if (args['expect-amr']) {
    const want = args['expect-amr'].split(',').sort().join(',');
    const got = Array.isArray(payload.amr) ? [...payload.amr].sort().join(',') : String(payload.amr);
    check(got === want, `amr: got ${got}, want ${want}`);
  }
}

function summary(header, payload) {
  return {
    alg: header?.alg,
    kid: header?.kid,
    sub: payload?.sub,
    groups: payload?.groups,
    email: payload?.email,
    email_verified: payload?.email_verified,
    amr: payload?.amr,
  };
}

const readState = () => JSON.parse(readFileSync(args['state-file'], 'utf8'));

function newRequestState() {
  const verifier = randomBytes(32).toString('base64url');
  return {
    state: randomBytes(16).toString('base64url'),
    nonce: randomBytes(16).toString('base64url'),
    verifier,
    challenge: createHash('sha256').update(verifier).digest('base64url'),
  };
}

function authorizationUrl(meta, st) {
  const u = new URL(meta.authorization_endpoint);
  u.search = new URLSearchParams({
    response_type: 'code',
    client_id: args['client-id'],
    redirect_uri: args['redirect-uri'],
    scope: args.scope,
    state: st.state,
    nonce: st.nonce,
    code_challenge: st.challenge,
    code_challenge_method: 'S256',
  }).toString();
  return u.href;
}

async function exchange(meta, st, redirect) {
  const back = new URL(redirect);
  check(back.searchParams.get('state') === st.state, 'state mismatch in the callback');
  if (back.searchParams.has('error')) {
    problems.push(`callback error: ${back.searchParams.get('error')}: ${back.searchParams.get('error_description')}`);
    finish({});
  }
  if (meta.authorization_response_iss_parameter_supported) {
    check(back.searchParams.get('iss') === meta.issuer, 'iss parameter missing or wrong in the callback');
  }
  const form = new URLSearchParams({
    grant_type: 'authorization_code',
    code: back.searchParams.get('code') ?? '',
    redirect_uri: args['redirect-uri'],
    code_verifier: st.verifier,
  });
  const { status, body } = await tokenRequest(meta, form);
  if (status !== 200 || !body.id_token) {
    problems.push(`token endpoint: HTTP ${status} ${JSON.stringify(body)}`);
    finish({});
  }
  return body;
}

switch (args.step) {
  case 'discovery': {
    const meta = await discover();
    check(meta.issuer === args.issuer, `issuer: got ${meta.issuer}`);
    for (const field of ['authorization_endpoint', 'token_endpoint', 'jwks_uri', 'userinfo_endpoint',
      'device_authorization_endpoint']) {
      check(typeof meta[field] === 'string' && meta[field].startsWith(args.issuer), `${field} missing or off-issuer`);
    }
    check(meta.code_challenge_methods_supported?.includes('S256'), 'S256 PKCE not advertised');
    check(meta.id_token_signing_alg_values_supported?.includes('ES256'), 'ES256 not advertised');
    check(meta.grant_types_supported?.includes('urn:ietf:params:oauth:grant-type:device_code'), 'device grant not advertised');
    for (const s of ['openid', 'email', 'profile', 'groups']) {
      check(meta.scopes_supported?.includes(s), `scope ${s} not advertised`);
    }
    const jwks = await fetchJwks(meta);
    check(jwks.keys?.some((k) => k.alg === 'ES256' && k.kty === 'EC' && !k.d), 'no public ES256 key in JWKS');
    check(!jwks.keys?.some((k) => k.d || k.p), 'JWKS leaks private key material');
    finish({ issuer: meta.issuer, keys: jwks.keys?.length });
    break;
  }
  case 'authorize': {
    const meta = await discover();
    const st = newRequestState();
    writeFileSync(args['state-file'], JSON.stringify(st));
    printJson({ url: authorizationUrl(meta, st) });
    break;
  }
  case 'exchange': {
    const meta = await discover();
    const st = readState();
    const body = await exchange(meta, st, args.redirect);
    const { header, payload } = await validateIdToken(meta, body.id_token, { nonce: st.nonce });
    check(body.token_type?.toLowerCase() === 'bearer', `token_type: ${body.token_type}`);
    // The access token works at userinfo and names the same subject.
    const ui = await getJson(meta.userinfo_endpoint, { headers: { authorization: `Bearer ${body.access_token}` } });
    check(ui.status === 200 && ui.body.sub === payload?.sub, `userinfo: HTTP ${ui.status} sub ${ui.body.sub}`);
    finish({ ...summary(header, payload), refresh_token: Boolean(body.refresh_token) });
    break;
  }
  case 'device-start': {
    const meta = await discover();
    const form = new URLSearchParams({ scope: args.scope });
    const headers = clientAuth(form);
    const { status, body } = await getJson(meta.device_authorization_endpoint, {
      method: 'POST', headers, body: form.toString(),
    });
    if (status !== 200) {
      problems.push(`device authorization: HTTP ${status} ${JSON.stringify(body)}`);
      finish({});
    }
    writeFileSync(args['state-file'], JSON.stringify({ device_code: body.device_code, interval: body.interval }));
    printJson({
      user_code: body.user_code,
      verification_uri: body.verification_uri,
      verification_uri_complete: body.verification_uri_complete,
      interval: body.interval,
      expires_in: body.expires_in,
    });
    break;
  }
  case 'device-token': {
    const meta = await discover();
    const st = readState();
    const deadline = Date.now() + 15000;
    let result;
    for (;;) {
      const form = new URLSearchParams({
        grant_type: 'urn:ietf:params:oauth:grant-type:device_code',
        device_code: st.device_code,
      });
      result = await tokenRequest(meta, form);
      if (result.status === 200) break;
      const err = result.body.error;
      if (args['expect-error'] && err === args['expect-error']) finish({ error: err });
      if ((err !== 'authorization_pending' && err !== 'slow_down') || Date.now() > deadline) {
        problems.push(`device token: HTTP ${result.status} ${JSON.stringify(result.body)}`);
        finish({});
      }
      await new Promise((r) => { setTimeout(r, 1000); });
    }
    check(!args['expect-error'], `expected error ${args['expect-error']}, got tokens`);
    const { header, payload } = await validateIdToken(meta, result.body.id_token);
    finish(summary(header, payload));
    break;
  }
  case 'evil': {
    const mode = args.mode;
    const set = await getJson(`${args.issuer}/_test/mode`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ mode }),
    });
    if (set.status !== 200) {
      problems.push(`cannot set mode ${mode}: ${JSON.stringify(set.body)}`);
      finish({});
    }
    const meta = await discover();
    const st = newRequestState();
    const res = await fetch(authorizationUrl(meta, st), { redirect: 'manual' });
    const body = await exchange(meta, st, new URL(res.headers.get('location'), meta.issuer).href);
    const token = body.id_token;
    const header = decodeProtectedHeader(token);
    const payload = decodeJwt(token);
    const now = Math.floor(Date.now() / 1000);
    const jwks1 = await fetchJwks(meta);
    const keyset = createLocalJWKSet(jwks1);
    const opts = { issuer: meta.issuer, audience: args['client-id'], algorithms: ['ES256'] };
    // Verifies the signature only (claims checked separately below).
    const signatureOk = async (set = keyset) => {
      try {
        await jwtVerify(token, set, { algorithms: ['ES256'], currentDate: new Date(payload.iat * 1000) });
        return true;
      } catch {
        return false;
      }
    };
    const validOtherwise = async () => {
      try {
        await jwtVerify(token, keyset, opts);
        return true;
      } catch {
        return false;
      }
    };
    // What a correct relying party concludes: only good, unverified-email (a policy
    // matter, checked below) and unknown-kid-then-rotate (after a refetch) pass.
    const aud = [].concat(payload.aud);
    const strictOk = await validOtherwise() && payload.nonce === st.nonce
      && (aud.length === 1 || payload.azp === args['client-id']);
    if (['good', 'unverified-email'].includes(mode)) check(strictOk, 'a correct RP should accept this token');
    else check(!strictOk, 'a correct RP would accept this token: the defect is missing');
    switch (mode) {
      case 'good':
        check(await validOtherwise(), 'good token does not verify');
        check(payload.nonce === st.nonce, 'good token nonce');
        break;
      case 'tampered-signature':
        check(header.alg === 'ES256' && jwks1.keys.some((k) => k.kid === header.kid), 'header should name a published key');
        check(!(await signatureOk()), 'tampered signature verifies');
        break;
      case 'alg-none':
        check(header.alg === 'none' && token.endsWith('.'), `alg-none: header ${JSON.stringify(header)}`);
        break;
      case 'hs256-with-public-key': {
        check(header.alg === 'HS256', `alg: ${header.alg}`);
        const { createPublicKey } = await import('node:crypto');
        const jwk = jwks1.keys.find((k) => k.kid === header.kid);
        const pem = createPublicKey({ key: jwk, format: 'jwk' }).export({ type: 'spki', format: 'pem' });
        const [h, p, s] = token.split('.');
        const mac = createHmac('sha256', pem).update(`${h}.${p}`).digest('base64url');
        check(mac === s, 'HS256 signature is not keyed with the public key PEM');
        break;
      }
      case 'wrong-iss':
        check(await signatureOk(), 'signature should be valid');
        check(payload.iss !== meta.issuer && payload.iss.startsWith(meta.issuer), `iss: ${payload.iss}`);
        break;
      case 'wrong-aud':
        check(await signatureOk(), 'signature should be valid');
        check(payload.aud !== args['client-id'] && !([].concat(payload.aud).includes(args['client-id'])), `aud: ${payload.aud}`);
        break;
      case 'expired':
        check(await signatureOk(), 'signature should be valid');
        check(payload.exp < now - 60, `exp: ${payload.exp} now ${now}`);
        break;
      case 'wrong-nonce':
        check(await signatureOk(), 'signature should be valid');
        check(typeof payload.nonce === 'string' && payload.nonce !== st.nonce, `nonce: ${payload.nonce}`);
        break;
      case 'missing-nonce':
        check(await signatureOk(), 'signature should be valid');
        check(!('nonce' in payload), 'nonce present');
        break;
      case 'unverified-email':
        check(await validOtherwise(), 'token should otherwise be valid');
        check(payload.nonce === st.nonce, 'nonce should be echoed');
        check(payload.email_verified === false, `email_verified: ${payload.email_verified}`);
        break;
      case 'unknown-kid-then-rotate': {
        check(!jwks1.keys.some((k) => k.kid === header.kid), 'first JWKS should lack the kid');
        const jwks2 = await fetchJwks(meta);
        check(jwks2.keys.some((k) => k.kid === header.kid), 'refetched JWKS should have the kid');
        try {
          await jwtVerify(token, createLocalJWKSet(jwks2), opts);
        } catch (err) {
          problems.push(`token should verify after refetch: ${err.message}`);
        }
        break;
      }
      case 'azp-mismatch':
        check(await signatureOk(), 'signature should be valid');
        check(Array.isArray(payload.aud) && payload.aud.length === 2 && payload.aud.includes(args['client-id']), `aud: ${payload.aud}`);
        check(payload.azp && payload.azp !== args['client-id'], `azp: ${payload.azp}`);
        break;
      default:
        problems.push(`unknown mode ${mode}`);
    }
    finish({ mode, alg: header.alg, kid: header.kid });
    break;
  }
  case 'fake-rp':
    await fakeRp();
    break;
  default:
    fail('rp-check.mjs: --step must be discovery, authorize, exchange, device-start, device-token or evil');
}

// A relying party with a login cookie, for drive-login.mjs's --rp-start/--jar/--follow.
async function fakeRp() {
  const meta = await discover();
  serving = true;
  const pending = new Map(); // state -> request state
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, 'http://127.0.0.1');
    const reply = (status, value, headers = {}) => {
      res.writeHead(status, { 'content-type': 'application/json', ...headers });
      res.end(`${JSON.stringify(value)}\n`);
    };
    try {
      const redirectUri = `http://127.0.0.1:${server.address().port}/callback`;
      if (url.pathname === '/auth/login') {
        const st = newRequestState();
        pending.set(st.state, st);
        args['redirect-uri'] = redirectUri;
        res.writeHead(302, {
          location: authorizationUrl(meta, st),
          'set-cookie': `sp_login=${st.state}; Path=/; HttpOnly; SameSite=Lax`,
        });
        res.end();
      } else if (url.pathname === '/callback') {
        const cookie = (req.headers.cookie ?? '').split(/;\s*/).find((c) => c.startsWith('sp_login='));
        const state = url.searchParams.get('state');
        const st = pending.get(state);
        if (!st || cookie !== `sp_login=${state}`) {
          reply(400, { error: 'login cookie does not match state' });
          return;
        }
        pending.delete(state);
        args['redirect-uri'] = redirectUri;
        problems.length = 0;
        const body = await exchange(meta, st, `http://127.0.0.1${req.url}`);
        const { payload } = await validateIdToken(meta, body.id_token, { nonce: st.nonce });
        if (problems.length) {
          reply(401, { error: problems.join('; ') });
          return;
        }
        reply(200, { signed_in: payload.sub, groups: payload.groups }, {
          'set-cookie': ['sp_login=; Path=/; Max-Age=0', `sp_session=${randomBytes(8).toString('hex')}; Path=/; HttpOnly`],
        });
      } else {
        reply(404, { error: 'not found' });
      }
    } catch (err) {
      reply(502, { error: err.message });
    }
  });
  server.listen(0, '127.0.0.1', () => printJson({ url: `http://127.0.0.1:${server.address().port}`, pid: process.pid }));
  process.on('SIGTERM', () => process.exit(0));
}
