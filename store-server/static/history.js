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
  // Signing a device or browser out (the account page).
  document.querySelectorAll('button.revoke').forEach((b) => b.addEventListener('click', async () => {
    const res = await fetch('/api/revoke', {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'X-CSRF-Token': csrf, 'Content-Type': 'application/json' },
      body: JSON.stringify({ device: b.dataset.device }),
    });
    if (res.ok) location.reload();
    else { status.textContent = (await res.text()) || res.statusText; status.hidden = false; }
  }));

  // Ending a share (the shares page).
  document.querySelectorAll('button.unshare').forEach((b) => b.addEventListener('click', async () => {
    const res = await fetch('/api/unshare', {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'X-CSRF-Token': csrf, 'Content-Type': 'application/json' },
      body: JSON.stringify({ node: Number(b.dataset.node), with: b.dataset.with }),
    });
    if (res.ok) location.reload();
    else { status.textContent = (await res.text()) || res.statusText; status.hidden = false; }
  }));

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
