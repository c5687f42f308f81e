#!/usr/bin/env node
// Sallyport's test OpenID provider: a real, certified OpenID provider (oidc-provider)
// bound to loopback, with accounts, clients and lifetimes read from a JSON file, our own
// plain login and consent pages, and /_test/ hooks for key rotation.
//
//   node tests/oidc/provider.mjs --config tests/oidc/sample-config.json [--port 0]
//
// When it is ready it prints one JSON line on stdout and nothing else there:
//   {"issuer":"http://127.0.0.1:PORT","port":PORT,"pid":PID}
// Logs go to stderr. SIGTERM or SIGINT stops it. See docs/testing-oidc.md.
import { randomBytes, generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';

import { cli, escapeHtml, fail, printJson, quietStdout, readBody } from './lib/common.mjs';

quietStdout();

const usage = `usage: provider.mjs --config FILE [--port N] [--host 127.0.0.1|::1] [--quiet]
  Starts Sallyport's loopback test OpenID provider and prints one ready line on stdout:
  {"issuer":"http://127.0.0.1:PORT","port":PORT,"pid":PID}
`;
const args = cli({
  config: { type: 'string' },
  port: { type: 'string', default: '0' },
  host: { type: 'string', default: '127.0.0.1' },
  quiet: { type: 'boolean', default: false },
}, usage);

if (!args.config) fail('provider.mjs: --config FILE is required (see --help)');
const port = Number(args.port);
if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`provider.mjs: bad --port ${args.port}`);
if (!['127.0.0.1', '::1', 'localhost'].includes(args.host)) {
  fail('provider.mjs: --host must be a loopback address (127.0.0.1 or ::1)');
}

let config;
try {
  config = JSON.parse(readFileSync(args.config, 'utf8'));
} catch (err) {
  fail(`provider.mjs: cannot read config ${args.config}: ${err.message}`);
}

const log = (...parts) => {
  if (!args.quiet) process.stderr.write(`provider: ${parts.join(' ')}\n`);
};

// oidc-provider prints its notices through console.*; load it after stdout is quiet.
const { default: Provider } = await import('oidc-provider');

// ---------------------------------------------------------------------------------------
// Configuration

const groupsClaim = config.groups_claim ?? 'groups';
const defaultAlg = config.id_token_signing_alg ?? 'ES256';
const withRsa = config.rs256 ?? true;

const ttl = {
  AccessToken: 600,
  AuthorizationCode: 60,
  ClientCredentials: 600,
  DeviceCode: 300,
  IdToken: 600,
  Interaction: 600,
  RefreshToken: 3600,
  Session: 3600,
  Grant: 3600,
  ...(config.ttl ?? {}),
};

const accounts = (config.accounts ?? []).map((a) => {
  if (typeof a.sub !== 'string' || !a.sub) fail('provider.mjs: every account needs a "sub"');
  if (typeof a.password !== 'string') fail(`provider.mjs: account ${a.sub} needs a "password"`);
  return {
    sub: a.sub,
    email: a.email,
    email_verified: a.email_verified ?? true,
    name: a.name ?? a.sub,
    groups: Array.isArray(a.groups) ? a.groups : [],
    password: a.password,
    mfa: a.mfa === true,
    claims: a.claims ?? {},
  };
});

// A username is the account's sub or the local part of its email address.
function accountByUsername(username) {
  const u = String(username ?? '').trim().toLowerCase();
  if (!u) return undefined;
  return accounts.find((a) => a.sub.toLowerCase() === u)
    ?? accounts.find((a) => a.email && a.email.split('@')[0].toLowerCase() === u);
}

const accountBySub = (sub) => accounts.find((a) => a.sub === sub);

// Client entries are oidc-provider client metadata, plus Sallyport's test-only keys
// (skip_consent), which are taken out here.
const skipConsent = new Set();
const clients = (config.clients ?? []).map((c) => {
  const { skip_consent: skip, ...metadata } = c;
  if (skip) skipConsent.add(c.client_id);
  if (!metadata.response_types) {
    const grants = metadata.grant_types ?? ['authorization_code'];
    metadata.response_types = grants.includes('authorization_code') ? ['code'] : [];
  }
  return metadata;
});

// ---------------------------------------------------------------------------------------
// Keys. The first ES256 key is the active one; rotation puts a new one first and keeps
// the old ones published until /_test/drop-old-keys.

