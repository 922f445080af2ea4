// Result types (what bench/results/<date>.json holds) and the markdown printed at the end.
import type { PathName } from './paths.ts';
import type { ProfileSummary } from './profile.ts';
import { spread, type Spread, type Summary } from './stats.ts';

export interface CellResult {
  path: PathName;
  size: number;
  concurrency: number;
  count: number;
  /** Messages the path answered 2xx to. */
  accepted: number;
  /** Of those, files seen in the Maildir. */
  delivered: number;
  failures: string[];
  seconds: number;
  msgsPerSec: number;
  mibPerSec: number;
  latencyMs: {
    /** tDot (client handed over the last byte) -> file in new/. */
    dataEndToMaildir: Summary;
    /** SMTP/LMTP final reply at the client -> file in new/ (negative: stored before the reply). */
    replyToMaildir: Summary;
    /** tDot -> the final reply: how long the sender waits for its 250. */
    dataEndToReply: Summary;
  };
  /** CPU ms per delivered message, by process tree. */
  cpuMsPerMsg: Record<string, number>;
  /** CPU of processes that are not part of this bench (other people's tests), in cores. */
  backgroundCores: number;
  /** Watcher callback time minus the file's ctime (the rename), ms: the timing method's error. */
  detectionLagMs: Summary;
  reconciled: number;
  byteExact: boolean | null;
}

export interface BacklogResult {
  count: number;
  postSeconds: number;
  postRate: number;
  queuedBeforeAgent: number;
  agentSpawnToSessionMs: number;
  delivered: number;
  /** From spawning the agent process to the last file. */
  secondsFromSpawn: number;
  /** From the first file to the last. */
  secondsSteady: number;
  rateFromSpawn: number;
  rateSteady: number;
  liveRate: number | null;
  liveCell: string;
  agentCpuMsPerMsg: number | null;
  workerdCpuMsPerMsg: number | null;
  dovecotCpuMsPerMsg: number | null;
  /** Delivery rate over each tenth of the backlog, in order: does the drain slow down as it goes? */
  rateByDecile: number[];
  leftInQueue: Record<string, number> | null;
}

/** The home side (Dovecot, agent) on one core, everything else on the other: see runHomeCore. */
export interface HomeCoreResult {
  homeCpu: string;
  elsewhereCpu: string;
  direct: CellResult;
  /** Direct LMTP with the sender on the home core as well (absent in earlier runs). */
  directLocal?: CellResult;
  relayLive: CellResult;
  drain: BacklogResult;
  drainVsDirect: number;
}

export interface MemoryResult {
  path: PathName;
  /** A variant of the path's set-up (e.g. the agent run from a JS bundle), or null. */
  variant: string | null;
  size: number;
  delivered: boolean;
  dataEndToMaildirMs: number | null;
  dataEndToReplyMs: number | null;
  /** Per process: VmHWM (single process, peak reset or fresh before the message) and/or sampled tree RSS. */
  peaks: Record<string, { idleBytes: number | null; hwmBytes: number | null; sampledMaxBytes: number | null }>;
  note: string;
}

export interface FidelityResult { path: PathName; stored: boolean; exact: boolean; replacementChars: number; note: string }

export interface TargetResult { id: string; target: string; value: string; met: boolean | null; basis: string }

export interface PathInfo { name: PathName; available: boolean; reason: string | null; detail: string }

export interface RunResult {
  startedAt: string;
  finishedAt: string;
  durationSeconds: number;
  mode: 'quick' | 'full';
  git: { head: string; dirtyFiles: number };
  machine: { cores: number; cpu: string; memGiB: number; kernel: string; node: string; dovecot: string; postfix: string | null; loadavgAtStart: string };
  config: Record<string, unknown>;
  paths: PathInfo[];
  cells: CellResult[];
  backlog: BacklogResult | null;
  /** Absent in runs before it existed. */
  homeCore?: HomeCoreResult | null;
  memory: MemoryResult[];
  fidelity: FidelityResult[];
  profiles: ProfileSummary[];
  targets: TargetResult[];
  notes: string[];
}

