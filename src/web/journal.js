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
  } else {
    file.appendFileSync(path, text);
  }
}

/** Moves an unreadable journal aside (`.damaged` added to its name); returns where. */
export function journalSetAside(path) {
  const aside = `${path}.damaged`;
  fs().renameSync(path, aside);
  return aside;
}
