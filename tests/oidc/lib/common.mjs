// Helpers shared by Sallyport's OIDC test tools: command-line parsing, request bodies,
// HTML escaping, a small HTML form reader and a cookie jar.
import { readFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

// Parses process.argv with node:util parseArgs; a bad invocation prints one line on
// stderr and exits 2. `usage` is printed for --help.
export function cli(options, usage) {
  let parsed;
  try {
    parsed = parseArgs({
      options: { ...options, help: { type: 'boolean' } },
      allowPositionals: false,
      strict: true,
    });
  } catch (err) {
    process.stderr.write(`${err.message}\n`);
    process.exit(2);
  }
  if (parsed.values.help) {
    process.stdout.write(usage);
    process.exit(0);
  }
  return parsed.values;
}

export function fail(message, code = 2) {
  process.stderr.write(`${message}\n`);
  process.exit(code);
}

// Sends everything console.log/console.info would print to stderr, so that a tool's
// stdout carries only the lines it means to print (the ready line, the result).
export function quietStdout() {
  const toStderr = (...args) => console.error(...args);
  console.log = toStderr;
  console.info = toStderr;
  console.debug = toStderr;
}

export function readBody(req, limit = 64 * 1024) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > limit) {
        reject(new Error('request body too large'));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

export function escapeHtml(value) {
  return String(value ?? '')
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll('"', '&quot;')
    .replaceAll("'", '&#39;');
}

function unescapeHtml(value) {
  return value
    .replaceAll('&quot;', '"')
    .replaceAll('&#39;', "'")
    .replaceAll('&#x27;', "'")
    .replaceAll('&lt;', '<')
    .replaceAll('&gt;', '>')
    .replaceAll('&amp;', '&');
}

function attributes(tag) {
  const out = {};
  const re = /([a-zA-Z_:][-a-zA-Z0-9_:.]*)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+)))?/g;
  // Skip the tag name itself.
  const body = tag.replace(/^<\s*[a-zA-Z]+/, '').replace(/\/?>$/, '');
  for (const m of body.matchAll(re)) {
    out[m[1].toLowerCase()] = unescapeHtml(m[2] ?? m[3] ?? m[4] ?? '');
  }
  return out;
}

// Reads the forms of a page: for each, its id, method, action and the name/value of
// every <input> inside it. Inputs and buttons outside any form but tied to one with
// form="ID" are reported on that form too (inputs only; buttons under `buttons`).
// Good enough for the pages of Sallyport's test IdPs, not a general HTML parser.
export function parseForms(html) {
  const forms = [];
  const formRe = /<form\b[^>]*>([\s\S]*?)<\/form>/gi;
  for (const m of html.matchAll(formRe)) {
    const open = m[0].match(/^<form\b[^>]*>/i)[0];
    const a = attributes(open);
    const fields = {};
    for (const input of m[1].matchAll(/<input\b[^>]*>/gi)) {
      const ia = attributes(input[0]);
      if (ia.name && (ia.type ?? 'text') !== 'submit') fields[ia.name] = ia.value ?? '';
    }
    forms.push({
      id: a.id ?? '',
      method: (a.method ?? 'get').toLowerCase(),
      action: a.action ?? '',
      fields,
      buttons: [],
    });
  }
  for (const b of html.matchAll(/<button\b[^>]*>/gi)) {
    const ba = attributes(b[0]);
    const target = ba.form ? forms.find((f) => f.id === ba.form) : undefined;
    if (target) target.buttons.push(ba);
  }
  // Buttons inside a form body.
  for (const m of html.matchAll(formRe)) {
    const id = attributes(m[0].match(/^<form\b[^>]*>/i)[0]).id ?? '';
    const form = forms.find((f) => f.id === id);
    for (const b of m[1].matchAll(/<button\b[^>]*>/gi)) form?.buttons.push(attributes(b[0]));
  }
  return forms;
}

// Tells whether an element with this id is on the page.
export function hasId(html, id) {
  return new RegExp(`\\bid\\s*=\\s*["']${id.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}["']`).test(html);
}

// A cookie jar of our own: enough of RFC 6265 for loopback tests (host-only and domain
// cookies, paths, expiry, Secure ignored on plain HTTP loopback). It reads and writes
// the Netscape cookie file format that curl uses (-b FILE / -c FILE), including curl's
// "#HttpOnly_" line prefix.
export class CookieJar {
  constructor() {
    this.cookies = [];
  }

