// Shelf's history pages: restore one version, or several deleted files at once.
(function () {
  'use strict';
  const here = document.getElementById('folder');
  if (!here) return;
  const dir = here.dataset.dir;
  const csrf = here.dataset.csrf;
  const status = document.getElementById('status');

  async function restore(items) {
    const res = await fetch('/api/restore', {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'X-CSRF-Token': csrf, 'Content-Type': 'application/json' },
      body: JSON.stringify({ dir, items }),
    });
    if (res.ok) {
      location.href = '/files/' + dir.split('/').filter(Boolean).map(encodeURIComponent).join('/') + (dir ? '/' : '');
    } else {
      status.textContent = (await res.text()) || res.statusText;
      status.hidden = false;
    }
  }
  // One change through the API, then the page again (or the server's message).
  async function post(url, body) {
    const res = await fetch(url, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'X-CSRF-Token': csrf, 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    });
    if (res.ok) location.reload();
    else { status.textContent = (await res.text()) || res.statusText; status.hidden = false; }
  }
  const onClick = (selector, body) => document.querySelectorAll(selector)
    .forEach((b) => b.addEventListener('click', () => body(b)));

  // Signing a device or browser out (the account page).
  onClick('button.revoke', (b) => post('/api/revoke', { device: b.dataset.device }));
  // Ending a share or a public link (the shares page).
  onClick('button.unshare', (b) => post('/api/unshare', { node: Number(b.dataset.node), with: b.dataset.with }));
  onClick('button.unlink', (b) => post('/api/unlink', { id: Number(b.dataset.id) }));
  onClick('button.revoke-app', (b) => post('/api/app-password/revoke', { name: b.dataset.name }));
  // A new app password: shown once, in the page.
  const appAdd = document.getElementById('app-add');
  if (appAdd) appAdd.addEventListener('submit', async (e) => {
    e.preventDefault();
    const res = await fetch('/api/app-password', {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'X-CSRF-Token': csrf, 'Content-Type': 'application/json' },
      body: JSON.stringify({ name: new FormData(appAdd).get('name') }),
    });
    if (!res.ok) { status.textContent = (await res.text()) || res.statusText; status.hidden = false; return; }
    const made = await res.json();
    document.getElementById('app-secret').value = made.secret;
    document.querySelector('.app-made').hidden = false;
  });

  // The admin page: every change is one call to /api/admin.
  const admin = (body) => post('/api/admin', body);
  document.querySelectorAll('select.admin-conflicts').forEach((s) => s.addEventListener('change', () => admin({ op: 'conflicts', name: s.dataset.name, last_writer_wins: s.value === 'last-writer-wins' })));
  onClick('button.admin-retention', (b) => {
    const d = b.dataset;
    const all = prompt(`${d.name}: keep every version for how many days? (“all”: every version forever)`, d.keepAll === 'true' ? 'all' : d.allDays);
    if (all === null) return;
    const keepAll = all.trim().toLowerCase() === 'all';
    const daily = keepAll ? d.dailyDays : prompt('Then one version a day for how many more days? (then one a week)', d.dailyDays);
    if (daily === null) return;
    const deleted = prompt('Keep deleted files restorable for how many days? (0: forever)', d.deletedDays);
    if (deleted === null) return;
    admin({ op: 'retention', name: d.name, keep_all: keepAll, all_days: keepAll ? Number(d.allDays) : Number(all), daily_days: Number(daily), deleted_days: Number(deleted) });
  });
  document.querySelectorAll('select.admin-role').forEach((s) => s.addEventListener('change', () => admin({ op: 'role', name: s.dataset.name, role: s.value })));
  document.querySelectorAll('button.admin-quota').forEach((b) => b.addEventListener('click', () => {
    const gib = prompt(`Quota for ${b.dataset.name} in GiB (empty: none)`);
    if (gib !== null) admin({ op: 'quota', name: b.dataset.name, gib: gib.trim() === '' ? null : Number(gib) });
  }));
  document.querySelectorAll('button.admin-password').forEach((b) => b.addEventListener('click', () => {
    const password = prompt(`New password for ${b.dataset.name} (every device signs in again)`);
    if (password) admin({ op: 'password', name: b.dataset.name, password });
  }));
  document.querySelectorAll('button.admin-delete').forEach((b) => b.addEventListener('click', () => {
    if (prompt(`Type ${b.dataset.name} to delete the account and all its files`) === b.dataset.name) {
      admin({ op: 'delete', name: b.dataset.name });
    }
  }));
  const add = document.getElementById('admin-add');
  if (add) add.addEventListener('submit', (e) => {
    e.preventDefault();
    const f = new FormData(add);
    admin({ op: 'add', name: f.get('name'), password: f.get('password'), role: f.get('role') });
  });

  const item = (el) => ({ name: el.dataset.name, number: Number(el.dataset.number) });
  document.querySelectorAll('button.restore').forEach((b) => b.addEventListener('click', () => restore([item(b)])));

  const picked = () => [...document.querySelectorAll('input.pick-version:checked')].map(item);
  const many = document.getElementById('restore-picked');
  if (many) {
    const changed = () => { many.disabled = picked().length === 0; };
    document.querySelectorAll('input.pick-version').forEach((c) => c.addEventListener('change', changed));
    document.getElementById('select-all').addEventListener('change', (e) => {
      document.querySelectorAll('input.pick-version').forEach((c) => { c.checked = e.target.checked; });
      changed();
    });
    many.addEventListener('click', () => restore(picked()));
  }
})();
