// The batches and images kept in this browser (IndexedDB), behind promise-based helpers.

let opening;

function db() {
  return opening ||= new Promise((resolve, reject) => {
    const req = indexedDB.open('images-in-bulk', 1);
    req.onupgradeneeded = () => {
      const d = req.result;
      d.createObjectStore('batches', {keyPath: 'id'});
      d.createObjectStore('images', {keyPath: ['batchId', 'itemId']}).createIndex('batchId', 'batchId');
    };
    req.onsuccess = () => {
      req.result.onversionchange = () => { req.result.close(); opening = null; };
      resolve(req.result);
    };
    req.onerror = () => { opening = null; reject(req.error); };
  });
}

// Runs fn on the named stores in one transaction; resolves with the result of the request fn
// returns once the transaction has completed (so a write is durable), rejects if it aborts.
async function tx(names, mode, fn) {
  const t = (await db()).transaction(names, mode);
  const req = fn(...[].concat(names).map(n => t.objectStore(n)));
  return new Promise((resolve, reject) => {
    t.oncomplete = () => resolve(req && req.result);
    t.onabort = () => reject(t.error || new Error('aborted'));
  });
}

const byPosition = (a, b) => a.position - b.position;

export const putBatch = record => tx('batches', 'readwrite', s => s.put(record));
export const getBatch = id => tx('batches', 'readonly', s => s.get(id));
export const listBatches = () => tx('batches', 'readonly', s => s.getAll());
export const putImage = record => tx('images', 'readwrite', s => s.put(record));

export const imagesOf = async batchId =>
  (await tx('images', 'readonly', s => s.index('batchId').getAll(batchId))).sort(byPosition);

// The itemIds stored for a batch, read from the keys only (no blobs loaded).
export const imageKeys = async batchId =>
  new Set((await tx('images', 'readonly', s => s.index('batchId').getAllKeys(batchId))).map(k => k[1]));

// [id] sorts before every [id, itemId] and [id, []] after every numeric or string itemId.
export const deleteBatch = id => tx(['batches', 'images'], 'readwrite', (batches, images) => {
  batches.delete(id);
  images.delete(IDBKeyRange.bound([id], [id, []]));
});
