// An in-process agent against a scripted object and a scripted LMTP peer, its
// log events kept in memory: the setup most agent tests share.
import type { Test } from 'tap';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startAgent, type Agent, type AgentOptions } from '../../edge-agent/agent.ts';
import { validateConfig, type AgentConfig } from '../../edge-agent/config.ts';
import { jsonLogger } from '../../edge-agent/log.ts';
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

/** Polls until `cond` holds; fails after `ms` (a bound, not a timing goal). */
export async function until(what: string, cond: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Reads until `ok` holds for what was read, and returns that; fails after `ms`. */
export async function poll<T>(what: string, read: () => Promise<T>, ok: (v: T) => boolean, ms = 10_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await read();
    if (ok(v)) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; last: ${JSON.stringify(v)}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** One metric's value from a Prometheus text exposition (a sample line `name{labels} value`). */
export function metric(text: string, sample: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(sample + ' '));
  return line === undefined ? undefined : Number(line.slice(sample.length + 1));
}