  static load(file) {
    const jar = new CookieJar();
    let text;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      if (err.code === 'ENOENT') return jar;
      throw err;
    }
    for (let line of text.split('\n')) {
      line = line.replace(/\r$/, '');
      let httpOnly = false;
      if (line.startsWith('#HttpOnly_')) {
        httpOnly = true;
        line = line.slice('#HttpOnly_'.length);
      } else if (line.startsWith('#') || !line.trim()) {
        continue;
      }
      const parts = line.split('\t');
      if (parts.length < 7) continue;
      const [domain, includeSub, path, secure, expires, name, ...rest] = parts;
      jar.cookies.push({
        domain: domain.replace(/^\./, '').toLowerCase(),
        hostOnly: includeSub !== 'TRUE',
        path,
        secure: secure === 'TRUE',
        expires: Number(expires) || 0,
        name,
        value: rest.join('\t'),
        httpOnly,
      });
    }
    return jar;
  }

  save(file) {
    const lines = ['# Netscape HTTP Cookie File', '# Written by Sallyport drive-login.mjs', ''];
    for (const c of this.live()) {
      const domain = c.hostOnly ? c.domain : `.${c.domain}`;
      lines.push([
        `${c.httpOnly ? '#HttpOnly_' : ''}${domain}`,
        c.hostOnly ? 'FALSE' : 'TRUE',
        c.path,
        c.secure ? 'TRUE' : 'FALSE',
        String(c.expires || 0),
        c.name,
        c.value,
      ].join('\t'));
    }
    writeFileSync(file, `${lines.join('\n')}\n`);
  }

  live() {
    const now = Math.floor(Date.now() / 1000);
    this.cookies = this.cookies.filter((c) => !c.expires || c.expires > now);
    return this.cookies;
  }

  // Stores the Set-Cookie headers of a response to a request for `url`.
  store(url, response) {
    const u = new URL(url);
    const headers = typeof response.headers.getSetCookie === 'function'
      ? response.headers.getSetCookie()
      : [];
    for (const header of headers) {
      const [pair, ...attrs] = header.split(';');
      const eq = pair.indexOf('=');
      if (eq < 1) continue;
      const cookie = {
        name: pair.slice(0, eq).trim(),
        value: pair.slice(eq + 1).trim(),
        domain: u.hostname.toLowerCase(),
        hostOnly: true,
        path: u.pathname.replace(/\/[^/]*$/, '') || '/',
        secure: false,
        httpOnly: false,
        expires: 0,
      };
      for (const attr of attrs) {
        const i = attr.indexOf('=');
        const key = (i < 0 ? attr : attr.slice(0, i)).trim().toLowerCase();
        const val = i < 0 ? '' : attr.slice(i + 1).trim();
        if (key === 'path' && val.startsWith('/')) cookie.path = val;
        else if (key === 'domain' && val) {
          cookie.domain = val.replace(/^\./, '').toLowerCase();
          cookie.hostOnly = false;
        } else if (key === 'secure') cookie.secure = true;
        else if (key === 'httponly') cookie.httpOnly = true;
        else if (key === 'max-age') {
          const n = Number(val);
          cookie.expires = n <= 0 ? 1 : Math.floor(Date.now() / 1000) + n;
        } else if (key === 'expires' && !attrs.some((x) => /^\s*max-age/i.test(x))) {
          const t = Date.parse(val);
          if (!Number.isNaN(t)) cookie.expires = Math.max(1, Math.floor(t / 1000));
        }
      }
      this.cookies = this.cookies.filter((c) => !(c.name === cookie.name
        && c.domain === cookie.domain && c.path === cookie.path));
      this.cookies.push(cookie);
    }
    this.live();
  }

  // The Cookie header value to send with a request for `url` (or '' when none).
  header(url) {
    const u = new URL(url);
    const host = u.hostname.toLowerCase();
    const path = u.pathname || '/';
    const matching = this.live().filter((c) => {
      const domainOk = c.hostOnly ? host === c.domain
        : host === c.domain || host.endsWith(`.${c.domain}`);
      const pathOk = path === c.path || path.startsWith(c.path.endsWith('/') ? c.path : `${c.path}/`)
        || c.path === '/';
      return domainOk && pathOk;
    });
    matching.sort((a, b) => b.path.length - a.path.length);
    return matching.map((c) => `${c.name}=${c.value}`).join('; ');
  }
}

// Prints one JSON line on stdout.
export function printJson(value) {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}
