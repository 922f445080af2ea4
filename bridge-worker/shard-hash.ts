// Which shard a recipient lives in: pure functions, no Workers types (tests import them).

export const MAX_SHARDS = 64;

export function shardName(i: number): string {
  return i === 0 ? 'queue' : `queue-${i}`;
}

/** FNV-1a over the address's UTF-8 bytes: stable across deploys and runtimes. */
export function shardOf(recipient: string, shards: number): number {
  let h = 0x811c9dc5;
  for (const b of new TextEncoder().encode(recipient.toLowerCase())) {
    h ^= b;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h % shards;
}
