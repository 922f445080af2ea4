// Message bodies in R2 (issue #15): email() stores the bytes after Cloudflare's block with
// one native put, so no body byte passes through JS or the queue object; the agent fetches
// them back through the Worker. Only the message's first HEAD_BYTES are read here.
import { cloudflareBlockLength } from './cloudflare-block.ts';
import { headerSection } from './headers.ts';
import { hex } from './log.ts';
import { byobReader } from './streams.ts';

/**
 * The first bytes email() reads itself before piping the rest natively: enough to find the
 * block (MAX_BLOCK_BYTES) and the header section after it (headers.ts reads at most 64 KiB),
 * which the message's row keeps for the admin view and bounces.
 */
export const HEAD_BYTES = 64 * 1024;

/** What the queue object keeps of a message whose body is in R2 (ingestStored). */
export interface StoredBody {
  /** The R2 object: `<shard>/<id>` (bodyKey), holding exactly the bytes after the block. */
  key: string;
  /** Of the whole message, block included. */
  size: number;
  /** Length of Cloudflare's block (0: none recognised). */
  prefix: number;
  /** Lowercase hex MD5 of the R2 object, as R2 computed it (no JS hashed a byte). */
  md5: string;
  /** Cloudflare's block and the header section after it: never a body byte. */
  head: Uint8Array;
}

export type PutResult =
  | { ok: true; body: StoredBody }
  /** The sender's message (after the block) is larger than `maxBytes`: nothing was stored. */
  | { ok: false; size: number };

/**
 * customMetadata name of the queue object an R2 body was put for: its Durable Object id
 * (`idFromName(shard).toString()`, which differs between namespaces, so between two Workers
 * bound to one bucket: a staging one, a renamed one, `wrangler dev` with a remote binding). The
 * orphan sweep deletes only objects stamped with its own id (relay-do.ts).
 */
export const OWNER = 'owner';

/** The R2 key of message `id` in queue shard `shard` (shards.ts): one prefix per shard, for its orphan sweep. */
export function bodyKey(shard: string, id: string): string {
  return `${shard}/${id}`;
}

/** `<shard>/`: the prefix under which a shard's bodies lie, from one of its keys; null when it is not one. */
export function bodyPrefix(key: string): string | null {
  const m = /^(queue(?:-[0-9]{1,2})?\/)[0-9a-f]{32}$/.exec(key);
  return m?.[1] ?? null;
}

/**
 * Reads `raw`'s first bytes, finds the block, then streams the rest into `bucket` under `key`
 * with a known length (FixedLengthStream: R2 needs it, and it fails a stream longer or shorter
 * than `rawSize` said). Throws when R2 or the stream fails: email() then answers with a
 * temporary error and the sender retries. An object left behind by a failure that also failed
 * to delete it is the orphan sweep's (relay-do.ts): `owner` (the queue object's id) is stamped
 * on it for that.
 */
