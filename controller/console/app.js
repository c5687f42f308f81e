/*
 * Sallyport admin console. Plain JavaScript, no framework, nothing loaded from other
 * origins. The page holds no data: it asks /auth/session who is signed in, then reads
 * and writes through /api/v1 with the session cookie. Every write sends X-CSRF-Token.
 * Text from the API is only ever put into the page as text (textContent, input
 * values), never as markup.
 */
'use strict';

(function () {
  const state = { user: null, csrf: '', cache: {} };

  /* ---- small DOM helpers ---- */

  function $(id) { return document.getElementById(id); }

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'text') e.textContent = v;
      else if (k === 'onclick') e.addEventListener('click', v);
      else if (k === 'onsubmit') e.addEventListener('submit', v);
      else if (k === 'className') e.className = v;
      else if (v === true) e.setAttribute(k, '');
      else e.setAttribute(k, String(v));
    }
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  function showError(message) {
    const box = $('error');
    if (!message) {
      box.hidden = true;
      box.textContent = '';
      return;
    }
    box.textContent = message;
    box.hidden = false;
  }

  function fmtTime(t) {
    if (t === null || t === undefined) return '';
    return new Date(t * 1000).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
  }

  function isAdmin() { return !!state.user && state.user.role === 'admin'; }

  /* ---- the API ---- */

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  /* One request to our own origin. Resolves to the parsed JSON (or null for 204). */
  async function api(method, path, body) {
    const headers = { Accept: 'application/json' };
    const init = { method, headers, credentials: 'same-origin', cache: 'no-store' };
    if (method !== 'GET' && method !== 'HEAD') headers['X-CSRF-Token'] = state.csrf;
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, 'network', 'the controller could not be reached: ' + e.message);
    }
    const text = await res.text();
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch (e) { data = null; }
    }
    if (!res.ok) {
      const err = data && data.error ? data.error : {};
      const message = err.message || (res.status + ' ' + res.statusText);
      if (res.status === 401 && path !== '/auth/session') showSignIn();
      throw new ApiError(res.status, err.code || 'http_' + res.status, message);
    }
    return data;
  }

  function errorText(e) {
    return e instanceof ApiError ? e.message + ' (' + e.code + ')' : String(e);
  }

  /* Every page of a list (up to 10,000 objects). */
  async function listAll(path) {
    let items = [];
    let cursor = null;
    const sep = path.includes('?') ? '&' : '?';
    for (let i = 0; i < 10; i++) {
      const page = await api('GET', path + sep + 'limit=1000' +
        (cursor ? '&cursor=' + encodeURIComponent(cursor) : ''));
      items = items.concat(page.items || []);
      cursor = page.next_cursor;
      if (!cursor) break;
    }
    return items;
  }

  async function lookup(name, path) {
    if (!state.cache[name]) state.cache[name] = await listAll(path);
    return state.cache[name];
  }

  function invalidate() { state.cache = {}; }

  /* ---- port sets ("all", "none" or "22, 443, 8000-8100") ---- */

  function portsToText(v) {
    if (Array.isArray(v)) return v.join(', ');
    return v === undefined || v === null ? '' : String(v);
  }

  function textToPorts(t) {
    const s = t.trim();
    if (s === '' || s === 'all' || s === 'none') return s === '' ? 'all' : s;
    return s.split(/[\s,]+/).filter(Boolean);
  }

  /* ---- collections ---- */

  function nameOf(list, id, key) {
    const o = (list || []).find((x) => x.id === id);
    return o ? (o[key || 'name'] || id) : id;
  }

  const collections = {
    networks: {
      title: 'Remote networks', one: 'network', path: '/api/v1/remote-networks',
      columns: [['name', 'Name'], ['description', 'Description'], ['id', 'ID', 'mono']],
      fields: [
        { name: 'name', label: 'Name', required: true },
        { name: 'description', label: 'Description', nullable: true },
      ],
      create: true, edit: true, del: true,
      actions: (o) => isAdmin() ? [['Create enrollment token', 'token', () => createToken(o)]] : [],
    },
    resources: {
      title: 'Resources', one: 'resource', path: '/api/v1/resources',
      needs: { networks: '/api/v1/remote-networks' },
      columns: [['name', 'Name'], ['network_id', 'Network', null, (o, l) => nameOf(l.networks, o.network_id)],
        ['address', 'Address'], ['alias', 'Alias'], ['tcp', 'TCP', null, (o) => portsToText(o.tcp)],
        ['udp', 'UDP', null, (o) => portsToText(o.udp)], ['icmp', 'ICMP', null, (o) => o.icmp ? 'yes' : 'no']],
      fields: [
        { name: 'name', label: 'Name', required: true },
        { name: 'network_id', label: 'Remote network', type: 'select', from: 'networks', required: true },
        { name: 'address', label: 'Address (host, IP or CIDR)', required: true },
        { name: 'alias', label: 'Alias', nullable: true },
        { name: 'tcp', label: 'TCP ports (all, none or list)', type: 'ports', placeholder: 'all' },
        { name: 'udp', label: 'UDP ports (all, none or list)', type: 'ports', placeholder: 'all' },
        { name: 'icmp', label: 'ICMP', type: 'checkbox', initial: true },
      ],
      create: true, edit: true, del: true,
    },
    groups: {
      title: 'Groups', one: 'group', path: '/api/v1/groups',
      columns: [['name', 'Name'], ['source', 'Source'], ['description', 'Description'], ['id', 'ID', 'mono']],
      fields: [
        { name: 'name', label: 'Name', required: true },
        { name: 'description', label: 'Description', nullable: true },
      ],
      create: true, edit: (o) => o.source !== 'idp', del: true,
      actions: (o) => [['Members', 'members', () => showMembers(o)]],
    },
    policies: {
      title: 'Policies', one: 'policy', path: '/api/v1/policies',
      needs: { groups: '/api/v1/groups', resources: '/api/v1/resources' },
      columns: [['group_id', 'Group', null, (o, l) => nameOf(l.groups, o.group_id)],
        ['resource_id', 'Resource', null, (o, l) => nameOf(l.resources, o.resource_id)],
        ['require_mfa', 'MFA', null, (o) => o.require_mfa ? 'required' : 'no'],
        ['max_session_age_s', 'Max session age (s)', null, (o) => o.max_session_age_s ? o.max_session_age_s : 'any']],
      fields: [
        { name: 'group_id', label: 'Group', type: 'select', from: 'groups', required: true },
        { name: 'resource_id', label: 'Resource', type: 'select', from: 'resources', required: true },
        { name: 'require_mfa', label: 'Require MFA', type: 'checkbox', initial: false },
        { name: 'max_session_age_s', label: 'Max session age (s, 0 = any)', type: 'number', initial: 0 },
      ],
      create: true, edit: true, del: true,
    },
    users: {
      title: 'Users', one: 'user', path: '/api/v1/users',
      columns: [['email', 'E-mail'], ['display_name', 'Name'], ['kind', 'Kind'], ['role', 'Role'],
        ['disabled', 'State', null, (o) => o.disabled ? 'disabled' : 'active'],
        ['last_sign_in_at', 'Last sign-in', null, (o) => fmtTime(o.last_sign_in_at)]],
      fields: [
        { name: 'role', label: 'Role', type: 'choice', choices: ['user', 'auditor', 'admin'] },
        { name: 'disabled', label: 'Disabled', type: 'checkbox', initial: false },
      ],
      create: false, edit: true, del: true,
      actions: (o) => isAdmin() ? [[o.disabled ? 'Enable' : 'Disable', o.disabled ? 'enable' : 'disable',
        () => write('PATCH', '/api/v1/users/' + o.id, { disabled: !o.disabled })]] : [],
    },
    devices: {
      title: 'Devices', one: 'device', path: '/api/v1/devices',
      needs: { users: '/api/v1/users' },
      columns: [['name', 'Name'], ['user_id', 'User', null, (o, l) => nameOf(l.users, o.user_id, 'email')],
        ['state', 'State'], ['last_seen_at', 'Last seen', null, (o) => fmtTime(o.last_seen_at)],
        ['public_key_thumbprint', 'Key', 'mono']],
      create: false, edit: false, del: false,
      actions: (o) => isAdmin() ? [
        o.state !== 'approved' ? ['Approve', 'approve', () => write('POST', '/api/v1/devices/' + o.id + '/approve')] : null,
        o.state !== 'blocked' ? ['Block', 'block', () => write('POST', '/api/v1/devices/' + o.id + '/block')] : null,
      ].filter(Boolean) : [],
    },
    sessions: {
      title: 'Sessions', one: 'session', path: '/api/v1/sessions',
      needs: { users: '/api/v1/users' },
      columns: [['user_id', 'User', null, (o, l) => nameOf(l.users, o.user_id, 'email')],
        ['auth_method', 'Method'], ['amr', 'AMR', null, (o) => (o.amr || []).join(' ')],
        ['created_at', 'Created', null, (o) => fmtTime(o.created_at)],
        ['expires_at', 'Expires', null, (o) => fmtTime(o.expires_at)],
        ['revoked_at', 'Revoked', null, (o) => o.revoked_at ? fmtTime(o.revoked_at) + ' (' + o.revoke_reason + ')' : '']],
      create: false, edit: false, del: false,
      actions: (o) => isAdmin() && !o.revoked_at ? [['Revoke', 'revoke',
        () => write('DELETE', '/api/v1/sessions/' + o.id)]] : [],
    },
  };

  /* A write from a row button: errors go to #error, success reloads the view. */
  async function write(method, path, body) {
    showError('');
    try {
      await api(method, path, body);
      invalidate();
      await route();
    } catch (e) {
      showError(errorText(e));
    }
  }

  function fieldInput(spec, f, lists) {
    const id = spec.one + '-' + f.name.replace(/_/g, '-');
    let input;
    if (f.type === 'select') {
      input = el('select', { id, name: f.name },
        el('option', { value: '', text: '(choose)' }),
        ...(lists[f.from] || []).map((o) => el('option', { value: o.id, text: o.name || o.id })));
    } else if (f.type === 'choice') {
      input = el('select', { id, name: f.name }, ...f.choices.map((c) => el('option', { value: c, text: c })));
    } else if (f.type === 'checkbox') {
      input = el('input', { id, name: f.name, type: 'checkbox' });
      input.checked = !!f.initial;
    } else if (f.type === 'number') {
      input = el('input', { id, name: f.name, type: 'number', min: 0, step: 1 });
      input.value = String(f.initial || 0);
    } else {
      input = el('input', { id, name: f.name, type: 'text', placeholder: f.placeholder || '' });
    }
    return el('label', {}, el('span', { text: f.label }), input);
  }

  function setField(spec, f, value) {
    const input = $(spec.one + '-' + f.name.replace(/_/g, '-'));
    if (f.type === 'checkbox') input.checked = !!value;
    else if (f.type === 'ports') input.value = portsToText(value);
    else input.value = value === null || value === undefined ? '' : String(value);
  }

  /* The body for create (editing=false) or update from the form's inputs. */
  function readForm(spec, editing) {
    const body = {};
    for (const f of spec.fields) {
      const input = $(spec.one + '-' + f.name.replace(/_/g, '-'));
      if (f.type === 'checkbox') {
        body[f.name] = input.checked;
      } else if (f.type === 'number') {
        const n = Number(input.value);
        body[f.name] = input.value.trim() === '' ? 0 : (Number.isInteger(n) ? n : input.value);
      } else if (f.type === 'ports') {
        if (input.value.trim() !== '' || editing) body[f.name] = textToPorts(input.value);
      } else if (input.value === '') {
        if (f.nullable && editing) body[f.name] = null;
        else if (f.required) body[f.name] = '';
      } else {
        body[f.name] = input.value;
      }
    }
    return body;
  }

  function resetForm(spec, form) {
    form.reset();
    form.dataset.editing = '';
    for (const f of spec.fields) {
      if (f.type === 'checkbox') setField(spec, f, f.initial);
      if (f.type === 'number') setField(spec, f, f.initial || 0);
    }
    $(spec.one + '-form-title').textContent = spec.create ? 'New ' + spec.one : 'Edit ' + spec.one;
    $(spec.one + '-save').textContent = spec.create ? 'Create' : 'Save';
    const err = $(spec.one + '-error');
    err.hidden = true;
    err.textContent = '';
    form.hidden = !spec.create;
  }

  function buildForm(spec, lists) {
    const form = el('form', { id: spec.one + '-form', novalidate: true },
      el('h3', { id: spec.one + '-form-title' }),
      ...spec.fields.map((f) => fieldInput(spec, f, lists)),
      el('p', { id: spec.one + '-error', className: 'form-error', role: 'alert', hidden: true }),
      el('button', { type: 'submit', id: spec.one + '-save' }),
      el('button', { type: 'button', id: spec.one + '-cancel', text: 'Cancel' }));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const editing = form.dataset.editing;
      const err = $(spec.one + '-error');
      err.hidden = true;
      showError('');
      try {
        if (editing) await api('PATCH', spec.path + '/' + editing, readForm(spec, true));
        else await api('POST', spec.path, readForm(spec, false));
        invalidate();
        await route();
      } catch (e) {
        err.textContent = errorText(e);
        err.hidden = false;
        showError(errorText(e));
      }
    });
    $('view').append(form);
    $(spec.one + '-cancel').addEventListener('click', () => resetForm(spec, form));
    resetForm(spec, form);
    return form;
  }

  async function showCollection(key) {
    const spec = collections[key];
    const view = $('view');
    const lists = {};
    for (const [name, path] of Object.entries(spec.needs || {})) lists[name] = await lookup(name, path);
    const items = await listAll(spec.path);
    state.cache[key] = items;
    view.replaceChildren(el('h2', { id: 'view-title', text: spec.title }));
    view.append(el('div', { id: 'view-extra' }));
    const writable = isAdmin();
    const table = el('table', { id: key + '-table' },
      el('thead', {}, el('tr', {}, ...spec.columns.map((c) => el('th', { text: c[1] })),
        el('th', { text: '' }))));
    const tbody = el('tbody');
    for (const o of items) {
      const tr = el('tr', { 'data-id': o.id });
      for (const [name, , cls, render] of spec.columns) {
        const v = render ? render(o, lists) : o[name];
        tr.append(el('td', { className: cls || null, 'data-field': name, text: v === null || v === undefined ? '' : v }));
      }
      const actions = el('td', { className: 'actions' });
      const editable = typeof spec.edit === 'function' ? spec.edit(o) : spec.edit;
      if (writable && editable && spec.fields) {
        actions.append(el('button', { type: 'button', className: 'edit', text: 'Edit', onclick: () => {
          const form = $(spec.one + '-form');
          form.hidden = false;
          form.dataset.editing = o.id;
          for (const f of spec.fields) setField(spec, f, o[f.name]);
          $(spec.one + '-form-title').textContent = 'Edit ' + spec.one;
          $(spec.one + '-save').textContent = 'Save';
          form.scrollIntoView();
        } }));
      }
      if (writable && spec.del) {
        actions.append(el('button', { type: 'button', className: 'delete', text: 'Delete', onclick: () => {
          if (window.confirm('Delete this ' + spec.one + '?')) write('DELETE', spec.path + '/' + o.id);
        } }));
      }
      for (const [label, cls, fn] of spec.actions ? spec.actions(o) : []) {
        actions.append(el('button', { type: 'button', className: cls, text: label, onclick: fn }));
      }
      tr.append(actions);
      tbody.append(tr);
    }
    table.append(tbody);
    view.append(table);
    if (items.length === 0) view.append(el('p', { className: 'note', id: key + '-empty', text: 'None yet.' }));
    if (writable && spec.fields && (spec.create || spec.edit)) buildForm(spec, lists);
    if (!writable) view.append(el('p', { className: 'note', text: 'Read only (auditor).' }));
  }

  /* ---- remote networks: enrollment tokens ---- */

  async function createToken(network) {
    showError('');
    let t;
    try {
      t = await api('POST', '/api/v1/remote-networks/' + network.id + '/connector-tokens');
    } catch (e) {
      showError(errorText(e));
      return;
    }
    const value = el('input', { id: 'token-value', type: 'text', readonly: true });
    value.value = t.token;
    const copied = el('span', { id: 'token-copied', className: 'note' });
    const box = el('div', { id: 'token-box', className: 'token-box' },
      el('p', { text: 'Enrollment token for ' + network.name + ' (expires ' + fmtTime(t.expires_at) +
        '). It is shown only now: copy it to the connector.' }),
      value,
      el('p', {}, el('button', { type: 'button', id: 'token-copy', text: 'Copy', onclick: async () => {
        value.select();
        try {
          await navigator.clipboard.writeText(t.token);
          copied.textContent = 'Copied.';
        } catch (e) {
          copied.textContent = document.execCommand('copy') ? 'Copied.' : 'Select the text and copy it.';
        }
      } }), copied));
    $('view-extra').replaceChildren(box);
  }

  /* ---- groups: members ---- */

  async function showMembers(group) {
    showError('');
    let members, users;
    try {
      members = await listAll('/api/v1/groups/' + group.id + '/members');
      users = await lookup('users', '/api/v1/users');
    } catch (e) {
      showError(errorText(e));
      return;
    }
    const managed = group.source === 'idp';
    const canWrite = isAdmin() && !managed;
    const base = '/api/v1/groups/' + group.id + '/members/';
    const table = el('table', { id: 'members-table' },
      el('thead', {}, el('tr', {}, el('th', { text: 'Member' }), el('th', { text: 'Source' }), el('th', { text: '' }))),
      el('tbody', {}, ...members.map((m) => el('tr', { 'data-id': m.user_id },
        el('td', { text: m.email || m.display_name || m.user_id }),
        el('td', { text: m.source }),
        el('td', { className: 'actions' }, canWrite ? el('button', { type: 'button', className: 'remove', text: 'Remove',
          onclick: async () => {
            try { await api('DELETE', base + m.user_id); await showMembers(group); } catch (e) { showError(errorText(e)); }
          } }) : null)))));
    const panel = el('div', { id: 'members' }, el('h3', { text: 'Members of ' + group.name }), table);
    if (managed) panel.append(el('p', { className: 'note', text: 'This group comes from the identity provider; its members are set at sign-in.' }));
    if (canWrite) {
      const select = el('select', { id: 'member-user' }, el('option', { value: '', text: '(choose a user)' }),
        ...users.map((u) => el('option', { value: u.id, text: u.email || u.display_name || u.id })));
      const err = el('p', { id: 'member-error', className: 'form-error', role: 'alert', hidden: true });
      const form = el('form', { id: 'member-form' }, el('label', {}, el('span', { text: 'Add user' }), select), err,
        el('button', { type: 'submit', id: 'member-add', text: 'Add' }));
      form.addEventListener('submit', async (ev) => {
        ev.preventDefault();
        try {
          if (!select.value) throw new ApiError(0, 'invalid', 'choose a user to add');
          await api('PUT', base + select.value);
          await showMembers(group);
        } catch (e) {
          err.textContent = errorText(e);
          err.hidden = false;
        }
      });
      panel.append(form);
    }
    $('view-extra').replaceChildren(panel);
  }

  /* ---- audit events (newest first; older pages on demand) ---- */

  async function showAudit() {
    const view = $('view');
    view.replaceChildren(el('h2', { id: 'view-title', text: 'Audit events' }));
    const tbody = el('tbody');
    const table = el('table', { id: 'audit-table' }, el('thead', {}, el('tr', {},
      ...['Id', 'Time', 'Actor', 'Action', 'Outcome', 'Target'].map((h) => el('th', { text: h })))), tbody);
    const more = el('button', { type: 'button', id: 'audit-more', text: 'Load more', hidden: true });
    view.append(table, more);
    let events = [];
    let cursor = null;
    async function load() {
      const page = await api('GET', '/api/v1/audit-events?limit=200' + (cursor ? '&cursor=' + encodeURIComponent(cursor) : ''));
      events = events.concat(page.items || []);
      cursor = page.next_cursor;
      events.sort((a, b) => b.id - a.id);
      tbody.replaceChildren(...events.map((e) => el('tr', { 'data-id': e.id },
        el('td', { text: e.id }), el('td', { text: fmtTime(e.time) }),
        el('td', { text: (e.actor_label || e.actor_id || '') + ' [' + e.actor_type + ']' }),
        el('td', { 'data-field': 'action', text: e.action }), el('td', { text: e.outcome }),
        el('td', { className: 'mono', text: (e.target_type || '') + ' ' + (e.target_id || '') }))));
      more.hidden = !cursor;
    }
    more.addEventListener('click', () => load().catch((e) => showError(errorText(e))));
    await load();
  }

  /* ---- access check ---- */

  async function showAccess() {
    const view = $('view');
    const users = await lookup('users', '/api/v1/users');
    view.replaceChildren(el('h2', { id: 'view-title', text: 'Access check' }));
    const user = el('select', { id: 'access-user' }, el('option', { value: '', text: '(choose a user)' }),
      ...users.map((u) => el('option', { value: u.id, text: u.email || u.display_name || u.id })));
    const address = el('input', { id: 'access-address', type: 'text', placeholder: 'grafana.corp.example or 10.0.0.5' });
    const port = el('input', { id: 'access-port', type: 'number', min: 1, max: 65535 });
    const protocol = el('select', { id: 'access-protocol' }, ...['tcp', 'udp', 'icmp'].map((p) => el('option', { value: p, text: p })));
    const device = el('input', { id: 'access-device', type: 'text', placeholder: 'optional device id' });
    const err = el('p', { id: 'access-error', className: 'form-error', role: 'alert', hidden: true });
    const result = el('div', { id: 'access-result', hidden: true },
      el('p', {}, 'Allowed: ', el('span', { id: 'access-allowed' })),
      el('p', {}, 'Reason: ', el('span', { id: 'access-reason' })),
      el('p', {}, 'Policy: ', el('span', { id: 'access-policy' })),
      el('p', { id: 'access-explanation' }));
    const form = el('form', { id: 'access-form', novalidate: true },
      el('label', {}, el('span', { text: 'User' }), user),
      el('label', {}, el('span', { text: 'Address' }), address),
      el('label', {}, el('span', { text: 'Port' }), port),
      el('label', {}, el('span', { text: 'Protocol' }), protocol),
      el('label', {}, el('span', { text: 'Device' }), device),
      err, el('button', { type: 'submit', id: 'access-run', text: 'Check' }));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      err.hidden = true;
      result.hidden = true;
      const body = { address: address.value.trim(), protocol: protocol.value };
      if (user.value) body.user_id = user.value;
      if (device.value.trim()) body.device_id = device.value.trim();
      if (port.value.trim() && protocol.value !== 'icmp') body.port = Number(port.value);
      try {
        const r = await api('POST', '/api/v1/access/check', body);
        $('access-allowed').textContent = r.allowed ? 'yes' : 'no';
        $('access-allowed').className = r.allowed ? 'ok' : 'denied';
        $('access-reason').textContent = r.reason;
        $('access-policy').textContent = r.policy_id || '(none)';
        $('access-explanation').textContent = r.explanation || '';
        result.hidden = false;
      } catch (e) {
        err.textContent = errorText(e);
        err.hidden = false;
      }
    });
    view.append(form, result);
  }

  /* ---- navigation and sign-in ---- */

  const views = {
    networks: () => showCollection('networks'),
    resources: () => showCollection('resources'),
    groups: () => showCollection('groups'),
    policies: () => showCollection('policies'),
    users: () => showCollection('users'),
    devices: () => showCollection('devices'),
    sessions: () => showCollection('sessions'),
    audit: showAudit,
    access: showAccess,
  };

  async function route() {
    if (!state.user) return;
    const name = (location.hash || '#networks').slice(1);
    const show = views[name] || views.networks;
    for (const a of document.querySelectorAll('#nav a')) {
      a.classList.toggle('active', a.id === 'nav-' + (views[name] ? name : 'networks'));
    }
    try {
      await show();
      document.body.dataset.view = views[name] ? name : 'networks';
    } catch (e) {
      $('view').replaceChildren();
      showError(errorText(e));
    }
  }

  function showSignIn() {
    state.user = null;
    state.csrf = '';
    $('loading').hidden = true;
    $('app').hidden = true;
    $('who').hidden = true;
    $('logout').hidden = true;
    $('signin').hidden = false;
  }

  async function start() {
    let s;
    try {
      s = await api('GET', '/auth/session');
    } catch (e) {
      if (e.status !== 401) showError(errorText(e));
      showSignIn();
      return;
    }
    state.user = s.user;
    state.csrf = s.csrf_token;
    $('session-email').textContent = s.user.email || s.user.id;
    $('session-role').textContent = s.user.role;
    $('loading').hidden = true;
    $('signin').hidden = true;
    $('who').hidden = false;
    $('logout').hidden = false;
    if (s.user.role !== 'admin' && s.user.role !== 'auditor') {
      state.user = null;
      showError('Signed in as ' + (s.user.email || s.user.id) + ', whose role (' + s.user.role +
        ') gives no access to the console; an admin can change it.');
      return;
    }
    $('app').hidden = false;
    await route();
  }

  async function logout() {
    showError('');
    try {
      await api('POST', '/auth/logout');
    } catch (e) {
      showError(errorText(e));
      return;
    }
    $('view').replaceChildren();
    invalidate();
    showSignIn();
  }

  window.addEventListener('hashchange', () => { showError(''); route(); });
  document.addEventListener('DOMContentLoaded', () => {
    $('logout').addEventListener('click', logout);
    start();
  });
})();
