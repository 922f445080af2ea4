// warm-up.ts for the chunk path, which every message of at most INLINE_MAX_BYTES takes (issue
// #24): a fresh isolate's first such message otherwise compiles it inside its own 10 ms. Apart
// from warm-up.ts because it needs the Workers runtime (DigestStream), which warm-up.ts's test
// under Node has not.
import { storeChunks } from './chunk-path.ts';
import type { MessageStore } from './store.ts';
import { SAMPLE } from './warm-up.ts';

/**
 * The sample read from a byte stream, as the ingest RPC's is, hashed, its chunk given to a store
 * that keeps nothing. Resolves with what storeChunks found, for the test.
 */
export function warmChunkPath(): Promise<{ ok: boolean; prefix: number }> {
  const store = { appendChunk: () => undefined } as unknown as MessageStore;
  const raw: ReadableStream<Uint8Array> = new ReadableStream({ type: 'bytes', start(c: ReadableByteStreamController) { c.enqueue(SAMPLE.slice()); c.close(); } });
  return storeChunks(store, 'warm-up', raw, 1 << 20, SAMPLE.byteLength)
    .then((r) => ({ ok: r.ok, prefix: r.ok ? r.prefix : -1 }));
}

// Not awaited (a Worker has no top-level await): the promise settles within startup's microtasks.
warmChunkPath().catch(() => undefined);