let keySerial = 0;
function newKey(type) {
  keySerial += 1;
  const { privateKey } = type === 'RSA'
    ? generateKeyPairSync('rsa', { modulusLength: 2048 })
    : generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = privateKey.export({ format: 'jwk' });
  const alg = type === 'RSA' ? 'RS256' : 'ES256';
  return { ...jwk, alg, use: 'sig', kid: `${alg.toLowerCase()}-${keySerial}-${randomBytes(4).toString('hex')}` };
}

let ecKeys = [newKey('EC')];
const rsaKeys = withRsa ? [newKey('RSA')] : [];
const cookieKeys = [randomBytes(32).toString('base64url')];

// ---------------------------------------------------------------------------------------
// Shared storage: every provider instance (one per key set) uses the same in-memory
// store, so sessions, codes and grants survive a key rotation.

const store = new Map(); // "Model:id" -> { payload, expiresAt }
const index = new Map(); // "grant:ID" -> Set of keys, "userCode:X" / "sessionUid:X" -> id
const grantable = new Set(['AccessToken', 'AuthorizationCode', 'RefreshToken', 'DeviceCode',
  'BackchannelAuthenticationRequest']);

class SharedMemoryAdapter {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  static get(key) {
    const entry = store.get(key);
    if (!entry) return undefined;
    if (entry.expiresAt && entry.expiresAt < Date.now()) {
      store.delete(key);
      return undefined;
    }
    return entry.payload;
  }

  async upsert(id, payload, expiresIn) {
    // Kept a minute past expiry so the provider itself can tell "expired" from "unknown".
    const expiresAt = expiresIn ? Date.now() + (expiresIn + 60) * 1000 : undefined;
    const key = this.key(id);
    store.set(key, { payload: structuredClone(payload), expiresAt });
    if (this.model === 'Session' && payload.uid) index.set(`sessionUid:${payload.uid}`, id);
    if (payload.userCode) index.set(`userCode:${payload.userCode}`, id);
    if (grantable.has(this.model) && payload.grantId) {
      const k = `grant:${payload.grantId}`;
      if (!index.has(k)) index.set(k, new Set());
      index.get(k).add(key);
    }
  }

  async find(id) {
    const payload = SharedMemoryAdapter.get(this.key(id));
    return payload ? structuredClone(payload) : undefined;
  }

  async findByUid(uid) {
    const id = index.get(`sessionUid:${uid}`);
    return id ? this.find(id) : undefined;
  }

  async findByUserCode(userCode) {
    const id = index.get(`userCode:${userCode}`);
    return id ? this.find(id) : undefined;
  }

  async consume(id) {
    const entry = store.get(this.key(id));
    if (entry) entry.payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    store.delete(this.key(id));
  }

  // eslint-disable-next-line class-methods-use-this
  async revokeByGrantId(grantId) {
    const k = `grant:${grantId}`;
    for (const key of index.get(k) ?? []) store.delete(key);
    index.delete(k);
  }
}

// ---------------------------------------------------------------------------------------
// Pages. Stable element ids for browsers and the HTTP driver:
//   login    form#login-form  input#username  input#password  button#login   p#error
//   consent  form#consent-form  button#allow  button#deny
//   device   form#op.deviceInputForm input#user_code button#continue;
//            form#op.deviceConfirmForm button#confirm button#abort; h1#device-success
//   logout   form#op.logoutForm button#logout button#stay; h1#logged-out
//   errors   h1#error-title, pre#error

function page(title, body) {
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)} - Sallyport test IdP</title>
<style>body{font-family:sans-serif;max-width:26em;margin:2em auto;padding:0 1em}
label,input,button{display:block;width:100%;margin:.3em 0;box-sizing:border-box}
input,button{padding:.5em;font-size:1em}#error{color:#b00020}</style>
</head><body><main>
${body}
</main></body></html>`;
}

function loginPage(uid, client, { username = '', error } = {}) {
  return page('Sign in', `<h1 id="title">Sign in</h1>
