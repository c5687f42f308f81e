#!/usr/bin/env node
// Drives a sign-in at Sallyport's test IdP the way a person's browser would, with plain
// HTTP requests: follows the IdP's redirects, fills in the login form (#username,
// #password) and presses Allow (#allow) on the consent page, and stops at the first
// redirect that leaves the IdP's origin: the relying party's callback.
//
// Authorization-code flow (prints {"redirect":"http://127.0.0.1:18080/auth/callback?code=…&state=…"}):
//   node drive-login.mjs --url AUTHORIZATION_URL --username eng-user --password eng-pass
// Start at the relying party instead (its cookies kept in a curl-format cookie file):
//   node drive-login.mjs --rp-start http://127.0.0.1:18080/auth/login --jar rp.cookies \
//        --username eng-user --password eng-pass --follow
// Device flow, the user's side (prints {"device":"approved"}):
//   node drive-login.mjs --device-code ABCD-EFGH --verification-uri http://127.0.0.1:PORT/device \
//        --username eng-user --password eng-pass
//
// On failure it prints {"error":"…","detail":"…","url":"…"} on stdout and exits 1;
// a bad invocation exits 2.
import { cli, CookieJar, fail, hasId, parseForms, printJson } from './lib/common.mjs';

const usage = `usage:
  drive-login.mjs --url AUTH_URL --username U --password P [--deny] [--follow --jar FILE]
  drive-login.mjs --rp-start RP_LOGIN_URL --jar FILE --username U --password P [--follow]
  drive-login.mjs --device-code USER_CODE --verification-uri URL --username U --password P [--deny]
Options:
  --url URL               the authorization request URL at the IdP
  --rp-start URL          GET this relying-party URL (with --jar cookies); its redirect is the
                          authorization URL
  --jar FILE              the relying party's cookies, Netscape/curl format (curl -b/-c FILE);
                          read before and written back after each request to the relying party
  --follow                also GET the final redirect (the RP callback) with --jar cookies and
                          print its status, location and body
  --deny                  press Deny on the consent page (or Cancel on the device page)
  --device-code CODE      complete the device flow's user side for this user code
  --verification-uri URL  the verification_uri from the device authorization response
  --timeout-ms N          per-request timeout (default 10000)
  --verbose               log every step on stderr
`;

const args = cli({
  url: { type: 'string' },
  'rp-start': { type: 'string' },
  username: { type: 'string' },
  password: { type: 'string' },
  jar: { type: 'string' },
  follow: { type: 'boolean', default: false },
  deny: { type: 'boolean', default: false },
  'device-code': { type: 'string' },
  'verification-uri': { type: 'string' },
  'timeout-ms': { type: 'string', default: '10000' },
  verbose: { type: 'boolean', default: false },
}, usage);

const deviceMode = args['device-code'] !== undefined;
if (deviceMode) {
  if (!args['verification-uri']) fail('drive-login.mjs: --device-code needs --verification-uri');
} else if (!args.url && !args['rp-start']) {
  fail('drive-login.mjs: give --url, --rp-start or --device-code (see --help)');
}
if (args['rp-start'] && !args.jar) fail('drive-login.mjs: --rp-start needs --jar FILE');
if (args.follow && !args.jar) fail('drive-login.mjs: --follow needs --jar FILE');
if (args.username === undefined || args.password === undefined) {
  fail('drive-login.mjs: --username and --password are required');
}
const timeoutMs = Number(args['timeout-ms']) || 10000;
const MAX_STEPS = 30;

const verbose = (msg) => { if (args.verbose) process.stderr.write(`drive-login: ${msg}\n`); };

function stop(error, detail, url) {
  printJson({ error, detail, url });
  process.exit(1);
}

