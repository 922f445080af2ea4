// Human output: tables, sizes, ages. Everything that came from mail (addresses,
// header values, reply texts) goes through clean() first, so a message cannot
// drive the operator's terminal with escape sequences.
import type { MessageDetail, QueueSummaryRead } from '../protocol/admin.ts';
import type { Message, State } from './api.ts';
import { MAX_LIST, STATES } from './api.ts';

/** Control characters (C0, DEL, C1) and bidi overrides become visible escapes. */
export function clean(s: string): string {
  return s.replace(/[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g, (c) => {
    const n = c.codePointAt(0) ?? 0;
    return n <= 0xff ? `\\x${n.toString(16).padStart(2, '0')}` : `\\u${n.toString(16).padStart(4, '0')}`;
  });
}

export function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[u]}`;
}

/** A duration in ms as 45s, 3m12s, 2h05m, 4d03h. */
export function duration(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  const two = (n: number) => String(n).padStart(2, '0');
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${two(s % 60)}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${two(Math.floor(s / 60) % 60)}m`;
  return `${Math.floor(s / 86400)}d${two(Math.floor(s / 3600) % 24)}h`;
}

const iso = (t: number) => new Date(t).toISOString();
const sender = (s: string) => (s === '' ? '<>' : clean(s));

/** Columns padded to their widest cell; the last column is not padded. */
export function table(head: string[], rows: string[][]): string {
  const width = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(width[i] ?? 0))).join('  ').trimEnd();
  return [line(head), ...rows.map(line)].join('\n') + '\n';
}

/** Aligned `key  value` lines. */
function pairs(rows: [string, string][]): string {
  const w = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${k.padEnd(w)}  ${v}`).join('\n') + '\n';
}

export function formatStatus(s: QueueSummaryRead, url: string, now: number): string {
  const total = STATES.reduce((n, k) => n + s.states[k], 0);
  const agents = s.agents.length === 0
    ? '0 connected'
    : `${s.agents.length} connected: ${s.agents.map((a) => clean(a.agent)).join(', ')}`;
  // Every state, in the order mail moves through them; each with the bytes it keeps stored.
  const order: State[] = ['queued', 'in-flight', 'deferred', 'hold', 'bouncing', 'bounced', 'dead-letter', 'incoming'];
  const kept = (k: State): string => {
    const st = s.stored?.[k];
    return st === undefined || st.bodies === 0 ? '' : `  (${bytes(st.bytes)}${st.r2Bytes > 0 ? `, ${bytes(st.r2Bytes)} in R2` : ''})`;
  };
  const u = s.storage;
  const share = (used: number, limit: number): string => `${bytes(used)} of ${bytes(limit)} (${Math.floor((used / limit) * 100)} %)`;
  return pairs([
    ['worker', url],
    ['agents', agents],
    ...order.map((k): [string, string] => [k, String(s.states[k]) + kept(k)]),
    ['total', String(total)],
    ['oldest', s.oldest === null ? '- (nothing owed)' : `${duration(now - s.oldest)} old (received ${iso(s.oldest)}; oldest still owed)`],
    ...(u === null ? [] : [
      ['storage', `object ${share(u.objectBytes, u.objectLimitBytes)}, R2 ${share(u.r2Bytes, u.r2LimitBytes)}` +
        (u.objectBytes * 100 >= u.objectLimitBytes * u.warnPercent || u.r2Bytes * 100 >= u.r2LimitBytes * u.warnPercent ? '  NEAR THE LIMIT' : '')],
    ] as [string, string][]),
  ]);
}

/** The mailq-like listing. `withState` false for the dead-letter list (one state only). */
export function formatQueue(messages: Message[], now: number, opts: { withState: boolean; limit: number; empty: string }): string {
  if (messages.length === 0) return `${opts.empty}\n`;
  const head = ['ID', ...(opts.withState ? ['STATE'] : []), 'SIZE', 'AGE', 'ATT', 'SENDER', 'RECIPIENTS', 'LAST ERROR'];
  const rows = messages.map((m) => {
    const first = m.recipients[0];
    const rcpts = first === undefined ? '-' : clean(first) + (m.recipients.length > 1 ? ` (+${m.recipients.length - 1})` : '');
    return [
      m.id, ...(opts.withState ? [m.state] : []), bytes(m.size), duration(now - m.receivedAt), String(m.attempts),
      sender(m.sender), rcpts, m.lastError === null ? '-' : clean(m.lastError),
    ];
  });
  const total = messages.reduce((n, m) => n + m.size, 0);
  const more = messages.length < opts.limit ? '' : opts.limit < MAX_LIST ? ` (the first ${opts.limit}; --limit up to ${MAX_LIST})` : ` (the first ${MAX_LIST}; the API lists no more)`;
  return table(head, rows) + `-- ${messages.length} message${messages.length === 1 ? '' : 's'}, ${bytes(total)}${more}\n`;
}

export function formatMessage(m: MessageDetail, now: number): string {
  const rows: [string, string][] = [
    ['id', m.id],
    ['state', m.state + (m.state === 'deferred' && m.nextAttemptAt !== null
      ? ` (next attempt ${m.nextAttemptAt > now ? `in ${duration(m.nextAttemptAt - now)}` : 'due now'}, ${iso(m.nextAttemptAt)})`
      : '')],
    ['sender', sender(m.sender)],
    ['pending', m.recipients.length === 0 ? '-' : m.recipients.map(clean).join(', ')],
    ...(m.bodyKey !== null
      ? [['size', `${bytes(m.size)} (${m.size} bytes; body in R2 as ${clean(m.bodyKey)})`], ['md5', clean(m.md5 ?? '')]] as [string, string][]
      : [['size', `${bytes(m.size)} (${m.size} bytes in ${m.chunks} chunk${m.chunks === 1 ? '' : 's'})`], ['sha256', m.sha256]] as [string, string][]),
    ['received', `${iso(m.receivedAt)} (${duration(now - m.receivedAt)} ago)`],
  ];
  if (m.retryFrom !== m.receivedAt) rows.push(['retry clock', `since ${iso(m.retryFrom)} (replayed from dead-letter)`]);
  rows.push(['attempts', String(m.attempts)]);
  if (m.leaseSession !== null) rows.push(['leased to', `session ${clean(m.leaseSession)}`]);
  rows.push(['last error', m.lastError === null ? '-' : clean(m.lastError)]);
  if (m.failure !== null) rows.push(['failed', m.failure]);
  if (m.bounceStatus !== null) rows.push(['bounce', clean(m.bounceStatus)]);
  let out = pairs(rows);
  out += '\nreplies\n';
  out += m.results.length === 0
    ? '  (none final yet)\n'
    : indent(table(['RECIPIENT', 'OUTCOME', 'CODE', 'ENHANCED', 'TEXT'], m.results.map((r) => [
      clean(r.recipient), r.outcome, r.code === 0 ? '-' : String(r.code), r.enhanced === null ? '-' : clean(r.enhanced), clean(r.text),
    ])));
  out += '\nheaders\n';
  out += m.headers.length === 0 ? '  (none)\n' : m.headers.map((h) => `  ${clean(h.name)}: ${clean(h.value)}\n`).join('');
  return out;
}

function indent(text: string): string {
  return text.split('\n').map((l) => (l === '' ? l : `  ${l}`)).join('\n');
}