export interface ResultsFile { date: string; runs: RunResult[] }

const ORDER: PathName[] = ['direct-lmtp', 'relay', 'postfix', 'http-api'];
const KiB = 1024;
const MiB = 1024 * 1024;

export function sizeLabel(n: number): string {
  if (n >= MiB && n % MiB === 0) return `${n / MiB} MiB`;
  if (n % KiB === 0) return `${n / KiB} KiB`;
  return `${n} B`;
}

const f1 = (x: number | null | undefined): string => (x === null || x === undefined || !Number.isFinite(x) ? '–' : x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));
const mb = (b: number | null | undefined): string => (b === null || b === undefined || !Number.isFinite(b) ? '–' : `${(b / 1e6).toFixed(1)} MB`);
const ratio = (a: number | undefined, b: number | undefined): string => (a && b ? `${(a / b).toFixed(2)}×` : '–');

export function cellKey(c: { size: number; concurrency: number }): string {
  return `${sizeLabel(c.size)} c${c.concurrency}`;
}

function grid(run: RunResult): { key: string; size: number; concurrency: number; by: Map<PathName, CellResult> }[] {
  const rows = new Map<string, { key: string; size: number; concurrency: number; by: Map<PathName, CellResult> }>();
  for (const c of run.cells) {
    const key = cellKey(c);
    const row = rows.get(key) ?? { key, size: c.size, concurrency: c.concurrency, by: new Map() };
    row.by.set(c.path, c);
    rows.set(key, row);
  }
  return [...rows.values()].sort((a, b) => a.size - b.size || a.concurrency - b.concurrency);
}

