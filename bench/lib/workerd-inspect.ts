// CPU profile of the Worker + Durable Object isolate inside workerd, over the V8 inspector
// protocol. workerd has an --inspector-addr flag but local/worker-runtime.ts does not pass
// one, so the bench points Miniflare at a wrapper script (MINIFLARE_WORKERD_PATH) that adds
// it; then Profiler.start / Profiler.stop over the isolate's WebSocket give a .cpuprofile.
// Native work done on the isolate's thread for JS calls (SQLite, SHA-256, WebSocket
// compression of ws.send) is attributed to the calling JS function, as in node --cpu-prof.
import { chmod, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import WebSocket from 'ws';

/** Writes an executable wrapper around the real workerd binary that enables the inspector. */
export async function inspectorWrapper(dir: string, port: number): Promise<string> {
  const mod: unknown = createRequire(import.meta.url)('workerd');
  const bin = typeof mod === 'string' ? mod
    : typeof mod === 'object' && mod !== null && 'default' in mod && typeof mod.default === 'string' ? mod.default : null;
  if (bin === null) throw new Error('cannot find the workerd binary through the workerd package');
  const file = join(dir, 'workerd-with-inspector.sh');
  await writeFile(file, `#!/bin/sh\nexec "${bin}" "$@" --inspector-addr=127.0.0.1:${port}\n`);
  await chmod(file, 0o755);
  return file;
}

interface Pending { resolve(v: unknown): void; reject(e: Error): void }

/** One inspector session with the user Worker's isolate (id "core:user:<name>"). */
export interface IsolateSession { call(method: string, params?: Record<string, unknown>): Promise<unknown>; close(): void }

export async function inspectIsolate(port: number): Promise<IsolateSession> {
  const list = (await (await fetch(`http://127.0.0.1:${port}/json/list`)).json()) as { id: string; webSocketDebuggerUrl: string }[];
  const target = list.find((t) => t.id.startsWith('core:user:'));
  if (!target) throw new Error(`no user worker among the inspector targets: ${list.map((t) => t.id).join(', ')}`);
  const ws = new WebSocket(target.webSocketDebuggerUrl, { perMessageDeflate: false, maxPayload: 512 * 1024 * 1024 });
  await new Promise<void>((resolve, reject) => { ws.once('open', () => resolve()); ws.once('error', reject); });
  let seq = 0;
  const pending = new Map<number, Pending>();
  ws.on('message', (data) => {
    const msg = JSON.parse(String(data)) as { id?: number; result?: unknown; error?: { message: string } };
    if (msg.id === undefined) return;
    const p = pending.get(msg.id);
    pending.delete(msg.id);
    if (msg.error) p?.reject(new Error(msg.error.message));
    else p?.resolve(msg.result);
  });
  return {
    call: (method, params = {}) => new Promise((resolve, reject) => {
      const id = ++seq;
      pending.set(id, { resolve, reject });
      ws.send(JSON.stringify({ id, method, params }));
    }),
    close: () => ws.close(),
  };
}

export interface IsolateProfiler { stop(): Promise<unknown> }

/** Starts the sampling profiler in the user Worker's isolate. */
export async function profileIsolate(port: number, intervalUs = 200): Promise<IsolateProfiler> {
  const session = await inspectIsolate(port);
  await session.call('Profiler.enable');
  await session.call('Profiler.setSamplingInterval', { interval: intervalUs });
  await session.call('Profiler.start');
  return {
    async stop() {
      const r = (await session.call('Profiler.stop')) as { profile: unknown };
      session.close();
      return r.profile;
    },
  };
}

/**
 * The isolate's memory as V8 counts it against the 128 MB an isolate may use: the JS heap
 * (`usedSize`) and the ArrayBuffer backing stores outside it (`backingStorageSize`, where
 * this V8 reports it; 0 where it does not).
 */
export async function heapUsage(session: IsolateSession): Promise<{ used: number; backing: number }> {
  const r = (await session.call('Runtime.getHeapUsage')) as { usedSize: number; backingStorageSize?: number };
  return { used: r.usedSize, backing: r.backingStorageSize ?? 0 };
}
