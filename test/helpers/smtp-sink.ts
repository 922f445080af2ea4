// A real SMTP server (smtp-server) on 127.0.0.1:0 standing in for the bounce relay: it
// keeps every message it accepted with its envelope, and can refuse RCPT with a set reply.
import { SMTPServer } from 'smtp-server';

/** One message the sink took; `at` is when its data ended, just before the sink's 250. */
export interface Sunk { from: string; to: string[]; body: Buffer; at: number }

export interface SmtpSink {
  url: string;
  port: number;
  messages: Sunk[];
  /** When set, every RCPT gets this reply (e.g. 550 or 451). */
  refuse: { code: number; text: string } | null;
  close(): Promise<void>;
}

export async function startSmtpSink(): Promise<SmtpSink> {
  const sink: Omit<SmtpSink, 'url' | 'port' | 'close'> = { messages: [], refuse: null };
  const server = new SMTPServer({
    disabledCommands: ['AUTH', 'STARTTLS'], authOptional: true, logger: false, closeTimeout: 100,
    onRcptTo(_address, _session, cb) {
      const r = sink.refuse;
      cb(r ? Object.assign(new Error(r.text), { responseCode: r.code }) : null);
    },
    onData(stream, session, cb) {
      const bufs: Buffer[] = [];
      stream.on('data', (b: Buffer) => bufs.push(b));
      stream.on('end', () => {
        sink.messages.push({
          from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '?',
          to: session.envelope.rcptTo.map((r) => r.address),
          body: Buffer.concat(bufs),
          at: Date.now(),
        });
        cb(null);
      });
    },
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return Object.assign(sink, {
    url: `smtp://127.0.0.1:${port}`, port,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  }) as SmtpSink;
}
