// The header fields the relay adds on top of a message (docs/protocol.md, "Trace
// header", "Authentication-Results"): a Received: line saying which agent took it
// from the queue and when the Worker accepted it, and one Authentication-Results
// carrying Cloudflare's verdicts under our authserv-id. Everything after them is
// the message as received (forged-results.ts renames fields that claim our id).
import { NO_VERDICTS, type MessageFrame } from '../../protocol/wire.ts';

export function rfc5322Date(ms: number): string {
  return new Date(ms).toUTCString().replace(/GMT$/, '+0000');
}

/** ASCII only: agent names and ids are validated tokens. */
export function traceHeader(agent: string, msg: MessageFrame): Uint8Array {
  const line = `Received: from cloudflare-email-routing by ${agent} (mailbridge) id ${msg.id};\r\n` +
    `\t${rfc5322Date(msg.receivedAt)}\r\n`;
  return Buffer.from(line, 'latin1');
}

/**
 * RFC 8601 §2.2: `Authentication-Results: <authserv-id>; spf=..; dkim=..; dmarc=..; arc=..`.
 * ASCII only: the id is a validated host name, the results wire-checked keywords. A message
 * stored before verdicts were kept (no `auth`) gets 'none' for each: not known, never guessed.
 */
export function authResultsHeader(authservId: string, msg: MessageFrame): Uint8Array {
  const a = msg.auth ?? NO_VERDICTS;
  return Buffer.from(`Authentication-Results: ${authservId};\r\n\tspf=${a.spf}; dkim=${a.dkim}; dmarc=${a.dmarc}; arc=${a.arc}\r\n`, 'latin1');
}
