// The batch ZIP: images from IndexedDB plus manifest.csv, streamed through client-zip.
import {downloadZip} from '../vendor/client-zip.js';
import {getBatch, imagesOf} from './store.js';

// Fills {placeholders} in a translated string.
export const fill = (text, values) => (text || '').replace(/\{(\w+)\}/g, (m, k) => k in values ? values[k] : m);

// One CSV cell (RFC 4180), quoted, formulas defused (OWASP CSV injection): tab, CR, LF become spaces;
// a ' goes before = + - @ (or full-width twin) starting the cell or a part of it after , or ;.
const FORMULA = /^[\s\x1c-\x1f\x85"]*[=+\-@\uff1d\uff0b\uff0d\uff20]/;
const INSIDE = /([,;][\s\x1c-\x1f\x85"]*)(?=[=+\-@\uff1d\uff0b\uff0d\uff20])/g;

function cell(value) {
  let s = String(value ?? '').replace(/[\t\r\n]/g, ' ').replace(INSIDE, "$1'");
  if (FORMULA.test(s)) s = "'" + s;
  return '"' + s.replace(/"/g, '""') + '"';
}

// manifest.csv for a batch record; `names` holds the file names packed in the ZIP. `line`: the prompt's position.
export function manifestCsv(batch, names) {
  const packed = new Set(names);
  const rows = [['line', 'file_name', 'prompt', 'final_prompt', 'model', 'size', 'format', 'status']];
  for (const item of [...batch.items].sort((a, b) => a.position - b.position)) {
    // An image not in the ZIP says why: its status ("missing" when done but not kept here) and error.
    const status = packed.has(item.name) ? 'done'
      : (item.status === 'done' ? 'missing' : item.status) + (item.error ? ': ' + item.error : '');
    rows.push([item.position, item.name, item.prompt, item.finalPrompt, batch.model,
      `${batch.width}x${batch.height}`, batch.format, status]);
  }
  return '\ufeff' + rows.map(r => r.map(cell).join(',')).join('\r\n') + '\r\n';
}

// Packs the images (a blob that cannot be read is skipped and reported) and the manifest, calling
// onProgress(packed, total); the next image is read while client-zip checksums this one (two in memory).
export async function zipBatch(batch, images, onProgress = () => {}) {
  const list = [...images].sort((a, b) => a.position - b.position);
  const lastModified = new Date(batch.createdAt * 1000), names = [], skipped = [];
  const read = async image => {
    try {
      const bytes = await image.blob.arrayBuffer();
      return bytes.byteLength ? bytes : null;
    } catch {
      return null; // no image, or not a readable blob
    }
  };
  async function* entries() {
    let next = read(list[0]);
    for (const [i, image] of list.entries()) {
      onProgress(i, list.length);
      const input = await next;
      next = read(list[i + 1]);
      if (!input) {
        skipped.push(image.name);
        continue;
      }
      names.push(image.name);
      yield {name: image.name, lastModified, input};
    }
    onProgress(list.length, list.length);
    yield {name: 'manifest.csv', lastModified, input: manifestCsv(batch, names)};
  }
  const blob = await downloadZip(entries()).blob();
  return {blob, name: `images-in-bulk-${batch.date}-${batch.id}.zip`, skipped};
}

// Downloads a blob under a file name.
export function saveBlob(blob, name) {
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 60000);
}

// Wires a ZIP button of batch `id`; progress and outcome go to `out`, in the strings of dataset `t`.
export function zipButton(button, out, id, t) {
  button.addEventListener('click', async () => {
    button.disabled = true;
    try {
      const [batch, images] = await Promise.all([getBatch(id), imagesOf(id)]);
      const zip = await zipBatch(batch, images, (n, total) => { out.textContent = fill(t.tPacking, {n, total}); });
      saveBlob(zip.blob, zip.name);
      const skipped = zip.skipped.length ? ' ' + fill(t.tSkipped, {names: zip.skipped.join(', ')}) : '';
      out.textContent = fill(t.tZipped, {n: images.length - zip.skipped.length}) + skipped;
    } catch (e) {
      out.textContent = t.tZipFailed || e.message;
    }
    button.disabled = false;
  });
}
