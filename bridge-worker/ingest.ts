// Reads one raw message stream into chunk rows of at most MAX_CHUNK_BYTES,
// hashing on the way. Holds one chunk in memory, never the whole message.
import { MAX_CHUNK_BYTES } from '../protocol/wire.ts';
import { hex } from './log.ts';
import type { MessageStore } from './store.ts';

export type ChunkResult =
  | { ok: true; size: number; chunks: number; sha256: string }
  | { ok: false; size: number };

export async function storeChunks(
  store: MessageStore,
  id: string,
  raw: ReadableStream<Uint8Array>,
  maxBytes: number,
): Promise<ChunkResult> {
  const digest = new crypto.DigestStream('SHA-256');
  const hash = digest.getWriter();
  const reader = raw.getReader();
  let buf = new Uint8Array(MAX_CHUNK_BYTES);
  let fill = 0;
  let size = 0;
  let seq = 0;
  const flush = async (): Promise<void> => {
    if (fill === 0) return;
    const data = buf.subarray(0, fill);
    store.appendChunk(id, seq++, data);
    await hash.write(data);
    // The row and the hash have their copies; start a fresh buffer so none is shared.
    buf = new Uint8Array(MAX_CHUNK_BYTES);
    fill = 0;
  };
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > maxBytes) {
      await reader.cancel('message too large');
      await hash.abort('message too large');
      return { ok: false, size };
    }
    let off = 0;
    while (off < value.byteLength) {
      const n = Math.min(value.byteLength - off, MAX_CHUNK_BYTES - fill);
      buf.set(value.subarray(off, off + n), fill);
      fill += n;
      off += n;
      if (fill === MAX_CHUNK_BYTES) await flush();
    }
  }
  await flush();
  await hash.close();
  return { ok: true, size, chunks: seq, sha256: hex(await digest.digest) };
}
