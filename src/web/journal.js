// Where a client created with `persist: { path }` keeps its journal in Node.js: one file,
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

/** Stores one batch: appended, or replacing the whole journal. */
export function journalWrite(path, text, rewrite) {
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

/** Moves an unreadable journal aside (`.damaged` added to its name); returns where. */
export function journalSetAside(path) {
  const aside = `${path}.damaged`;
  release(path);
  fs().renameSync(path, aside);
  return aside;
}
