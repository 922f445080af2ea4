// A half-open agent socket (no heartbeat, never closed) is closed by the object, and
// its leases go back to the queue; an agent that keeps pinging stays connected.
import t from 'tap';
import { PING, type MessageFrame } from '../../protocol/wire.ts';
import { RawAgent } from '../helpers/raw-agent.ts';
import { AGENT_TOKEN, startTestWorker } from '../helpers/worker.ts';

const SILENT = 1200;

t.test('silent sockets are closed and their messages released; pinging ones stay', async (t) => {
  const w = await startTestWorker({ vars: { AGENT_SILENT_MS: String(SILENT), AFFINITY_MS: '0' } });
  t.teardown(() => w.stop());
  const connect = async (name: string) => {
    const a = new RawAgent(w.agentUrl(), AGENT_TOKEN);
    await a.hello({ agent: name, window: 4, credit: 8 << 20, fetch: true });
    return a;
  };
  const silent = await connect('silent');
  const id = String((await w.post('s@sender.test', 'alice@example.test', Buffer.from('Subject: x\r\n\r\nx\r\n'))).body.id);
  await silent.until((s) => s.some((x) => x.kind === 'frame' && x.frame.type === 'message' && x.frame.id === id));
  const alive = await connect('alive');
  const pinger = setInterval(() => alive.send(PING), 200);
  t.teardown(() => clearInterval(pinger));

  const closed = await silent.closed;
  t.equal(closed.code, 1000, 'the object closed the silent socket');
  const m = await alive.until((s) => s.find((x) => x.kind === 'frame' && x.frame.type === 'message' && x.frame.id === id), SILENT * 4);
  t.equal(m.kind === 'frame' ? (m.frame as MessageFrame).attempt : 0, 2, 'its message went to the live agent');
  t.ok(w.logs.some((l) => l.includes('agent.silent')), 'logged');
  await new Promise((r) => setTimeout(r, SILENT * 1.5));
  t.equal(alive.ws.readyState, alive.ws.OPEN, 'the pinging agent is still connected');
  alive.close();
});
