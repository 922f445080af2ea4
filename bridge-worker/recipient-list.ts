// The recipients list an agent publishes (RECIPIENTS frames, in parts; recipient-store.ts keeps
// them) and the set in force: ingest refuses, before storing anything, a recipient it does not name.
import type { RecipientsFrame } from '../protocol/wire.ts';
import { recipientKnown } from '../protocol/recipients.ts';
import { now as clock } from './clock.ts';
import { log } from './log.ts';
import type { Attachment, QueueContext } from './queue-context.ts';

export function onRecipients(q: QueueContext, a: Attachment, frame: RecipientsFrame): void {
  const list = q.lists.putRecipientPart(a.session, frame, clock());
  if (list === 'incomplete') return;
  q.recipients = list === null ? null : { delimiter: list.delimiter, entries: new Set(list.entries) };
  log('recipients.published', { session: a.session, agent: a.agent, digest: frame.digest.slice(0, 12), entries: list?.entries.length ?? 0 });
}

/** Recipients the list in force does not name; none when no list is in force. */
export function unknownRecipients(q: QueueContext, recipients: string[]): string[] {
  if (q.recipients === undefined) {
    const list = q.lists.recipients();
    q.recipients = list === null ? null : { delimiter: list.delimiter, entries: new Set(list.entries) };
  }
  const known = q.recipients;
  return known === null ? [] : recipients.filter((r) => !recipientKnown(known.entries, known.delimiter, r));
}
