// Body fetches reuse their connection to the Worker (a keep-alive agent: no handshake per
// message). A kept connection may be closed by the far side just as it is reused: that fetch
// is made once more on a new connection instead of failing the message (issue #24).
import t from 'tap';
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { fetchBody } from '../../edge-agent/session/body-fetch.ts';
import { InboundMessage } from '../../edge-agent/session/inbound.ts';
import { fetchHeader, msgId } from './scripted-object.ts';

t.test('a reused connection closed under the request: fetched again on a new one', async (t) => {
  const body = Buffer.from('Subject: kept\r\n\r\nalive\r\n');
  const served = new WeakMap<Socket, number>();
  let connections = 0;
  let dropped = 0;
  const server = createServer((req: IncomingMessage, res) => {
    const n = (served.get(req.socket) ?? 0) + 1;
    served.set(req.socket, n);
    // The second request on a connection: the connection is gone, as after an idle timeout.
    if (n > 1) {
      dropped++;
      req.socket.destroy();
      return;
    }
    res.writeHead(200, { 'Content-Length': String(body.byteLength) });
    res.end(body);
  });
  server.on('connection', () => { connections++; });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }));
  const url = `ws://127.0.0.1:${(server.address() as AddressInfo).port}/agent`;

  const fetchOne = async (n: number): Promise<{ failure: string | null; got: Buffer }> => {
    const msg = new InboundMessage(fetchHeader(msgId(n), Buffer.alloc(0), body, ['a@example.test'], 1, createHash('md5').update(body).digest('hex')), () => {});
    const fetched = fetchBody(url, 'token', msg);
    const parts: Uint8Array[] = [];
    try {
      for await (const p of msg) parts.push(p);
    } catch {
      // reported by failure
    }
    await fetched;
    return { failure: msg.failure?.message ?? null, got: Buffer.concat(parts) };
  };
  t.same(await fetchOne(1), { failure: null, got: body }, 'first fetch');
  t.same(await fetchOne(2), { failure: null, got: body }, 'second fetch: the kept connection was dropped, fetched again');
  t.equal(dropped, 1, 'the second fetch did reuse the first connection');
  t.equal(connections, 2, 'and then made a new one');
});
