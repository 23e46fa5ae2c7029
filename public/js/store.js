// The batches and images kept in this browser (IndexedDB). Every row carries `owner` (the page's
// data-library-key) and is read back only by it: people sharing a browser never see each other's.
// Older rows without one stay hidden until adopt() gets their batch id from the server.

let opening;
const owner = document.querySelector('[data-library-key]')?.dataset.libraryKey || '';

function db() {
  return opening ||= new Promise((resolve, reject) => {
    const req = indexedDB.open('images-in-bulk', 2);
    req.onupgradeneeded = ({oldVersion}) => {
      const d = req.result, t = req.transaction;
      if (oldVersion < 1) {
        d.createObjectStore('batches', {keyPath: 'id'});
        d.createObjectStore('images', {keyPath: ['batchId', 'itemId']}).createIndex('batchId', 'batchId');
      }
      if (oldVersion < 2) { // one owner's rows, found without reading anyone else's (rows without one are left out)
        t.objectStore('batches').createIndex('owner', ['owner', 'id']);
        t.objectStore('images').createIndex('owner', ['owner', 'batchId']);
      }
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
// Index queries: the owner's rows of one batch id, or all of them.
const one = id => IDBKeyRange.only([owner, id]);
const every = () => IDBKeyRange.bound([owner], [owner, []]);

async function put(name, record) {
  if (!owner) throw new Error('signed out');
  return tx(name, 'readwrite', s => s.put({...record, owner}));
}

export const putBatch = record => put('batches', record);
export const putImage = record => put('images', record);
export const getBatch = id => tx('batches', 'readonly', s => s.index('owner').get(one(id)));
export const listBatches = () => tx('batches', 'readonly', s => s.index('owner').getAll(every()));

export const imagesOf = async batchId =>
  (await tx('images', 'readonly', s => s.index('owner').getAll(one(batchId)))).sort(byPosition);

// The itemIds stored for a batch, read from the keys only (no blobs loaded).
export const imageKeys = async batchId =>
  new Set((await tx('images', 'readonly', s => s.index('owner').getAllKeys(one(batchId)))).map(k => k[1]));

// Deletes the owner's rows (batches and images) the query finds.
async function remove(query) {
  if (!owner) throw new Error('signed out');
  return tx(['batches', 'images'], 'readwrite', (...stores) => stores.forEach(store => {
    const keys = store.index('owner').getAllKeys(query);
    keys.onsuccess = () => keys.result.forEach(key => store.delete(key));
  }));
}

export const deleteBatch = id => remove(one(id));

// Stamps the owner on rows from before owners whose batch id is in `ids` (ids the server says are the
// subscriber's); reads only keys until one matches. Rows of other batch ids stay as they are, hidden.
export async function adopt(ids) {
  const wanted = new Set(ids);
  if (!owner || !wanted.size) return;
  return tx(['batches', 'images'], 'readwrite', (...stores) => stores.forEach(store => {
    const keys = store.getAllKeys(), owned = store.index('owner').getAllKeys();
    owned.onsuccess = () => { // after `keys`: a transaction answers its requests in order
      const taken = new Set(owned.result.map(key => JSON.stringify(key)));
      for (const key of keys.result) {
        if (taken.has(JSON.stringify(key)) || !wanted.has([].concat(key)[0])) continue;
        const row = store.get(key);
        row.onsuccess = () => store.put({...row.result, owner});
      }
    };
  }));
}

// Removes every row of the owner's from this browser, and the older rows of the batch ids given.
export const forget = async ids => { await adopt(ids); await remove(every()); };
