// An in-process agent against a scripted object and a scripted LMTP peer, its
// log events kept in memory: the setup most agent tests share.
import type { Test } from 'tap';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startAgent, type Agent, type AgentOptions } from '../../edge-agent/agent.ts';
import { validateConfig, type AgentConfig } from '../../edge-agent/agent-config.ts';
import { jsonLogger } from '../../edge-agent/ops/log.ts';
import { startLmtpPeer, type PeerMode } from './lmtp-peer.ts';
import type { LogEvent } from './agent-process.ts';
import { scriptedObject, TOKEN } from './scripted-object.ts';

export async function inProcess(t: Test, mode: PeerMode = 'store') {
  const dir = await mkdtemp(join(tmpdir(), 'mailbridge-agent-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const peer = await startLmtpPeer(mode);
  t.teardown(() => peer.close());
  const object = await scriptedObject(t);
  const events: LogEvent[] = [];
  const debug = process.env.DEBUG_AGENT ? jsonLogger() : null;
  const agents: Agent[] = [];
  const agent = (cfg: Partial<AgentConfig> = {}, opts: AgentOptions = {}): Agent => {
    const config = validateConfig({ workerUrl: object.url, token: TOKEN, target: peer.url, name: 'test-agent', heartbeatMs: 1000, ...cfg });
    const a = startAgent(config, join(dir, 'state'), (event, fields = {}) => {
      events.push({ event, ...fields });
      debug?.(event, fields);
    }, opts);
    agents.push(a);
    return a;
  };
  t.teardown(async () => { for (const a of agents) await a.stop(1000); });
  return {
    dir, peer, object, agent, events,
    /** Events with this name so far. */
    named: (name: string): LogEvent[] => events.filter((e) => e.event === name),
  };
}

export { poll, until } from '../helpers/wait.ts';

/** One metric's value from a Prometheus text exposition (a sample line `name{labels} value`). */
export function metric(text: string, sample: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(sample + ' '));
  return line === undefined ? undefined : Number(line.slice(sample.length + 1));
}
