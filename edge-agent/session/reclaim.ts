// Bounded memory for large messages. Chunk frames, socket reads and LMTP writes are
// Buffers, which V8 counts as "external" memory and collects only once that has grown by
// about 64 MB since its last full collection: relaying one 25 MiB message left ~40 MB of
// dead Buffers in the process (bench/results/history.md). Started with --expose-gc (the systemd
// unit and `npm run agent` do), the agent runs a full collection after every RECLAIM_BYTES
// of message data, so its peak stays near idle + the credit window. Without the flag this
// is a no-op and V8's own heuristics apply.

/** Message bytes relayed between two collections: a few ms of GC per 4 MiB, on a small heap. */
export const RECLAIM_BYTES = 4 * 1024 * 1024;

const gc = (globalThis as { gc?: () => void }).gc;
let since = 0;

/** Counts bytes of message data handed to the LMTP client; collects when enough have passed. */
export function relayed(bytes: number): void {
  if (!gc) return;
  since += bytes;
  if (since < RECLAIM_BYTES) return;
  since = 0;
  gc();
}

/** Whether collections run (the process was started with --expose-gc); shown in the start log. */
export const reclaiming = gc !== undefined;
