// The one header the relay adds to a message (docs/protocol.md, "Trace header"):
// a Received: line saying which agent took it from the queue and when the
// Worker accepted it. Everything after it is the message exactly as received.
import type { MessageFrame } from '../protocol/wire.ts';

export function rfc5322Date(ms: number): string {
  return new Date(ms).toUTCString().replace(/GMT$/, '+0000');
}

/** ASCII only: agent names and ids are validated tokens. */
export function traceHeader(agent: string, msg: MessageFrame): Uint8Array {
  const line = `Received: from cloudflare-email-routing by ${agent} (mailbridge) id ${msg.id};\r\n` +
    `\t${rfc5322Date(msg.receivedAt)}\r\n`;
  return Buffer.from(line, 'latin1');
}
