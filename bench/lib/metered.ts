// The metered Worker (bench/worker/metered-worker.ts) in local workerd, and its object's meter
// read from outside: for bench:rows and the tests that count rows.
import { fileURLToPath } from 'node:url';
import { shardName } from '../../bridge-worker/shard-hash.ts';
import type { WorkerRuntime } from '../../local/worker-runtime.ts';
import type { MeterReport } from './sql-meter.ts';

/** The entry local's worker runtime bundles instead of bridge-worker/index.ts. */
export const METERED_ENTRY = fileURLToPath(new URL('../worker/metered-worker.ts', import.meta.url));

/**
 * What shard `shard`'s object counted since the last read, and a fresh start. A plain copy:
 * Miniflare's proxy of the result dies with the runtime. Ask again after a restart.
 */
export async function takeMeter(rt: WorkerRuntime, shard = 0): Promise<MeterReport> {
  const ns = await rt.mf.getDurableObjectNamespace('RELAY');
  const stub = ns.get(ns.idFromName(shardName(shard))) as unknown as { meterTake(): Promise<MeterReport> };
  return JSON.parse(JSON.stringify(await stub.meterTake())) as MeterReport;
}
