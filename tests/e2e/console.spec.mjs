#!/usr/bin/env node
// Sallyport admin console in a real browser: Debian's chromium driven by playwright-core.
//
//   node console.spec.mjs --base http://127.0.0.1:PORT --chromium /usr/bin/chromium \
//        --artifacts DIR --username U --password P --email E
//
// The controller (with the test IdP as its issuer and E in admin_emails) must be running
// at --base. Signs in through the IdP's login and consent pages, uses the console's forms,
// checks an API error is shown, runs an access check, tries a write without the CSRF
// header from the page, signs out. Screenshots: DIR/console-*.png. Prints one line per
// failed check and ends with "console e2e: N passed, M failed"; exits 1 on any failure.
import { mkdtempSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

const { values: opt } = parseArgs({
  options: {
    base: { type: 'string' },
    chromium: { type: 'string', default: '/usr/bin/chromium' },
    artifacts: { type: 'string' },
    username: { type: 'string' },
    password: { type: 'string' },
    email: { type: 'string' },
  },
});
for (const k of ['base', 'artifacts', 'username', 'password', 'email']) {
  if (!opt[k]) {
    console.error(`console.spec.mjs: --${k} is required`);
    process.exit(2);
  }
}

let passed = 0;
let failed = 0;
function check(name, ok, detail = '') {
  if (ok) passed++;
  else {
    failed++;
    console.log(`FAIL: ${name} ${detail}`);
  }
}

const started = Date.now();
const T = 10000; // per-step timeout (ms)
const profile = mkdtempSync(join(tmpdir(), 'sp-console-chromium-'));
mkdirSync(opt.artifacts, { recursive: true });
let context;
const pageErrors = [];
const cspViolations = [];

async function shot(page, name) {
  await page.screenshot({ path: join(opt.artifacts, `console-${name}.png`), fullPage: true });
}

async function text(page, selector) {
  return (await page.locator(selector).textContent({ timeout: T })) ?? '';
}

// The row of a table whose first cell has exactly this text.
function row(page, table, first) {
  return page.locator(`${table} tbody tr`).filter({
    has: page.locator('td:first-child', { hasText: new RegExp(`^${first.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`) }),
  });
}

async function run() {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: opt.chromium,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 1280, height: 900 },
  });
  const page = context.pages()[0] ?? await context.newPage();
  page.setDefaultTimeout(T);
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  page.on('console', (m) => {
    if (/Content[- ]Security[- ]Policy/i.test(m.text())) cspViolations.push(m.text());
  });
  page.on('dialog', (d) => d.accept());

  // 1. Not signed in: the sign-in link.
  await page.goto(opt.base + '/admin/');
  await page.locator('#signin').waitFor({ state: 'visible' });
  check('signed out: sign-in shown', await page.locator('#signin-link').isVisible());
  check('sign-in link targets the console login',
    (await page.locator('#signin-link').getAttribute('href')) === '/auth/login?client=console');
  check('signed out: app hidden', await page.locator('#app').isHidden());
  await shot(page, 'signin');

  // 2. Sign in at the IdP: login form, consent, back to /admin/.
  await page.click('#signin-link');
  await page.locator('#username').waitFor();
  check('IdP login page is on another origin', !page.url().startsWith(opt.base), page.url());
  await page.fill('#username', opt.username);
  await page.fill('#password', opt.password);
  await page.click('#login');
  await page.locator('#allow').waitFor();
  await page.click('#allow');
  await page.waitForURL(opt.base + '/admin/**');
  await page.locator('#who').waitFor({ state: 'visible' });
  check('landed on /admin/', new URL(page.url()).pathname === '/admin/', page.url());
  check('signed-in e-mail shown', (await text(page, '#session-email')) === opt.email,
    await text(page, '#session-email'));
  check('role admin shown', (await text(page, '#session-role')) === 'admin');
  check('logout button shown', await page.locator('#logout').isVisible());
  const cookies = await context.cookies(opt.base);
  const consoleCookie = cookies.find((c) => c.name === 'sp_console');
  check('console cookie is HttpOnly', consoleCookie && consoleCookie.httpOnly === true,
    JSON.stringify(cookies.map((c) => c.name)));
  check('console cookie unreadable from script',
    !(await page.evaluate(() => document.cookie)).includes('sp_console'));

  // 3. Remote network through the form, then an enrollment token.
  await page.locator('#network-form').waitFor();
  await page.fill('#network-name', 'e2e-net');
  await page.fill('#network-description', 'made by the browser test');
  await page.click('#network-save');
  const net = row(page, '#networks-table', 'e2e-net');
  await net.waitFor();
  check('network listed', (await net.count()) === 1);
  check('network description listed',
    (await net.locator('td[data-field=description]').textContent()) === 'made by the browser test');
  await net.locator('button.token').click();
  await page.locator('#token-value').waitFor();
  const token = await page.locator('#token-value').inputValue();
  check('enrollment token shown once', /^spe_[A-Za-z0-9_-]{43}$/.test(token), token);
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: opt.base });
  await page.click('#token-copy');
  await page.locator('#token-copied', { hasText: 'Copied.' }).waitFor();
  const clip = await page.evaluate(() => navigator.clipboard.readText());
  check('copy button puts the token on the clipboard', clip === token, clip);
  await shot(page, 'networks');

  // Markup in names is shown as text.
  await page.fill('#network-name', '<img src=x id=injected>');
  await page.click('#network-save');
  const odd = row(page, '#networks-table', '<img src=x id=injected>');
  await odd.waitFor();
  check('markup in a name rendered as text', (await page.locator('#injected').count()) === 0);
  await odd.locator('button.delete').click();
  await odd.waitFor({ state: 'detached' });
  check('network deleted', (await odd.count()) === 0);

  // 4. A resource through the form.
  await page.click('#nav-resources');
  await page.locator('#resource-form').waitFor();
  await page.fill('#resource-name', 'grafana');
  await page.selectOption('#resource-network-id', { label: 'e2e-net' });
  await page.fill('#resource-address', 'Grafana.Corp.Example.');
  await page.fill('#resource-alias', 'grafana.sp');
  await page.fill('#resource-tcp', '443, 22, 23');
  await page.fill('#resource-udp', 'none');
  await page.click('#resource-save');
  const res = row(page, '#resources-table', 'grafana');
  await res.waitFor();
  check('resource listed', (await res.count()) === 1);
  check('resource address canonical',
    (await res.locator('td[data-field=address]').textContent()) === 'grafana.corp.example');
  check('resource network named', (await res.locator('td[data-field=network_id]').textContent()) === 'e2e-net');
  check('resource tcp ports merged', (await res.locator('td[data-field=tcp]').textContent()) === '22-23, 443',
    await res.locator('td[data-field=tcp]').textContent());
  check('resource udp none', (await res.locator('td[data-field=udp]').textContent()) === 'none');
  await shot(page, 'resources');

  // 5. A bad CIDR: the API's own message is shown next to the form.
  await page.fill('#resource-name', 'bad');
  await page.selectOption('#resource-network-id', { label: 'e2e-net' });
  await page.fill('#resource-address', '10.0.0.1/24');
  await page.fill('#resource-alias', '');
  await page.fill('#resource-tcp', '');
  await page.fill('#resource-udp', '');
  await page.click('#resource-save');
  await page.locator('#resource-error').waitFor({ state: 'visible' });
  const shown = await text(page, '#resource-error');
  const networkId = await page.locator('#resource-network-id').inputValue();
  const direct = await page.evaluate(async (networkId) => {
    const s = await (await fetch('/auth/session', { credentials: 'same-origin' })).json();
    const r = await fetch('/api/v1/resources', {
      method: 'POST', credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': s.csrf_token },
      body: JSON.stringify({ name: 'bad', network_id: networkId, address: '10.0.0.1/24' }),
    });
    return { status: r.status, body: await r.json() };
  }, networkId);
  check('bad CIDR refused by the API', direct.status === 400, JSON.stringify(direct));
  const apiMessage = direct.body?.error?.message ?? '(none)';
  check('API error text shown next to the form', shown.includes(apiMessage) && apiMessage.includes('address'),
    `shown=${JSON.stringify(shown)} api=${JSON.stringify(apiMessage)}`);
  check('API error also in #error', (await text(page, '#error')).includes(apiMessage));
  check('refused resource not listed', (await row(page, '#resources-table', 'bad').count()) === 0);
  await shot(page, 'error');

  // An edit through the same form (PATCH): alias cleared, TCP narrowed.
  await page.click('#resource-cancel');
  await res.locator('button.edit').click();
  check('edit form filled', (await page.locator('#resource-address').inputValue()) === 'grafana.corp.example');
  await page.fill('#resource-alias', '');
  await page.fill('#resource-tcp', '443');
  await page.click('#resource-save');
  await res.locator('td[data-field=tcp]', { hasText: /^443$/ }).waitFor();
  check('resource edited: alias cleared', (await res.locator('td[data-field=alias]').textContent()) === '');
  check('resource edited: still one', (await row(page, '#resources-table', 'grafana').count()) === 1);

  // 6. CSRF: a cookie-authenticated write without X-CSRF-Token is refused.
  const csrf = await page.evaluate(async () => {
    const r = await fetch('/api/v1/remote-networks', {
      method: 'POST', credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ name: 'csrf-forged' }),
    });
    const list = await (await fetch('/api/v1/remote-networks?name=csrf-forged', { credentials: 'same-origin' })).json();
    return { status: r.status, body: await r.text(), created: list.items.length };
  });
  check('write without X-CSRF-Token refused 403', csrf.status === 403, JSON.stringify(csrf));
  check('refusal names csrf', csrf.body.includes('"csrf"'), csrf.body);
  check('refused write changed nothing', csrf.created === 0, JSON.stringify(csrf));

  // 7. Group with the signed-in user, a policy, then access checks.
  await page.click('#nav-groups');
  await page.locator('#group-form').waitFor();
  await page.fill('#group-name', 'e2e-group');
  await page.click('#group-save');
  const grp = row(page, '#groups-table', 'e2e-group');
  await grp.waitFor();
  await grp.locator('button.members').click();
  await page.locator('#member-form').waitFor();
  await page.selectOption('#member-user', { label: opt.email });
  await page.click('#member-add');
  await page.locator('#members-table tbody tr').first().waitFor();
  check('member added', (await text(page, '#members-table tbody tr:first-child td:first-child')) === opt.email);
  const idp = row(page, '#groups-table', 'engineering');
  check('IdP group listed without edit', (await idp.count()) === 1 && (await idp.locator('button.edit').count()) === 0);

  await page.click('#nav-policies');
  await page.locator('#policy-form').waitFor();
  await page.selectOption('#policy-group-id', { label: 'e2e-group' });
  await page.selectOption('#policy-resource-id', { label: 'grafana' });
  await page.click('#policy-save');
  const pol = row(page, '#policies-table', 'e2e-group');
  await pol.waitFor();
  check('policy listed', (await pol.locator('td[data-field=resource_id]').textContent()) === 'grafana');

  await page.click('#nav-access');
  await page.locator('#access-form').waitFor();
  await page.selectOption('#access-user', { label: opt.email });
  await page.fill('#access-address', 'grafana.corp.example');
  await page.fill('#access-port', '443');
  await page.selectOption('#access-protocol', 'tcp');
  await page.click('#access-run');
  await page.locator('#access-result').waitFor({ state: 'visible' });
  check('access check allowed', (await text(page, '#access-allowed')) === 'yes', await text(page, '#access-reason'));
  check('access check reason', (await text(page, '#access-reason')) === 'allowed');
  check('access check explanation', (await text(page, '#access-explanation')).length > 0);
  await shot(page, 'access');
  await page.fill('#access-port', '8080');
  await page.click('#access-run');
  await page.locator('#access-allowed', { hasText: 'no' }).waitFor();
  check('access check denied for another port', (await text(page, '#access-reason')) === 'port_not_allowed',
    await text(page, '#access-reason'));

  // 8. Audit: the newest event first.
  await page.click('#nav-audit');
  await page.locator('#audit-table tbody tr').first().waitFor();
  const ids = await page.locator('#audit-table tbody tr').evaluateAll((rows) => rows.map((r) => Number(r.dataset.id)));
  check('audit newest first', ids.length > 3 && ids.every((v, i) => i === 0 || ids[i - 1] > v), JSON.stringify(ids));
  const actions = await page.locator('#audit-table td[data-field=action]').allTextContents();
  check('audit lists the resource creation', actions.includes('resource.create'), JSON.stringify(actions));
  check('audit newest is the policy creation', actions[0] === 'policy.create' || actions[0] === 'group.member_add',
    actions[0]);
  await shot(page, 'audit');

  // Sessions: revoke the client session.
  const owner = 'laptop.owner@example.com';
  await page.click('#nav-sessions');
  const sess = row(page, '#sessions-table', owner);
  await sess.waitFor();
  check('client session listed live', (await sess.locator('td[data-field=revoked_at]').textContent()) === '');
  await sess.locator('button.revoke').click();
  await sess.locator('td[data-field=revoked_at]', { hasText: '(admin)' }).waitFor();
  check('session revoked by admin', (await sess.locator('button.revoke').count()) === 0);

  // Devices: approve, then block.
  await page.click('#nav-devices');
  const dev = row(page, '#devices-table', 'e2e-laptop');
  await dev.waitFor();
  check('device pending', (await dev.locator('td[data-field=state]').textContent()) === 'pending');
  check('device owner named', (await dev.locator('td[data-field=user_id]').textContent()) === owner);
  await dev.locator('button.approve').click();
  await dev.locator('td[data-field=state]', { hasText: 'approved' }).waitFor();
  check('device approved', (await dev.locator('button.approve').count()) === 0);
  await dev.locator('button.block').click();
  await dev.locator('td[data-field=state]', { hasText: 'blocked' }).waitFor();
  check('device blocked', (await dev.locator('button.block').count()) === 0 &&
    (await dev.locator('button.approve').count()) === 1);

  // Users: disable and enable.
  await page.click('#nav-users');
  const ou = row(page, '#users-table', owner);
  await ou.waitFor();
  await ou.locator('button.disable').click();
  await ou.locator('td[data-field=disabled]', { hasText: 'disabled' }).waitFor();
  check('user disabled', (await ou.locator('button.enable').count()) === 1);
  await ou.locator('button.enable').click();
  await ou.locator('td[data-field=disabled]', { hasText: 'active' }).waitFor();
  check('user enabled again', (await ou.locator('button.disable').count()) === 1);

  // Group members: remove the one added.
  await page.click('#nav-groups');
  await row(page, '#groups-table', 'e2e-group').locator('button.members').click();
  await page.locator('#members-table tbody tr').first().waitFor();
  await page.locator('#members-table button.remove').click();
  await page.locator('#members-table tbody tr').first().waitFor({ state: 'detached' });
  check('member removed', (await page.locator('#members-table tbody tr').count()) === 0);

  // 9. Users: demote ourselves to auditor through the edit form; the console turns read-only.
  await page.click('#nav-users');
  const me = row(page, '#users-table', opt.email);
  await me.waitFor();
  check('user listed as admin', (await me.locator('td[data-field=role]').textContent()) === 'admin');
  await me.locator('button.edit').click();
  await page.locator('#user-form').waitFor({ state: 'visible' });
  await page.selectOption('#user-role', 'auditor');
  await page.click('#user-save');
  await page.locator('#users-table td[data-field=role]', { hasText: 'auditor' }).waitFor();
  await page.reload();
  await page.locator('#who').waitFor({ state: 'visible' });
  check('role auditor shown after reload', (await text(page, '#session-role')) === 'auditor');
  await page.locator('#users-table').waitFor();
  check('auditor: users read only', (await page.locator('#user-form').count()) === 0 &&
    (await page.locator('#users-table button').count()) === 0);
  await page.click('#nav-networks');
  await page.locator('#networks-table').waitFor();
  check('auditor: networks still listed', (await row(page, '#networks-table', 'e2e-net').count()) === 1);
  check('auditor: no create form', (await page.locator('#network-form').count()) === 0);
  check('auditor: no write buttons',
    (await page.locator('#networks-table button').count()) === 0);
  const denied = await page.evaluate(async () => {
    const s = await (await fetch('/auth/session', { credentials: 'same-origin' })).json();
    const r = await fetch('/api/v1/remote-networks', {
      method: 'POST', credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': s.csrf_token },
      body: JSON.stringify({ name: 'auditor-write' }),
    });
    return r.status;
  });
  check('auditor write refused 403', denied === 403, String(denied));
  await shot(page, 'auditor');

  // 10. Sign out.
  await page.click('#logout');
  await page.locator('#signin').waitFor({ state: 'visible' });
  check('signed out: app hidden again', await page.locator('#app').isHidden());
  const after = await page.evaluate(async () => (await fetch('/auth/session', { credentials: 'same-origin' })).status);
  check('session gone after sign-out', after === 401, String(after));
  await shot(page, 'signed-out');

  // 11. A person without a console role (eng-user, role user) is told so and sees no data.
  await context.clearCookies(); // forget the IdP session too
  await page.goto(opt.base + '/admin/');
  await page.click('#signin-link');
  await page.locator('#username').waitFor();
  await page.fill('#username', 'eng-user');
  await page.fill('#password', 'eng-pass');
  await page.click('#login');
  await page.locator('#allow').waitFor();
  await page.click('#allow');
  await page.waitForURL(opt.base + '/admin/**');
  await page.locator('#error').waitFor({ state: 'visible' });
  check('role user: told there is no console access',
    (await text(page, '#error')).includes('gives no access to the console'), await text(page, '#error'));
  check('role user: app hidden', await page.locator('#app').isHidden());
  check('role user: role shown', (await text(page, '#session-role')) === 'user');
  const forbidden = await page.evaluate(async () =>
    (await fetch('/api/v1/resources', { credentials: 'same-origin' })).status);
  check('role user: API read refused 403', forbidden === 403, String(forbidden));
  await shot(page, 'no-role');
  await page.click('#logout');
  await page.locator('#signin').waitFor({ state: 'visible' });

  check('no script errors', pageErrors.length === 0, JSON.stringify(pageErrors));
  check('no CSP violations', cspViolations.length === 0, JSON.stringify(cspViolations));
}

let code = 0;
try {
  await run();
} catch (e) {
  check('test ran to the end', false, String(e?.stack ?? e));
  if (context) {
    const page = context.pages()[0];
    if (page) await shot(page, 'failure').catch(() => {});
  }
} finally {
  if (context) await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
if (failed) code = 1;
console.log(`console e2e: ${passed} passed, ${failed} failed (${((Date.now() - started) / 1000).toFixed(1)}s)`);
process.exit(code);
