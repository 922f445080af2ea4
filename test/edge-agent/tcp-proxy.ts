// A TCP proxy that can stop forwarding on the connections it holds without
// closing them: what a dead NAT mapping or a dropped route looks like to both
// ends (no FIN, no RST, just silence). New connections are forwarded normally.
import net from 'node:net';

export interface TcpProxy {
  port: number;
  /** Connections accepted so far. */
  readonly accepted: number;
  /** Bytes forwarded so far, client to server (up) and back (down): how much an idle link carries. */
  readonly bytes: { up: number; down: number };
  /** Existing connections: bytes in both directions are swallowed from now on. */
  stall(): void;
  /** Existing connections: bytes from the client to the server are swallowed from now on. */
  muteClient(): void;
  close(): Promise<void>;
}

interface Pair { client: net.Socket; server: net.Socket; up: boolean; down: boolean }

export async function startTcpProxy(targetPort: number): Promise<TcpProxy> {
  const pairs = new Set<Pair>();
  let accepted = 0;
  const bytes = { up: 0, down: 0 };
  const server = net.createServer((client) => {
    accepted++;
    const upstream = net.connect(targetPort, '127.0.0.1');
    const pair: Pair = { client, server: upstream, up: true, down: true };
    pairs.add(pair);
    const end = (): void => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    for (const s of [client, upstream]) s.on('error', end).on('close', end);
    client.on('data', (b: Buffer) => {
      bytes.up += b.byteLength;
      if (pair.up) upstream.write(b);
    });
    upstream.on('data', (b: Buffer) => {
      bytes.down += b.byteLength;
      if (pair.down) client.write(b);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    get accepted() { return accepted; },
    bytes,
    stall() { for (const p of pairs) { p.up = false; p.down = false; } },
    muteClient() { for (const p of pairs) p.up = false; },
    close: () => new Promise((r) => {
      for (const p of pairs) { p.client.destroy(); p.server.destroy(); }
      server.close(() => r());
    }),
  };
}
