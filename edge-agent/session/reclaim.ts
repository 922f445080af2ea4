// Bounded memory for large messages. Chunk frames, socket reads and LMTP writes are
// Buffers, which V8 counts as "external" memory and collects only once that has grown by
// about 64 MB since its last full collection: relaying one 25 MiB message left ~40 MB of
// dead Buffers in the process (bench/results/history.md). Started with --expose-gc (the systemd
// unit and `npm run agent` do), the agent collects as message data passes, so its peak stays
// near idle + what is in flight. Without the flag this is a no-op and V8's own heuristics apply.
//
// Two kinds (bench/results/2026-12-07-memory.md): a minor collection (scavenge, about 1 ms on
// this small heap) after every MINOR_BYTES frees the Buffers that died young, which is most of
// them: read, written to LMTP, done within far less than MINOR_BYTES. The few still in flight
// at a scavenge get promoted to the old generation, which only a full collection (10-20 ms)
// frees: one after every RECLAIM_BYTES. Four 25 MiB messages at once peaked 7 MB lower than
// with a full collection every 4 MiB alone, for less CPU.

/** Message bytes relayed between two minor collections. */
export const MINOR_BYTES = 1024 * 1024;
/** Message bytes relayed between two full collections. */
export const RECLAIM_BYTES = 8 * 1024 * 1024;

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
