// One JSON line per event, never message content: Workers Logs indexes the fields.
// A delivered message costs one info line per side: email.accepted (the Worker) and
// message.acked (the object) carry what the steps between said. Those steps (ingest.queued,
// message.leased) are logged only with LOG_LEVEL=debug: at five lines a message, log() was
// a fifth of the isolate's CPU. Errors, retries and admin/agent events are always logged.
// The field `level` (warning, error; debug for the debug steps) marks what needs an operator (a
// message failed, a bounce that cannot go out): Workers Logs and `wrangler tail` filter on it.
// It comes from the event's name (protocol/log-levels.ts, the agent's table too), never the call.
// Text from outside (addresses, a target's reply) is escaped: no control reaches a terminal (log-escape.ts).
import { logJson } from '../protocol/log-escape.ts';
import { levelOf } from '../protocol/log-levels.ts';

export function log(event: string, fields: Record<string, unknown> = {}): void {
  const level = levelOf(event);
  console.log(logJson(level === 'info' ? { event, ...fields } : { event, level, ...fields }));
}

export function randomId(): string {
  const b = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

export function hex(buf: ArrayBuffer): string {
  return Array.from(new Uint8Array(buf), (x) => x.toString(16).padStart(2, '0')).join('');
}
