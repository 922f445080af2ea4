// How serious each log event is, for the Worker, the queue object and the agent alike: one
// table, read by both loggers (bridge-worker/log.ts, edge-agent/ops/log.ts), never a `level`
// field set at the call. An event not named here is `info`.
//
//   error    the program cannot do its job (a bad setting, storage it cannot use)
//   warning  mail is not getting through, or an operator must look: `journalctl -p warning`
//            shows exactly these and the errors
//   info     what happened to each message and connection, when all goes well
//   debug    steps and per-message summaries that the lines above already cover

export const LEVELS = ['error', 'warning', 'info', 'debug'] as const;
export type Level = (typeof LEVELS)[number];

/** syslog priorities (sd-daemon(3) `<N>` prefixes) of each level. */
export const PRIORITY: Record<Level, number> = { error: 3, warning: 4, info: 6, debug: 7 };

const TABLE: Record<string, Level> = {
  // ---- the agent ----
  'agent.stop-timeout': 'error',
  'delivery.deferred': 'warning',
  'delivery.bounced': 'warning',
  'deliver.corrupt': 'warning',
  'deliver.error': 'warning',
  'bounce.deferred': 'warning',
  'bounce.failed': 'warning',
  // A delay warning is a courtesy: one that cannot go out stops nothing, but an operator should know.
  'warning.deferred': 'warning',
  'warning.failed': 'warning',
  'connect.failed': 'warning',
  'session.violation': 'warning',
  // A frame about one message the agent could not take (answered for that message alone).
  'frame.refused': 'warning',
  // reportingMta names the home network (a .lan name, localhost): every DSN would show it.
  'bounce.private-name': 'warning',
  'heartbeat.lost': 'warning',
  'ws.error': 'warning',
  'target.down': 'warning',
  'recipients.invalid': 'warning',
  'journal.failed': 'warning',
  // Dovecot could not say whether it holds a message whose reply was lost: it waits, deferred.
  'doveadm.failed': 'warning',
  'http.failed': 'warning',
  'http.error': 'warning',
  'queue.scrape-failed': 'warning',
  // Per-message summaries: the per-recipient delivery.* lines say the same per address.
  'deliver.acked': 'debug',
  'deliver.journal': 'debug',
  // ---- the local relay (npm start) ----
  'ingress.error': 'warning',
  'ingress.spool-failed': 'warning',
  'ingress.unlink-failed': 'warning',
  'relay.stop-error': 'warning',
  // DATA_DIR was open to other users (tightened to 0700), or could not be made private.
  'relay.data-dir-tightened': 'warning',
  'relay.data-dir-open': 'warning',
  // ---- the Worker and the queue object ----
  'config.invalid': 'error',
  'ingest.failed': 'error',
  'email.tempfail': 'warning',
  'message.failed': 'warning',
  'message.deferred': 'warning',
  'bounce.impossible': 'warning',
  'agent.violation': 'warning',
  'agent.silent': 'warning',
  'agent.answer-rejected': 'warning',
  'pump.failed': 'warning',
  // Bodies in R2: no bucket bound (every body goes into the object's SQLite), a body gone from
  // R2 while its message is queued, deletes and sweeps R2 refused (retried; an operator should know).
  'bodies.unbound': 'warning',
  'body.missing': 'error',
  'bodies.delete-failed': 'warning',
  'bodies.sweep-failed': 'warning',
  // The object's storage or R2 nears the Free plan's limit (80 % of this object's share).
  'storage.near-limit': 'warning',
  'ingest.queued': 'debug',
  'message.leased': 'debug',
};

export function levelOf(event: string): Level {
  return TABLE[event] ?? 'info';
}
