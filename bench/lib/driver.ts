// The load generator: `concurrency` connections, each sending messages one after
// another with the project's LmtpClient (LMTP straight into Dovecot, or SMTP into
// an ingress / Postfix). Per message it records:
//   tStart — deliver() called;
//   tDot   — the client has taken the last body byte from the message iterator; it
//            writes the end of data (final ".", or BDAT LAST) in the same tick;
//   tReply — the server's final reply to the message (SMTP 250, or Dovecot's LMTP 250).
import { LmtpClient } from '../../lmtp-proxy/client.ts';
import type { Target } from '../../lmtp-proxy/target.ts';

export interface Outgoing {
  id: string;
  recipient: string;
  pieces: Uint8Array[];
  size: number;
}

export interface Sent {
  id: string;
  recipient: string;
  size: number;
  tStart: number;
  tDot: number;
  tReply: number;
  ok: boolean;
  reply: string;
}

async function* timed(pieces: Uint8Array[], onEnd: () => void): AsyncGenerator<Uint8Array> {
  for (const p of pieces) yield p;
  onEnd();
}

export interface DriveOptions {
  target: Target;
  count: number;
  concurrency: number;
  message(i: number): Outgoing;
  sender: string;
}

export async function drive(opts: DriveOptions): Promise<Sent[]> {
  const out: Sent[] = [];
  let next = 0;
  const clients: LmtpClient[] = [];
  const worker = async (): Promise<void> => {
    const client = new LmtpClient(opts.target, { localName: 'bench.client', timeouts: { final: 120_000, command: 120_000 } });
    clients.push(client);
    for (;;) {
      const i = next++;
      if (i >= opts.count) return;
      const m = opts.message(i);
      const tStart = performance.now();
      let tDot = Number.NaN;
      const results = await client.deliver({ sender: opts.sender, recipients: [m.recipient] },
        timed(m.pieces, () => { tDot = performance.now(); }), { size: m.size, eightBit: true });
      const tReply = performance.now();
      const r = results[0];
      out.push({
        id: m.id, recipient: m.recipient, size: m.size, tStart, tDot, tReply,
        ok: r?.outcome === 'delivered', reply: r ? `${r.code} ${r.text}`.slice(0, 200) : 'no result',
      });
    }
  };
  try {
    await Promise.all(Array.from({ length: opts.concurrency }, () => worker()));
  } finally {
    await Promise.all(clients.map((c) => c.close().catch(() => undefined)));
  }
  return out;
}
