// Bounded memory for large messages. Chunk frames, socket reads and LMTP writes are
// Buffers, which V8 counts as "external" memory and collects only once that has grown by
// about 64 MB since its last full collection: relaying one 25 MiB message left ~40 MB of
// dead Buffers in the process (bench/results/history.md). Started with --expose-gc (the systemd
// unit and `npm run agent` do), the agent collects as message data passes, so its peak stays
// near idle + what is in flight. Without the flag this is a no-op and V8's own heuristics apply.
//
// Two kinds (bench/results/2026-12-07-memory.md): a minor collection (a scavenge, about 1 ms on
// this small heap) after every MINOR_BYTES frees the Buffers that died young, which is most of
// them: read, written to LMTP, done. The few still in flight at a scavenge are promoted to the
// old generation, which only a full collection (about 10 ms) frees: one after every
// RECLAIM_BYTES, as before there were minor ones. With them, one 25 MiB message peaked about
// 7 MB lower, four at once (with the 256 KiB per message of body-fetch.ts and deliver.ts) about
// 7 MB lower; the scavenges cost about 0.75 ms per MiB (--trace-gc), within the noise of the
// agent's CPU on large messages, and no throughput. Each part counts: with 1 MiB per message
// in flight, more Buffers survive a scavenge and get promoted (four at once only 3-4 MB lower);
// with a full collection only every 8 MiB, the promoted ones piled up with 8 messages in
// flight (3-4 MB higher).

/** Message bytes relayed between two minor collections. */
export const MINOR_BYTES = 1024 * 1024;
/** Message bytes relayed between two full collections. */
export const RECLAIM_BYTES = 4 * 1024 * 1024;

type Gc = (options?: { type: 'minor' | 'major' }) => void;
const gc = (globalThis as { gc?: Gc }).gc;
let sinceMinor = 0;
let sinceFull = 0;

/** Counts bytes of message data handed to the LMTP client; collects when enough have passed. */
export function relayed(bytes: number): void {
  if (!gc) return;
  sinceMinor += bytes;
  sinceFull += bytes;
  if (sinceFull >= RECLAIM_BYTES) {
    sinceFull = 0;
    sinceMinor = 0;
    gc();
  } else if (sinceMinor >= MINOR_BYTES) {
    sinceMinor = 0;
    gc({ type: 'minor' });
  }
}

/** Whether collections run (the process was started with --expose-gc); shown in the start log. */
export const reclaiming = gc !== undefined;