<p id="client">to continue to <b>${escapeHtml(client)}</b></p>
${error ? `<p id="error" role="alert">${escapeHtml(error)}</p>` : ''}
<form id="login-form" method="post" action="/interaction/${escapeHtml(uid)}/login" autocomplete="off">
<label for="username">Username</label>
<input id="username" name="username" type="text" value="${escapeHtml(username)}" autofocus required>
<label for="password">Password</label>
<input id="password" name="password" type="password" required>
<button id="login" type="submit">Sign in</button>
</form>`);
}

function consentPage(uid, client, account, scopes, claims) {
  const items = scopes.map((s) => `<li class="scope">${escapeHtml(s)}</li>`).join('');
  const claimItems = claims.map((c) => `<li class="claim">${escapeHtml(c)}</li>`).join('');
  return page('Allow access', `<h1 id="title">Allow access</h1>
<p id="client"><b>${escapeHtml(client)}</b> asks to know, for <b id="account">${escapeHtml(account)}</b>:</p>
<ul id="scopes">${items}</ul>
${claimItems ? `<ul id="claims">${claimItems}</ul>` : ''}
<form id="consent-form" method="post" action="/interaction/${escapeHtml(uid)}/consent">
<button id="allow" name="decision" value="allow" type="submit">Allow</button>
<button id="deny" name="decision" value="deny" type="submit">Deny</button>
</form>`);
}

async function userCodeInputSource(ctx, form, out, err) {
  let note = 'Enter the code shown on your device.';
  if (err && (err.userCode || err.name === 'NoCodeError')) note = 'That code is not valid. Try again.';
  else if (err && err.name === 'AbortedError') note = 'The sign-in request was cancelled.';
  else if (err) note = 'The request could not be processed.';
  const marked = form.replace('name="user_code"', 'id="user_code" name="user_code"');
  ctx.body = page('Device sign-in', `<h1 id="title">Device sign-in</h1>
<p id="${err ? 'error' : 'hint'}">${escapeHtml(note)}</p>
${marked}
<button id="continue" type="submit" form="op.deviceInputForm">Continue</button>`);
}

async function userCodeConfirmSource(ctx, form, client, deviceInfo, userCode) {
  const name = client.clientName || client.clientId;
  ctx.body = page('Confirm device', `<h1 id="title">Confirm device</h1>
<p><b id="client">${escapeHtml(name)}</b> asks to sign in on a device showing
<code id="shown-code">${escapeHtml(userCode)}</code>.</p>
${form}
<button id="confirm" type="submit" form="op.deviceConfirmForm">Continue</button>
<button id="abort" type="submit" form="op.deviceConfirmForm" name="abort" value="yes">Cancel</button>`);
}

async function successSource(ctx) {
  ctx.body = page('Signed in', `<h1 id="device-success">Device signed in</h1>
<p>You can close this page and return to your device.</p>`);
}

async function logoutSource(ctx, form) {
  ctx.body = page('Sign out', `<h1 id="title">Sign out?</h1>
${form}
<button id="logout" type="submit" form="op.logoutForm" name="logout" value="yes">Sign out</button>
<button id="stay" type="submit" form="op.logoutForm">Stay signed in</button>`);
}

async function postLogoutSuccessSource(ctx) {
  ctx.body = page('Signed out', '<h1 id="logged-out">Signed out</h1>');
}

async function renderError(ctx, out) {
  ctx.type = 'html';
  const text = Object.entries(out).map(([k, v]) => `${k}: ${v}`).join('\n');
  ctx.body = page('Error', `<h1 id="error-title">Sign-in error</h1>