export async function putBody(
  bucket: R2Bucket, key: string, raw: ReadableStream<Uint8Array>, rawSize: number, maxBytes: number, owner: string,
): Promise<PutResult> {
  const stamp: R2PutOptions = { customMetadata: { [OWNER]: owner } };
  const { first, done } = await readHead(raw, Math.min(HEAD_BYTES, rawSize + 1));
  const have = first.byteLength;
  if (have > rawSize || (done && have !== rawSize)) {
    await raw.cancel('message length differs from its announced size').catch(() => undefined);
    throw new Error(`message has ${done ? have : `more than ${rawSize}`} bytes, ${rawSize} were announced`);
  }
  const prefix = cloudflareBlockLength(first, done || have === rawSize);
  // Too large: nothing stored, the rest left unread (the dev route reads it before its 550).
  if (rawSize - prefix > maxBytes) return { ok: false, size: rawSize };
  const rest = first.subarray(prefix);
  let stored: R2Object | null;
  if (done) {
    stored = await bucket.put(key, rest, stamp);
  } else {
    // The bytes already read go first, then the rest of the stream, natively (pipeTo between
    // workerd streams runs no JS per chunk). The length lets R2 take a stream.
    const { readable, writable } = new FixedLengthStream(rawSize - prefix);
    const put = bucket.put(key, readable, stamp);
    const feed = (async () => {
      const writer = writable.getWriter();
      if (rest.byteLength > 0) await writer.write(rest);
      writer.releaseLock();
      await raw.pipeTo(writable);
    })();
    // Either failing fails both: a broken stream must never leave a put waiting forever.
    const [p, f] = await Promise.allSettled([put, feed]);
    if (p.status === 'rejected' || f.status === 'rejected') {
      await bucket.delete(key).catch(() => undefined);
      throw p.status === 'rejected' ? p.reason : (f as PromiseRejectedResult).reason;
    }
    stored = p.value;
  }
  if (stored === null) throw new Error('R2 refused the put');  // only with conditions, which we set none of
  const md5 = stored.checksums.md5 ? hex(stored.checksums.md5) : etagMd5(stored.httpEtag);
  if (md5 === null || stored.size !== rawSize - prefix) {
    await bucket.delete(key).catch(() => undefined);
    throw new Error(`R2 stored ${stored.size} bytes without an MD5 (etag ${stored.httpEtag}); wanted ${rawSize - prefix}`);
  }
  const head = new Uint8Array(prefix + headerSection(rest).byteLength);
  head.set(first.subarray(0, head.byteLength));
  return { ok: true, body: { key, size: rawSize, prefix, md5, head } };
}

/**
 * The first bytes of `raw` and whether the stream ended there. A byte stream (message.raw, a
 * request body) is read straight into one buffer (BYOB): exactly `max` bytes, or fewer if it
 * ends. Any other stream: whole pieces until `max` is reached (one piece more at most).
 */
async function readHead(raw: ReadableStream<Uint8Array>, max: number): Promise<{ first: Uint8Array; done: boolean }> {
  const byob = byobReader(raw);
  if (byob) {
    let buf = new Uint8Array(max);
    let fill = 0;
    let done = false;
    while (fill < max && !done) {
      const into = new Uint8Array(buf.buffer, fill, max - fill);
      const got = typeof byob.readAtLeast === 'function' ? await byob.readAtLeast(max - fill, into) : await byob.read(into);
      if (!got.value) throw new Error('byob read returned no buffer');
      // read() transfers the buffer: the same bytes, in the buffer it hands back.
      buf = new Uint8Array(got.value.buffer);
      fill += got.value.byteLength;
      done = got.done;
    }
    byob.releaseLock();
    return { first: buf.subarray(0, fill), done };
  }
  const reader = raw.getReader();
  const pieces: Uint8Array[] = [];
  let have = 0;
  let done = false;
  while (have < max) {
    const r = await reader.read();
    if (r.done) {
      done = true;
      break;
    }
    pieces.push(r.value);
    have += r.value.byteLength;
  }
  reader.releaseLock();
  const all = concat(pieces, have);
  return { first: all, done };
}

/** A single-part upload's ETag is the MD5 of its bytes. */
function etagMd5(etag: string): string | null {
  const m = /^"?([0-9a-f]{32})"?$/.exec(etag);
  return m?.[1] ?? null;
}

function concat(pieces: Uint8Array[], size: number): Uint8Array {
  if (pieces.length === 1 && pieces[0]) return pieces[0];
  const out = new Uint8Array(size);
  let at = 0;
  for (const p of pieces) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}

/** `block` then `body`, as one stream of `size` bytes: the admin export of a message in R2. */
export function withBlock(block: Uint8Array, body: ReadableStream<Uint8Array>, size: number): ReadableStream<Uint8Array> {
  const { readable, writable } = new FixedLengthStream(size);
  void (async () => {
    const writer = writable.getWriter();
    if (block.byteLength > 0) await writer.write(block);
    writer.releaseLock();
    await body.pipeTo(writable);
  })().catch(() => undefined);
  return readable;
}
