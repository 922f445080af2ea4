// The Worker's env: the queue object's (env.ts) and the binding to the object itself.
import type { Env } from './env.ts';
import type { RelayQueue } from './relay-do.ts';

export interface WorkerEnv extends Env {
  RELAY: DurableObjectNamespace<RelayQueue>;
}
