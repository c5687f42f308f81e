#!/usr/bin/env node
// A deliberately broken OpenID issuer for Sallyport's negative tests. It serves
// discovery, a JWKS, an authorization endpoint that redirects straight back with a code
// (no login), a token endpoint, and a userinfo endpoint. The ID token it returns carries
// one defect, chosen by --mode, by the client's "mode" in --config, or at run time by
// POST /_test/mode. A correct relying party must refuse every mode but `good`,
// `unverified-email` (accepted or refused by policy, never treated as verified) and
// `unknown-kid-then-rotate` (accepted after one JWKS refetch).
//
//   node tests/oidc/evil-idp.mjs --mode wrong-aud [--port 0] [--config FILE]
//
// Ready line on stdout, as provider.mjs: {"issuer":"http://127.0.0.1:PORT","port":PORT,"pid":PID}
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';

import { exportJWK, exportSPKI, generateKeyPair, SignJWT } from 'jose';

import { cli, escapeHtml, fail, printJson, quietStdout, readBody } from './lib/common.mjs';

quietStdout();

const MODES = [
  'good',
  'tampered-signature',
  'alg-none',
  'hs256-with-public-key',
  'wrong-iss',
  'wrong-aud',
  'expired',
  'wrong-nonce',
  'missing-nonce',
  'unverified-email',
  'unknown-kid-then-rotate',
  'azp-mismatch',
];

const usage = `usage: evil-idp.mjs [--mode MODE] [--port N] [--config FILE] [--quiet]
  A misbehaving OpenID issuer for negative tests. MODE is one of:
  ${MODES.join(', ')}
  (default good). --config FILE: {"clients":[{"client_id","client_secret","redirect_uris","mode"}],
  "account":{"sub","email","name","groups"}}; without it any client is accepted.
`;
const args = cli({
  mode: { type: 'string', default: 'good' },
  port: { type: 'string', default: '0' },
  config: { type: 'string' },
  quiet: { type: 'boolean', default: false },
}, usage);

if (!MODES.includes(args.mode)) fail(`evil-idp.mjs: unknown --mode ${args.mode}; one of ${MODES.join(', ')}`);
const port = Number(args.port);
if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`evil-idp.mjs: bad --port ${args.port}`);

let config = {};
if (args.config) {
  try {
    config = JSON.parse(readFileSync(args.config, 'utf8'));
  } catch (err) {
    fail(`evil-idp.mjs: cannot read config ${args.config}: ${err.message}`);
  }
}
for (const c of config.clients ?? []) {
  if (c.mode && !MODES.includes(c.mode)) fail(`evil-idp.mjs: client ${c.client_id}: unknown mode ${c.mode}`);
}

const log = (msg) => { if (!args.quiet) process.stderr.write(`evil-idp: ${msg}\n`); };

const account = {
  sub: 'eng-user',
  email: 'eng-user@example.com',
  name: 'Eng User',
  groups: ['engineering'],
  ...(config.account ?? {}),
};

// Key A signs by default. Key B signs in unknown-kid-then-rotate mode, and is left out
// of the first JWKS response served in that mode.
async function makeKey(kid) {
  const { publicKey, privateKey } = await generateKeyPair('ES256', { extractable: true });
  const jwk = { ...(await exportJWK(publicKey)), kid, alg: 'ES256', use: 'sig' };
  return { kid, privateKey, publicKey, jwk, pem: await exportSPKI(publicKey) };
}
const keyA = await makeKey(`evil-a-${randomBytes(4).toString('hex')}`);
const keyB = await makeKey(`evil-b-${randomBytes(4).toString('hex')}`);

let defaultMode = args.mode;
const stats = { jwks_fetches: 0, authorization_requests: 0, token_requests: 0, userinfo_requests: 0 };
const codes = new Map(); // code -> { clientId, redirectUri, nonce, challenge, method, expires }
const accessTokens = new Map(); // token -> { expires, mode }

function resetStats() {
  for (const k of Object.keys(stats)) stats[k] = 0;
}

