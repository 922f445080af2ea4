// The agent's peak memory with several large messages at once, side by side: configurations
// (another build of the agent, Node flags, environment) in turn, each on a fresh agent process,
// `--trials` rounds. Prints VmHWM, the idle RSS and how RSS splits into anonymous and
// file-backed pages (the Node binary's code), the time and the agent's CPU per round.
// Used for bench/results/2026-12-07-memory.md. Example:
//   node bench/memory-ab.ts --parallel=4 --trials=3 \
//     --configs='[{"name":"before","bundle":"/tmp/before.mjs"},{"name":"now"},{"name":"arena2","env":{"MALLOC_ARENA_MAX":"2"}}]'
// (a bundle: `buildAgent(file)` from edge-agent/package/build.ts run in another checkout).
// --size=<bytes> (default 25 MiB); --gc-log=<file>: the agent's non-JSON output (e.g. with
// "nodeFlags":["--trace-gc"]) appended there.
import { appendFileSync, readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { LmtpClient } from '../lmtp-proxy/client.ts';
import { startDovecot } from './lib/dovecot.ts';
import { drive } from './lib/driver.ts';
import { ctimeGranularity, MaildirWatcher } from './lib/maildir-watch.ts';
import { pieces, SENDER, template } from './lib/messages.ts';
import { startRelay, type AgentOptions } from './lib/paths.ts';
import { procStatus, treeCpu } from './lib/proc.ts';

const opt = (k: string): string | undefined => process.argv.find((a) => a.startsWith(`--${k}=`))?.slice(k.length + 3);
interface Config { name: string; bundle?: string; nodeFlags?: string[]; env?: Record<string, string> }
const configs = JSON.parse(opt('configs') ?? '[{"name":"this tree"}]') as Config[];
const trials = Number(opt('trials') ?? '3');
const parallel = Number(opt('parallel') ?? '4');
const size = Number(opt('size') ?? String(25 * 1024 * 1024));
const gcLog = opt('gc-log');
const RECIPIENTS = ['alice', 'bob', 'carol', 'dave'].map((u) => `${u}@example.test`);
const MB = (b: number): string => (b / 1e6).toFixed(1);

/** Anonymous and file-backed resident bytes (/proc/<pid>/smaps_rollup). */
function split(pid: number): { anon: number; file: number } {
  const s = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  const kb = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(s)?.[1] ?? 0) * 1024;
  return { anon: kb('Anonymous'), file: kb('Rss') - kb('Anonymous') };
}
/** The agent's CPU so far, ms (lib/proc.ts). */
const cpuMs = (pid: number): number => Math.round((treeCpu({ agent: [pid] }).agent ?? 0) * 1000);

const dovecot = await startDovecot({ users: RECIPIENTS.map((r) => r.split('@')[0] ?? '') });
const init = new LmtpClient({ protocol: 'lmtp', host: '127.0.0.1', port: dovecot.lmtpPort });
for (const r of RECIPIENTS) await init.deliver({ sender: SENDER, recipients: [r] }, (async function* () { yield Buffer.from('Subject: init\r\n\r\ninit\r\n'); })());
await init.close();
const watcher = new MaildirWatcher(RECIPIENTS.map((r) => dovecot.maildirOf(r)), await ctimeGranularity(dirname(dirname(dovecot.logPath))));
watcher.start();
const relay = await startRelay(dovecot.lmtpPort, {});
if (gcLog) relay.agentLines((l) => { if (!l.startsWith('{')) appendFileSync(gcLog, `${l}\n`); });
const t = template(size, 'mem');
const peaks: Record<string, string[]> = {};
try {
  for (let trial = 0; trial < trials; trial++) {
    for (const c of configs) {
      await relay.stopAgent();
      const o: AgentOptions = { nodeFlags: c.nodeFlags ?? [], env: c.env ?? {}, ...(c.bundle ? { bundle: c.bundle } : {}) };
      await relay.startAgent(o);
      const pid = relay.agentPid() as number;
      await new Promise((r) => setTimeout(r, 300));
      const idle = procStatus(pid)?.rss ?? 0;
      const idleSplit = split(pid);
      await watcher.clear();
      const tag = `ab${process.pid}.${trial}.${configs.indexOf(c)}`;
      const cpu0 = cpuMs(pid);
      const t0 = performance.now();
      const sent = await drive({
        target: relay.target, count: parallel, concurrency: parallel, sender: SENDER,
        message: (i) => ({ id: `${tag}.${i}`, recipient: RECIPIENTS[i % RECIPIENTS.length] ?? '', pieces: pieces(t, `${tag}.${i}`), size }),
      });
      const ok = sent.filter((s) => s.ok).map((s) => s.id);
      if (ok.length !== parallel) throw new Error(`${c.name}: refused: ${sent.map((s) => s.reply).join('; ')}`);
      await watcher.waitFor(ok, 120_000 * parallel);
      const ms = Math.round(performance.now() - t0);
      await new Promise((r) => setTimeout(r, 200));
      const cpu = cpuMs(pid) - cpu0;
      const st = procStatus(pid);
      const after = split(pid);
      console.log(`${c.name.padEnd(16)} VmHWM ${MB(st?.hwm ?? 0)} MB; idle ${MB(idle)} (anon ${MB(idleSplit.anon)}, file ${MB(idleSplit.file)}); after ${MB(st?.rss ?? 0)} (anon ${MB(after.anon)}, file ${MB(after.file)}); ${ms} ms; agent CPU ${cpu} ms`);
      (peaks[c.name] ??= []).push(`${MB(st?.hwm ?? 0)}/${cpu}`);
    }
  }
  console.log(`VmHWM MB / agent CPU ms, ${parallel} x ${MB(size)} MB at once, per round:`);
  for (const [k, v] of Object.entries(peaks)) console.log(`  ${k.padEnd(16)} ${v.join('  ')}`);
} finally {
  await relay.stop();
  await dovecot.stop();
}
