// Proxies for the unknown-outcome tests (doveadm-check.test.ts):
//
// lmtpCut: between the agent and Dovecot's LMTP, forwards line by line and, when armed, loses
// one of Dovecot's final replies (`250 2.0.0 <rcpt> <session> Saved`, sent once the message is
// stored): 'cut' closes both sides instead of forwarding it (the connection lost right after
// the 250), 'swallow' forwards nothing from then on and keeps the connection open (the agent
// waits for a reply that never comes, e.g. to be killed there).
//
// gate: a TCP forwarder that counts its connections and refuses them while `down` (Dovecot's
// doveadm HTTP API out of reach). Dovecot 2.3 closes the API's connection after each answer,
// so connections are requests.
import net from 'node:net';

export interface LmtpCut {
  port: number;
  /** The next final reply after `pass` others is lost, by `how`; then the proxy is disarmed. */
  arm(how: 'cut' | 'swallow', pass?: number): void;
  /** Final replies lost so far. */
  readonly lost: number;
  close(): Promise<void>;
}

const SAVED = /^250 2\.0\.0 <[^>]*> \S+ Saved/;

export async function lmtpCut(targetPort: () => number): Promise<LmtpCut> {
  let armed: { how: 'cut' | 'swallow'; pass: number } | null = null;
  let lost = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort(), '127.0.0.1');
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => undefined).on('close', () => { sockets.delete(s); client.destroy(); upstream.destroy(); });
    }
    client.on('data', (b: Buffer) => upstream.write(b));
    let pending = '';
    let mute = false;
    upstream.on('data', (b: Buffer) => {
      if (mute) return;
      pending += b.toString('latin1');
      for (let eol = pending.indexOf('\r\n'); eol >= 0 && !mute; eol = pending.indexOf('\r\n')) {
        const line = pending.slice(0, eol + 2);
        pending = pending.slice(eol + 2);
        if (armed && SAVED.test(line) && armed.pass-- === 0) {
          const { how } = armed;
          armed = null;
          lost++;
          if (how === 'cut') {
            client.destroy();
            upstream.destroy();
          }
          mute = true;
          return;
        }
        client.write(Buffer.from(line, 'latin1'));
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    arm(how, pass = 0) { armed = { how, pass }; },
    get lost() { return lost; },
    close: () => new Promise((r) => {
      for (const s of sockets) s.destroy();
      server.close(() => r());
    }),
  };
}

export interface Gate {
  port: number;
  url: string;
  /** Connections accepted (refused ones too). */
  readonly accepted: number;
  /** While true, every new connection is closed at once. */
  down: boolean;
  close(): Promise<void>;
}

export async function gate(targetPort: number): Promise<Gate> {
  let accepted = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    accepted++;
    if (g.down) return void client.destroy();
    const upstream = net.connect(targetPort, '127.0.0.1');
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => undefined).on('close', () => { sockets.delete(s); client.destroy(); upstream.destroy(); });
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  const g: Gate = {
    port, url: `http://127.0.0.1:${port}`, down: false,
    get accepted() { return accepted; },
    close: () => new Promise((r) => {
      for (const s of sockets) s.destroy();
      server.close(() => r());
    }),
  };
  return g;
}