const clientConfig = (clientId) => (config.clients ?? []).find((c) => c.client_id === clientId);
const modeFor = (clientId) => clientConfig(clientId)?.mode ?? defaultMode;

function b64url(data) {
  return Buffer.from(data).toString('base64url');
}

async function sign(claims, key) {
  return new SignJWT(claims)
    .setProtectedHeader({ alg: 'ES256', typ: 'JWT', kid: key.kid })
    .sign(key.privateKey);
}

// Builds the ID token for `mode`. Everything but the named defect is as a correct
// issuer would make it.
async function idToken(mode, issuer, clientId, nonce) {
  const now = Math.floor(Date.now() / 1000);
  const claims = {
    iss: issuer,
    sub: account.sub,
    aud: clientId,
    iat: now,
    exp: now + 300,
    auth_time: now,
    amr: ['pwd'],
    email: account.email,
    email_verified: true,
    name: account.name,
    groups: account.groups,
  };
  if (nonce !== undefined) claims.nonce = nonce;
  switch (mode) {
    case 'good':
      return sign(claims, keyA);
    case 'tampered-signature': {
      const [h, p, s] = (await sign(claims, keyA)).split('.');
      const sig = Buffer.from(s, 'base64url');
      sig[10] ^= 0x01; // one bit of r
      return `${h}.${p}.${b64url(sig)}`;
    }
    case 'alg-none':
      return `${b64url(JSON.stringify({ alg: 'none', typ: 'JWT' }))}.${b64url(JSON.stringify(claims))}.`;
    case 'hs256-with-public-key': {
      // HMAC keyed with the issuer's published public key (its SPKI PEM text): the
      // algorithm-confusion forgery an RP that trusts the header's alg would accept.
      const input = `${b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT', kid: keyA.kid }))}.${b64url(JSON.stringify(claims))}`;
      return `${input}.${createHmac('sha256', keyA.pem).update(input).digest('base64url')}`;
    }
    case 'wrong-iss':
      return sign({ ...claims, iss: `${issuer}/evil` }, keyA);
    case 'wrong-aud':
      return sign({ ...claims, aud: `${clientId}-other` }, keyA);
    case 'expired':
      return sign({ ...claims, iat: now - 1200, auth_time: now - 1200, exp: now - 600 }, keyA);
    case 'wrong-nonce':
      return sign({ ...claims, nonce: `not-${randomBytes(8).toString('base64url')}` }, keyA);
    case 'missing-nonce': {
      const { nonce: _dropped, ...rest } = claims;
      return sign(rest, keyA);
    }
    case 'unverified-email':
      return sign({ ...claims, email_verified: false }, keyA);
    case 'unknown-kid-then-rotate':
      return sign(claims, keyB);
    case 'azp-mismatch':
      return sign({ ...claims, aud: [clientId, 'other-client'], azp: 'other-client' }, keyA);
    default:
      throw new Error(`unknown mode ${mode}`);
  }
}

function send(res, status, value, headers = {}) {
  const body = typeof value === 'string' ? value : `${JSON.stringify(value)}\n`;
  res.writeHead(status, {
    'content-type': typeof value === 'string' ? 'text/html; charset=utf-8' : 'application/json',
    'cache-control': 'no-store',
    'content-length': Buffer.byteLength(body),
    ...headers,
  });
  res.end(body);
}

const oauthError = (res, status, error, description) => send(res, status, { error, error_description: description });

function isLoopbackRedirect(uri) {
  try {
    const u = new URL(uri);
    return u.protocol === 'http:' && ['127.0.0.1', '[::1]', 'localhost'].includes(u.hostname);
  } catch {
    return false;
  }
}