<pre id="error">${escapeHtml(text)}</pre>`);
}

// ---------------------------------------------------------------------------------------
// The provider. A new instance is built whenever the key set changes.

async function findAccount(ctx, sub) {
  const account = accountBySub(sub);
  if (!account) return undefined;
  return {
    accountId: account.sub,
    async claims() {
      const claims = {
        ...account.claims,
        sub: account.sub,
        name: account.name,
        preferred_username: account.sub,
        [groupsClaim]: account.groups,
      };
      if (account.email !== undefined) {
        claims.email = account.email;
        claims.email_verified = account.email_verified;
      }
      return claims;
    },
  };
}

const oidcScopes = ['openid', 'offline_access', 'email', 'profile', 'groups'];

// First-party clients with skip_consent get every scope granted without a consent page.
async function loadExistingGrant(ctx) {
  const { client, session } = ctx.oidc;
  const grantId = ctx.oidc.result?.consent?.grantId || session.grantIdFor(client.clientId);
  let grant = grantId ? await ctx.oidc.provider.Grant.find(grantId) : undefined;
  if (!skipConsent.has(client.clientId)) return grant;
  if (!grant) grant = new ctx.oidc.provider.Grant({ clientId: client.clientId, accountId: session.accountId });
  grant.addOIDCScope(oidcScopes.join(' '));
  const requested = ctx.oidc.claims ?? {};
  const names = [...Object.keys(requested.id_token ?? {}), ...Object.keys(requested.userinfo ?? {})];
  if (names.length) grant.addOIDCClaims(names);
  await grant.save();
  return grant;
}

let current; // { provider, handler }

function build(issuer) {
  const keys = [...ecKeys, ...rsaKeys];
  const provider = new Provider(issuer, {
    adapter: SharedMemoryAdapter,
    clients,
    clientDefaults: {
      grant_types: ['authorization_code'],
      id_token_signed_response_alg: defaultAlg,
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
    jwks: { keys },
    cookies: {
      keys: cookieKeys,
      long: { httpOnly: true, sameSite: 'lax', signed: true },
      short: { httpOnly: true, sameSite: 'lax', signed: true },
    },
    claims: {
      openid: ['sub', 'amr'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username'],
      groups: [groupsClaim],
      acr: null,
      amr: null,
      auth_time: null,
      sid: null,
      iss: null,
    },
    scopes: oidcScopes,
    responseTypes: ['code'],
    // Scope claims go into the ID token too, as the IdPs Sallyport meets do for groups.
    conformIdTokenClaims: false,
    features: {
      devInteractions: { enabled: false },
      deviceFlow: { enabled: true, userCodeInputSource, userCodeConfirmSource, successSource },
      claimsParameter: { enabled: true },
      userinfo: { enabled: true },
      revocation: { enabled: true },
      introspection: { enabled: true },
      resourceIndicators: { enabled: false },
      rpInitiatedLogout: { enabled: true, logoutSource, postLogoutSuccessSource },
    },
    pkce: { methods: ['S256'], required: () => true },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    findAccount,
    loadExistingGrant,
    renderError,
    ttl,
    clockTolerance: 5,
  });
  for (const event of ['server_error', 'authorization.error', 'grant.error', 'userinfo.error',
    'end_session.error', 'revocation.error', 'introspection.error', 'device_authorization.error',
    'code_verification.error']) {
    provider.on(event, (ctx, err) => {
      log(`${event}: ${err.error ?? err.name}: ${err.error_description ?? err.message}`);
    });
  }
  return { provider, handler: provider.callback() };
}

// ---------------------------------------------------------------------------------------
// Interactions: our login and consent pages.

function send(res, status, body, type = 'text/html; charset=utf-8', extra = {}) {
  res.writeHead(status, {
    'content-type': type,
    'cache-control': 'no-store',
    'content-length': Buffer.byteLength(body),
    ...extra,
  });
  res.end(body);
}

async function clientName(provider, clientId) {
  const client = await provider.Client.find(clientId);
  return client?.clientName || clientId;
}

async function interaction(req, res, url) {
  const { provider } = current;
  const parts = url.pathname.split('/').filter(Boolean); // ["interaction", uid, action?]
  const [, uid, action] = parts;
  let details;
  try {
    details = await provider.interactionDetails(req, res);
  } catch (err) {
    send(res, 400, page('Error', `<h1 id="error-title">Sign-in error</h1>
