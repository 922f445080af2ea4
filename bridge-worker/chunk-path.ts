// The chunk path (no BODIES bucket bound, bodies.ts being the path as deployed):
// reads one raw message stream into chunk rows of at most MAX_CHUNK_BYTES,
// hashing on the way. Holds one chunk in memory, never the whole message.
import { MAX_CHUNK_BYTES, NO_VERDICTS, type AuthVerdicts } from '../protocol/wire.ts';
import { blockVerdicts } from './cf-auth-results.ts';
import { MAX_BLOCK_BYTES, cloudflareBlockLength } from './cloudflare-block.ts';
import { hex } from './log.ts';
import { byobReader } from './streams.ts';
import type { MessageStore } from './store.ts';

export type ChunkResult =
  /**
   * `prefix`: length of Cloudflare's block at the start (stored, not hashed); `sha256`: of
   * the bytes after it, the sender's message (the agent checks it); `md5`: of the same bytes, as
   * R2 computes it for a body stored there, so the dedupe key is one whichever path a copy took.
   */
  | { ok: true; size: number; chunks: number; sha256: string; md5: string; prefix: number; auth: AuthVerdicts }
  | { ok: false; size: number };

export async function storeChunks(
  store: MessageStore,
  id: string,
  raw: ReadableStream<Uint8Array>,
  /** Of the sender's message: Cloudflare's block comes on top (at most MAX_BLOCK_BYTES). */
  maxBytes: number,
  /** The size Email Routing announced: buffers are no bigger than needed (a 10 KiB message needs no 1 MiB one). */
  sizeHint = MAX_CHUNK_BYTES,
): Promise<ChunkResult> {
  const digest = new crypto.DigestStream('SHA-256');
  const hash = digest.getWriter();
  const md5Digest = new crypto.DigestStream('MD5');
  const md5 = md5Digest.getWriter();
  let buf: Uint8Array | null = null;  // allocated when bytes come, sized by what is still expected
  let fill = 0;
  let flushed = 0;
  let size = 0;
  let seq = 0;
  let prefix = 0;
  let auth: AuthVerdicts = { ...NO_VERDICTS };
  let cap = maxBytes + MAX_BLOCK_BYTES;  // until the block's length is known
  const flush = async (last = false): Promise<void> => {
    if (fill === 0 || !buf) return;
    const data = buf.subarray(0, fill);
    // The block ends within the first chunk or is not stripped (a bounded scan of its start).
    if (seq === 0) {
      prefix = cloudflareBlockLength(data, last);
      // Cloudflare's verdicts come from its block only, read while it is in memory.
      auth = blockVerdicts(data.subarray(0, prefix));
      cap = maxBytes + prefix;
    }
    store.appendChunk(id, seq++, data);
    const message = flushed === 0 ? data.subarray(prefix) : data;
    await Promise.all([hash.write(message), md5.write(message)]);
    // The row and the hash have their copies; the next bytes get a fresh buffer (never one a
    // read could still detach: the stream's next read gets a new one).
    flushed += fill;
    buf = null;
    fill = 0;
  };
  const tooLarge = async (cancel: () => Promise<void>): Promise<ChunkResult> => {
    await cancel();
    await Promise.all([hash.abort('message too large'), md5.abort('message too large')]);
    return { ok: false, size };
  };
  // A byte stream (the request body, message.raw, an RPC stream) is read straight into the
  // chunk buffer: no copy in JS, one read per chunk. Any other stream: one copy per piece.
  const byob = byobReader(raw);
  if (byob) {
    const reader = byob;
    for (;;) {
      if (!buf) {
        // What is still expected, plus one byte to see the end without another buffer.
        const left = sizeHint - flushed;
        buf = new Uint8Array(left >= 0 ? Math.min(MAX_CHUNK_BYTES, left + 1) : MAX_CHUNK_BYTES);
      } else if (fill === buf.byteLength) {
        // More than announced: grow to a whole chunk (rare: the hint was wrong).
        const bigger = new Uint8Array(MAX_CHUNK_BYTES);
        bigger.set(buf.subarray(0, fill));
        buf = bigger;
      }
      // read() transfers the buffer: take its length now, the view is detached after.
      const room: number = buf.byteLength - fill;
      // workerd's readAtLeast (the standard's `min`): one read fills the chunk, or the stream ended.
      const into: Uint8Array = new Uint8Array(buf.buffer, buf.byteOffset + fill, room);
      const got: ReadableStreamReadResult<Uint8Array> = typeof reader.readAtLeast === 'function'
        ? await reader.readAtLeast(room, into)
        : await reader.read(into);
      const done: boolean = got.done;
      const value: Uint8Array | undefined = got.value;
      if (!value) throw new Error('byob read returned no buffer');  // only after a cancel
      {
        // The same buffer, moved: the bytes before `fill` are in it still.
        buf = new Uint8Array(value.buffer);
        const n = value.byteLength;
        fill += n;
        size += n;
        if (size > cap) return tooLarge(() => reader.cancel('message too large'));
      }
      if (done) break;
      if (fill === MAX_CHUNK_BYTES) await flush();
    }
  } else {
    const reader = raw.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.byteLength;
      if (size > cap) return tooLarge(() => reader.cancel('message too large'));
      let off = 0;
      while (off < value.byteLength) {
        if (!buf) {
          const left = sizeHint - flushed;
          buf = new Uint8Array(left > 0 ? Math.min(MAX_CHUNK_BYTES, left) : MAX_CHUNK_BYTES);
        }
        if (fill === buf.length) {
          // More than announced: grow to a whole chunk (rare: the hint was wrong).
          const bigger = new Uint8Array(MAX_CHUNK_BYTES);
          bigger.set(buf.subarray(0, fill));
          buf = bigger;
        }
        const n = Math.min(value.byteLength - off, buf.length - fill);
        buf.set(value.subarray(off, off + n), fill);
        fill += n;
        off += n;
        if (fill === MAX_CHUNK_BYTES) await flush();
      }
    }
  }
  await flush(true);
  if (size > cap) {
    await Promise.all([hash.abort('message too large'), md5.abort('message too large')]);
    return { ok: false, size };
  }
  await Promise.all([hash.close(), md5.close()]);
  return { ok: true, size, chunks: seq, sha256: hex(await digest.digest), md5: hex(await md5Digest.digest), prefix, auth };
}
