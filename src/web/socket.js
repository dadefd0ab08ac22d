// The socket's hot path, in JavaScript: a frame is read by the runtime's own JSON.parse, once,
// and crosses into wasm as the few fields the core decides on (numbers and short strings); its
// payload stays here, a JavaScript value, until it is handed to the application.
//
// Only frames whose fields the core would read the same way from the text go this way: a
// message (any type not starting with `~`) or an acknowledgement (`~ack`), every field it has
// of the protocol's type, no `error`, no `pos` (a room log's frame), none of the other control
// fields. Anything else (a frame
// that is not JSON or not an object, a response carrying an error, the welcome, pings, error
// reports, a field of the wrong type) crosses as its text, and the core's own decoder reads it
// and says what is wrong with it. JSON.parse cannot tell `1.0` from `1` or see a duplicate key:
// there the fields path reads what JSON.parse read (PROTOCOL.md, section 2).

/** Whether `n` is a protocol id: an integer from 1 to 2^53 - 1. */
function id(n) {
  return Number.isSafeInteger(n) && n >= 1;
}

/** Whether `s` is absent or a string. */
function text(s) {
  return s === undefined || typeof s === 'string';
}

/**
 * Listens to `socket`: `onFrame(type, id, re, to, source, request, bytes, frame)` for a frame
 * read here (`id` and `re` 0 when absent; `bytes`: its length in UTF-16 units, which the core
 * counts towards its acknowledgement threshold: the UTF-8 length for ASCII, less otherwise,
 * well within the relay's window either way): a message, or an
 * acknowledgement as `onFrame('~ack', ack, ...)`; `onEvent(event)` for anything else (open,
 * close, error, and frames the core reads from their text).
 */
export function watch(socket, onFrame, onEvent) {
  socket.onopen = onEvent;
  socket.onclose = onEvent;
  socket.onerror = onEvent;
  socket.onmessage = (event) => {
    const data = event.data;
    if (typeof data === 'string' && data.charCodeAt(0) === 123 /* { */) {
      let f;
      try {
        f = JSON.parse(data);
      } catch {
        return onEvent(event);
      }
      const type = f.type;
      if (
        typeof type === 'string' &&
        (f.id === undefined || id(f.id)) &&
        (f.re === undefined || id(f.re)) &&
        text(f.to) &&
        text(f.source) &&
        text(f.room) &&
        f.error === undefined &&
        f.pos === undefined &&
        f.v === undefined &&
        f.session === undefined &&
        f.resumed === undefined &&
        f.lost === undefined &&
        f.window === undefined &&
        f.sid === undefined &&
        f.rate === undefined &&
        f.burst === undefined &&
        f.code === undefined &&
        f.message === undefined
      ) {
        const ack = f.ack;
        const counter = ack === undefined || (Number.isSafeInteger(ack) && ack >= 0);
        if (type.charCodeAt(0) !== 126 /* ~ */) {
          if (counter) {
            const request = f.request === true;
            return onFrame(type, f.id || 0, f.re || 0, f.to, f.source, request, data.length, f);
          }
        } else if (type === '~ack' && ack !== undefined && counter) {
          // Every argument given, with its type: wasm-bindgen's debug glue checks them.
          return onFrame(type, ack, 0, undefined, undefined, false, 0, undefined);
        }
      }
    }
    onEvent(event);
  };
}

/**
 * `JSON.parse(text)` of a frame the core reads from its text, or `undefined` when it is not
 * JSON: whatever the core accepts, this reads the same way, so a message's payload still never
 * crosses as text.
 */
export function read(text) {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** Calls `handler(frame.payload, frame)`: a message, handed to its handler. */
export function deliver(handler, frame) {
  return handler(frame.payload, frame);
}

/** A frame's payload (`undefined` when it has none). */
export function payload(frame) {
  return frame == null ? undefined : frame.payload;
}