export function markdown(run: RunResult, history: RunResult[]): string {
  const out: string[] = [];
  const paths = ORDER.filter((p) => run.paths.some((x) => x.name === p));
  const m = run.machine;
  out.push(`## mailbridge bench — ${run.mode} mode, ${run.startedAt}`);
  out.push('');
  out.push(`Machine: ${m.cores} cores (${m.cpu}), ${m.memGiB} GiB, Linux ${m.kernel}, Node ${m.node}, Dovecot ${m.dovecot}, Postfix ${m.postfix ?? 'not available'}; load average at start ${m.loadavgAtStart}. ` +
    `Git ${run.git.head.slice(0, 10)}${run.git.dirtyFiles ? ` + ${run.git.dirtyFiles} uncommitted files` : ''}. Took ${Math.round(run.durationSeconds)} s.`);
  for (const p of run.paths) if (!p.available) out.push(`\n**${p.name} not measured:** ${p.reason ?? ''}`);
  out.push('');
  out.push('### Throughput, until the last file is in the Maildir (messages/s · MiB/s)');
  out.push('');
  out.push(`| message | conc. | ${paths.join(' | ')} | relay ÷ direct | relay ÷ postfix | background load |`);
  out.push(`|---|---:|${paths.map(() => '---:').join('|')}|---:|---:|---:|`);
  for (const row of grid(run)) {
    const cells = paths.map((p) => {
      const c = row.by.get(p);
      if (!c) return '–';
      const lost = c.accepted - c.delivered;
      const bad = c.count - c.accepted;
      return `${f1(c.msgsPerSec)} · ${f1(c.mibPerSec)}${bad ? ` (${bad} refused)` : ''}${lost ? ` (${lost} missing)` : ''}`;
    });
    const bg = Math.max(...[...row.by.values()].map((c) => c.backgroundCores));
    out.push(`| ${sizeLabel(row.size)} | ${row.concurrency} | ${cells.join(' | ')} | ${ratio(row.by.get('relay')?.msgsPerSec, row.by.get('direct-lmtp')?.msgsPerSec)} | ${ratio(row.by.get('relay')?.msgsPerSec, row.by.get('postfix')?.msgsPerSec)} | ≤ ${bg.toFixed(2)} cores |`);
  }
  out.push('');
  out.push('### Latency, end of DATA → file in Maildir (ms, p50 / p95 / p99)');
  out.push('');
  out.push('"End of DATA" = the moment the sending client handed over the last byte (it writes the final dot / BDAT LAST in that tick).');
  out.push('');
  out.push(`| message | conc. | ${paths.join(' | ')} | relay added p50 / p99 |`);
  out.push(`|---|---:|${paths.map(() => '---:').join('|')}|---:|`);
  for (const row of grid(run)) {
    const cells = paths.map((p) => {
      const l = row.by.get(p)?.latencyMs.dataEndToMaildir;
      return l ? `${f1(l.p50)} / ${f1(l.p95)} / ${f1(l.p99)}` : '–';
    });
    const r = row.by.get('relay')?.latencyMs.dataEndToMaildir;
    const d = row.by.get('direct-lmtp')?.latencyMs.dataEndToMaildir;
    out.push(`| ${sizeLabel(row.size)} | ${row.concurrency} | ${cells.join(' | ')} | ${r && d ? `${f1(r.p50 - d.p50)} / ${f1(r.p99 - d.p99)}` : '–'} |`);
  }
  out.push('');
  out.push('### The sender\'s view: end of DATA → its 250, and 250 → file in Maildir (ms, p50 / p99)');
  out.push('');
  out.push('A negative "250 → file" means the file was stored before the 250 reached the sender (direct LMTP; the relay and the HTTP API, whose 250 waits for Dovecot; Postfix answers after queueing, then delivers).');
  out.push('');
  out.push(`| message | conc. | ${paths.map((p) => `${p}: DATA→250 · 250→file`).join(' | ')} |`);
  out.push(`|---|---:|${paths.map(() => '---:').join('|')}|`);
  for (const row of grid(run)) {
    const cells = paths.map((p) => {
      const c = row.by.get(p);
      if (!c) return '–';
      const a = c.latencyMs.dataEndToReply;
      const b = c.latencyMs.replyToMaildir;
      return `${f1(a.p50)} / ${f1(a.p99)} · ${f1(b.p50)} / ${f1(b.p99)}`;
    });
    out.push(`| ${sizeLabel(row.size)} | ${row.concurrency} | ${cells.join(' | ')} |`);
  }
  out.push('');
  out.push('### CPU time per message (ms), by process');
  out.push('');
  const comps = [...new Set(run.cells.flatMap((c) => Object.keys(c.cpuMsPerMsg)))];
  out.push(`| path | message | conc. | ${comps.join(' | ')} | total |`);
  out.push(`|---|---|---:|${comps.map(() => '---:').join('|')}|---:|`);
  for (const p of paths) {
    for (const c of run.cells.filter((x) => x.path === p).sort((a, b) => a.size - b.size || a.concurrency - b.concurrency)) {
      const vals = comps.map((k) => f1(c.cpuMsPerMsg[k]));
      const total = Object.values(c.cpuMsPerMsg).reduce((a, b) => a + b, 0);
      out.push(`| ${p} | ${sizeLabel(c.size)} | ${c.concurrency} | ${vals.join(' | ')} | ${f1(total)} |`);
    }
  }
  if (run.memory.length) {
    out.push('');
    out.push(`### One ${sizeLabel(run.memory[0]?.size ?? 0)} message: time and peak memory`);
    out.push('');
    out.push('| path | DATA end → Maildir | DATA end → 250 | peak memory (process: idle → peak) |');
    out.push('|---|---:|---:|---|');
    for (const r of run.memory) {
      const peaks = Object.entries(r.peaks).map(([k, v]) => `${k}: ${v.idleBytes !== null ? `${mb(v.idleBytes)} → ` : ''}${v.hwmBytes !== null ? `${mb(v.hwmBytes)} (VmHWM)` : ''}${v.hwmBytes !== null && v.sampledMaxBytes !== null ? ', ' : ''}${v.sampledMaxBytes !== null ? `${mb(v.sampledMaxBytes)} (sampled)` : ''}`).join('; ');
      out.push(`| ${r.path}${r.variant ? ` (${r.variant})` : ''} | ${r.delivered ? `${f1(r.dataEndToMaildirMs)} ms` : 'not delivered'} | ${f1(r.dataEndToReplyMs)} ms | ${peaks || '–'}${r.note ? ` — ${r.note}` : ''} |`);
    }
  }
  const b = run.backlog;
  if (b) {
    out.push('');
    out.push(`### Backlog: ${b.count} × 10 KiB queued with the agent stopped, then the agent started`);
    out.push('');
    out.push('| queued via /dev/email | queued before start | agent spawn → session | drained | from spawn | steady (first → last file) | live relay (' + b.liveCell + ') | drain ÷ live | agent CPU/msg | workerd CPU/msg | Dovecot CPU/msg |');
    out.push('|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
    out.push(`| ${f1(b.postRate)} msg/s | ${b.queuedBeforeAgent} | ${f1(b.agentSpawnToSessionMs)} ms | ${b.delivered} | ${f1(b.rateFromSpawn)} msg/s (${f1(b.secondsFromSpawn)} s) | ${f1(b.rateSteady)} msg/s | ${f1(b.liveRate)} msg/s | ${b.liveRate ? (b.rateFromSpawn / b.liveRate).toFixed(2) : '–'}× | ${f1(b.agentCpuMsPerMsg)} ms | ${f1(b.workerdCpuMsPerMsg)} ms | ${f1(b.dovecotCpuMsPerMsg)} ms |`);
    out.push('');
    out.push(`Drain rate by tenth of the backlog (msg/s): ${b.rateByDecile.map((x) => f1(x)).join(', ')}`);
  }
  const h = run.homeCore;
  if (h) {
    const cpu = (c: Record<string, number>, k: string): string => f1(c[k] ?? Number.NaN);
    out.push('');
    out.push(`### The home side on a core of its own (CPU ${h.homeCpu}: Dovecot, agent; CPU ${h.elsewhereCpu}: sender, ingress, workerd), 10 KiB`);
    out.push('');
    out.push('| | msg/s | p50 / p99 ms | Dovecot CPU/msg | agent CPU/msg | ingress + workerd CPU/msg |');
    out.push('|---|---:|---:|---:|---:|---:|');
    const l = (c: CellResult): string => `${f1(c.latencyMs.dataEndToMaildir.p50)} / ${f1(c.latencyMs.dataEndToMaildir.p99)}`;
    out.push(`| direct LMTP, c8 | ${f1(h.direct.msgsPerSec)} | ${l(h.direct)} | ${cpu(h.direct.cpuMsPerMsg, 'dovecot')} ms | – | – |`);
    if (h.directLocal) out.push(`| direct LMTP, c8, sender on CPU ${h.homeCpu} too | ${f1(h.directLocal.msgsPerSec)} | ${l(h.directLocal)} | ${cpu(h.directLocal.cpuMsPerMsg, 'dovecot')} ms | sender ${cpu(h.directLocal.cpuMsPerMsg, 'bench driver')} ms | – |`);
    out.push(`| relay live, c8 (bounded by CPU ${h.elsewhereCpu}) | ${f1(h.relayLive.msgsPerSec)} | ${l(h.relayLive)} | ${cpu(h.relayLive.cpuMsPerMsg, 'dovecot')} ms | ${cpu(h.relayLive.cpuMsPerMsg, 'agent')} ms | ${f1((h.relayLive.cpuMsPerMsg['ingress (node)'] ?? 0) + (h.relayLive.cpuMsPerMsg.workerd ?? 0))} ms |`);
    out.push(`| relay draining ${h.drain.count} queued | ${f1(h.drain.rateFromSpawn)} (steady ${f1(h.drain.rateSteady)}) | – | ${f1(h.drain.dovecotCpuMsPerMsg)} ms | ${f1(h.drain.agentCpuMsPerMsg)} ms | workerd ${f1(h.drain.workerdCpuMsPerMsg)} ms |`);
    out.push('');
    out.push(`Drain ÷ direct: **${h.drainVsDirect.toFixed(2)}×**.`);
  }
  if (run.fidelity.length) {
    out.push('');
    out.push('### Bytes: an 8-bit Shift_JIS message, stored byte for byte?');
    out.push('');
    out.push('| path | stored | byte-exact | U+FFFD in the stored copy | note |');
    out.push('|---|---|---|---:|---|');
    for (const r of run.fidelity) out.push(`| ${r.path} | ${r.stored ? 'yes' : 'no'} | ${r.exact ? 'yes' : '**no**'} | ${r.replacementChars} | ${r.note} |`);
  }
  if (run.profiles.length) {
    for (const p of run.profiles) {
      out.push('');
      out.push(`### CPU profile, ${p.label}: busy ${p.busyMs} ms of ${p.wallMs} ms (${p.file}${p.skippedMs ? `; first ${(p.skippedMs / 1000).toFixed(1)} s of start-up and warm-up left out` : ''})`);
      out.push('');
      out.push('By component: ' + p.byComponent.slice(0, 10).map((c) => `${c.component} ${c.share}%`).join(', '));
      out.push('');
      out.push('| self time | function | where |');
      out.push('|---:|---|---|');
      for (const e of p.topSelf.slice(0, 12)) out.push(`| ${e.share}% (${e.ms} ms) | ${e.name} | ${e.where} |`);
      out.push('');
      out.push('| inclusive | project function | where |');
      out.push('|---:|---|---|');
      for (const e of p.topInclusive.slice(0, 10)) out.push(`| ${e.share}% (${e.ms} ms) | ${e.name} | ${e.where} |`);
    }
  }
  out.push('');
  out.push('### Targets (issue 24)');
  out.push('');
  out.push('| target | measured | | basis |');
  out.push('|---|---|---|---|');
  for (const t of run.targets) out.push(`| ${t.target} | ${t.value} | ${t.met === null ? 'not measured' : t.met ? '**met**' : '**missed**'} | ${t.basis} |`);
  const same = history.filter((h) => h.mode === run.mode);
  if (same.length >= 2) {
    out.push('');
    out.push(`### Variance across today's ${same.length} ${run.mode}-mode runs (mean, min–max, coefficient of variation)`);
    out.push('');
    out.push('| figure | mean | min – max | CV |');
    out.push('|---|---:|---:|---:|');
    for (const [label, s] of varianceRows(same)) out.push(`| ${label} | ${f1(s.mean)} | ${f1(s.min)} – ${f1(s.max)} | ${(s.cv * 100).toFixed(1)}% |`);
  }
  for (const n of run.notes) out.push(`\n- ${n}`);
  return out.join('\n') + '\n';
}

export function varianceRows(runs: RunResult[]): [string, Spread][] {
  const rows: [string, Spread][] = [];
  const keys = new Map<string, { path: PathName; size: number; concurrency: number }>();
  for (const r of runs) for (const c of r.cells) keys.set(`${c.path} ${cellKey(c)}`, c);
  for (const [label, k] of [...keys.entries()].sort()) {
    const pick = (f: (c: CellResult) => number): number[] => runs.map((r) => r.cells.find((c) => c.path === k.path && c.size === k.size && c.concurrency === k.concurrency)).filter((c): c is CellResult => c !== undefined).map(f);
    rows.push([`${label} msg/s`, spread(pick((c) => c.msgsPerSec))]);
    if (k.concurrency === 1) rows.push([`${label} p50 ms`, spread(pick((c) => c.latencyMs.dataEndToMaildir.p50))]);
  }
  rows.push(['backlog drain msg/s', spread(runs.map((r) => r.backlog?.rateFromSpawn ?? Number.NaN))]);
  rows.push(['home core: drain ÷ direct', spread(runs.map((r) => r.homeCore?.drainVsDirect ?? Number.NaN))]);
  for (const p of ['relay', 'http-api'] as const) {
    const peaks = runs.map((r) => {
      const m = r.memory.find((x) => x.path === p && x.variant === null);
      const v = m ? Object.values(m.peaks)[0] : undefined;
      return v ? (v.hwmBytes ?? v.sampledMaxBytes ?? Number.NaN) / 1e6 : Number.NaN;
    });
    rows.push([`${p} 25 MiB peak RSS (MB, ${p === 'relay' ? 'agent' : 'api'})`, spread(peaks)]);
  }
  return rows;
}
