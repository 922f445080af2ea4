// The agent as a process, the way systemd runs it (node edge-agent/main.ts, its bundle, or the executable),
// with its JSON log lines collected so a test can wait for events.
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const MAIN = fileURLToPath(new URL('../../edge-agent/main.ts', import.meta.url));

export interface LogEvent { event: string; [k: string]: unknown }

export interface AgentProcess {
  child: ChildProcess;
  /** Exit code (null when killed by a signal). */
  exit: Promise<number | null>;
  out(): string;
  err(): string;
  events(): LogEvent[];
  /** The first event named `event` (matching `pred`), waiting at most `ms` for it. */
  waitEvent(event: string, pred?: (e: LogEvent) => boolean, ms?: number): Promise<LogEvent>;
}

/**
 * `script`: run this file (e.g. the built dist/edge-agent.mjs) with these Node flags instead of
 * main.ts; `{ executable }`: run that file itself (dist/mailbridge-agent), with `env` as its
 * whole environment but PATH (which `env` may replace).
 */
export function runAgent(env: Record<string, string>, args: string[] = [], script?: { file: string; nodeFlags: string[] } | { executable: string }): AgentProcess {
  const spawnEnv = { PATH: process.env.PATH ?? '', ...env };
  const child = script && 'executable' in script
    ? spawn(script.executable, args, { env: spawnEnv, stdio: ['ignore', 'pipe', 'pipe'] })
    : spawn(process.execPath, ['--disable-warning=ExperimentalWarning', ...(script ? [...script.nodeFlags, script.file] : [MAIN]), ...args], {
      env: spawnEnv, stdio: ['ignore', 'pipe', 'pipe'],
    });
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (c: Buffer) => { stdout += c.toString('utf8'); });
  child.stderr?.on('data', (c: Buffer) => { stderr += c.toString('utf8'); });
  const exit = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  const events = (): LogEvent[] => stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as LogEvent);
  return {
    child, exit, out: () => stdout, err: () => stderr, events,
    async waitEvent(event, pred = () => true, ms = 20_000) {
      const until = Date.now() + ms;
      let afterExit = 0;  // output may still arrive just after the exit
      for (;;) {
        const hit = events().find((e) => e.event === event && pred(e));
        if (hit) return hit;
        if (Date.now() > until || (child.exitCode !== null && ++afterExit > 8)) {
          throw new Error(`no ${event} event within ${ms} ms (exit ${child.exitCode}); log:\n${stdout}${stderr}`);
        }
        await new Promise((r) => setTimeout(r, 25));
      }
    },
  };
}