<pre id="error">${escapeHtml(err.message)}</pre>`));
    return;
  }
  if (details.uid !== uid) {
    send(res, 400, page('Error', '<h1 id="error-title">Sign-in error</h1><pre id="error">interaction mismatch</pre>'));
    return;
  }
  const { prompt, params, session } = details;
  const client = await clientName(provider, params.client_id);

  if (req.method === 'GET' && !action) {
    if (prompt.name === 'login') {
      send(res, 200, loginPage(uid, client, { username: params.login_hint ?? '' }));
    } else if (prompt.name === 'consent') {
      const account = accountBySub(session?.accountId);
      send(res, 200, consentPage(uid, client, account?.sub ?? session?.accountId,
        prompt.details.missingOIDCScope ?? [], prompt.details.missingOIDCClaims ?? []));
    } else {
      send(res, 400, page('Error', `<pre id="error">unsupported prompt ${escapeHtml(prompt.name)}</pre>`));
    }
    return;
  }

  if (req.method !== 'POST') {
    send(res, 405, 'method not allowed', 'text/plain');
    return;
  }
  const form = new URLSearchParams(await readBody(req));

  if (action === 'login' && prompt.name === 'login') {
    const account = accountByUsername(form.get('username'));
    if (!account || account.password !== form.get('password')) {
      log(`login failed for ${JSON.stringify(form.get('username') ?? '')}`);
      send(res, 200, loginPage(uid, client, {
        username: form.get('username') ?? '',
        error: 'Invalid username or password.',
      }));
      return;
    }
    const amr = account.mfa ? ['pwd', 'mfa'] : ['pwd'];
    await provider.interactionFinished(req, res, {
      login: { accountId: account.sub, amr, remember: true },
    }, { mergeWithLastSubmission: false });
    return;
  }

  if (action === 'consent' && prompt.name === 'consent') {
    if (form.get('decision') !== 'allow') {
      await provider.interactionFinished(req, res, {
        error: 'access_denied',
        error_description: 'the user denied the request',
      }, { mergeWithLastSubmission: false });
      return;
    }
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    const d = prompt.details;
    if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
    if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
    for (const [resource, scopes] of Object.entries(d.missingResourceScopes ?? {})) {
      grant.addResourceScope(resource, scopes.join(' '));
    }
    const grantId = await grant.save();
    await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
    return;
  }

  send(res, 400, page('Error', '<h1 id="error-title">Sign-in error</h1><pre id="error">unexpected form for this step</pre>'));
}

// ---------------------------------------------------------------------------------------
// Test hooks under /_test/.

function publicKeys() {
  return [...ecKeys, ...rsaKeys].map(({ kid, alg, kty }) => ({ kid, alg, kty }));
}

async function testHook(req, res, url, issuer) {
  const json = (status, value) => send(res, status, `${JSON.stringify(value)}\n`, 'application/json');
  const route = `${req.method} ${url.pathname}`;
  switch (route) {
    case 'GET /_test/health':
      json(200, { ok: true, issuer, active_kid: ecKeys[0].kid, keys: publicKeys() });
      return;
    case 'POST /_test/rotate-keys':
      ecKeys = [newKey('EC'), ...ecKeys];
      current = build(issuer);
      log(`rotated keys: active ${ecKeys[0].kid}`);
      json(200, { active_kid: ecKeys[0].kid, keys: publicKeys() });
      return;
    case 'POST /_test/drop-old-keys':
      ecKeys = [ecKeys[0]];
      current = build(issuer);
      log(`dropped old keys: active ${ecKeys[0].kid}`);
      json(200, { active_kid: ecKeys[0].kid, keys: publicKeys() });
      return;
    default:
      json(404, { error: 'not_found', error_description: `no test hook ${route}` });
  }
}

// ---------------------------------------------------------------------------------------
// Server.

let issuer;
const server = http.createServer((req, res) => {
  const url = new URL(req.url, issuer);
  let work;
  if (url.pathname.startsWith('/_test/')) work = testHook(req, res, url, issuer);
  else if (url.pathname.startsWith('/interaction/')) work = interaction(req, res, url);
  else {
    current.handler(req, res);
    return;
  }
  work.catch((err) => {
    log(`internal error on ${req.method} ${url.pathname}: ${err.stack ?? err}`);
    if (!res.headersSent) send(res, 500, 'internal error\n', 'text/plain');
    else res.end();
  });
});

server.on('error', (err) => fail(`provider.mjs: cannot listen on ${args.host}:${port}: ${err.message}`, 1));
server.listen(port, args.host, async () => {
  const actual = server.address().port;
  const hostPart = args.host === '::1' ? '[::1]' : args.host;
  issuer = `http://${hostPart}:${actual}`;
  try {
    current = build(issuer);
    for (const c of clients) {
      // Client metadata is checked when first used; check it now to fail fast.
      // eslint-disable-next-line no-await-in-loop
      await current.provider.Client.find(c.client_id);
    }
  } catch (err) {
    fail(`provider.mjs: bad configuration: ${err.error_description ?? err.message}`, 2);
  }
  log(`listening, issuer ${issuer}, ${clients.length} clients, ${accounts.length} accounts`);
  printJson({ issuer, port: actual, pid: process.pid });
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close();
    server.closeAllConnections?.();
    process.exit(0);
  });
}
