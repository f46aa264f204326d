// Shelf's folder page: uploads (picker, folder picker, drag and drop; resumable), new
// folder, rename, move, delete, share, public links. A public upload link's page uses the
// upload part only (data-drop, its own API base). Plain JavaScript, no build step.
(function () {
  'use strict';
  // The viewer: arrow keys go to the previous and next photo, Escape to the folder.
  const viewer = document.getElementById('viewer');
  if (viewer) {
    document.addEventListener('keydown', (e) => {
      const go = { ArrowLeft: viewer.dataset.prev, ArrowRight: viewer.dataset.next, Escape: viewer.dataset.folder }[e.key];
      if (go && !e.altKey && !e.ctrlKey && !e.metaKey) location.href = go;
    });
  }
  const here = document.getElementById('folder');
  if (!here) return;
  const dir = here.dataset.dir;
  const csrf = here.dataset.csrf;
  const api = here.dataset.api || '/api';
  const drop = Boolean(here.dataset.drop);
  const PIECE = 8 << 20;
  const status = document.getElementById('status');

  function say(message) {
    status.classList.add('error');
    status.textContent = message;
    status.hidden = !message;
  }

  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  // A JSON call with the CSRF header; the server's message on failure.
  async function call(method, url, body) {
    const init = { method, headers: { 'X-CSRF-Token': csrf }, credentials: 'same-origin' };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const res = await fetch(url, init);
    if (res.redirected && new URL(res.url).pathname === '/login') {
      location.href = '/login';  // signed out meanwhile
      throw new Error('signed out');
    }
    if (!res.ok) throw new Error((await res.text()) || res.statusText);
    return res.json();
  }

  // Sends one file, going on from where the server is after a dropped connection.
  async function send(file, path, bar) {
    const { id } = await call('POST', `${api}/upload`, { dir, path, size: file.size });
    let offset = 0;
    let tries = 0;
    while (offset < file.size) {
      let res;
      try {
        res = await fetch(`${api}/upload/${id}?offset=${offset}`, {
          method: 'PUT',
          headers: { 'X-CSRF-Token': csrf },
          credentials: 'same-origin',
          body: file.slice(offset, offset + PIECE),
        });
      } catch (e) {
        // The network went away: wait, ask where the server is, go on.
        if (++tries > 10) throw e;
        await sleep(Math.min(30000, 250 * 2 ** tries));
        try {
          offset = (await call('GET', `${api}/upload/${id}`)).offset;
        } catch (_) { /* still away: the next try asks again */ }
        continue;
      }
      if (res.ok || res.status === 409) {
        offset = (await res.json()).offset;
        tries = 0;
        bar.value = offset;
        continue;
      }
      throw new Error((await res.text()) || res.statusText);
    }
    const done = await call('POST', `${api}/upload/${id}/finish`);
    bar.value = file.size;
    return done;
  }

  // Uploads [file, path below this folder] pairs, two at a time, then shows the folder.
  async function upload(items) {
    if (!items.length) return;
    say('');
    const list = document.getElementById('uploads');
    const jobs = items.map(([file, path]) => {
      const li = document.createElement('li');
      const bar = document.createElement('progress');
      bar.max = file.size || 1;
      bar.value = 0;
      const name = document.createElement('span');
      name.textContent = path;
      li.append(bar, name);
      list.append(li);
      return { file, path, bar, li };
    });
    let failed = 0;
    const next = async () => {
      for (let job = jobs.shift(); job; job = jobs.shift()) {
        try {
          const done = await send(job.file, job.path, job.bar);
          job.li.classList.add('done');
          if (drop) job.li.querySelector('span').textContent = `${job.path}: sent${done.name !== job.path.split('/').pop() ? ` as ${done.name}` : ''}`;
        } catch (e) {
          failed++;
          job.li.classList.add('failed');
          say(`${job.path}: ${e.message}`);
        }
      }
    };
    await Promise.all([next(), next()]);
    if (failed) return;
    if (!drop) {
      location.reload();
      return;
    }
    status.classList.remove('error');
    status.textContent = `Sent ${items.length} file(s). Thank you.`;
    status.hidden = false;
  }

  document.getElementById('pick-files').addEventListener('change', (e) => {
    upload([...e.target.files].map((f) => [f, f.name]));
  });
  document.getElementById('pick-folder').addEventListener('change', (e) => {
    upload([...e.target.files].map((f) => [f, f.webkitRelativePath || f.name]));
  });

  // Drag and drop, folders included (walked through the entries API).
  function walk(entry, prefix, out) {
    return new Promise((resolve) => {
      if (entry.isFile) {
        entry.file((f) => { out.push([f, prefix + f.name]); resolve(); }, () => resolve());
      } else if (entry.isDirectory) {
        const reader = entry.createReader();
        const batch = () => reader.readEntries(async (entries) => {
          if (!entries.length) return resolve();
          for (const e of entries) await walk(e, prefix + entry.name + '/', out);
          batch();
        }, () => resolve());
        batch();
      } else {
        resolve();
      }
    });
  }
  document.addEventListener('dragover', (e) => {
    e.preventDefault();
    document.body.classList.add('dragging');
  });
  document.addEventListener('dragleave', (e) => {
    if (e.target === document.documentElement || e.relatedTarget === null) {
      document.body.classList.remove('dragging');
    }
  });
  document.addEventListener('drop', async (e) => {
    e.preventDefault();
    document.body.classList.remove('dragging');
    const out = [];
    const entries = [...e.dataTransfer.items]
      .map((i) => i.webkitGetAsEntry && i.webkitGetAsEntry())
      .filter(Boolean);
    if (entries.length) {
      for (const entry of entries) await walk(entry, '', out);
    } else {
      for (const f of e.dataTransfer.files) out.push([f, f.name]);
    }
    upload(out);
  });

  // Changes made elsewhere (another device, another tab) in this folder: offer a refresh.
  if (window.EventSource && !drop) {
    const events = new EventSource('/api/events');
    let seen = 0;
    events.onmessage = (e) => {
      let change;
      try { change = JSON.parse(e.data); } catch (_) { return; }
      if (change.kind && change.kind.Alert) {
        // An alert about this account (failed logins, quota, sync, integrity): shown now.
        say(`Alert (${String(change.kind.Alert).toLowerCase()}): ${change.path}`);
        return;
      }
      const path = change.path || '';
      const folder = path.includes('/') ? path.slice(0, path.lastIndexOf('/')) : '';
      if (change.lagged || folder === dir) {
        seen++;
        say('');
        status.classList.remove('error');
        status.textContent = `${seen} change(s) here since this page was shown. `;
        const link = document.createElement('a');
        link.href = location.pathname + location.search;
        link.textContent = 'Refresh';
        status.append(link);
        status.hidden = false;
      }
    };
  }

  // Selection and the changes that act on it (the signed-in folder page only).
  if (!document.getElementById('select-all')) return;
  const picks = () => [...document.querySelectorAll('input.pick:checked')].map((c) => c.value);
  const buttons = {
    rename: document.getElementById('rename'),
    move: document.getElementById('move'),
    delete: document.getElementById('delete'),
    share: document.getElementById('share'),
    link: document.getElementById('link'),
  };
  function selectionChanged() {
    const n = picks().length;
    buttons.rename.disabled = n !== 1;
    buttons.share.disabled = n !== 1;
    buttons.link.disabled = n !== 1;
    buttons.move.disabled = n === 0;
    buttons.delete.disabled = n === 0;
  }
  document.querySelectorAll('input.pick').forEach((c) => c.addEventListener('change', selectionChanged));
  document.getElementById('select-all').addEventListener('change', (e) => {
    document.querySelectorAll('input.pick').forEach((c) => { c.checked = e.target.checked; });
    selectionChanged();
  });

  async function change(url, body) {
    try {
      await call('POST', url, body);
      location.reload();
    } catch (e) {
      say(e.message);
    }
  }
  document.getElementById('new-folder').addEventListener('click', () => {
    const name = prompt('Name of the new folder');
    if (name) change('/api/mkdir', { dir, name });
  });
  buttons.rename.addEventListener('click', () => {
    const [name] = picks();
    const newName = prompt('New name', name);
    if (newName && newName !== name) change('/api/rename', { dir, name, new_name: newName });
  });
  buttons.share.addEventListener('click', () => {
    const [name] = picks();
    const user = prompt(`Share ${name} with which user?`);
    if (!user) return;
    const write = confirm(`May ${user} change it too? (Cancel: read only)`);
    change('/api/share', { dir, name, with: user, write });
  });
  // A public link: the dialog asks what it allows, a password and the last day.
  const dialog = document.getElementById('link-dialog');
  const form = document.getElementById('link-form');
  const linkError = document.getElementById('link-error');
  buttons.link.addEventListener('click', () => {
    const [name] = picks();
    document.getElementById('link-name').textContent = name;
    form.reset();
    form.querySelector('.link-made').hidden = true;
    linkError.hidden = true;
    document.getElementById('link-create').hidden = false;
    dialog.showModal();
  });
  document.getElementById('link-close').addEventListener('click', () => dialog.close());
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const [name] = picks();
    const data = new FormData(form);
    try {
      const made = await call('POST', '/api/link', {
        dir,
        name,
        access: data.get('access'),
        password: data.get('password') || '',
        expires: data.get('expires') || '',
      });
      const url = document.getElementById('link-url');
      url.value = made.url;
      form.querySelector('.link-made').hidden = false;
      document.getElementById('link-create').hidden = true;
      url.select();
    } catch (err) {
      linkError.textContent = err.message;
      linkError.hidden = false;
    }
  });
  buttons.move.addEventListener('click', () => {
    const to = prompt('Move to which folder? (for example photos/work)', dir);
    if (to !== null && to !== dir) change('/api/move', { dir, names: picks(), to });
  });
  buttons.delete.addEventListener('click', () => {
    const names = picks();
    if (confirm(`Delete ${names.length} item(s)? Deleted files keep their history.`)) {
      change('/api/delete', { dir, names });
    }
  });
})();