function authorize(res, url) {
  stats.authorization_requests += 1;
  const q = url.searchParams;
  const clientId = q.get('client_id');
  const redirectUri = q.get('redirect_uri');
  const known = clientConfig(clientId);
  if (!clientId || (config.clients && !known)) {
    send(res, 400, `<h1 id="error-title">Sign-in error</h1><pre id="error">unknown client ${escapeHtml(clientId)}</pre>`);
    return;
  }
  const allowed = known?.redirect_uris ? known.redirect_uris.includes(redirectUri) : isLoopbackRedirect(redirectUri);
  if (!redirectUri || !allowed) {
    send(res, 400, `<h1 id="error-title">Sign-in error</h1><pre id="error">redirect_uri not allowed</pre>`);
    return;
  }
  const code = randomBytes(24).toString('base64url');
  codes.set(code, {
    clientId,
    redirectUri,
    nonce: q.get('nonce') ?? undefined,
    challenge: q.get('code_challenge') ?? undefined,
    method: q.get('code_challenge_method') ?? undefined,
    expires: Date.now() + 60_000,
  });
  const back = new URL(redirectUri);
  back.searchParams.set('code', code);
  if (q.has('state')) back.searchParams.set('state', q.get('state'));
  res.writeHead(302, { location: back.href, 'content-length': 0 });
  res.end();
}

function clientCredentials(req, form) {
  const auth = req.headers.authorization ?? '';
  if (auth.startsWith('Basic ')) {
    const decoded = Buffer.from(auth.slice(6), 'base64').toString('utf8');
    const i = decoded.indexOf(':');
    return {
      id: decodeURIComponent(decoded.slice(0, i)),
      secret: decodeURIComponent(decoded.slice(i + 1)),
    };
  }
  return { id: form.get('client_id'), secret: form.get('client_secret') ?? undefined };
}

async function token(req, res, issuer) {
  stats.token_requests += 1;
  const form = new URLSearchParams(await readBody(req));
  if (form.get('grant_type') !== 'authorization_code') {
    oauthError(res, 400, 'unsupported_grant_type', 'only authorization_code');
    return;
  }
  const creds = clientCredentials(req, form);
  const known = clientConfig(creds.id);
  if (config.clients && (!known || (known.client_secret && known.client_secret !== creds.secret))) {
    oauthError(res, 401, 'invalid_client', 'client authentication failed');
    return;
  }
  const entry = codes.get(form.get('code'));
  codes.delete(form.get('code'));
  if (!entry || entry.expires < Date.now() || entry.clientId !== creds.id) {
    oauthError(res, 400, 'invalid_grant', 'unknown, used or expired code');
    return;
  }
  if (entry.redirectUri !== form.get('redirect_uri')) {
    oauthError(res, 400, 'invalid_grant', 'redirect_uri mismatch');
    return;
  }
  if (entry.challenge) {
    const verifier = form.get('code_verifier') ?? '';
    const expected = createHash('sha256').update(verifier).digest('base64url');
    if (entry.method !== 'S256' || expected !== entry.challenge) {
      oauthError(res, 400, 'invalid_grant', 'PKCE verification failed');
      return;
    }
  }
  const mode = modeFor(creds.id);
  const accessToken = randomBytes(24).toString('base64url');
  accessTokens.set(accessToken, { expires: Date.now() + 300_000, mode });
  log(`token for ${creds.id} in mode ${mode}`);
  send(res, 200, {
    access_token: accessToken,
    token_type: 'Bearer',
    expires_in: 300,
    scope: 'openid email profile groups',
    id_token: await idToken(mode, issuer, creds.id, entry.nonce),
  });
}

function jwks(res) {
  stats.jwks_fetches += 1;
  const keys = [keyA.jwk];
  // Key B is published from the second JWKS response on, so a token signed with it is
  // first seen with an unknown kid and verifies after one refetch.
  const rotating = defaultMode === 'unknown-kid-then-rotate'
    || (config.clients ?? []).some((c) => c.mode === 'unknown-kid-then-rotate');
  if (stats.jwks_fetches > 1 || !rotating) keys.push(keyB.jwk);
  send(res, 200, { keys }, { 'content-type': 'application/jwk-set+json' });
}

