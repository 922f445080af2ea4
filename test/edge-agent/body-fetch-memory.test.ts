// A fetched body streams through the agent with bounded memory: what the LMTP client has
// read is garbage at once, whatever the body's size (issue #24: every chunk of a 25 MiB
// body stayed reachable until the fetch ended, through the stop promise each wait raced).
import t from 'tap';
import { createHash } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { fetchBody } from '../../edge-agent/session/body-fetch.ts';
import { InboundMessage } from '../../edge-agent/session/inbound.ts';
import { fetchHeader, msgId } from './scripted-object.ts';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
const MiB = 1024 * 1024;

t.test('bytes already read are not kept while the rest of a large body streams in', async (t) => {
  // One 64 KiB piece written again and again: the server itself holds no copy of the body.
  const piece = Buffer.alloc(64 * 1024, 'x');
  const pieces = 24 * 16;  // 24 MiB
  const md5 = createHash('md5');
  for (let i = 0; i < pieces; i++) md5.update(piece);
  const server = createServer((_req, res) => {
    res.writeHead(200, { 'Content-Length': String(pieces * piece.byteLength) });
    let i = 0;
    const more = (): void => {
      while (i < pieces) {
        i++;
        if (!res.write(piece)) return void res.once('drain', more);
      }
      res.end();
    };
    more();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }));
  const { port } = server.address() as AddressInfo;

  const header = fetchHeader(msgId(1), Buffer.alloc(0), Buffer.alloc(0), ['a@example.test'], 1, md5.digest('hex'));
  header.size = pieces * piece.byteLength;
  const msg = new InboundMessage(header, () => {});
  gc();
  const base = process.memoryUsage().arrayBuffers;
  const fetched = fetchBody(`ws://127.0.0.1:${port}/agent`, 'token', msg);
  let read = 0;
  let held = -1;
  for await (const chunk of msg) {
    read += chunk.byteLength;
    if (held < 0 && read >= 16 * MiB) {
      gc();
      held = process.memoryUsage().arrayBuffers - base;
    }
  }
  await fetched;
  t.equal(msg.failure, null, 'the body arrived whole, its MD5 right');
  t.equal(read, 24 * MiB);
  t.ok(held >= 0 && held < 6 * MiB, `with 16 MiB read, ${(held / MiB).toFixed(1)} MiB of buffers are still reachable (the fetch reads at most 1 MiB ahead)`);
});
