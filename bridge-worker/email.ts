// The email() handler: recipient and size policy, then the body goes into R2
// (bodies.ts) and its row into the queue object, or, for a small message, both
// into the object (chunk-path.ts). Returning means "stored
// durably"; throwing makes Email Routing answer the sender with a temporary
// error, so the sender retries.
import { isAddress } from '../protocol/wire.ts';
import { hasControl } from '../protocol/log-escape.ts';
import { bodyKey, putBody } from './bodies.ts';
import { MAX_BLOCK_BYTES } from './cloudflare-block.ts';
import { readConfig } from './env.ts';
import type { WorkerEnv } from './worker-env.ts';
import { log, randomId } from './log.ts';
import type { IngestResult } from './ingest.ts';
import { rejectReason } from './smtp-verdict.ts';
import { shardName, shardOf, shardStub } from './shards.ts';

/** What we use of ForwardableEmailMessage; the dev ingress route builds one too. */
export interface IncomingEmail {
  readonly from: string;
  readonly to: string;
  readonly raw: ReadableStream<Uint8Array>;
  readonly rawSize: number;
  setReject(reason: string): void;
}

export type EmailOutcome =
  | { outcome: 'accepted'; id: string; duplicate: boolean }
  | { outcome: 'rejected'; reason: string };


/**
 * What email() may take in all, storing and waiting for the verdict, whatever VERDICT_WAIT_MS
 * says: well inside Email Routing's ~30 s wall clock (docs/reference §4). The verdict wait gets
 * what storing left of it, less RETURN_MARGIN_MS for the answer's way back.
 */
export const EMAIL_BUDGET_MS = 25_000;
export const RETURN_MARGIN_MS = 1_000;

/** Whether this isolate has said that BODIES is unbound (once per isolate, not per message). */
let unboundSaid = false;

/**
 * Without the BODIES bucket every message goes into the object's SQLite chunks, whose CPU per
 * message outgrows the Free plan's 10 ms (issue #15): a misconfiguration, said at ingest.
 */
function warnUnbound(): void {
  if (unboundSaid) return;
  unboundSaid = true;
  log('bodies.unbound', { binding: 'BODIES', why: 'no R2 bucket is bound as BODIES (wrangler.toml [[r2_buckets]]): message bodies go into the queue object\'s SQLite chunks' });
}

export async function handleEmail(message: IncomingEmail, env: WorkerEnv): Promise<EmailOutcome> {
  const start = Date.now();
  const cfg = readConfig(env);
  const reject = (reason: string): EmailOutcome => {
    message.setReject(reason);
    log('email.rejected', { to: message.to, reason });
    return { outcome: 'rejected', reason };
  };
  const sender = message.from === '<>' ? '' : message.from;
  if (!isAddress(sender, true)) return reject('5.1.7 Invalid envelope sender address');
  if (!isAddress(message.to)) return reject('5.1.3 Invalid envelope recipient address');
  // C1 controls and U+2028/2029 pass the wire's isAddress (kept so, for rows queued before):
  // no mailbox has them, and they would reach logs and the target's LMTP command.
  if (hasControl(sender)) return reject('5.1.7 Invalid envelope sender address: control character');
  if (hasControl(message.to)) return reject('5.1.3 Invalid envelope recipient address: control character');
  const domain = message.to.slice(message.to.lastIndexOf('@') + 1).toLowerCase();
  if (cfg.allowedDomains.length > 0 && !cfg.allowedDomains.includes(domain)) {
    return reject(`5.7.1 Relaying denied: this server does not accept mail for ${domain}`);
  }
  if (cfg.allowedRecipients.length > 0 && !cfg.allowedRecipients.includes(message.to.toLowerCase())) {
    return reject('5.1.1 No such recipient here');
  }
  // The limit is the sender's message's: Cloudflare's block (storeChunks finds it) comes on top.
  if (message.rawSize > cfg.maxMessageBytes + MAX_BLOCK_BYTES) {
    return reject(`5.3.4 Message size ${message.rawSize} exceeds the limit of ${cfg.maxMessageBytes} bytes`);
  }
  const shard = shardOf(message.to, cfg.shards);
  const queue = shardStub(env, shard);
  // One call stores the message and, with VERDICT_WAIT_MS > 0, waits for the agent's answer.
  let result: IngestResult;
  // A small body stays in the object and rides the agent's WebSocket (no R2 put, no fetch, one
  // invocation fewer); a large one goes to R2, past the CPU a chunk path would cost.
  if (env.BODIES && message.rawSize > cfg.inlineMaxBytes) {
    // The body goes to R2 from here, natively; the object gets the row's worth (bodies.ts).
    // Stamped with the object's id: its orphan sweep deletes only what it can tell is its own.
    const owner = env.RELAY.idFromName(shardName(shard)).toString();
    const put = await putBody(env.BODIES, bodyKey(shardName(shard), randomId()), message.raw, message.rawSize, cfg.maxMessageBytes, owner);
    if (!put.ok) return reject(`5.3.4 Message size exceeds the limit of ${cfg.maxMessageBytes} bytes`);
    const budgetMs = EMAIL_BUDGET_MS - RETURN_MARGIN_MS - (Date.now() - start);
    // A failed call deletes nothing here: it may have committed before failing on the way back.
    // The object deletes what it does not keep (duplicates, unknown recipients); an object no
    // row ever came to own is its orphan sweep's (relay-do.ts).
    result = await queue.ingestStored(sender, [message.to], put.body, cfg.verdictWaitMs, budgetMs);
  } else {
    if (!env.BODIES) warnUnbound();
    const budgetMs = EMAIL_BUDGET_MS - RETURN_MARGIN_MS - (Date.now() - start);
    result = await queue.ingest(sender, [message.to], message.raw, cfg.maxMessageBytes, message.rawSize, cfg.verdictWaitMs, budgetMs);
  }
  if (result.status === 'too-large') {
    return reject(`5.3.4 Message size exceeds the limit of ${cfg.maxMessageBytes} bytes`);
  }
  if (result.status === 'unknown-recipient') {
    // Postfix's relay_recipient_maps answer: refused at SMTP time, whether or not home is up.
    return reject(`5.1.1 <${message.to}>: Recipient address rejected: User unknown`);
  }
  // Stored durably: from here the answer is 'accepted' unless Dovecot refused for good.
  const v = result.verdict;  // null: not waited for (VERDICT_WAIT_MS=0)
  const refused = v?.kind === 'final' ? rejectReason(v.results) : null;
  if (refused !== null) return reject(refused);
  // The one line per accepted message (the verdict used to be a line of its own).
  log('email.accepted', { id: result.id, duplicate: result.duplicate, size: message.rawSize, verdict: v?.kind ?? null });
  return { outcome: 'accepted', id: result.id, duplicate: result.duplicate };
}
