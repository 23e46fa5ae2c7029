// The batch page: polls the batch, stores each image in IndexedDB, then lets the server delete it.
import {putBatch, putImage, imagesOf, imageKeys, adopt} from './store.js';
import {fill, zipButton} from './zip.js';

const $ = id => document.getElementById(id);
const root = $('batch');
const SETTLED = ['done', 'delivered', 'failed', 'cancelled', 'expired'];

if (root) start();

async function start() {
  const t = root.dataset, id = +t.batchId, zip = $('zip-button');
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content || '';
  const lang = document.documentElement.lang || undefined;
  const pending = [], busyItems = new Set();
  let stored = new Set(), storable = true, saved = '', fails = 0, timer, polling = false, over = false;
  let fetching = 0, liveDone = -1, liveAt = 0, upstreamOnly = false;
  const rules = new Intl.PluralRules(lang);
  // data-t-<key>-one / -other by the language's plural rules
  const plural = (key, n, values) => {
    const form = rules.select(n);
    return fill(t[key + form[0].toUpperCase() + form.slice(1)] ?? t[key + 'Other'], {n, ...values});
  };

  const notice = text => { $('batch-notice').textContent = text || ''; $('batch-notice').hidden = !text; };
  const li = itemId => $('item-' + itemId);

  // Will the images still to come fit in the free space (quota - usage)? Say so if not; collect anyway.
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
    } catch {}
    const mb = n => n.toLocaleString(lang, {maximumFractionDigits: 0});
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

  // Fetch, store, then acknowledge one image.
  async function collect(item) {
    try {
      if (!stored.has(item.id)) {
        const res = await fetch(`/api/batches/${id}/items/${item.id}/image`, {cache: 'no-store'});
        if (!res.ok) return;
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
    } catch {} finally {
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
    // While only OpenAI works (economy), ask every 30 s.
    next(fails ? Math.min(30000, 2000 * 2 ** fails) : upstreamOnly ? 30000 : document.hidden ? 10000 : 2000);
  }

  function itemText(item, now) {
    if (stored.has(item.id)) return t.tDelivered;
    if (item.status === 'delivered') return t.tElsewhere;
    const text = t['t' + item.status[0].toUpperCase() + item.status.slice(1)] || item.status;
    if (item.status !== 'running' || !item.started_at) return text;
    const secs = Math.max(0, Math.round(now - item.started_at));
    return `${text} ${secs} s` + (secs >= 60 ? ' · ' + t.tSlow : '');
  }

  // Buttons, banners and counts from the state (the rules batch.html renders with).
  function controls(b, n, items, left, refused) {
    const failed = n('failed'), retry = failed - refused, held = n('held'), wait = n('queued') + held + n('waiting');
    const short = b.credits_per_item > left, paused = b.status === 'paused', no = t.canGenerate !== '1';
    const gone = items.filter(i => i.error_code === 'economy_expired' && i.status === 'failed').length;
    const credits = gone * t.nowPrice, eco = b.speed === 'economy';
    for (const [el, on] of Object.entries({
      'batch-banner': paused && !!b.pause_message, 'credits-text': paused && b.pause_reason === 'no_credits',
      'service-banner': b.pause_reason === 'service_paused', 'expired-banner': eco && gone > 0,
      'economy-banner': eco && (n('waiting') > 0 || b.status === 'active' && n('queued') > 0),
      'test-banner': held > 0, 'close-hint': b.status === 'active', 'short-text': short && (paused || retry > 0),
      'retry-form': retry > 0, 'stop-form': b.status === 'active' && n('queued') + n('running') > 0,
      'resume-form': paused, 'cancel-form': wait > 0, 'failed-filter': failed > 0
    })) if ($(el)) $(el).hidden = !on;
    for (const [el, text] of Object.entries({
      'pause-text': b.pause_message || '', 'expired-text': plural('tExpired', gone, {credits}),
      'now-button': plural('tNow', gone, {credits}), 'held-text': plural('tHeld', held, {credits: held * b.credits_per_item}),
      'continue-button': plural('tContinue', held), 'short-text': fill(t.tShort, {left, per: b.credits_per_item}),
      'retry-button': plural('tRetry', retry), 'cancel-button': plural('tCancel', wait),
      'only-failed-label': plural('tOnlyFailed', failed)
    })) if ($(el) && $(el).textContent !== text) $(el).textContent = text;
    $('retry-button').disabled = no || short;
    $('resume-button').disabled = no || short && b.pause_reason === 'no_credits';
  }

  // A failed row's form: retry, or edit and retry when refused.
  function rowAction(row, item) {
    const form = row.querySelector('.result-retry');
    const want = item.status === 'failed' && (item.error_code === 'refused' ? 'edit' : 'retry');
    if (form && (!want || form.classList.contains('result-edit') !== (want === 'edit'))) form.remove();
    if (!want || !$(want + '-template') || row.querySelector('.result-retry')) return;
    const copy = $(want + '-template').content.firstElementChild.cloneNode(true);
    copy.action = copy.getAttribute('action').replace('/0/', `/${item.id}/`);
    copy.innerHTML = copy.innerHTML.replaceAll('"edit-0"', `"edit-${item.id}"`);
    const button = copy.querySelector('button'), field = copy.querySelector('textarea');
    button.textContent = button.textContent.replace('{name}', item.file_name);
    if (field) field.value = item.prompt;
    row.append(copy);
  }

  async function update({now = Date.now() / 1000, batch: b, counts, items, economy: job, credits_left = Infinity,
    refused = 0}) {
    const record = {
      id, createdAt: b.created_at, date: new Date(b.created_at * 1000).toISOString().slice(0, 10),
      model: b.model, ratio: b.ratio, quality: b.quality, format: b.image_format, width: b.width,
      height: b.height, count: b.item_count,
      items: items.map(i => ({id: i.id, position: i.position, name: i.file_name, prompt: i.prompt,
        finalPrompt: i.final_prompt, status: i.status, error: i.error}))
    };
    const json = JSON.stringify(record);
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
        rowAction(row, item);
      }
      if (item.status === 'done' && (storable || stored.has(item.id)) && !busyItems.has(item.id)) {
        busyItems.add(item.id);
        pending.push(item);
      }
    }
    pump();

    const n = k => counts[k] || 0, done = n('done') + n('delivered'), total = b.item_count;
    const settled = SETTLED.reduce((sum, k) => sum + n(k), 0);
    controls(b, n, items, credits_left, refused);
    const counter = fill(t.tCounter, {total, done, failed: n('failed'), running: n('running')});
    $('batch-counter').textContent = counter;
    const progress = $('batch-progress');
    progress.max = total;
    progress.value = settled;
    progress.textContent = `${settled}/${total}`;

    // Time so far, and time left at the pace so far.
    const finished = items.filter(i => i.finished_at && (i.status === 'done' || i.status === 'delivered'));
    const last = Math.max(...finished.map(i => i.finished_at));
    const left = b.status === 'active' ? total - settled : 0;
    const parts = [];
    if (left > 0) {
      const secs = Math.max(0, Math.round(now - b.created_at));
      parts.push(fill(t.tElapsed, {time: secs < 60 ? `${secs} s` : `${Math.floor(secs / 60)} min`}));
    }
    if (left > 0 && finished.length && last > b.created_at) {
      const secs = left * (last - b.created_at) / finished.length, min = Math.ceil(secs / 60);
      parts.push(plural('tEta', min, {
        time: new Date(Date.now() + secs * 1000).toLocaleTimeString(lang, {hour: '2-digit', minute: '2-digit'})
      }));
    }
    const eta = parts.join(' · ');
    $('batch-eta').textContent = eta;
    $('batch-eta').hidden = !eta;

    const working = n('queued') + n('running') + n('waiting') > 0 || n('held') > 0 && b.status === 'active';
    upstreamOnly = n('waiting') > 0 && !(n('queued') + n('running') + n('done'));
    const upstream = $('economy-progress');
    if (upstream && job && job.total) {
      upstream.textContent = ['finalizing', 'completed'].includes(job.status) ? t.tUpstreamFinishing
        : fill(t.tUpstream, {completed: job.completed, total: job.total, failed: job.failed});
    }
    const collecting = storable && (pending.length || fetching || items.some(i => i.status === 'done'));
    over = (b.status === 'done' || b.status === 'cancelled') && !working && !collecting;

    // Tell screen readers of progress (every 10 s at most) and the end.
    const live = $('batch-live');
    if (liveDone < 0) liveDone = done;
    else if (over ? live.textContent !== counter : done !== liveDone && Date.now() - liveAt >= 10000) {
      live.textContent = counter;
      liveDone = done;
      liveAt = Date.now();
    }

  }

  zipButton(zip, $('zip-status'), id, t);
  addEventListener('online', () => { notice(storable ? '' : t.tStorage); next(0); });
  addEventListener('offline', () => notice(t.tOffline));
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden && !storable) {
      storable = true;
      notice('');
    }
    if (!document.hidden) checkSpace();
    next(document.hidden ? 10000 : 0);
  });

  try {
    await adopt([id]); // the owner's page: this batch's older rows are theirs
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
