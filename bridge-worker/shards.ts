// Sharding: SHARDS queue objects instead of one, each recipient always in the same one
// (a stable hash of the lower-cased address), so one object's limits (requests per
// second, storage) are not the whole relay's. Shard 0 is the object named 'queue', so
// going from 1 to N shards keeps the existing queue. The agent connects to every shard.
import type { WorkerEnv } from './worker-env.ts';
import type { RelayQueue } from './relay-do.ts';
import { shardName } from './shard-hash.ts';

export { MAX_SHARDS, shardName, shardOf } from './shard-hash.ts';

export type QueueStub = DurableObjectStub<RelayQueue>;

export function shardStub(env: WorkerEnv, i: number): QueueStub {
  return env.RELAY.get(env.RELAY.idFromName(shardName(i)));
}

export function allShards(env: WorkerEnv, shards: number): QueueStub[] {
  return Array.from({ length: shards }, (_, i) => shardStub(env, i));
}
