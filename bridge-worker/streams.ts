// Reading message bytes without copying them in JS, where the runtime allows it.

/**
 * A BYOB reader of `raw` when it is a byte stream (message.raw, a request body, an RPC
 * stream: the runtime reads straight into our buffer), else null: the caller falls back to
 * the default reader, which hands over pieces of its own.
 */
export function byobReader(raw: ReadableStream<Uint8Array>): ReadableStreamBYOBReader | null {
  try {
    return raw.getReader({ mode: 'byob' });
  } catch {
    return null;
  }
}
