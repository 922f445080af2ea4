// A TCP proxy that injects network faults between two of our components:
// 'pass' forwards; 'refuse' closes every connection, old and new (a peer going down);
// 'blackhole' keeps connections open but forwards nothing (a silently dead path,
// only heartbeats can find it); 'slow' forwards in small delayed pieces.
import net from 'node:net';

export type ProxyMode = 'pass' | 'refuse' | 'blackhole' | 'slow';

export interface FaultProxy {
  port: number;
  mode: ProxyMode;
  /** Where new connections go (the target may move, e.g. a restarted Dovecot). */
  targetPort: number;
  /** Connections accepted so far. */
  readonly accepted: number;
  /** Drops every open connection (both sides see it closed). */
  cut(): void;
  close(): Promise<void>;
}

const SLOW_PIECE = 4096;
const SLOW_DELAY_MS = 5;

export async function startFaultProxy(targetPort: number): Promise<FaultProxy> {
  const pairs = new Set<[net.Socket, net.Socket]>();
  let mode: ProxyMode = 'pass';
  let accepted = 0;

  const forward = (from: net.Socket, to: net.Socket): void => {
    from.on('data', (chunk: Buffer) => {
      if (mode === 'blackhole') return;  // swallowed: neither side hears of it
      if (mode !== 'slow') {
        if (!to.write(chunk)) from.pause();
        return;
      }
      from.pause();
      void (async () => {
        for (let i = 0; i < chunk.length; i += SLOW_PIECE) {
          await new Promise((r) => setTimeout(r, SLOW_DELAY_MS));
          to.write(chunk.subarray(i, i + SLOW_PIECE));
        }
        from.resume();
      })();
    });
    to.on('drain', () => from.resume());
  };

  const server = net.createServer((client) => {
    accepted++;
    if (mode === 'refuse') return client.destroy();
    const upstream = net.connect(proxy.targetPort, '127.0.0.1');
    const pair: [net.Socket, net.Socket] = [client, upstream];
    pairs.add(pair);
    const end = (): void => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    for (const s of pair) s.on('error', end).on('close', end);
    forward(client, upstream);
    forward(upstream, client);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));

  const proxy: FaultProxy = {
    port: (server.address() as net.AddressInfo).port,
    targetPort,
    get accepted() { return accepted; },
    get mode() { return mode; },
    set mode(m: ProxyMode) {
      mode = m;
      if (m === 'refuse') proxy.cut();
    },
    cut() {
      for (const [a, b] of pairs) { a.destroy(); b.destroy(); }
    },
    async close() {
      for (const [a, b] of pairs) { a.destroy(); b.destroy(); }
      await new Promise((r) => server.close(r));
    },
  };
  return proxy;
}