async function request(jar, url, { method = 'GET', form } = {}) {
  const headers = { 'user-agent': 'sallyport-drive-login/1', accept: 'text/html,application/json;q=0.9,*/*;q=0.8' };
  const cookie = jar.header(url);
  if (cookie) headers.cookie = cookie;
  let body;
  if (form) {
    body = new URLSearchParams(form).toString();
    headers['content-type'] = 'application/x-www-form-urlencoded';
  }
  verbose(`${method} ${url}`);
  let response;
  try {
    response = await fetch(url, {
      method, headers, body, redirect: 'manual', signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (err) {
    stop('request_failed', `${method} ${url}: ${err.cause?.message ?? err.message}`, url);
  }
  jar.store(url, response);
  const text = await response.text();
  verbose(`  -> ${response.status}${response.headers.get('location') ? ` ${response.headers.get('location')}` : ''}`);
  return { status: response.status, location: response.headers.get('location'), text };
}

function errorText(html) {
  const m = html.match(/<(?:pre|p)\b[^>]*\bid="error"[^>]*>([\s\S]*?)<\/(?:pre|p)>/i);
  return m ? m[1].replace(/<[^>]+>/g, '').replace(/&[a-z#0-9]+;/gi, ' ').trim() : html.slice(0, 300);
}

// Walks the IdP's pages from `start` until a redirect leaves `origin` (returned), or, in
// device mode, until the success page.
async function walk(jar, start, origin) {
  let next = { url: start, method: 'GET' };
  let loginTried = false;
  let aborted = false;
  for (let step = 0; step < MAX_STEPS; step += 1) {
    const res = await request(jar, next.url, next);
    const here = next.url;
    if (res.status >= 300 && res.status < 400) {
      if (!res.location) stop('bad_redirect', `${res.status} without Location`, here);
      const target = new URL(res.location, here);
      if (target.origin !== origin) return target.href;
      next = { url: target.href, method: 'GET' };
      continue;
    }
    if (res.status >= 400 && !hasId(res.text, 'login-form')) {
      stop('provider_error', `HTTP ${res.status}: ${errorText(res.text)}`, here);
    }
    const forms = parseForms(res.text);
    const byId = (id) => forms.find((f) => f.id === id);
    const post = (form, extra) => ({
      url: new URL(form.action || here, here).href,
      method: 'POST',
      form: { ...form.fields, ...extra },
    });

    if (byId('login-form')) {
      if (loginTried) stop('login_failed', errorText(res.text), here);
      loginTried = true;
      next = post(byId('login-form'), { username: args.username, password: args.password });
    } else if (byId('consent-form')) {
      next = post(byId('consent-form'), { decision: args.deny ? 'deny' : 'allow' });
    } else if (byId('op.deviceInputForm')) {
      if (aborted) return null; // the IdP shows its input page again after a cancel
      if (step > 0 && hasId(res.text, 'error')) stop('device_code_rejected', errorText(res.text), here);
      next = post(byId('op.deviceInputForm'), { user_code: args['device-code'] });
    } else if (byId('op.deviceConfirmForm')) {
      const form = byId('op.deviceConfirmForm');
      if (args.deny) {
        const { confirm, ...fields } = form.fields;
        next = post({ ...form, fields }, { abort: 'yes' });
        aborted = true;
      } else {
        next = post(form, {});
      }
    } else if (hasId(res.text, 'device-success')) {
      return null;
    } else if (hasId(res.text, 'error-title')) {
      stop('provider_error', errorText(res.text), here);
    } else {
      stop('unexpected_page', `HTTP ${res.status}: ${res.text.slice(0, 300)}`, here);
    }
  }
  return stop('too_many_steps', `more than ${MAX_STEPS} requests`, next.url);
}

const idpJar = new CookieJar();

if (deviceMode) {
  const start = new URL(args['verification-uri']);
  const result = await walk(idpJar, start.href, start.origin);
  if (result === null) {
    printJson({ device: args.deny ? 'denied' : 'approved' });
  } else {
    // The provider redirected elsewhere: it ended the flow without the success page.
    printJson({ device: args.deny ? 'denied' : 'redirected', redirect: result });
    if (!args.deny) process.exit(1);
  }
  process.exit(0);
}

let rpJar;
let authUrl = args.url;
if (args['rp-start']) {
  rpJar = CookieJar.load(args.jar);
  const res = await request(rpJar, args['rp-start']);
  rpJar.save(args.jar);
  if (!(res.status >= 300 && res.status < 400) || !res.location) {
    stop('rp_start_failed', `expected a redirect to the IdP, got HTTP ${res.status}: ${res.text.slice(0, 200)}`, args['rp-start']);
  }
  authUrl = new URL(res.location, args['rp-start']).href;
}

let idpOrigin;
try {
  idpOrigin = new URL(authUrl).origin;
} catch {
  fail(`drive-login.mjs: not a URL: ${authUrl}`);
}

const redirect = await walk(idpJar, authUrl, idpOrigin);
if (!args.follow) {
  printJson({ redirect });
  process.exit(0);
}

rpJar ??= CookieJar.load(args.jar);
const final = await request(rpJar, redirect);
rpJar.save(args.jar);
printJson({
  redirect,
  status: final.status,
  location: final.location ?? undefined,
  body: final.text,
});
