// Reads a V8 .cpuprofile (node --cpu-prof) and says where the time went: self time by
// function, inclusive time of the project's own functions, and self time by component.
import { readFile } from 'node:fs/promises';

interface CallFrame { functionName: string; url: string; lineNumber: number; columnNumber: number }
interface ProfileNode { id: number; callFrame: CallFrame; children?: number[] }
interface CpuProfile { nodes: ProfileNode[]; startTime: number; endTime: number; samples: number[]; timeDeltas: number[] }

export interface ProfileEntry { name: string; where: string; ms: number; share: number }
export interface ProfileSummary {
  /** Which process: agent, ingress (node), workerd isolate. */
  label: string;
  file: string;
  /** Samples before this many ms after the profile's start (process start-up, warm-up) were left out. */
  skippedMs: number;
  /** Sampled time that was not idle, ms. */
  busyMs: number;
  wallMs: number;
  byComponent: { component: string; ms: number; share: number }[];
  topSelf: ProfileEntry[];
  topInclusive: ProfileEntry[];
}

function shortUrl(url: string): string {
  const i = url.indexOf('/work/main/');
  if (i >= 0) return url.slice(i + '/work/main/'.length);
  return url.replace(/^file:\/\//, '');
}

export function component(url: string, fn: string): string {
  if (fn === '(idle)') return 'idle';
  if (fn === '(garbage collector)') return 'GC';
  if (fn === '(program)') return 'V8/native (program)';
  if (url === '') return 'native/builtins';
  const u = shortUrl(url);
  const m = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(u);
  if (m?.[1]) return `npm:${m[1]}`;
  if (u.startsWith('node:')) return u.startsWith('node:internal/streams') ? 'node:streams' : u.startsWith('node:internal/crypto') ? 'node:crypto' : u.startsWith('node:internal/deps/undici') ? 'node:undici' : 'node:internal';
  const top = /^([a-z-]+)\//.exec(u);
  return top?.[1] ?? u;
}

export async function analyzeProfile(file: string, label: string, skipMs = 0, top = 15): Promise<ProfileSummary> {
  const p = JSON.parse(await readFile(file, 'utf8')) as CpuProfile;
  let at = p.startTime;
  const from = p.startTime + skipMs * 1000;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const key = (f: CallFrame): string => `${f.functionName || '(anonymous)'}\t${shortUrl(f.url)}:${f.lineNumber + 1}`;
  const self = new Map<string, number>();
  const incl = new Map<string, number>();
  const comp = new Map<string, number>();
  let busy = 0;
  // timeDeltas[i] is the time before sample i; attribute it to sample i.
  for (let i = 0; i < p.samples.length; i++) {
    const id = p.samples[i] ?? -1;
    at += p.timeDeltas[i] ?? 0;
    if (at < from) continue;
    const dt = (p.timeDeltas[i] ?? 0) / 1000;
    const n = byId.get(id);
    if (!n) continue;
    const c = component(n.callFrame.url, n.callFrame.functionName);
    comp.set(c, (comp.get(c) ?? 0) + dt);
    if (c === 'idle') continue;
    busy += dt;
    const k = key(n.callFrame);
    self.set(k, (self.get(k) ?? 0) + dt);
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const f = byId.get(cur)?.callFrame;
      if (!f) break;
      const kk = key(f);
      if (seen.has(kk)) continue;
      seen.add(kk);
      incl.set(kk, (incl.get(kk) ?? 0) + dt);
    }
  }
  const entries = (m: Map<string, number>, filter: (k: string) => boolean): ProfileEntry[] =>
    [...m.entries()].filter(([k]) => filter(k)).sort((a, b) => b[1] - a[1]).slice(0, top).map(([k, ms]) => {
      const [name = '', where = ''] = k.split('\t');
      return { name, where, ms: Math.round(ms * 10) / 10, share: busy ? Math.round((ms / busy) * 1000) / 10 : 0 };
    });
  const own = (k: string): boolean => /\t(bridge-worker|edge-agent|lmtp-proxy|protocol|local|bench)\//.test(k) || /\tnode_modules\/ws\//.test(k);
  return {
    label,
    file,
    skippedMs: Math.round(skipMs),
    busyMs: Math.round(busy),
    wallMs: Math.round((p.endTime - Math.max(p.startTime, from)) / 1000),
    byComponent: [...comp.entries()].filter(([c]) => c !== 'idle').sort((a, b) => b[1] - a[1])
      .map(([component, ms]) => ({ component, ms: Math.round(ms), share: busy ? Math.round((ms / busy) * 1000) / 10 : 0 })),
    topSelf: entries(self, () => true),
    topInclusive: entries(incl, own),
  };
}
