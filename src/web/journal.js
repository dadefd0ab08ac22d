// Where a client created with `persist` keeps its journal. In browsers (the `wsrelay/persist`
// entry, `persist: true`): an IndexedDB database, which that entry opens and reads before it
// constructs the client, and to which each batch is added by one readwrite transaction
// (`store` is then the `IDBDatabase`). In Node.js (`persist: { path }`): one file,
// appended to batch by batch, and replaced through a temporary file and a rename when the core
// rewrites it, so that a process killed at any point leaves the old journal or the new one,
// never a mix (PROTOCOL.md section 13). Synchronous, like the core's other inputs: a batch is
// what one turn of the event loop changed, and the driver writes it at the end of that turn.
// Not fsync'ed: it survives the process being killed, not the machine losing power.
//
// The file system is reached through `process.getBuiltinModule` (Node 20.16+), which bundlers
// leave alone: the browser build has no `require('fs')` for them to resolve.

function fs() {
  const fs = globalThis.process?.getBuiltinModule?.('node:fs');
  if (!fs) {
    throw new Error('persist: { path } needs Node.js 20.16 or later (process.getBuiltinModule)');
  }
  return fs;
}

// Each journal's file stays open for appending (one write system call per batch, where
// `appendFileSync` opens and closes it each time), until it is replaced.
const appending = new Map();

/** Closes the file kept open for `path`, if any (it is being replaced). */
function release(path) {
  const fd = appending.get(path);
  if (fd !== undefined) {
    appending.delete(path);
    fs().closeSync(fd);
  }
}

/** Creates the journal at `path` if there is none, and returns its text. */
export function journalOpen(path) {
  const file = fs();
  file.appendFileSync(path, '');
  return file.readFileSync(path, 'utf8');
}

/**
 * Stores one batch: appended, or replacing the whole journal. A file (`store` is its path) is
 * written at once; an IndexedDB database gets one transaction, and a Promise that resolves
 * once it has completed (the batch is stored) or rejects with why it failed (quota, the
 * database closed or deleted under the page). Readwrite transactions on one store run in the
 * order they were made: a batch never lands before an earlier one.
 */
export function journalWrite(store, text, rewrite) {
  if (typeof store !== 'string') {
    return new Promise((resolve, reject) => {
      const transaction = store.transaction('journal', 'readwrite');
      const journal = transaction.objectStore('journal');
      // A rewrite replaces the records in the same transaction: the old journal or the new
      // one, never a mix, whatever happens to the page.
      if (rewrite) journal.clear();
      journal.add(text);
      transaction.oncomplete = () => resolve();
      transaction.onabort = () => reject(transaction.error ?? new Error('IndexedDB transaction aborted'));
    });
  }
  const path = store;
  const file = fs();
  if (rewrite) {
    file.writeFileSync(`${path}.tmp`, text);
    file.renameSync(`${path}.tmp`, path);
    release(path);
    return;
  }
  let fd = appending.get(path);
  if (fd === undefined) {
    fd = file.openSync(path, 'a');
    appending.set(path, fd);
  }
  const bytes = Buffer.from(text);
  for (let written = 0; written < bytes.length; ) {
    written += file.writeSync(fd, bytes, written);
  }
}

/**
 * Moves an unreadable journal aside (a file: `.damaged` added to its name; IndexedDB: into
 * the `damaged` object store, in a transaction made before any later batch's); returns where.
 */
export function journalSetAside(store) {
  if (typeof store !== 'string') {
    const transaction = store.transaction(['journal', 'damaged'], 'readwrite');
    const journal = transaction.objectStore('journal');
    const damaged = transaction.objectStore('damaged');
    damaged.clear();
    const read = journal.getAll();
    read.onsuccess = () => {
      for (const text of read.result) damaged.add(text);
      journal.clear();
    };
    return `${store.name}, object store "damaged"`;
  }
  const path = store;
  const aside = `${path}.damaged`;
  release(path);
  fs().renameSync(path, aside);
  return aside;
}
