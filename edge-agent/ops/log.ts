// Structured logs: one line per event, JSON by default, or Postfix-like text
// (`logFormat: maillog`). Message content is never logged. How serious an event is
// comes from its name (protocol/log-levels.ts); under journald each line starts with
// its syslog priority (`<4>`, sd-daemon(3)), so `journalctl -p warning` shows the problems.
import { fstatSync } from 'node:fs';
import { hasControl, logJson, logText } from '../../protocol/log-escape.ts';
import { levelOf, PRIORITY, type Level } from '../../protocol/log-levels.ts';

export type Logger = (event: string, fields?: Record<string, unknown>) => void;

export const LOG_FORMATS = ['json', 'maillog'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

export interface LoggerOptions {
  format?: LogFormat;
  /** Prefix each line with its priority (`<6>`); default: when stdout is the journal. */
  journal?: boolean;
  /** Default: stdout. */
  write?: (line: string) => void;
  now?: () => Date;
}

/**
 * True when file descriptor `fd` is the journal's stream: systemd sets JOURNAL_STREAM to
 * its `device:inode`, and a child whose output goes elsewhere (a pipe, a file) inherits
 * the variable but not the stream (sd-daemon(3), systemd.exec(5)).
 */
export function onJournal(env: NodeJS.ProcessEnv = process.env, fd = 1): boolean {
  const m = /^([0-9]+):([0-9]+)$/.exec(env.JOURNAL_STREAM ?? '');
  if (!m) return false;
  try {
    const st = fstatSync(fd, { bigint: true });
    return String(st.dev) === m[1] && String(st.ino) === m[2];
  } catch {
    return false;
  }
}

/** The level an event is logged at: the Worker's own event name for a line npm start forwards. */
export function eventLevel(event: string, fields: Record<string, unknown>): Level {
  return levelOf(event === 'worker' && typeof fields.worker === 'string' ? fields.worker : event);
}

// ---- the maillog text form ---------------------------------------------------------

/**
 * `key=value`, the value quoted (as JSON) only when it holds a space, comma, quote or control or
 * is not text; controls escaped either way (protocol/log-escape.ts), in the key too.
 */
function kv(key: string, v: unknown): string {
  const s = typeof v === 'string' && v !== '' && !/[\s,"=()<>\\]/.test(v) && !hasControl(v) ? v
    : typeof v === 'number' || typeof v === 'boolean' || v === null ? String(v) : logJson(v);
  return `${logText(key)}=${s}`;
}

/**
 * One line as Postfix's lmtp client writes it, for the per-recipient delivery events:
 * `ID: from=<s>, to=<r>, relay=host:port, delay=1.2, delays=1.1/0.1, dsn=2.0.0, status=sent (250 2.0.0 Saved)`.
 * Every other event: `event: key=value, ...`.
 */
export function maillogText(event: string, fields: Record<string, unknown>): string {
  if (event.startsWith('delivery.') && typeof fields.id === 'string') {
    const f = fields;
    // Optional fields go after relay=, where Postfix writes its own (conn_use=): the line still ends in status=... (reply).
    const extra = Object.entries(f).filter(([k]) => !DELIVERY_KEYS.has(k)).map(([k, v]) => `${kv(k, v)}, `);
    const t = (v: unknown): string => logText(String(v));
    return `${t(f.id)}: from=<${t(f.from ?? '')}>, to=<${t(f.to ?? '')}>, relay=${t(f.relay)}, ${extra.join('')}` +
      `delay=${t(f.delay)}, delays=${t(f.delays)}, dsn=${t(f.dsn)}, status=${t(f.status)} (${t(f.reply ?? '')})`;
  }
  const rest = Object.entries(fields).map(([k, v]) => kv(k, v));
  return rest.length > 0 ? `${logText(event)}: ${rest.join(', ')}` : logText(event);
}
const DELIVERY_KEYS = new Set(['id', 'from', 'to', 'relay', 'delay', 'delays', 'dsn', 'status', 'reply']);

export function createLogger(o: LoggerOptions = {}): Logger {
  const format = o.format ?? 'json';
  const journal = o.journal ?? (o.write === undefined && onJournal());
  const write = o.write ?? ((l: string) => process.stdout.write(l + '\n'));
  const now = o.now ?? (() => new Date());
  return (event, fields = {}) => {
    const level = eventLevel(event, fields);
    const prefix = journal ? `<${PRIORITY[level]}>` : '';
    if (format === 'maillog') {
      // journald stamps each line itself.
      write(`${prefix}${journal ? '' : `${now().toISOString()} `}${maillogText(event, fields)}`);
      return;
    }
    // `level` only where it is not info: the field tells the problems apart without journald too.
    // A `level` among the fields is the table's to set, not the caller's.
    const { level: _given, ...rest } = fields;
    write(prefix + logJson({ ts: now().toISOString(), event, ...(level === 'info' ? {} : { level }), ...rest }));
  };
}

export const jsonLogger = (write?: (line: string) => void): Logger => createLogger({ format: 'json', ...(write ? { write } : {}) });

export const silentLogger: Logger = () => {};
