// What a message still owes, as pure functions: one final result per recipient (the newest),
// the recipients a replay gives back, and durations written exactly in the texts a sender or
// an operator reads. No storage, no clock: tap covers them directly.
import type { RecipientResult } from '../protocol/wire.ts';

/**
 * `earlier` with `newer` folded in: one result per recipient, the newest wins, in the order
 * recipients first appeared. A replayed message must not list a recipient twice in its bounce.
 */
export function mergeResults(earlier: readonly RecipientResult[], newer: readonly RecipientResult[]): RecipientResult[] {
  const by = new Map<string, RecipientResult>();
  for (const r of [...earlier, ...newer]) by.set(r.recipient, r);  // a Map keeps first-insertion order
  return [...by.values()];
}

/**
 * What a replay (dead-letter -> queued) gives back: every recipient not yet delivered (those
 * still pending and those that failed for good), and only the delivered ones' results, which
 * stay final. An empty `recipients` means nothing is owed: there is nothing to replay.
 */
export function owedOnReplay(pending: readonly string[], results: readonly RecipientResult[]): { recipients: string[]; results: RecipientResult[] } {
  const merged = mergeResults([], results);
  const delivered = merged.filter((r) => r.outcome === 'delivered');
  const done = new Set(delivered.map((r) => r.recipient));
  const recipients = [...new Set([...pending, ...merged.filter((r) => r.outcome !== 'delivered').map((r) => r.recipient)])]
    .filter((r) => !done.has(r));
  return { recipients, results: delivered };
}

/** A duration in ms, exactly, in the largest unit that divides it: "5 d", "90 min", "45 s", "1500 ms". */
export function exactDuration(ms: number): string {
  const units: [number, string][] = [[86_400_000, 'd'], [3_600_000, 'h'], [60_000, 'min'], [1000, 's']];
  for (const [size, name] of units) if (ms >= size && ms % size === 0) return `${ms / size} ${name}`;
  return `${ms} ms`;
}
