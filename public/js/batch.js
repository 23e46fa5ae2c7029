// The batch page: polls the batch, keeps each finished image in IndexedDB, then lets the server
// delete its copy; live counter, time left, per-image status and the ZIP download.
import {putBatch, putImage, imagesOf, imageKeys, adopt} from './store.js';
import {fill, zipButton} from './zip.js';

const $ = id => document.getElementById(id);
const root = $('batch');
const SETTLED = ['done', 'delivered', 'failed', 'cancelled', 'expired'];

if (root) start();

async function start() {
  const t = root.dataset, id = +t.batchId, rendered = t.status, zip = $('zip-button');
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content || '';
  const lang = document.documentElement.lang || undefined;
  const pending = [], busyItems = new Set();
  let stored = new Set(), storable = true, saved = '', fails = 0, timer, polling = false, over = false;
  let fetching = 0, liveDone = -1, liveAt = 0, upstreamOnly = false;
  const idle = 30000;
  // A reload for a status change happens once: if the page still renders another status, no loop.
  const key = 'images-in-bulk-reload-' + id;
  if (sessionStorage.getItem(key) === rendered) sessionStorage.removeItem(key);

  const notice = text => { $('batch-notice').textContent = text || ''; $('batch-notice').hidden = !text; };
  const li = itemId => $('item-' + itemId);

  // Will the images still to collect fit? The server's estimate of the whole batch, shared by the images
  // not yet here, against the free space the browser reports (quota - usage). If not, say so; collect anyway.
  async function checkSpace() {
    const space = $('batch-space'), rows = [...document.querySelectorAll('#results .result')];
    if (!space) return;
    const left = rows.filter(r => ['held', 'queued', 'running', 'done'].includes(r.dataset.status)
      && !stored.has(+r.dataset.itemId)).length;
    const need = rows.length ? +t.expectedBytes * left / rows.length : 0;
    let free = Infinity;
    try {
      const {quota, usage} = await navigator.storage.estimate();
      if (quota > 0) free = Math.max(0, quota - (usage || 0));
    } catch {
      // No estimate (an old browser, say): the failed write still says so.
    }
    const mb = n => n.toLocaleString(lang, {maximumFractionDigits: 0}); // MB of 1,000,000 bytes
    const text = need <= free ? ''
      : fill(t.tSpace, {need: mb(Math.ceil(need / 1e6)), free: mb(Math.floor(free / 1e6))});
    space.textContent = text;
    space.hidden = !text;
  }

  function thumb(itemId, blob, name) {
    const img = li(itemId)?.querySelector('.result-img');
    if (!img || img.src) return;
    img.loading = 'lazy';
    img.src = URL.createObjectURL(blob);
    img.alt = name;
    img.hidden = false;
  }

  // Fetch, store, then acknowledge one finished image (acknowledge only: it is already stored).
  async function collect(item) {
    try {
      if (!stored.has(item.id)) {
        const res = await fetch(`/api/batches/${id}/items/${item.id}/image`, {cache: 'no-store'});
        if (!res.ok) return; // 409 gone / not_ready: move on
        const blob = await res.blob();
        if (!blob.size || !blob.type.startsWith('image/')) return;
        try {
          await putImage({batchId: id, itemId: item.id, position: item.position, name: item.file_name,
            type: blob.type, bytes: blob.size, width: item.width, height: item.height, blob});
        } catch {
          storable = false;
          return notice(t.tStorage);
        }
        stored.add(item.id);
        zip.hidden = false;
        thumb(item.id, blob, item.file_name);
      }
      await fetch(`/api/batches/${id}/items/${item.id}/ack`, {method: 'POST', headers: {'X-CSRF-Token': csrf}});
    } catch {
      // Network trouble: the next poll asks again.
    } finally {
      busyItems.delete(item.id);
    }
  }

  function pump() {
    while (fetching < 2 && pending.length) {
      fetching++;
      collect(pending.shift()).finally(() => { fetching--; pump(); });
    }
  }

  function next(ms) {
    clearTimeout(timer);
    if (!over && !polling) timer = setTimeout(poll, ms);
  }

  async function poll() {
    if (!navigator.onLine) return notice(t.tOffline);
    polling = true;
    try {
      const res = await fetch(`/api/batches/${id}`, {cache: 'no-store', headers: {Accept: 'application/json'}});
      if (res.status === 401 || res.status === 404) {
        over = true;
        notice((await res.json()).error.message);
      } else if (!res.ok) {
        throw new Error(res.status);
      } else {
        fails = 0;
        await update(await res.json());
      }
    } catch {
      fails++;
    }
    polling = false;
    // Economy images come back together, hours later: while nothing else moves, ask every 30 s.
    next(fails ? Math.min(30000, 2000 * 2 ** fails) : document.hidden || upstreamOnly ? Math.max(10000, idle) : 2000);
  }

  function itemText(item, now) {
    if (stored.has(item.id)) return t.tDelivered;
    if (item.status === 'delivered') return t.tElsewhere;
    const text = t['t' + item.status[0].toUpperCase() + item.status.slice(1)] || item.status;
    if (item.status !== 'running' || !item.started_at) return text;
    const secs = Math.max(0, Math.round(now - item.started_at));
    return `${text} ${secs} s` + (secs >= 60 ? ' · ' + t.tSlow : '');
  }

  async function update({now = Date.now() / 1000, batch: b, counts, items, economy: job}) {
    const record = {
      id, createdAt: b.created_at, date: new Date(b.created_at * 1000).toISOString().slice(0, 10),
      model: b.model, ratio: b.ratio, quality: b.quality, format: b.image_format, width: b.width,
      height: b.height, count: b.item_count,
      items: items.map(i => ({id: i.id, position: i.position, name: i.file_name, prompt: i.prompt,
        finalPrompt: i.final_prompt, status: i.status, error: i.error}))
    };
    const json = JSON.stringify(record);
    // Kept only once this browser has (or is about to get) an image of the batch.
    if (storable && json !== saved && (stored.size || items.some(i => i.status === 'done'))) {
      try {
        await putBatch(record);
        saved = json;
      } catch {
        storable = false;
        notice(t.tStorage);
      }
    }

    for (const item of items) {
      const row = li(item.id);
      if (row) {
        row.dataset.status = item.status;
        row.querySelector('.result-status').textContent = itemText(item, now);
        row.querySelector('.result-error').textContent = item.error || '';
      }
      if (item.status === 'done' && (storable || stored.has(item.id)) && !busyItems.has(item.id)) {
        busyItems.add(item.id);
        pending.push(item);
      }
    }
    pump();

    const n = k => counts[k] || 0, done = n('done') + n('delivered'), total = b.item_count;
    const settled = SETTLED.reduce((sum, k) => sum + n(k), 0);
    const counter = fill(t.tCounter, {total, done, failed: n('failed'), running: n('running')});
    $('batch-counter').textContent = counter;
    const progress = $('batch-progress');
    progress.max = total;
    progress.value = settled;
    progress.textContent = `${settled}/${total}`;

    // Time left, from the pace of the images finished so far.
    const finished = items.filter(i => i.finished_at && (i.status === 'done' || i.status === 'delivered'));
    const last = Math.max(...finished.map(i => i.finished_at));
    const left = b.status === 'active' ? total - settled : 0;
    let eta = '';
    if (left > 0 && finished.length && last > b.created_at) {
      const secs = left * (last - b.created_at) / finished.length;
      eta = fill(t.tEta, {
        min: Math.ceil(secs / 60),
        time: new Date(Date.now() + secs * 1000).toLocaleTimeString(lang, {hour: '2-digit', minute: '2-digit'})
      });
    }
    $('batch-eta').textContent = eta;
    $('batch-eta').hidden = !eta;

    const working = items.some(i => i.status === 'queued' || i.status === 'running' || i.status === 'waiting'
      || (i.status === 'held' && b.status === 'active'));
    upstreamOnly = items.some(i => i.status === 'waiting') && !items.some(i => i.status === 'queued'
      || i.status === 'running' || i.status === 'done');
    const upstream = $('economy-progress');
    if (upstream && job && job.total) {
      upstream.textContent = ['finalizing', 'completed'].includes(job.status) ? t.tUpstreamFinishing
        : fill(t.tUpstream, {completed: job.completed, total: job.total, failed: job.failed});
    }
    const collecting = storable && (pending.length || fetching || items.some(i => i.status === 'done'));
    over = (b.status === 'done' || b.status === 'cancelled') && !working && !collecting;

    // Announce progress to screen readers when the done count moves (at most every 10 s) and at the end.
    const live = $('batch-live');
    if (liveDone < 0) liveDone = done;
    else if (over ? live.textContent !== counter : done !== liveDone && Date.now() - liveAt >= 10000) {
      live.textContent = counter;
      liveDone = done;
      liveAt = Date.now();
    }

    // The server-rendered controls follow the status: reload once it changed and the images are safe.
    if (b.status !== rendered && !collecting && !zip.disabled && sessionStorage.getItem(key) !== b.status) {
      sessionStorage.setItem(key, b.status);
      location.reload();
    }
  }

  zipButton(zip, $('zip-status'), id, t);
  addEventListener('online', () => { notice(storable ? '' : t.tStorage); next(0); });
  addEventListener('offline', () => notice(t.tOffline));
  document.addEventListener('visibilitychange', () => {
    // Back from freeing space (in the library, say): try storing again.
    if (!document.hidden && !storable) {
      storable = true;
      notice('');
    }
    if (!document.hidden) checkSpace();
    next(document.hidden ? 10000 : 0);
  });

  try {
    await adopt([id]); // the server showed this page to its owner: older rows of the batch are theirs
    stored = await imageKeys(id);
    if (stored.size) zip.hidden = false;
    imagesOf(id).then(images => images.forEach(im => thumb(im.itemId, im.blob, im.name)), () => {});
  } catch {
    storable = false;
    notice(t.tStorage);
  }
  await checkSpace();
  poll();
}
