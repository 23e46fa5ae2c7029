// The batch page: polls the batch, stores each image in IndexedDB, then lets the server delete it.
import {putBatch, putImage, imagesOf, imageKeys, adopt} from './store.js';
import {fill, zipButton} from './zip.js';

const $ = id => document.getElementById(id);
const root = $('batch');

if (root) start();

async function start() {
  const t = root.dataset, id = +t.batchId, zip = $('zip-button'), api = `/api/batches/${id}`;
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content || '';
  const lang = document.documentElement.lang || undefined;
  const pending = [], busy = new Set(), known = new Map(), rules = new Intl.PluralRules(lang);
  let stored = new Set(), storable = true, saved, fails = 0, timer, polling, over;
  let fetching = 0, liveDone = -1, liveAt = 0, upstreamOnly, etag, cursor, last, at;
  // data-t-<key>-<form>, e.g. tr('t', 'running'); plural: the form by the language's plural rules
  const tr = (key, form) => t[key + form[0].toUpperCase() + form.slice(1)];
  const plural = (key, n, values) => fill(tr(key, rules.select(n)) ?? t[key + 'Other'], {n, ...values});
  const show = (el, text) => { el.textContent = text; el.hidden = !text; };
  const notice = text => show($('batch-notice'), text);
  const unstorable = () => { storable = false; notice(t.tStorage); };

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
    show(space, need <= free ? '' : fill(t.tSpace, {need: mb(Math.ceil(need / 1e6)), free: mb(Math.floor(free / 1e6))}));
  }

  function thumb(itemId, blob, name) {
    const img = $('item-' + itemId)?.querySelector('.result-img');
    if (!img || img.src) return;
    img.loading = 'lazy';
    img.src = URL.createObjectURL(blob);
    img.alt = name;
    img.hidden = false;
  }

  // Fetch, store, then acknowledge one image.
  async function collect(item) {
    const url = `${api}/items/${item.id}/`;
    try {
      if (!stored.has(item.id)) {
        const res = await fetch(url + 'image', {cache: 'no-store'});
        if (!res.ok) return;
        const blob = await res.blob();
        if (!blob.size || !blob.type.startsWith('image/')) return;
        try {
          await putImage({batchId: id, itemId: item.id, position: item.position, name: item.file_name,
            type: blob.type, bytes: blob.size, width: item.width, height: item.height, blob});
        } catch {
          return unstorable();
        }
        stored.add(item.id);
        zip.hidden = false;
        thumb(item.id, blob, item.file_name);
      }
      await fetch(url + 'ack', {method: 'POST', headers: {'X-CSRF-Token': csrf}});
    } catch {} finally {
      busy.delete(item.id);
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

  // Delta polls: the items changed since `cursor`, merged by id (all if `full`); 304: the last state, later.
  async function poll() {
    if (!navigator.onLine) return notice(t.tOffline);
    polling = true;
    try {
      const res = await fetch(api + (cursor ? '?since=' + cursor : ''),
        {cache: 'no-store', headers: {Accept: 'application/json', ...etag && {'If-None-Match': etag}}});
      if (res.status === 401 || res.status === 404) {
        over = true;
        notice((await res.json()).error.message);
      } else if (res.ok || res.status === 304) {
        fails = 0;
        if (res.ok) {
          const s = await res.json();
          if (s.full !== false) known.clear();
          for (const i of s.items) known.set(i.id, i);
          s.items = [...known.values()];
          last = s;
          cursor = s.cursor;
          etag = res.headers.get('ETag');
          at = Date.now();
        }
        await update({...last, now: last.now + (Date.now() - at) / 1000});
      } else throw 0;
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
    const text = tr('t', item.status) || item.status;
    if (item.status !== 'running' || !item.started_at) return text;
    const secs = Math.max(0, Math.round(now - item.started_at));
    return `${text} ${secs} s` + (secs >= 60 ? ' · ' + t.tSlow : '');
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

  async function update({now, batch: b, counts, items, economy: job, credits_left: left = Infinity, refused = 0}) {
    const record = {
      id, createdAt: b.created_at, date: new Date(b.created_at * 1000).toISOString().slice(0, 10),
      model: b.model, ratio: b.ratio, quality: b.quality, format: b.image_format, width: b.width,
      height: b.height, count: b.item_count,
      items: items.map(i => ({id: i.id, position: i.position, name: i.file_name, prompt: i.prompt,
        finalPrompt: b.style ? i.prompt + b.prompt_separator + b.style : i.prompt, status: i.status, error: i.error}))
    };
    const json = JSON.stringify(record);
    if (storable && json !== saved && (stored.size || items.some(i => i.status === 'done'))) {
      try {
        await putBatch(record);
        saved = json;
      } catch {
        unstorable();
      }
    }

    for (const item of items) {
      const row = $('item-' + item.id);
      if (row) {
        row.dataset.status = item.status;
        row.querySelector('.result-status').textContent = itemText(item, now);
        row.querySelector('.result-error').textContent = item.error || '';
        rowAction(row, item);
      }
      if (item.status === 'done' && (storable || stored.has(item.id)) && !busy.has(item.id)) {
        busy.add(item.id);
        pending.push(item);
      }
    }
    pump();

    const n = k => counts[k] || 0, done = n('done') + n('delivered'), failed = n('failed'), total = b.item_count;
    const settled = done + failed + n('cancelled') + n('expired'), active = b.status === 'active';
    // Buttons, banners and counts from the state (the rules batch.html renders with).
    const retry = failed - refused, held = n('held'), wait = n('queued') + held + n('waiting');
    const short = b.credits_per_item > left, paused = b.status === 'paused', no = t.canGenerate !== '1';
    const gone = items.filter(i => i.error_code === 'economy_expired' && i.status === 'failed').length;
    const credits = gone * t.nowPrice, eco = b.speed === 'economy';
    for (const [el, on] of Object.entries({
      'batch-banner': paused && !!b.pause_message, 'credits-text': paused && b.pause_reason === 'no_credits',
      'service-banner': b.pause_reason === 'service_paused', 'expired-banner': eco && gone > 0,
      'economy-banner': eco && (n('waiting') > 0 || active && n('queued') > 0),
      'test-banner': held > 0, 'close-hint': active, 'short-text': short && (paused || retry > 0),
      'retry-form': retry > 0, 'stop-form': active && n('queued') + n('running') > 0,
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
    const counter = fill(t.tCounter, {total, done, failed, running: n('running')});
    $('batch-counter').textContent = counter;
    const progress = $('batch-progress');
    progress.max = total;
    progress.value = settled;
    progress.textContent = `${settled}/${total}`;

    // Time so far, and time left at the pace so far.
    const finished = items.filter(i => i.finished_at && (i.status === 'done' || i.status === 'delivered'));
    const end = Math.max(...finished.map(i => i.finished_at));
    const rest = active ? total - settled : 0;
    const parts = [];
    if (rest > 0) {
      const secs = Math.max(0, Math.round(now - b.created_at));
      parts.push(fill(t.tElapsed, {time: secs < 60 ? `${secs} s` : `${Math.floor(secs / 60)} min`}));
    }
    if (rest > 0 && finished.length && end > b.created_at) {
      const secs = rest * (end - b.created_at) / finished.length, min = Math.ceil(secs / 60);
      parts.push(plural('tEta', min, {
        time: new Date(Date.now() + secs * 1000).toLocaleTimeString(lang, {hour: '2-digit', minute: '2-digit'})
      }));
    }
    show($('batch-eta'), parts.join(' · '));

    const working = n('queued') + n('running') + n('waiting') > 0 || held > 0 && active;
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
    if (!document.hidden) {
      if (!storable) storable = true, notice('');
      checkSpace();
    }
    next(document.hidden ? 10000 : 0);
  });

  try {
    await adopt([id]); // the owner's page: this batch's older rows are theirs
    stored = await imageKeys(id);
    zip.hidden = !stored.size;
    imagesOf(id).then(images => images.forEach(im => thumb(im.itemId, im.blob, im.name)), () => {});
  } catch {
    unstorable();
  }
  await checkSpace();
  poll();
}
