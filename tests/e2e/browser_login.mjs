#!/usr/bin/env node
// One chromium (Debian's, driven by playwright-core; no browser download) kept open for
// tests/e2e/browser_login.py, which runs this inside the lab's client namespace
// (`ip netns exec`), so the browser has that namespace's network and its /etc/resolv.conf.
//
//   node browser_login.mjs --chromium /usr/bin/chromium --artifacts DIR [--prefix browser]
//
// Reads one JSON command per line on stdin and answers each with one JSON line on stdout:
//   {"cmd":"login","url":U,"username":N,"password":P}
//       opens U (the sign-in URL `sallyport login --no-browser` printed), expects the IdP's
//       login page (form#login-form), signs in, expects the consent page (form#consent-form),
//       allows, and waits for the redirect to the client's loopback listener
//       -> {"ok":true,"login":{url,title,h1},"consent":{url,h1,text},"final":{url,status,text}}
//   {"cmd":"open","url":U,"shot":NAME}  -> {"ok":true,"url","status","h1","text"}
//   {"cmd":"quit"}
// Every step writes DIR/PREFIX-N-STEP.png. Errors answer {"ok":false,"error":...} and
// write DIR/PREFIX-N-SHOT-error.png (the browser's error page).
//
// The browser resolves names through the system resolver (getaddrinfo, reading the
// namespace's /etc/resolv.conf): its own DNS client and DNS-over-HTTPS are switched off,
// and no --host-resolver-rules is given.
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

const { values: opt } = parseArgs({
  options: {
    chromium: { type: 'string', default: '/usr/bin/chromium' },
    artifacts: { type: 'string' },
    prefix: { type: 'string', default: 'browser' },
  },
});
if (!opt.artifacts) {
  console.error('browser_login.mjs: --artifacts DIR is required');
  process.exit(2);
}
mkdirSync(opt.artifacts, { recursive: true });

const T = 30000; // per-step timeout (ms): generous for a loaded 2-core machine
const profile = mkdtempSync(join(tmpdir(), 'sp-browser-login-'));
let step = 0;

const context = await chromium.launchPersistentContext(profile, {
  executablePath: opt.chromium,
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    // the system resolver, not chromium's own DNS client or DoH; no https upgrade of
    // http://app.corp.test/
    '--disable-features=AsyncDns,DnsOverHttps,HttpsUpgrades,HttpsFirstBalancedModeAutoEnable'],
  viewport: { width: 1024, height: 720 },
});
const page = context.pages()[0] ?? await context.newPage();
page.setDefaultTimeout(T);

async function shot(name) {
  step += 1;
  const path = join(opt.artifacts, `${opt.prefix}-${step}-${name}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}

async function bodyText() {
  return (await page.locator('body').innerText({ timeout: T })).trim();
}

async function login(cmd) {
  const shots = [];
  await page.goto(cmd.url, { waitUntil: 'load' });
  await page.locator('form#login-form').waitFor({ state: 'visible' });
  const loginStep = { url: page.url(), title: await page.title(),
    h1: (await page.locator('h1#title').textContent()) ?? '' };
  shots.push(await shot('idp-login'));
  await page.fill('input#username', cmd.username);
  await page.fill('input#password', cmd.password);
  await page.click('button#login');
  await page.locator('form#consent-form').waitFor({ state: 'visible' });
  const consent = { url: page.url(), h1: (await page.locator('h1#title').textContent()) ?? '',
    text: await bodyText() };
  shots.push(await shot('idp-consent'));
  const back = page.waitForResponse((r) => r.url().startsWith('http://127.0.0.1:') &&
    !r.url().startsWith(new URL(loginStep.url).origin) && r.request().isNavigationRequest());
  await page.click('button#allow');
  const resp = await back;
  await page.waitForLoadState('load');
  const final = { url: page.url(), status: resp.status(), text: await bodyText() };
  shots.push(await shot('client-signed-in'));
  return { login: loginStep, consent, final, shots };
}

async function open(cmd) {
  const resp = await page.goto(cmd.url, { waitUntil: 'load' });
  const h1 = (await page.locator('h1').first().textContent({ timeout: T })) ?? '';
  const out = { url: page.url(), status: resp ? resp.status() : 0, h1, text: await bodyText() };
  out.shot = await shot(cmd.shot ?? 'page');
  return out;
}

function answer(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

answer({ ok: true, ready: true, version: context.browser()?.version() ?? '' });
const rl = createInterface({ input: process.stdin });
for await (const line of rl) {
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch {
    answer({ ok: false, error: 'not JSON' });
    continue;
  }
  if (cmd.cmd === 'quit') break;
  try {
    if (cmd.cmd === 'login') answer({ ok: true, ...(await login(cmd)) });
    else if (cmd.cmd === 'open') answer({ ok: true, ...(await open(cmd)) });
    else answer({ ok: false, error: `unknown command ${cmd.cmd}` });
  } catch (err) {
    let path = '';
    try {
      path = await shot(cmd.shot ? `${cmd.shot}-error` : 'error');
    } catch { /* the page may be gone */ }
    answer({ ok: false, error: String(err), url: page.url(), shot: path });
  }
}
await context.close();
rmSync(profile, { recursive: true, force: true });
