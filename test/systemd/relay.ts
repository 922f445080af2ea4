// The Worker for test/systemd/run.ts, run INSIDE the booted container (its network is private:
// loopback only): the real Worker and queue in local workerd (test/helpers/worker.ts), which the
// packaged agent, a systemd unit there, connects to. One JSON line out per line in:
//   start          → {"agentUrl":"ws://127.0.0.1:…/agent","token":"…"}
//   post <to> <id> → {"status":200,…}   a message posted as Email Routing hands it over
//   summary        → the queue's counts
// and it stops when stdin ends.
import { createInterface } from 'node:readline';
import { AGENT_TOKEN, startTestWorker } from '../helpers/worker.ts';
import { systemdMessage } from './message.ts';

const w = await startTestWorker();
const say = (o: unknown): void => { process.stdout.write(`${JSON.stringify(o)}\n`); };
say({ agentUrl: w.agentUrl(), token: AGENT_TOKEN });
for await (const line of createInterface({ input: process.stdin })) {
  const [cmd, to = '', id = ''] = line.trim().split(/\s+/);
  try {
    if (cmd === 'post') say(await w.post('sender@example.net', to, systemdMessage(id)));
    else if (cmd === 'summary') say(await w.summary());
    else say({ error: `unknown command ${JSON.stringify(line)}` });
  } catch (err) {
    say({ error: (err as Error).message });
  }
}
await w.stop();
