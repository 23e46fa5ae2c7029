// The library page: the batches kept in this browser, their size, ZIP and delete; storage used.
import {listBatches, imagesOf, deleteBatch, adopt} from './store.js';
import {fill, zipButton} from './zip.js';

const $ = id => document.getElementById(id);
const root = $('library');
const lang = document.documentElement.lang || undefined;

if (root) start();

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text != null) node.textContent = text;
  return node;
}

function start() {
  const t = root.dataset, list = $('library-list'), empty = $('library-empty');
  const number = new Intl.NumberFormat(lang, {minimumFractionDigits: 1, maximumFractionDigits: 1});
  const size = bytes => bytes >= 1e9 ? number.format(bytes / 1e9) + ' GB' : number.format(bytes / 1e6) + ' MB';
  // The card's title in the plural form the page's language takes for n (data-t-title-one, -other...).
  const plural = new Intl.PluralRules(lang);
  const titled = (id, n) => {
    const form = plural.select(n);
    return fill(t['tTitle' + form[0].toUpperCase() + form.slice(1)] || t.tTitleOther, {id, n});
  };
  let labels = {};
  try {
    labels = JSON.parse(t.modelLabels || '{}');
  } catch {
    // a model then shows its id
  }

  // The server-rendered #library-empty (with its link) is kept as is.
  const showEmpty = () => { empty.hidden = list.children.length > 0; };

  async function storage() {
    const s = navigator.storage;
    if (!s?.estimate) return;
    $('storage').hidden = false;
    const {usage = 0, quota = 0} = await s.estimate();
    $('storage-meter').value = quota ? usage / quota : 0;
    $('storage-text').textContent = fill(t.tUsed, {used: size(usage), quota: size(quota)});
    const persisted = await s.persisted?.();
    $('persist-status').textContent = persisted ? t.tPersisted : t.tNotPersisted;
    $('persist-button').hidden = persisted || !s.persist;
  }

  async function row(batch) {
    const images = await imagesOf(batch.id);
    const bytes = images.reduce((sum, im) => sum + (im.blob?.size || 0), 0);
    const item = el('li', 'library-item'), title = el('h2', 'library-title'), link = el('a');
    item.dataset.batchId = batch.id;
    title.id = 'library-' + batch.id;
    link.href = '/batches/' + batch.id;
    link.textContent = titled(batch.id, images.length);
    title.append(link);

    // The date in the page's language, the model's label, the pixel size, the format and the bytes kept here.
    const facts = el('p', 'library-facts'), made = new Date(batch.createdAt * 1000), day = el('time');
    day.dateTime = made.toISOString().slice(0, 10);
    day.textContent = made.toLocaleDateString(lang, {dateStyle: 'medium'});
    facts.append(day, ' · ' + [Object.hasOwn(labels, batch.model) ? labels[batch.model] : batch.model,
      batch.width ? `${batch.width}×${batch.height}` : batch.ratio, batch.format === 'jpeg' ? 'JPG' : 'PNG',
      size(bytes)].join(' · '));
    const thumbs = el('div', 'library-thumbs');
    for (const im of images.filter(im => im.blob).slice(0, 4)) {
      const img = el('img');
      img.src = URL.createObjectURL(im.blob);
      img.alt = '';
      img.width = img.height = 64;
      thumbs.append(img);
    }

    const zip = el('button', 'button library-zip', t.tZip);
    const del = el('button', 'button button-secondary library-delete', t.tDelete);
    const status = el('span', 'library-status');
    status.setAttribute('aria-live', 'polite');
    for (const button of [zip, del]) {
      button.type = 'button';
      button.setAttribute('aria-describedby', title.id);
    }
    zipButton(zip, status, batch.id, t);
    del.addEventListener('click', async () => {
      if (!confirm(t.tConfirm)) return;
      try {
        await deleteBatch(batch.id);
      } catch (e) {
        status.textContent = e.message;
        return;
      }
      for (const img of thumbs.children) URL.revokeObjectURL(img.src);
      item.remove();
      showEmpty();
      storage();
    });

    const actions = el('div', 'library-actions');
    actions.append(zip, del, status);
    item.append(title, facts, thumbs, actions);
    return item;
  }

  $('persist-button').addEventListener('click', async () => {
    await navigator.storage.persist();
    storage();
  });
  storage();

  // Rows kept from before they carried their owner are shown once the server says their batch is this subscriber's.
  adopt((t.batchIds || '').split(' ').filter(Boolean).map(Number))
    .catch(() => {})
    .then(listBatches)
    .then(async batches => {
      batches.sort((a, b) => b.createdAt - a.createdAt || b.id - a.id);
      for (const batch of batches) list.append(await row(batch));
    })
    .catch(() => {})
    .then(showEmpty);
}