function discovery(res, issuer) {
  send(res, 200, {
    issuer,
    authorization_endpoint: `${issuer}/authorize`,
    token_endpoint: `${issuer}/token`,
    userinfo_endpoint: `${issuer}/userinfo`,
    jwks_uri: `${issuer}/jwks`,
    response_types_supported: ['code'],
    subject_types_supported: ['public'],
    id_token_signing_alg_values_supported: ['ES256'],
    code_challenge_methods_supported: ['S256'],
    grant_types_supported: ['authorization_code'],
    token_endpoint_auth_methods_supported: ['client_secret_basic', 'client_secret_post', 'none'],
    scopes_supported: ['openid', 'email', 'profile', 'groups'],
    claims_supported: ['sub', 'email', 'email_verified', 'name', 'groups', 'amr'],
  });
}

function userinfo(req, res) {
  stats.userinfo_requests += 1;
  const auth = req.headers.authorization ?? '';
  const tokenValue = auth.startsWith('Bearer ') ? auth.slice(7) : '';
  const entry = accessTokens.get(tokenValue);
  if (!entry || entry.expires < Date.now()) {
    send(res, 401, { error: 'invalid_token' }, { 'www-authenticate': 'Bearer error="invalid_token"' });
    return;
  }
  send(res, 200, {
    sub: account.sub,
    email: account.email,
    email_verified: entry.mode !== 'unverified-email',
    name: account.name,
    groups: account.groups,
  });
}

async function testHook(req, res, url, issuer) {
  const route = `${req.method} ${url.pathname}`;
  if (route === 'GET /_test/health') {
    send(res, 200, { ok: true, issuer, mode: defaultMode, modes: MODES, kids: [keyA.kid, keyB.kid] });
  } else if (route === 'GET /_test/stats') {
    send(res, 200, { mode: defaultMode, ...stats, signing_kid: defaultMode === 'unknown-kid-then-rotate' ? keyB.kid : keyA.kid });
  } else if (route === 'POST /_test/mode') {
    let mode = url.searchParams.get('mode');
    const body = await readBody(req);
    if (!mode && body) {
      try {
        mode = JSON.parse(body).mode;
      } catch {
        mode = new URLSearchParams(body).get('mode');
      }
    }
    if (!MODES.includes(mode)) {
      send(res, 400, { error: 'invalid_request', error_description: `mode must be one of ${MODES.join(', ')}` });
      return;
    }
    defaultMode = mode;
    resetStats();
    log(`mode ${mode}`);
    send(res, 200, { mode });
  } else if (route === 'POST /_test/reset') {
    resetStats();
    send(res, 200, { mode: defaultMode, ...stats });
  } else {
    send(res, 404, { error: 'not_found' });
  }
}

let issuer;
const server = http.createServer((req, res) => {
  const url = new URL(req.url, issuer);
  const route = `${req.method} ${url.pathname}`;
  let work;
  if (url.pathname.startsWith('/_test/')) work = testHook(req, res, url, issuer);
  else if (route === 'GET /.well-known/openid-configuration') work = Promise.resolve(discovery(res, issuer));
  else if (route === 'GET /jwks') work = Promise.resolve(jwks(res));
  else if (route === 'GET /authorize') work = Promise.resolve(authorize(res, url));
  else if (route === 'POST /token') work = token(req, res, issuer);
  else if (url.pathname === '/userinfo') work = Promise.resolve(userinfo(req, res));
  else work = Promise.resolve(send(res, 404, { error: 'not_found' }));
  work.catch((err) => {
    log(`internal error on ${route}: ${err.stack ?? err}`);
    if (!res.headersSent) send(res, 500, { error: 'server_error' });
    else res.end();
  });
});

server.on('error', (err) => fail(`evil-idp.mjs: cannot listen on 127.0.0.1:${port}: ${err.message}`, 1));
server.listen(port, '127.0.0.1', () => {
  const actual = server.address().port;
  issuer = `http://127.0.0.1:${actual}`;
  log(`listening, issuer ${issuer}, mode ${defaultMode}`);
  printJson({ issuer, port: actual, pid: process.pid });
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close();
    server.closeAllConnections?.();
    process.exit(0);
  });
}
